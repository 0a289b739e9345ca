"""Reducer unit cases: the documented error strings, check order, and the corner rules of
DESIGN §2 that the machines reach only by chance."""

from __future__ import annotations

from spec.auth import Claims
from spec.canonical import payload_hash
from spec.errors import CLIENT_ACTIONS, ErrorCode, SyncError
from spec.policy import Policy, StreamClass
from spec.reducers import CallContext, Err, Ok, call, compact, unclean_restart
from spec.state import DbState
from spec.values import SyncEvent, SyncStream

ALL = frozenset({"sync.append", "sync.checkpoint.write", "sync.admin", "presence.write"})
ME = Claims("a" * 64, ALL, ("s*",))


def run(db: DbState, reducer: str, *args: object, claims: Claims = ME, policy: Policy | None = None) -> Ok | Err:
    return call(db, CallContext(claims, 10, 1, policy or Policy()), reducer, tuple(args))


def ok(db: DbState, reducer: str, *args: object) -> Ok:
    out = run(db, reducer, *args)
    assert isinstance(out, Ok), out
    return out


def err(out: Ok | Err) -> SyncError:
    assert isinstance(out, Err), out
    return out.error


def test_every_error_code_has_a_client_action() -> None:
    assert set(CLIENT_ACTIONS) == set(ErrorCode)


def test_sequence_conflict_string_is_machine_readable() -> None:
    db = ok(DbState(), "append_sync_event", "s", "k1", "{}", None, None).state
    e = err(run(db, "append_sync_event", "s", "k2", "{}", None, 5))
    assert e.render() == 'sequence_conflict: {"actual_next_seq":2,"expected_next_seq":5,"stream_id":"s"}'
    assert SyncError.parse(e.render()) == e


def test_dedupe_before_sequence_check_IDEM_2() -> None:
    db = ok(DbState(), "append_sync_event", "s", "k1", '{"a":1}', None, None).state
    db = ok(db, "append_sync_event", "s", "k2", "{}", None, None).state
    retry = ok(db, "append_sync_event", "s", "k1", '{ "a" : 1 }', None, 1)  # stale expected seq
    assert retry.ret == 1 and retry.noop


def test_idempotency_conflict_names_the_existing_event_IDEM_3() -> None:
    db = ok(DbState(), "append_sync_event", "s", "k", '{"a":1}', None, None).state
    e = err(run(db, "append_sync_event", "s", "k", '{"a":2}', None, None))
    assert e.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert e.details["existing_seq"] == 1 and e.details["existing_payload_hash"] == payload_hash('{"a":1}')


def test_check_order_authorization_before_arguments_AUTH_2() -> None:
    nobody = Claims("b" * 64, frozenset(), ())
    assert err(run(DbState(), "append_sync_event", "bad id!", "k", "nope", None, None, claims=nobody)).code \
        is ErrorCode.MISSING_SCOPE
    ungranted = Claims("b" * 64, ALL, ("x*",))
    assert err(run(DbState(), "append_sync_event", "s", "k", "nope", None, None, claims=ungranted)).code \
        is ErrorCode.FORBIDDEN_STREAM
    assert err(run(DbState(), "append_sync_event", "s", "k", "nope", None, None)).code \
        is ErrorCode.NON_CANONICAL_PAYLOAD


def test_payload_limits_and_hash_mismatch() -> None:
    small = Policy(default_class=StreamClass("tiny", max_payload_bytes=4))
    assert err(run(DbState(), "append_sync_event", "s", "k", '"hello"', None, None, policy=small)).code \
        is ErrorCode.PAYLOAD_TOO_LARGE
    assert err(run(DbState(), "append_sync_event", "s", "k", "{}", "sha256:" + "0" * 64, None)).code \
        is ErrorCode.PAYLOAD_HASH_MISMATCH


def test_ack_is_monotonic_and_bounded_CKPT_1_CKPT_2() -> None:
    db = DbState()
    for k in ("a", "b", "c"):
        db = ok(db, "append_sync_event", "s", k, "{}", None, None).state
    db = ok(db, "ack_checkpoint", "d", "s", 1, 3).state
    lower = ok(db, "ack_checkpoint", "d", "s", 1, 1)
    assert lower.noop
    assert err(run(db, "ack_checkpoint", "d", "s", 1, 4)).code is ErrorCode.CHECKPOINT_AHEAD_OF_HEAD
    assert err(run(db, "ack_checkpoint", "d", "s", 2, 1)).code is ErrorCode.STALE_EPOCH


def test_compaction_raises_the_floor_and_keeps_seqs_contiguous_SEQ_1() -> None:
    db = DbState()
    for k in "abcdef":
        db = ok(db, "append_sync_event", "s", k, "{}", None, None).state
    out = compact(db, 100, Policy(default_class=StreamClass("c", retain_count=2)))
    stream = out.state.find(SyncStream, lambda r: r.stream_id == "s")
    assert stream is not None and (stream.floor_seq, stream.head_seq) == (5, 6)
    assert sorted(e.seq for e in out.state.of_type(SyncEvent)) == [5, 6]


def test_unclean_restart_moves_every_epoch_past_the_lost_window_DUR_2() -> None:
    db = ok(DbState(), "append_sync_event", "s", "a", "{}", None, None).state
    after = unclean_restart(db, 5, max_undurable=8)
    stream = after.find(SyncStream, lambda r: r.stream_id == "s")
    assert stream is not None and stream.epoch == 1 + 8 + 1
    assert after.epoch_floor == 10


def test_epoch_reset_drops_events_and_keeps_seqs_going() -> None:
    db = ok(DbState(), "append_sync_event", "s", "a", "{}", None, None).state
    db = ok(db, "reset_stream_epoch", "s").state
    stream = db.find(SyncStream, lambda r: r.stream_id == "s")
    assert stream is not None and (stream.epoch, stream.head_seq, stream.floor_seq) == (2, 1, 2)
    again = ok(db, "append_sync_event", "s", "a", "{}", None, None)
    assert again.ret == 2 and not again.noop


def test_default_policy_knobs_are_pinned() -> None:
    """Defaults users rely on (ADR-0003): the bridge bridges only NIP-89 provider ads (31990) and receipt
    pointers (30078); five attempts; retry_after_ms at most a day."""
    p = Policy()
    assert p.bridge_kinds == frozenset({30078, 31990})
    assert (p.bridge_max_attempts, p.bridge_max_retry_after_ms) == (5, 86_400_000)
    assert (p.presence_min_ttl_ms, p.presence_max_ttl_ms, p.max_error_text) == (1_000, 300_000, 1024)
    assert p.default_class == StreamClass("default") and p.default_class.max_payload_bytes == 256 * 1024
