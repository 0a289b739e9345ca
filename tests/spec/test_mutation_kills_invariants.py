"""Negative controls for spec/invariants.py's transition, recovery and call checks (docs/mutation.md).

The sampled mutation run of ``spec/invariants.py`` (seed 9) left checks alive that the suite only ever saw
*passing* on correct runs.  Each case below is a state pair or a call outcome written out by hand, broken
in one way (or deliberately not broken), with the exact violations -- id and message -- the check must
give; the expectations are literals, never computed by the checks under test.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from spec.errors import ErrorCode
from spec.invariants import Violation, check_call, check_recovery, check_state, check_transition, seqs_contiguous
from spec.state import DbState
from spec.values import BridgeOutbox, ComputeAssignment, ProviderCapability, Row, SyncCheckpoint, SyncEvent, SyncStream

OWNER = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
EMPTY_HASH = "sha256:" + hashlib.sha256(b"{}").hexdigest()
EVENT_ID = "e" * 64


def _db(version_floor: int = 1, **tables: tuple[Row, ...]) -> DbState:
    base = dict(DbState().tables)
    base.update(tables)
    return DbState(base, 1, version_floor)


def _stream(head: int = 1, floor: int = 1, epoch: int = 1) -> SyncStream:
    return SyncStream(stream_id="s", stream_class="default", epoch=epoch, continues_epoch=0, continues_seq=0,
                      head_seq=head, floor_seq=floor, replay_budget=100, created_at=1, updated_at=2,
                      earlier_epochs=(), earlier_seqs=())


def _event(seq: int = 1, key: str = "k1", payload: str = "{}", digest: str = EMPTY_HASH) -> SyncEvent:
    return SyncEvent(stream_id="s", epoch=1, seq=seq, idempotency_key=key, payload_hash=digest, payload=payload,
                     producer=OWNER, committed_at=seq, tx_offset=seq)


def _cp(last: int, owner: str = OWNER, updated_at: int = 1) -> SyncCheckpoint:
    return SyncCheckpoint("c|s", "c", "s", owner, 1, last, updated_at)


def _assignment(rid: str, status: str, version: int = 1, provider: tuple[str | None, str | None] = (None, None),
                result: str | None = None) -> ComputeAssignment:
    return ComputeAssignment(rid, OWNER, 5000, "{}", EMPTY_HASH, provider[0], provider[1], status, result, version,
                             0, version)


def _provider(status: str = "active", version: int = 1, price: int = 0) -> ProviderCapability:
    return ProviderCapability("p", OTHER, "{}", EMPTY_HASH, (5000,), price, status, version, 1)


def _outbox(status: str = "pending", attempts: int = 0, relays: tuple[str, ...] = (), next_at: int = 100,
            updated_at: int = 100) -> BridgeOutbox:
    return BridgeOutbox("o1", "src", 30078, "[]", "hi", "sha256:" + OWNER, status, attempts, next_at, None,
                        EVENT_ID if status == "sent" else None, relays, 100, updated_at)


# --- check_transition: each rule broken once, and the neighbouring legal step ----------------------------

RUNNING = _assignment("r2", "running", 2, ("p", OTHER))
TRANSITION_CASES: list[tuple[str, DbState, DbState, list[Violation]]] = [
    ("stream deleted", _db(sync_stream=(_stream(),)), _db(), [("SEQ-3", "stream s went backwards")]),
    ("stream kept", _db(sync_stream=(_stream(),)), _db(sync_stream=(_stream(2),)), []),
    ("event rewritten", _db(sync_event=(_event(),)), _db(sync_event=(replace(_event(), committed_at=9),)),
     [("SEQ-3", "event s/1 changed")]),
    ("checkpoint decreased", _db(sync_checkpoint=(_cp(3),)), _db(sync_checkpoint=(_cp(2),)),
     [("CKPT-2", "checkpoint c|s decreased or changed owner")]),
    ("checkpoint changed owner", _db(sync_checkpoint=(_cp(3),)), _db(sync_checkpoint=(_cp(3, OTHER),)),
     [("CKPT-2", "checkpoint c|s decreased or changed owner")]),
    ("checkpoint touched, same seq", _db(sync_checkpoint=(_cp(3),)), _db(sync_checkpoint=(_cp(3, updated_at=7),)),
     []),
    # the first assignment is unchanged (skipped), the second takes an edge the table lacks: still checked
    ("second assignment jumps",
     _db(compute_assignment=(_assignment("r1", "open"), RUNNING)),
     _db(compute_assignment=(_assignment("r1", "open"), replace(RUNNING, status="open", version=3))),
     [("ASSIGN-1", "assignment r2: running v2 -> open v3")]),
    ("provider swapped while running",
     _db(compute_assignment=(RUNNING,)),
     _db(compute_assignment=(replace(RUNNING, status="completed", version=3, provider_id="q"),)),
     [("ASSIGN-3", "assignment r2 changed its provider after the assign edge")]),
    ("assigned to a withdrawn provider of the right kind",
     _db(provider_capability=(_provider("withdrawn"),), compute_assignment=(_assignment("r1", "open"),)),
     _db(provider_capability=(_provider("withdrawn"),),
         compute_assignment=(_assignment("r1", "assigned", 2, ("p", OTHER)),)),
     [("ASSIGN-3", "assignment r1 assigned to p: provider " + repr(_provider("withdrawn")))]),
    ("assigned to an active provider",
     _db(provider_capability=(_provider(),), compute_assignment=(_assignment("r1", "open"),)),
     _db(provider_capability=(_provider(),), compute_assignment=(_assignment("r1", "assigned", 2, ("p", OTHER)),)),
     []),
    ("sent row gains a relay", _db(bridge_outbox=(_outbox("sent", 1, ("wss://a",)),)),
     _db(bridge_outbox=(_outbox("sent", 1, ("wss://a", "wss://b"), updated_at=200),)), []),
    ("sent row loses a relay", _db(bridge_outbox=(_outbox("sent", 1, ("wss://a",)),)),
     _db(bridge_outbox=(_outbox("sent", 1),)), [("BRIDGE-2", "outbox o1 changed after sent or attempts decreased")]),
    ("sent row back to pending", _db(bridge_outbox=(_outbox("sent", 1),)),
     _db(bridge_outbox=(_outbox("pending", 1),)),
     [("BRIDGE-2", "outbox o1 changed after sent or attempts decreased")]),
    ("attempts decreased", _db(bridge_outbox=(_outbox("pending", 2),)), _db(bridge_outbox=(_outbox("pending", 1),)),
     [("BRIDGE-2", "outbox o1 changed after sent or attempts decreased")]),
    ("pending row retried later, same attempts", _db(bridge_outbox=(_outbox("pending", 2),)),
     _db(bridge_outbox=(_outbox("pending", 2, next_at=500),)), []),
    ("provider version bumped, same content", _db(provider_capability=(_provider(),)),
     _db(provider_capability=(_provider(version=2),)), [("PROV-1", "provider p: v1 -> v2, same content: True")]),
    ("provider price changed, version kept", _db(provider_capability=(_provider(),)),
     _db(provider_capability=(_provider(price=7),)), [("PROV-1", "provider p: v1 -> v1, same content: False")]),
    ("provider price changed, version bumped", _db(provider_capability=(_provider(),)),
     _db(provider_capability=(_provider(version=2, price=7),)), []),
]


@pytest.mark.parametrize(("before", "after", "violations"), [c[1:] for c in TRANSITION_CASES],
                         ids=[c[0] for c in TRANSITION_CASES])
def test_check_transition_cases(before: DbState, after: DbState, violations: list[Violation]) -> None:
    assert check_transition(before, after) == violations


# --- check_state: the statuses that name a provider, and an assignment's result --------------------------


@pytest.mark.parametrize(("row", "violations"), [
    (_assignment("r", "completed", 2), [("ASSIGN-2", "assignment r: completed v2")]),
    (_assignment("r", "failed", 2), [("ASSIGN-2", "assignment r: failed v2")]),
    (_assignment("r", "completed", 2, ("p", OTHER), result="{}"), []),
    (_assignment("r", "completed", 2, ("p", OTHER), result='{"b": 1}'), [("HASH-1", "assignment r")]),
])
def test_check_state_assignment_cases(row: ComputeAssignment, violations: list[Violation]) -> None:
    assert check_state(_db(compute_assignment=(row,)), 5) == violations


# --- check_recovery: VER-1's message says whether the content was kept ---------------------------------


def test_check_recovery_names_a_version_not_moved_past_the_lost_suffix() -> None:
    before = _db(1, provider_capability=(_provider(version=3),))
    # the floor moved past 3 + 2, but the provider's version did not
    stuck = _db(10, provider_capability=(_provider(version=3),))
    assert check_recovery(before, stuck, 2) == [("VER-1", "recovery of p: v3 -> v3, content kept: True")]
    changed = _db(10, provider_capability=(_provider(version=6, price=7),))
    assert check_recovery(before, changed, 2) == [("VER-1", "recovery of p: v3 -> v6, content kept: False")]
    assert check_recovery(before, _db(10, provider_capability=(_provider(version=6),)), 2) == []


# --- check_call: appends (AUTH-2, IDEM-2/3, SEQ-4) ---------------------------------------------------------

SCOPED = frozenset({"sync.append"})
HELD = _db(sync_stream=(_stream(),), sync_event=(_event(),))
APPEND_CASES: list[tuple[str, frozenset[str], bool, tuple[object, ...], bool, int | None, ErrorCode | None, bool,
                         list[Violation]]] = [
    # (name, scopes, granted, args, ok, ret, error, wrote, violations)
    ("no scope, refused right", frozenset(), True, ("s", "k2", "{}"), False, None, ErrorCode.MISSING_SCOPE, False, []),
    ("no scope, accepted", frozenset(), True, ("s", "k2", "{}"), True, 2, None, True,
     [("AUTH-2", "append without scope gave None")]),
    ("no grant, refused right", SCOPED, False, ("s", "k2", "{}"), False, None, ErrorCode.FORBIDDEN_STREAM, False, []),
    ("no grant, accepted", SCOPED, False, ("s", "k2", "{}"), True, 2, None, True,
     [("AUTH-2", "append without grant gave None")]),
    ("retry answered with the first seq", SCOPED, True, ("s", "k1", "{}"), True, 1, None, False, []),
    ("retry answered with another seq", SCOPED, True, ("s", "k1", "{}"), True, 5, None, False,
     [("IDEM-2", "retry of s/k1 gave ok=True ret=5 wrote=False")]),
    ("retry refused", SCOPED, True, ("s", "k1", "{}"), False, None, ErrorCode.FORBIDDEN, False,
     [("IDEM-2", "retry of s/k1 gave ok=False ret=None wrote=False")]),
    ("other payload under the key, refused right", SCOPED, True, ("s", "k1", '{"a":1}'), False, None,
     ErrorCode.IDEMPOTENCY_CONFLICT, False, []),
    ("other payload under the key, accepted", SCOPED, True, ("s", "k1", '{"a":1}'), True, 2, None, True,
     [("IDEM-3", "different payload under s/k1 gave None")]),
    ("new key appended at head + 1", SCOPED, True, ("s", "k2", "{}"), True, 2, None, True, []),
    ("new key appended past head + 1", SCOPED, True, ("s", "k2", "{}"), True, 5, None, True,
     [("SEQ-4", "append to s returned 5, head was 1")]),
]


@pytest.mark.parametrize(("scopes", "granted", "args", "ok", "ret", "error", "wrote", "violations"),
                         [c[1:] for c in APPEND_CASES], ids=[c[0] for c in APPEND_CASES])
def test_check_call_append_cases(scopes: frozenset[str], granted: bool, args: tuple[object, ...], ok: bool,
                                 ret: int | None, error: ErrorCode | None, wrote: bool,
                                 violations: list[Violation]) -> None:
    assert check_call(HELD, scopes, granted, "append_sync_event", args, ok, ret, error, wrote, HELD, OWNER) \
        == violations


# --- check_call: ASSIGN-4 (who may take an edge) -----------------------------------------------------------

OPEN = _db(compute_assignment=(_assignment("r1", "open"),))


@pytest.mark.parametrize(("scopes", "ok", "error", "after", "violations"), [
    # a caller with no role refused: right; the dispatcher refused: wrong; a caller with no role served: wrong
    (frozenset(), False, ErrorCode.FORBIDDEN, OPEN, []),
    (frozenset({"compute.assign"}), False, ErrorCode.FORBIDDEN, OPEN,
     [("ASSIGN-4", "open -> assigned of r1 refused to a caller holding ['dispatcher']")]),
    (frozenset(), True, None, _db(compute_assignment=(_assignment("r1", "assigned", 2, ("p", OTHER)),)),
     [("ASSIGN-4", "open -> assigned of r1 taken by a caller holding [], not one of ['dispatcher']")]),
])
def test_check_call_assignment_roles(scopes: frozenset[str], ok: bool, error: ErrorCode | None, after: DbState,
                                     violations: list[Violation]) -> None:
    args = ("r1", 1, "assigned", "p", None)
    assert check_call(OPEN, scopes, True, "update_compute_assignment", args, ok, None, error, ok, after, OTHER) \
        == violations


# --- check_call: BRIDGE-3 (the outbox reducers) ------------------------------------------------------------

SENT = _db(bridge_outbox=(_outbox("sent", 1, ("wss://a",)),))
OUTBOX_CASES: list[tuple[str, DbState, str, tuple[object, ...], bool, ErrorCode | None, bool, DbState,
                         list[Violation]]] = [
    # (name, before, reducer, args, ok, error, wrote, after, violations)
    ("enqueue due at once", _db(), "enqueue_bridge_event", ("o1", "src"), True, None, True,
     _db(bridge_outbox=(_outbox(),)), []),
    ("enqueue due later", _db(), "enqueue_bridge_event", ("o1", "src"), True, None, True,
     _db(bridge_outbox=(_outbox(next_at=200),)), [("BRIDGE-3", "new outbox row o1 starts with next_attempt_at 200")]),
    ("repeated mark, nothing new", SENT, "mark_bridge_event_sent", ("o1", EVENT_ID, ("wss://a",)), True, None, False,
     SENT, []),
    ("repeated mark refused", SENT, "mark_bridge_event_sent", ("o1", EVENT_ID, ("wss://a",)), False,
     ErrorCode.FORBIDDEN, False, SENT,
     [("BRIDGE-3", "repeated mark of o1: ok=False wrote=False, relays ('wss://a',) + ('wss://a',) -> "
                   "('wss://a',)")]),
    ("repeated mark, new relay kept", SENT, "mark_bridge_event_sent", ("o1", EVENT_ID, ("wss://b",)), True, None,
     True, _db(bridge_outbox=(_outbox("sent", 1, ("wss://a", "wss://b")),)), []),
    ("repeated mark, new relay lost", SENT, "mark_bridge_event_sent", ("o1", EVENT_ID, ("wss://b",)), True, None,
     True, _db(bridge_outbox=(_outbox("sent", 1, ("wss://a", "wss://c")),)),
     [("BRIDGE-3", "repeated mark of o1: ok=True wrote=True, relays ('wss://a',) + ('wss://b',) -> "
                   "('wss://a', 'wss://c')")]),
    ("mark with another event id accepted", SENT, "mark_bridge_event_sent", ("o1", "f" * 64, ("wss://a",)), True,
     None, False, SENT, [("BRIDGE-3", f"o1 sent as {EVENT_ID} accepted another event id")]),
    ("mark with another event id refused", SENT, "mark_bridge_event_sent", ("o1", "f" * 64, ("wss://a",)), False,
     ErrorCode.INVALID_ARGUMENT, False, SENT, []),
]


@pytest.mark.parametrize(("before", "reducer", "args", "ok", "error", "wrote", "after", "violations"),
                         [c[1:] for c in OUTBOX_CASES], ids=[c[0] for c in OUTBOX_CASES])
def test_check_call_outbox_cases(before: DbState, reducer: str, args: tuple[object, ...], ok: bool,
                                 error: ErrorCode | None, wrote: bool, after: DbState,
                                 violations: list[Violation]) -> None:
    scopes = frozenset({"bridge.write"})
    assert check_call(before, scopes, True, reducer, args, ok, None, error, wrote, after, OWNER) == violations


@pytest.mark.parametrize(("seqs", "floor", "head", "contiguous"), [
    ((3, 4, 5), 3, 5, True),
    ((), 3, 2, True),          # everything compacted: floor is head + 1, no seq retained
    ((), 1, 0, True),          # a new stream
    ((3, 5), 3, 5, False),     # a hole
    ((4, 5), 3, 5, False),     # the floor's event missing
    ((3, 4), 3, 5, False),     # the head's event missing
    ((1,), 1, 0, False),       # an event past the head
    ((4, 3, 5), 3, 5, False),  # out of order
])
def test_seqs_contiguous_table_SEQ_1(seqs: tuple[int, ...], floor: int, head: int, contiguous: bool) -> None:
    # decorated (icontract), so only `./run mutate --icontract` mutates it; its one caller is CrossHair's target list
    assert seqs_contiguous(seqs, floor, head) is contiguous
