"""The curated cases behind the reducer, checkpoint and transition vectors.

Each case is data: people, setup calls that build the state before it, the call(s) under test,
and what the author expects (``ok``, ``noop`` or an error code), written by hand from
``docs/protocol.md`` ("Per reducer", "Compute assignments", "Bridge outbox") -- not computed by
the model.  The generator (:mod:`adapters.conformance.generate`) runs every case on the model and
refuses to write a vector where the model disagrees with the expectation, so a vector records a
rule two sources agree on.

Error cases are written in *check order*: the case for error *n* of a reducer also carries the
defect of error *n + 1* where one can be combined with it, so an implementation that checks in
another order reports the later code and fails the vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from spec.auth import Claims
from spec.canonical import payload_hash
from spec.policy import Policy, StreamClass
from spec.schema import SCOPES
from spec.transitions import ASSIGNMENT_STATUSES, ASSIGNMENT_TRANSITIONS

T0: Final = 1_700_000_000_000_000
"""The clock (µs) of a vector's first call; each later call is one second later."""
STEP_US: Final = 1_000_000

POLICY: Final = Policy(
    classes=(("big.", StreamClass("big", max_payload_bytes=1024, replay_budget=1000)),),
    default_class=StreamClass("default", max_payload_bytes=64, replay_budget=100))
"""The policy every reducer vector runs under (small payload limits keep the vectors small)."""


def _identity(n: int) -> str:
    return format(n, "064x")


PEOPLE: Final[dict[str, Claims]] = {
    "alice": Claims(_identity(0xA11CE), frozenset(SCOPES), ("s.*", "big.*")),
    "bob": Claims(_identity(0xB0B), frozenset(SCOPES), ("s.*",)),
    "nobody": Claims(_identity(0x0DD), frozenset(), ()),
    "reader": Claims(_identity(0x4EAD), frozenset({"sync.subscribe", "sync.checkpoint.write"}), ("s.*",)),
    "outsider": Claims(_identity(0x0A7), frozenset({"sync.append", "sync.checkpoint.write"}), ("t.*",)),
    "requester": Claims(_identity(0x4E9), frozenset({"compute.request"}), ()),
    "dispatcher": Claims(_identity(0xD15), frozenset({"compute.assign"}), ()),
    "executor": Claims(_identity(0xE7E), frozenset({"compute.execute", "provider.publish"}), ()),
    "other_executor": Claims(_identity(0xE7F), frozenset({"compute.execute", "provider.publish"}), ()),
    "stranger": Claims(_identity(0x57A), frozenset({"compute.request"}), ()),
}


@dataclass(frozen=True, slots=True)
class Op:
    who: str
    reducer: str
    args: tuple[Any, ...]
    expect: str = "ok"  # ok | noop | an error code
    raw: bool = False  # args are sent as plain JSON values, not typed SATS-JSON (ill-typed calls)


@dataclass(frozen=True, slots=True)
class Case:
    handler: str
    name: str
    description: str
    setup: tuple[Op, ...]
    ops: tuple[Op, ...]
    area: str = "reducers"
    advance: tuple[int, ...] = field(default=())  # extra µs before each op (by index in setup + ops)


def op(who: str, reducer: str, *args: Any, expect: str = "ok") -> Op:
    return Op(who, reducer, tuple(args), expect)


def append(key: str, payload: str = '{"n":1}', stream: str = "s.a", who: str = "alice",
           h: str | None = None, nxt: int | None = None, expect: str = "ok") -> Op:
    return Op(who, "append_sync_event", (stream, key, payload, h, nxt), expect)


H1 = "sha256:" + "0" * 64
EID = "ab" * 32
EID2 = "cd" * 32
CAP = '{"model":"m"}'
TAGS = '[["d","x"]]'


def _appends(n: int, stream: str = "s.a") -> tuple[Op, ...]:
    return tuple(append(f"k{i}", f'{{"n":{i}}}', stream) for i in range(1, n + 1))


def _c(handler: str, name: str, description: str, setup: tuple[Op, ...], *ops: Op, area: str = "reducers") -> Case:
    return Case(handler, name, description, setup, tuple(ops), area)


# --- reducers: success, dedupe, every error in check order --------------------------------------------

_A = "append_sync_event"
REDUCER_CASES: tuple[Case, ...] = (
    # append_sync_event
    _c(_A, "first_event_creates_stream", "the first append creates the stream at epoch_floor and returns seq 1",
       (), append("k1")),
    _c(_A, "next_seq", "an append returns head + 1", _appends(2), append("k3", '{"n":3}')),
    _c(_A, "expected_next_seq_matches", "expected_next_seq = head + 1 is accepted", _appends(2),
       append("k3", '{"n":3}', nxt=3)),
    _c(_A, "payload_hash_given", "a payload_hash equal to the canonical hash is accepted", (),
       append("k1", '{ "b": 1, "a": 2 }', h=payload_hash('{"a":2,"b":1}'))),
    _c(_A, "dedupe_same_payload", "a retry of a retained key with the same payload is a no-op returning its seq",
       _appends(2), append("k1", '{"n":1}', expect="noop")),
    _c(_A, "dedupe_other_spelling", "dedupe compares canonical hashes: another spelling of the payload is a retry",
       _appends(1), append("k1", '{ "n" : 1 }', expect="noop")),
    _c(_A, "dedupe_ignores_expected_next_seq", "a retry wins over a stale expected_next_seq", _appends(2),
       append("k1", '{"n":1}', nxt=1, expect="noop")),
    _c(_A, "err1_missing_scope", "missing_scope before forbidden_stream and argument checks", (),
       append("bad key!", "{", stream="t.x", who="nobody", expect="missing_scope")),
    _c(_A, "err2_forbidden_stream", "forbidden_stream before argument checks", (),
       append("bad key!", "{", stream="t.x", who="bob", expect="forbidden_stream")),
    _c(_A, "err3_invalid_argument_stream_id", "invalid stream_id before the payload is looked at", (),
       append("k1", "{", stream="s.bad id", expect="invalid_argument")),
    _c(_A, "err3_invalid_argument_key", "invalid idempotency_key before the payload is looked at", (),
       append("bad key!", "{", expect="invalid_argument")),
    _c(_A, "err4_non_canonical_payload", "non_canonical_payload before the size check", (),
       append("k1", '{"a":1.5,"pad":"' + "x" * 80 + '"}', expect="non_canonical_payload")),
    _c(_A, "err5_payload_too_large", "payload_too_large (canonical bytes over the class limit) before the hash",
       (), append("k1", '{"pad":"' + "x" * 60 + '"}', h=H1, expect="payload_too_large")),
    _c(_A, "payload_at_limit", "a canonical payload of exactly the limit is accepted", (),
       append("k1", '{"pad":"' + "x" * 54 + '"}')),
    _c(_A, "err6_payload_hash_mismatch", "payload_hash_mismatch before the dedupe lookup", _appends(1),
       append("k1", '{"n":2}', h=H1, expect="payload_hash_mismatch")),
    _c(_A, "err7_idempotency_conflict", "a retained key with another payload, before the sequence check",
       _appends(2), append("k1", '{"n":9}', nxt=9, expect="idempotency_conflict")),
    _c(_A, "err8_sequence_conflict", "expected_next_seq other than head + 1", _appends(2),
       append("k3", '{"n":3}', nxt=2, expect="sequence_conflict")),
    # ack_checkpoint
    _c("ack_checkpoint", "first_ack", "the first ack writes the caller's checkpoint", _appends(3),
       op("alice", "ack_checkpoint", "laptop", "s.a", 1, 2)),
    _c("ack_checkpoint", "ack_at_head", "an ack at head is accepted", _appends(3),
       op("alice", "ack_checkpoint", "laptop", "s.a", 1, 3)),
    _c("ack_checkpoint", "ack_zero_on_unknown_stream", "an ack of seq 0 in epoch_floor of a stream that does not "
       "exist yet is accepted (its virtual head is 0)", (), op("alice", "ack_checkpoint", "laptop", "s.new", 1, 0)),
    _c("ack_checkpoint", "noop_at_or_below", "an ack at or below the checkpoint (same epoch) is a no-op",
       (*_appends(3), op("alice", "ack_checkpoint", "laptop", "s.a", 1, 3)),
       op("alice", "ack_checkpoint", "laptop", "s.a", 1, 2, expect="noop")),
    _c("ack_checkpoint", "err1_missing_scope", "missing_scope first", _appends(1),
       op("nobody", "ack_checkpoint", "bad id!", "t.x", 9, 9, expect="missing_scope")),
    _c("ack_checkpoint", "err2_forbidden_stream", "forbidden_stream before the owner check", _appends(1),
       op("outsider", "ack_checkpoint", "bad id!", "s.a", 9, 9, expect="forbidden_stream")),
    _c("ack_checkpoint", "err3_forbidden_owner", "another identity's checkpoint id: forbidden before arguments",
       (*_appends(1), op("alice", "ack_checkpoint", "laptop", "s.a", 1, 1)),
       op("bob", "ack_checkpoint", "laptop", "s.a", 9, 9, expect="forbidden")),
    _c("ack_checkpoint", "err4_invalid_argument", "an invalid client_id before the epoch check", _appends(1),
       op("alice", "ack_checkpoint", "bad id!", "s.a", 9, 9, expect="invalid_argument")),
    _c("ack_checkpoint", "err5_stale_epoch", "another epoch than the stream's, before the head check", _appends(1),
       op("alice", "ack_checkpoint", "laptop", "s.a", 2, 9, expect="stale_epoch")),
    _c("ack_checkpoint", "err6_checkpoint_ahead_of_head", "a seq past head", _appends(2),
       op("alice", "ack_checkpoint", "laptop", "s.a", 1, 3, expect="checkpoint_ahead_of_head")),
    # upsert_presence
    _c("upsert_presence", "insert", "a new session row is online, with a presence_signal", (),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 60_000)),
    _c("upsert_presence", "status_change", "a status change updates the row and emits a signal",
       (op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 60_000),),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "offline", "eu", 60_000)),
    _c("upsert_presence", "refresh", "the same status later refreshes last_seen and expires_at, without a signal",
       (op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 60_000),),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 60_000)),
    _c("upsert_presence", "err1_missing_scope", "missing_scope first", (),
       op("nobody", "upsert_presence", "bad id!", "dev1", "node1", "zzz", "eu", 1, expect="missing_scope")),
    _c("upsert_presence", "err2_forbidden", "another identity's session before argument checks",
       (op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 60_000),),
       op("bob", "upsert_presence", "sess1", "dev1", "node1", "zzz", "eu", 1, expect="forbidden")),
    _c("upsert_presence", "err3_invalid_status", "an unknown status before the ttl check", (),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "zzz", "eu", 1, expect="invalid_argument")),
    _c("upsert_presence", "err3_ttl_below_min", "ttl_ms below the policy minimum", (),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 999, expect="invalid_argument")),
    _c("upsert_presence", "ttl_at_max", "ttl_ms at the policy maximum is accepted", (),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 300_000)),
    _c("upsert_presence", "err3_ttl_above_max", "ttl_ms above the policy maximum", (),
       op("alice", "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 300_001, expect="invalid_argument")),
    # publish_provider_capability
    _c("publish_provider_capability", "insert", "a new provider row at version_floor", (),
       op("alice", "publish_provider_capability", "prov1", CAP, (5001, 5000), 10, "active")),
    _c("publish_provider_capability", "noop_same", "the same hash, kinds (as a set), price and status is a no-op",
       (op("alice", "publish_provider_capability", "prov1", CAP, (5001, 5000), 10, "active"),),
       op("alice", "publish_provider_capability", "prov1", '{ "model": "m" }', (5000, 5001, 5000), 10, "active",
          expect="noop")),
    _c("publish_provider_capability", "change_bumps_version", "a change bumps version by one",
       (op("alice", "publish_provider_capability", "prov1", CAP, (5000,), 10, "active"),),
       op("alice", "publish_provider_capability", "prov1", CAP, (5000,), 10, "withdrawn")),
    _c("publish_provider_capability", "err1_missing_scope", "missing_scope first", (),
       op("nobody", "publish_provider_capability", "bad id!", "{", (1,), 0, "zzz", expect="missing_scope")),
    _c("publish_provider_capability", "err2_forbidden", "another identity's provider before argument checks",
       (op("alice", "publish_provider_capability", "prov1", CAP, (5000,), 10, "active"),),
       op("bob", "publish_provider_capability", "prov1", "{", (1,), 0, "zzz", expect="forbidden")),
    _c("publish_provider_capability", "err3_invalid_provider_id", "an invalid id before the JSON", (),
       op("alice", "publish_provider_capability", "bad id!", "{", (1,), 0, "zzz", expect="invalid_argument")),
    _c("publish_provider_capability", "err4_non_canonical", "non-canonical capability JSON before the kinds", (),
       op("alice", "publish_provider_capability", "prov1", "{", (1,), 0, "zzz", expect="non_canonical_payload")),
    _c("publish_provider_capability", "err5_kinds", "a kind outside 5000-5999 before the status", (),
       op("alice", "publish_provider_capability", "prov1", CAP, (6000,), 0, "zzz", expect="invalid_argument")),
    _c("publish_provider_capability", "err6_status", "an unknown status", (),
       op("alice", "publish_provider_capability", "prov1", CAP, (5999,), 0, "zzz", expect="invalid_argument")),
    # open_compute_assignment
    _c("open_compute_assignment", "open", "a new request is open at version_floor", (),
       op("requester", "open_compute_assignment", "req1", 5000, '{"q":1}')),
    _c("open_compute_assignment", "dedupe", "the same request hash and job kind is a no-op",
       (op("requester", "open_compute_assignment", "req1", 5000, '{"q":1}'),),
       op("requester", "open_compute_assignment", "req1", 5000, '{ "q" : 1 }', expect="noop")),
    _c("open_compute_assignment", "err1_missing_scope", "missing_scope first", (),
       op("dispatcher", "open_compute_assignment", "bad id!", 1, "{", expect="missing_scope")),
    _c("open_compute_assignment", "err2_forbidden", "another requester's id before argument checks",
       (op("requester", "open_compute_assignment", "req1", 5000, '{"q":1}'),),
       op("stranger", "open_compute_assignment", "req1", 1, "{", expect="forbidden")),
    _c("open_compute_assignment", "err3_invalid_kind", "a job kind outside 5000-5999 before the JSON", (),
       op("requester", "open_compute_assignment", "req1", 4999, "{", expect="invalid_argument")),
    _c("open_compute_assignment", "err4_non_canonical", "non-canonical request JSON before the dedupe lookup",
       (op("requester", "open_compute_assignment", "req1", 5000, '{"q":1}'),),
       op("requester", "open_compute_assignment", "req1", 5000, "[1.0]", expect="non_canonical_payload")),
    _c("open_compute_assignment", "err5_idempotency_conflict", "the same id with another request",
       (op("requester", "open_compute_assignment", "req1", 5000, '{"q":1}'),),
       op("requester", "open_compute_assignment", "req1", 5001, '{"q":1}', expect="idempotency_conflict")),
    # enqueue_bridge_event
    _c("enqueue_bridge_event", "enqueue", "a new outbox row is pending, due at once", (),
       op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello")),
    _c("enqueue_bridge_event", "dedupe", "the same content hash is a no-op",
       (op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello"),),
       op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, '[ ["d", "x"] ]', "hello", expect="noop")),
    _c("enqueue_bridge_event", "err1_missing_scope", "missing_scope first", (),
       op("nobody", "enqueue_bridge_event", "bad id!", "r", 1, "{", "c", expect="missing_scope")),
    _c("enqueue_bridge_event", "err2_invalid_outbox_id", "an invalid id before the tags", (),
       op("alice", "enqueue_bridge_event", "bad id!", "r", 1, "{", "c", expect="invalid_argument")),
    _c("enqueue_bridge_event", "err3_non_canonical_tags", "non-canonical tags before the kind policy", (),
       op("alice", "enqueue_bridge_event", "o1", "r", 1, "{", "c", expect="non_canonical_payload")),
    _c("enqueue_bridge_event", "err3_tags_shape", "tags that are not an array of string arrays", (),
       op("alice", "enqueue_bridge_event", "o1", "r", 1, '[["d",1]]', "c", expect="invalid_argument")),
    _c("enqueue_bridge_event", "err4_policy_denied", "a kind outside the policy before the dedupe lookup",
       (op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello"),),
       op("alice", "enqueue_bridge_event", "o1", "receipts", 1, TAGS, "other", expect="policy_denied")),
    _c("enqueue_bridge_event", "err4_policy_denied_control_content",
       "content holding a C0 control relays serialize differently (U+0001) before the dedupe lookup",
       (op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello"),),
       op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hel\x01lo", expect="policy_denied")),
    _c("enqueue_bridge_event", "err4_policy_denied_control_tag",
       "a tag string holding such a control (escaped U+001F in the tags JSON) before the dedupe lookup",
       (op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello"),),
       op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, '[["d","x\\u001f"]]', "hello",
          expect="policy_denied")),
    _c("enqueue_bridge_event", "enqueue_portable_controls",
       "the controls every relay writes alike (\\b \\t \\n \\f \\r) and U+007F are allowed in tags and content",
       (), op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, '[["d","\\b\\t\\n\\f\\r\x7f"]]',
              "a\bb\tc\nd\fe\rf\x7f")),
    _c("enqueue_bridge_event", "err5_idempotency_conflict", "the same id with another source (in the hash)",
       (op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello"),),
       op("alice", "enqueue_bridge_event", "o1", "providers", 30078, TAGS, "hello", expect="idempotency_conflict")),
    # mark_bridge_event_sent / record_bridge_failure: the outbox area has the transitions
    _c("mark_bridge_event_sent", "err1_missing_scope", "missing_scope first", (),
       op("reader", "mark_bridge_event_sent", "bad id!", "x", ("",), expect="missing_scope")),
    _c("mark_bridge_event_sent", "err2_invalid_event_id", "an event id that is not 64 lowercase hex", (),
       op("alice", "mark_bridge_event_sent", "o1", EID.upper(), ("",), expect="invalid_argument")),
    _c("mark_bridge_event_sent", "err3_invalid_relay", "an empty relay url before the row lookup", (),
       op("alice", "mark_bridge_event_sent", "o1", EID, ("",), expect="invalid_argument")),
    _c("mark_bridge_event_sent", "err4_missing", "no such outbox row", (),
       op("alice", "mark_bridge_event_sent", "o1", EID, ("wss://a",), expect="bridge_event_missing")),
    _c("record_bridge_failure", "err1_missing_scope", "missing_scope first", (),
       op("reader", "record_bridge_failure", "bad id!", "", 10**12, expect="missing_scope")),
    _c("record_bridge_failure", "err2_empty_error", "an empty error text before retry_after_ms", (),
       op("alice", "record_bridge_failure", "o1", "", 10**12, expect="invalid_argument")),
    _c("record_bridge_failure", "err3_retry_after_too_long", "retry_after_ms above the policy maximum", (),
       op("alice", "record_bridge_failure", "o1", "down", 86_400_001, expect="invalid_argument")),
    _c("record_bridge_failure", "err4_missing", "no such outbox row", (),
       op("alice", "record_bridge_failure", "o1", "down", 0, expect="bridge_event_missing")),
    # publish_stream_signal
    _c("publish_stream_signal", "signal", "a signal writes one event-table row and no table", (),
       op("alice", "publish_stream_signal", "s.a", "typing", '{"on":true}')),
    _c("publish_stream_signal", "err1_missing_scope", "missing_scope first", (),
       op("reader", "publish_stream_signal", "t.x", "zzz", "{", expect="missing_scope")),
    _c("publish_stream_signal", "err2_forbidden_stream", "forbidden_stream before arguments", (),
       op("outsider", "publish_stream_signal", "s.a", "zzz", "{", expect="forbidden_stream")),
    _c("publish_stream_signal", "err3_invalid_kind", "an unknown kind before the JSON", (),
       op("alice", "publish_stream_signal", "s.a", "zzz", "{", expect="invalid_argument")),
    _c("publish_stream_signal", "err4_non_canonical", "non-canonical JSON before the size", (),
       op("alice", "publish_stream_signal", "s.a", "custom", '{"a":1e3,"pad":"' + "x" * 80 + '"}',
          expect="non_canonical_payload")),
    _c("publish_stream_signal", "err5_payload_too_large", "a payload over the class limit", (),
       op("alice", "publish_stream_signal", "s.a", "custom", '{"pad":"' + "x" * 60 + '"}',
          expect="payload_too_large")),
    # reset_stream_epoch
    _c("reset_stream_epoch", "reset", "a reset drops retained events and starts epoch + 1 continuing nothing",
       _appends(2), op("alice", "reset_stream_epoch", "s.a")),
    _c("reset_stream_epoch", "err1_missing_scope", "missing_scope first", (),
       op("reader", "reset_stream_epoch", "bad id!", expect="missing_scope")),
    _c("reset_stream_epoch", "err2_invalid_stream_id", "an invalid id", (),
       op("alice", "reset_stream_epoch", "bad id!", expect="invalid_argument")),
    _c("reset_stream_epoch", "err3_no_stream", "a stream that does not exist", (),
       op("alice", "reset_stream_epoch", "s.none", expect="invalid_argument")),
    # the call itself
    _c("call", "no_such_reducer", "an unknown reducer name", (), op("alice", "drop_tables", expect="no_such_reducer")),
    _c("call", "wrong_arity", "too few arguments", (), Op("alice", "reset_stream_epoch", (), "invalid_argument",
                                                          raw=True)),
    _c("call", "wrong_type", "a string where a U64 is expected", (),
       Op("alice", "ack_checkpoint", ("laptop", "s.a", "one", 0), "invalid_argument", raw=True)),
)

# --- checkpoints: monotonicity over sequences of acks --------------------------------------------------

CHECKPOINT_CASES: tuple[Case, ...] = (
    _c("sequence", "monotonic_within_epoch", "acks within one epoch only move the checkpoint forward",
       _appends(5), op("alice", "ack_checkpoint", "c", "s.a", 1, 2), op("alice", "ack_checkpoint", "c", "s.a", 1, 4),
       op("alice", "ack_checkpoint", "c", "s.a", 1, 3, expect="noop"),
       op("alice", "ack_checkpoint", "c", "s.a", 1, 4, expect="noop"),
       op("alice", "ack_checkpoint", "c", "s.a", 1, 5), area="checkpoint"),
    _c("sequence", "reset_moves_to_the_new_epoch", "after a reset only the new epoch is accepted, at any seq up to "
       "head (the checkpoint follows the epoch, even to a lower seq)",
       _appends(3), op("alice", "ack_checkpoint", "c", "s.a", 1, 3), op("alice", "reset_stream_epoch", "s.a"),
       op("alice", "ack_checkpoint", "c", "s.a", 1, 3, expect="stale_epoch"),
       op("alice", "ack_checkpoint", "c", "s.a", 2, 3), append("k4", '{"n":4}'),
       op("alice", "ack_checkpoint", "c", "s.a", 2, 4), op("alice", "ack_checkpoint", "c", "s.a", 2, 5,
                                                              expect="checkpoint_ahead_of_head"),
       area="checkpoint"),
    _c("sequence", "per_client_and_stream", "checkpoints are per (client, stream); another identity's id is refused",
       (*_appends(2), *_appends(2, "s.b")), op("alice", "ack_checkpoint", "c", "s.a", 1, 2),
       op("alice", "ack_checkpoint", "c", "s.b", 1, 1), op("alice", "ack_checkpoint", "d", "s.a", 1, 1),
       op("bob", "ack_checkpoint", "c", "s.a", 1, 2, expect="forbidden"),
       op("bob", "ack_checkpoint", "e", "s.a", 1, 2), area="checkpoint"),
)

# --- compute assignments: every (from, to) edge for every role -----------------------------------------

ROLE_CALLERS: Final = {"requester": "requester", "dispatcher": "dispatcher", "executor": "executor",
                       "stranger": "stranger", "other_executor": "other_executor"}
_PROVIDER = op("executor", "publish_provider_capability", "prov.e", CAP, (5000,), 1, "active")


def _reach(status: str) -> tuple[tuple[Op, ...], int]:
    """Setup calls that leave req1 in ``status``, and its version then."""
    path = {"open": [], "assigned": ["assigned"], "running": ["assigned", "running"],
            "completed": ["assigned", "running", "completed"], "failed": ["assigned", "running", "failed"],
            "cancelled": ["cancelled"]}[status]
    ops: list[Op] = [_PROVIDER, op("requester", "open_compute_assignment", "req1", 5000, '{"q":1}')]
    who = {"assigned": "dispatcher", "running": "executor", "completed": "executor", "failed": "executor",
           "cancelled": "requester"}
    for v, s in enumerate(path, start=1):
        ops.append(op(who[s], "update_compute_assignment", "req1", v, s, "prov.e" if s == "assigned" else None,
                      '{"r":1}' if s in ("completed", "failed") else None))
    return tuple(ops), 1 + len(path)


def _assignment_cases() -> tuple[Case, ...]:
    cases = []
    for old in ASSIGNMENT_STATUSES:
        setup, version = _reach(old)
        for new in ASSIGNMENT_STATUSES:
            roles = ASSIGNMENT_TRANSITIONS.get((old, new))
            for role, who in ROLE_CALLERS.items():
                expect = "invalid_transition" if roles is None else "ok" if role in roles else "forbidden"
                cases.append(_c("update", f"{old}_to_{new}_by_{role}",
                                f"{old} -> {new} by the {role}: {expect}", setup,
                                op(who, "update_compute_assignment", "req1", version, new,
                                   "prov.e" if new == "assigned" else None,
                                   '{"r":2}' if new in ("completed", "failed") else None, expect=expect),
                                area="compute"))
    setup, version = _reach("open")
    cases += [
        _c("update", "err_version_conflict", "a stale expected_version before the edge check", setup,
           op("dispatcher", "update_compute_assignment", "req1", version + 1, "completed", None, None,
              expect="version_conflict"), area="compute"),
        _c("update", "err_assignment_missing", "no such request", (),
           op("dispatcher", "update_compute_assignment", "req1", 1, "assigned", "prov.e", None,
              expect="assignment_missing"), area="compute"),
        _c("update", "err_missing_scope", "none of the compute scopes", setup,
           op("reader", "update_compute_assignment", "req1", version, "assigned", "prov.e", None,
              expect="missing_scope"), area="compute"),
        _c("update", "err_assign_without_provider", "assigned needs provider_id", setup,
           op("dispatcher", "update_compute_assignment", "req1", version, "assigned", None, None,
              expect="invalid_argument"), area="compute"),
        _c("update", "err_provider_missing", "assigning a provider that does not exist", setup,
           op("dispatcher", "update_compute_assignment", "req1", version, "assigned", "prov.none", None,
              expect="provider_unavailable"), area="compute"),
        _c("update", "err_provider_kind", "assigning a provider that does not advertise the job kind",
           (*setup, op("other_executor", "publish_provider_capability", "prov.o", CAP, (5001,), 1, "active")),
           op("dispatcher", "update_compute_assignment", "req1", version, "assigned", "prov.o", None,
              expect="provider_unavailable"), area="compute"),
    ]
    # the executor role is the *assigned provider's owner*: another executor is forbidden
    setup, version = _reach("assigned")
    cases.append(_c("update", "assigned_to_running_by_another_executor",
                    "compute.execute is not enough: only the assigned provider's owner may start",
                    (*setup, op("other_executor", "publish_provider_capability", "prov.o", CAP, (5000,), 1,
                                "active")),
                    op("other_executor", "update_compute_assignment", "req1", version, "running", None, None,
                       expect="forbidden"), area="compute"))
    return tuple(cases)


ASSIGNMENT_CASES: tuple[Case, ...] = _assignment_cases()

# --- bridge outbox: every status x every action ----------------------------------------------------------

_ENQ = op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello")
_OUTBOX_STATES: Final[dict[str, tuple[Op, ...]]] = {
    "pending": (_ENQ,),
    "pending_4_attempts": (_ENQ, *(op("alice", "record_bridge_failure", "o1", "down", 1000) for _ in range(4))),
    "sent": (_ENQ, op("alice", "mark_bridge_event_sent", "o1", EID, ("wss://a",))),
    "failed": (_ENQ, *(op("alice", "record_bridge_failure", "o1", "down", 0) for _ in range(5))),
}
_OUTBOX_ACTIONS: Final[dict[str, Callable[[str], Op]]] = {
    "mark_sent": lambda e: op("alice", "mark_bridge_event_sent", "o1", EID, ("wss://b",), expect=e),
    "mark_sent_same_relays": lambda e: op("alice", "mark_bridge_event_sent", "o1", EID, ("wss://a",), expect=e),
    "mark_sent_other_event": lambda e: op("alice", "mark_bridge_event_sent", "o1", EID2, ("wss://b",), expect=e),
    "record_failure": lambda e: op("alice", "record_bridge_failure", "o1", "relay timeout", 30_000, expect=e),
    "enqueue_again": lambda e: op("alice", "enqueue_bridge_event", "o1", "receipts", 30078, TAGS, "hello",
                                  expect=e),
}
OUTBOX_EXPECT: Final[dict[tuple[str, str], str]] = {
    ("pending", "mark_sent"): "ok", ("pending", "mark_sent_same_relays"): "ok",
    ("pending", "mark_sent_other_event"): "ok", ("pending", "record_failure"): "ok",
    ("pending", "enqueue_again"): "noop",
    ("pending_4_attempts", "mark_sent"): "ok", ("pending_4_attempts", "mark_sent_same_relays"): "ok",
    ("pending_4_attempts", "mark_sent_other_event"): "ok", ("pending_4_attempts", "record_failure"): "ok",
    ("pending_4_attempts", "enqueue_again"): "noop",
    ("sent", "mark_sent"): "ok", ("sent", "mark_sent_same_relays"): "noop",
    ("sent", "mark_sent_other_event"): "bridge_event_conflict", ("sent", "record_failure"): "noop",
    ("sent", "enqueue_again"): "noop",
    ("failed", "mark_sent"): "ok", ("failed", "mark_sent_same_relays"): "ok",
    ("failed", "mark_sent_other_event"): "ok", ("failed", "record_failure"): "noop",
    ("failed", "enqueue_again"): "noop",
}
"""Hand-written from docs/protocol.md ("Bridge outbox") and BRIDGE_TRANSITIONS."""

OUTBOX_CASES: tuple[Case, ...] = tuple(
    _c("transition", f"{state}_{action}", f"{action} on a {state} row: {OUTBOX_EXPECT[(state, action)]}",
       setup, make(OUTBOX_EXPECT[(state, action)]), area="outbox")
    for state, setup in _OUTBOX_STATES.items() for action, make in _OUTBOX_ACTIONS.items())

ALL_CASES: tuple[Case, ...] = REDUCER_CASES + CHECKPOINT_CASES + ASSIGNMENT_CASES + OUTBOX_CASES
