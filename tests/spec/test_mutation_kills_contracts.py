"""Negative controls for spec/reducer_contracts.py's judges (docs/mutation.md).

The sampled mutation run of ``spec/reducer_contracts.py`` (seed 9) left judges alive that the suite only
ever saw *accepting* correct outcomes.  Each case here is a state before and an outcome written out by
hand, wrong in one way (or deliberately right), with the verdict the judge must give -- a literal, never
computed by the code under test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from spec.auth import Claims
from spec.errors import ErrorCode, SyncError
from spec.outcome import CallContext, Err, Ok
from spec.policy import DEFAULT_POLICY
from spec.reducer_contracts import (
    assignment_stepped,
    authorized_first,
    call_violations,
    compacted,
    continued,
    deduplicated,
    epoch_reset,
    outbox_failed,
    presence_written,
    retained,
    state_violations,
)
from spec.state import DbState, Delta, TableDelta
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    PresenceSignal,
    Row,
    SessionPresence,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)

OWNER = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
EMPTY_HASH = "sha256:" + hashlib.sha256(b"{}").hexdigest()


def _db(**tables: tuple[Row, ...]) -> DbState:
    base = dict(DbState().tables)
    base.update(tables)
    return DbState(base)


def _ok(state: DbState, ret: int | None = None, *parts: TableDelta) -> Ok:
    return Ok(state, ret, Delta(parts))


def _ctx(*scopes: str, identity: str = OWNER, streams: tuple[str, ...] = ("s",)) -> CallContext:
    return CallContext(Claims(identity, frozenset(scopes), streams), 1000, 1, DEFAULT_POLICY)


def _stream(epoch: int = 1, head: int = 0, floor: int = 1, continues: tuple[int, int] = (0, 0),
            earlier_epochs: tuple[int, ...] = (), earlier_seqs: tuple[int, ...] = ()) -> SyncStream:
    return SyncStream(stream_id="s", stream_class="default", epoch=epoch, continues_epoch=continues[0],
                      continues_seq=continues[1], head_seq=head, floor_seq=floor, replay_budget=100, created_at=1,
                      updated_at=2, earlier_epochs=earlier_epochs, earlier_seqs=earlier_seqs)


def _event(seq: int, epoch: int = 1, key: str = "k1") -> SyncEvent:
    return SyncEvent(stream_id="s", epoch=epoch, seq=seq, idempotency_key=key, payload_hash=EMPTY_HASH,
                     payload="{}", producer=OWNER, committed_at=seq, tx_offset=seq)


def _assignment(status: str, version: int, provider: tuple[str | None, str | None] = (None, None)) -> ComputeAssignment:
    return ComputeAssignment("r1", OTHER, 5000, "{}", EMPTY_HASH, provider[0], provider[1], status, None, version, 0,
                             version)


def _outbox(status: str = "pending", attempts: int = 0, next_at: int = 100) -> BridgeOutbox:
    return BridgeOutbox("o1", "src", 30078, "[]", "hi", "sha256:" + OWNER, status, attempts, next_at, None, None, (),
                        100, 100)


def _refused(judge: Callable[[], bool]) -> bool:
    """A judge refuses a malformed row by answering False or by raising on it; it never accepts it."""
    try:
        return not judge()
    except ValueError:
        return True


# --- assignment_stepped: one edge, by a role it names, version + 1, a provider where one is named ----------

EXECUTE = _ctx("compute.execute")
ASSIGNED = _assignment("assigned", 2, ("p", OWNER))
RUNNING = _assignment("running", 3, ("p", OWNER))
STEP_CASES: list[tuple[str, DbState, CallContext, DbState, bool]] = [
    ("no row before", _db(), EXECUTE, _db(compute_assignment=(RUNNING,)), False),
    ("started by its executor", _db(compute_assignment=(ASSIGNED,)), EXECUTE, _db(compute_assignment=(RUNNING,)),
     True),
    ("started, version + 2", _db(compute_assignment=(ASSIGNED,)), EXECUTE,
     _db(compute_assignment=(_assignment("running", 4, ("p", OWNER)),)), False),
    ("started, provider dropped", _db(compute_assignment=(ASSIGNED,)), EXECUTE,
     _db(compute_assignment=(_assignment("running", 3),)), False),
    ("failed, provider dropped", _db(compute_assignment=(RUNNING,)), EXECUTE,
     _db(compute_assignment=(_assignment("failed", 4),)), False),
    ("failed by its executor", _db(compute_assignment=(RUNNING,)), EXECUTE,
     _db(compute_assignment=(_assignment("failed", 4, ("p", OWNER)),)), True),
]


@pytest.mark.parametrize(("db", "ctx", "after", "ok"), [c[1:] for c in STEP_CASES], ids=[c[0] for c in STEP_CASES])
def test_assignment_stepped_cases(db: DbState, ctx: CallContext, after: DbState, ok: bool) -> None:
    assert assignment_stepped(db, ctx, "r1", _ok(after)) is ok


# --- authorized_first and call_violations: the reducer's name and the caller's identity reach the checks ---


def test_authorized_first_refuses_a_call_served_without_its_scope() -> None:
    args = ("s", "k1", "{}", EMPTY_HASH, None)
    assert not authorized_first(_ctx(), "append_sync_event", args, _ok(_db(), 1))
    missing = Err(SyncError(ErrorCode.MISSING_SCOPE))
    assert authorized_first(_ctx(), "append_sync_event", args, missing)
    assert authorized_first(_ctx(), "append_sync_event", ("s",), _ok(_db(), 1))  # ill-typed: not its business


def test_call_violations_passes_the_reducer_and_the_identity_on() -> None:
    args = ("s", "k1", "{}", EMPTY_HASH, None)
    assert call_violations(_db(), _ctx(), "append_sync_event", args, _ok(_db(), 1)) == [
        ("AUTH-2", "append without scope gave None")]
    before = _db(compute_assignment=(_assignment("open", 1),))
    taken = _db(compute_assignment=(_assignment("assigned", 2, ("p", OWNER)),))
    assert call_violations(before, _ctx(), "update_compute_assignment", ("r1", 1, "assigned", "p", None),
                           _ok(taken, None, TableDelta("compute_assignment", before.rows("compute_assignment"),
                                                       taken.rows("compute_assignment")))) == [
        ("ASSIGN-4", "open -> assigned of r1 taken by a caller holding [], not one of ['dispatcher']")]


# --- compacted: epoch and head kept, the row kept ----------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "ok"), [
    (_stream(1, 0, 1), _stream(1, 0, 1), True),
    (_stream(1, 0, 1), _stream(2, 0, 1), False),  # compaction moved the epoch
    (_stream(1, 0, 1), None, False),  # the stream vanished
])
def test_compacted_cases(before: SyncStream, after: SyncStream | None, ok: bool) -> None:
    state = _db(sync_stream=(after,) if after else ())
    assert compacted(_db(sync_stream=(before,)), _ok(state)) is ok


# --- continued: the chain lists pair up, and only the old epoch's checkpoints are relabelled ---------------


def test_continued_refuses_chains_whose_lists_differ_in_length() -> None:
    good_before = _stream(2, 3, 1, (1, 3))
    # the before row's chain lists differ in length: the hop (5, ?) is never read as absent
    ragged_before = _stream(3, 3, 1, (2, 3), (1,), ())
    assert _refused(lambda: continued(_db(sync_stream=(ragged_before,)),
                                      _db(sync_stream=(_stream(4, 3, 1, (3, 3), (2,), (3,)),))))
    # the after row's lists differ in length: its extra epoch is not dropped silently
    assert _refused(lambda: continued(_db(sync_stream=(_stream(1, 3, 1),)),
                                      _db(sync_stream=(_stream(2, 3, 1, (1, 3), (7,), ()),))))
    assert continued(_db(sync_stream=(good_before,)), _db(sync_stream=(_stream(3, 3, 1, (2, 3), (1,), (3,)),)))


def test_continued_relabels_only_the_checkpoints_of_the_old_epoch() -> None:
    def cp(cid: str, epoch: int) -> SyncCheckpoint:
        return SyncCheckpoint(cid, cid.split("|")[0], "s", OWNER, epoch, 0, 1)

    before = _db(sync_stream=(_stream(2, 0, 1),), sync_checkpoint=(cp("a|s", 2), cp("b|s", 1)))
    after = _db(sync_stream=(_stream(3, 0, 1, (2, 0)),), sync_checkpoint=(cp("a|s", 3), cp("b|s", 1)))
    assert continued(before, after)
    all_moved = _db(sync_stream=(_stream(3, 0, 1, (2, 0)),), sync_checkpoint=(cp("a|s", 3), cp("b|s", 3)))
    assert not continued(before, all_moved)


# --- deduplicated, retained, epoch_reset ------------------------------------------------------------------


def test_deduplicated_needs_the_same_payload_and_seq() -> None:
    held = _db(sync_event=(_event(1),))
    assert deduplicated(held, "s", "k1", "{}", _ok(held, 1))
    assert not deduplicated(held, "s", "k1", '{"a":1}', _ok(held, 1))  # same seq, another payload
    assert not deduplicated(held, "s", "k1", "{}", _ok(held, 2))
    assert not deduplicated(_db(), "s", "k1", "{}", _ok(_db(), 1))


def test_retained_of_a_key_never_written_is_none() -> None:
    assert retained(_db(), "s", "k1") is None
    assert retained(_db(sync_event=(_event(1, key="k2"),)), "s", "k1") is None
    assert retained(_db(sync_event=(_event(1),)), "s", "k1") == _event(1)


def test_epoch_reset_needs_the_new_epoch() -> None:
    before = _db(sync_stream=(_stream(1, 2, 1),), sync_event=(_event(1), _event(2, key="k2")))
    assert epoch_reset(before, "s", _ok(_db(sync_stream=(_stream(2, 2, 3),))))
    assert not epoch_reset(before, "s", _ok(_db(sync_stream=(_stream(1, 2, 3),))))  # events gone, epoch kept
    assert not epoch_reset(before, "s", _ok(_db(sync_stream=(_stream(2, 2, 1),))))  # floor not past the head


# --- outbox_failed -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("before", "after", "wrote", "ok"), [
    (None, _outbox("pending", 1, 1000 + 5000), True, False),  # no row before
    (_outbox(), _outbox(), False, False),  # a failure of a pending row is not a no-op
    (_outbox("sent"), _outbox("sent"), False, True),
    (_outbox(), _outbox("pending", 1, 1000 + 5000), True, True),
    (_outbox(), _outbox("pending", 1, 1000 + 4000), True, False),  # retry time not now + retry_after
    (_outbox("pending", 4), _outbox("pending", 5, 1000 + 5000), True, False),  # the last attempt must fail it
])
def test_outbox_failed_cases(before: BridgeOutbox | None, after: BridgeOutbox, wrote: bool, ok: bool) -> None:
    db = _db(bridge_outbox=(before,) if before else ())
    delta = (TableDelta("bridge_outbox", (), (after,)),) if wrote else ()
    assert outbox_failed(db, _ctx("bridge.mark_sent"), "o1", 5, _ok(_db(bridge_outbox=(after,)), None, *delta)) is ok


# --- presence_written --------------------------------------------------------------------------------------


def _presence(status: str, last_seen: int, expires_at: int, reason: str | None) -> SessionPresence:
    return SessionPresence("p1", OWNER, "d", "n", status, "eu", last_seen, expires_at, reason)


SIGNAL = PresenceSignal("p1", OWNER, "online", "", 1000)


@pytest.mark.parametrize(("row", "signals", "ok"), [
    (_presence("online", 1000, 1000, None), (SIGNAL,), True),  # expiring the instant it is seen: allowed
    (_presence("online", 1000, 999, None), (SIGNAL,), False),
    (_presence("online", 1000, 31_000, None), (), False),  # a new session without its signal
    (_presence("online", 1000, 31_000, "ttl_expired"), (SIGNAL,), False),  # online with an offline reason
])
def test_presence_written_cases(row: SessionPresence, signals: tuple[PresenceSignal, ...], ok: bool) -> None:
    result = _ok(_db(session_presence=(row,)), None, TableDelta("session_presence", (), (row,)),
                 TableDelta("presence_signal", (), signals))
    assert presence_written(_db(), _ctx("presence.write"), "p1", "online", result) is ok


# --- state_violations: judged with the policy's attempt limit ---------------------------------------------


def test_state_violations_reads_the_policys_attempt_limit() -> None:
    pending = _db(bridge_outbox=(_outbox("pending", 4),))
    ctx = _ctx("bridge.mark_sent")
    step = _ok(_db(bridge_outbox=(_outbox("pending", 5),)), None, TableDelta("bridge_outbox", (), (_outbox(),)))
    assert state_violations(pending, ctx, step) == [("BRIDGE-1", "outbox o1: pending attempts 5")]
    fine = _ok(_db(bridge_outbox=(_outbox("pending", 4, 200),)), None, TableDelta("bridge_outbox", (), (_outbox(),)))
    assert state_violations(pending, ctx, fine) == []


def test_a_wrong_no_op_of_publish_or_open_breaks_the_reducers_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """PROV-1 and ASSIGN-2's contracts judge a no-op against the call, not only against the row: a
    publish that changes the ad, or an open of another request under a taken id, accepted as a no-op
    (planted: the no-op step holds whenever the row exists) is a contract violation -- not a silent loss
    of the new content (the republish) or of the idempotency_conflict (the open)."""
    import icontract

    import spec.reducers as red
    from spec.values import ProviderCapability

    def any_row_is_a_noop(steps: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(red.NoOp(s.name, lambda a: a.old is not None) if isinstance(s, red.NoOp) else s for s in steps)

    prov = ProviderCapability("p1", OWNER, "{}", EMPTY_HASH, (5000,), 0, "active", 1, 0)
    db = _db(provider_capability=(prov,))
    ctx = _ctx("provider.publish")
    assert red.publish_provider_capability(db, ctx, "p1", "{}", (5000,), 0, "active").noop  # the same ad: right
    monkeypatch.setattr(red, "PUBLISH_PROVIDER_CAPABILITY", any_row_is_a_noop(red.PUBLISH_PROVIDER_CAPABILITY))
    with pytest.raises(icontract.ViolationError, match="PROV-1"):
        red.publish_provider_capability(db, ctx, "p1", '{"gpu":1}', (5000,), 0, "active")

    row = ComputeAssignment("r1", OWNER, 5000, "{}", EMPTY_HASH, None, None, "open", None, 1, 0, 0)
    db = _db(compute_assignment=(row,))
    ctx = _ctx("compute.request")
    assert red.open_compute_assignment(db, ctx, "r1", 5000, "{}").noop  # a retry: right
    monkeypatch.setattr(red, "OPEN_COMPUTE_ASSIGNMENT", any_row_is_a_noop(red.OPEN_COMPUTE_ASSIGNMENT))
    with pytest.raises(icontract.ViolationError, match="ASSIGN-2"):
        red.open_compute_assignment(db, ctx, "r1", 5000, '{"other":1}')


def test_a_wrong_no_op_of_enqueue_breaks_the_reducers_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """BRIDGE-1/BRIDGE-3's enqueue contract judges a no-op against the call: other content under a taken
    outbox id accepted as a retry (planted: the no-op step holds whenever the row exists) is a contract
    violation, not a silently dropped Nostr event."""
    import icontract

    import spec.reducers as red

    db = DbState()
    ctx = _ctx("bridge.enqueue")
    first = red.enqueue_bridge_event(db, ctx, "o1", "src", 30078, '[["t","x"]]', "hello")
    assert isinstance(first, Ok)
    db = first.state
    assert red.enqueue_bridge_event(db, ctx, "o1", "src", 30078, '[["t","x"]]', "hello").noop  # a retry: right
    steps = tuple(red.NoOp(s.name, lambda a: a.old is not None) if isinstance(s, red.NoOp) else s
                  for s in red.ENQUEUE_BRIDGE_EVENT)
    monkeypatch.setattr(red, "ENQUEUE_BRIDGE_EVENT", steps)
    with pytest.raises(icontract.ViolationError, match="BRIDGE-1"):
        red.enqueue_bridge_event(db, ctx, "o1", "src", 30078, '[["t","x"]]', "goodbye")


def test_a_wrong_no_op_of_upsert_presence_breaks_the_reducers_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRES-2's upsert contract judges a no-op too: an upsert is a no-op only when the row already is what the
    call writes; a status change (or a refresh) accepted as a no-op (planted: the effect writes nothing when
    the row exists) is a contract violation, not a lost presence change without its signal."""
    import icontract

    import spec.reducers as red

    ctx = _ctx("presence.write")
    first = red.upsert_presence(DbState(), ctx, "p1", "d", "n", "online", "eu", 30_000)
    assert isinstance(first, Ok)
    db = first.state
    assert red.upsert_presence(db, ctx, "p1", "d", "n", "online", "eu", 30_000).noop  # the same row: right
    real = red._upsert_presence
    monkeypatch.setattr(red, "_upsert_presence", lambda a: Ok(a.db, None, Delta()) if a.old is not None else real(a))
    with pytest.raises(icontract.ViolationError, match="PRES-2"):
        red.upsert_presence(db, ctx, "p1", "d", "n", "away", "eu", 30_000)
