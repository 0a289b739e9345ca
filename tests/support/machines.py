"""The Hypothesis state machines over the model.

* :class:`ModuleMachine` drives the reducers directly on a :class:`~spec.state.DbState` with
  callers of random scopes and grants, colliding ids from bundles, and checks the state, the
  transition and the call invariants after every step.
* :class:`SystemMachine` drives :class:`~spec.system.System`: three clients (confirmed, not
  confirmed, and a narrowly granted watcher subscribed to ``SELECT * FROM *``) over a network
  that drops connections, loses and duplicates frames, and a server that crashes, restarts,
  lags on durability, compacts and resets epochs.  Every trace invariant is checked after every
  step; ``heal`` quiesces the system and checks convergence.

Both reach the model through module attributes at run time (``spec.system.System``), so the
mutation harness can swap a mutated module in.
"""

from __future__ import annotations

import importlib
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from spec.auth import Claims, stream_granted
from spec.errors import SyncError
from spec.invariants import (
    check_call,
    check_convergence,
    check_retention,
    check_state,
    check_sweep,
    check_transition,
    stale_reasons,
)
from spec.policy import Policy, StreamClass
from support.reads import ReaderViews, ReadRules

STREAMS = ("s.a1", "s.a2", "s.b1")
KEYS = ("k1", "k2", "k3", "k4", "k5")
PAYLOADS = ('{"v":1}', '{"v":2}', "[1,2]", '{"b":1,"a":2}', '"x"')
POLICY = Policy(default_class=StreamClass("default", retain_count=2, replay_budget=6),
                presence_min_ttl_ms=1000, presence_max_ttl_ms=5000, bridge_max_attempts=3,
                retain_offline_presence_us=2_000_000, retain_terminal_assignment_us=3_000_000,
                retain_sent_outbox_us=3_000_000, retain_failed_outbox_us=4_000_000)
"""Windows short enough that the machines' clocks pass them (retention of every table is exercised)."""
TIGHT_BUDGET = Policy(default_class=StreamClass("default", retain_count=2, replay_budget=0))
"""A replay budget of no event: the resume rule's pages straddle it (``resume_decision``, ADR-0042)."""
ALL_SCOPES = frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write",
                        "provider.publish", "compute.request", "compute.assign", "compute.execute",
                        "bridge.enqueue", "bridge.mark_sent", "sync.admin"})
IDENTITIES = ("a" * 64, "b" * 64, "c" * 64)


def _mod(name: str) -> Any:
    return importlib.import_module(name)


# --- module machine ------------------------------------------------------------------------------

_FULL_A = Claims(IDENTITIES[0], ALL_SCOPES, ("s.*",))
_FULL_B = Claims(IDENTITIES[1], ALL_SCOPES, ("s.*",))
CALLERS = (
    _FULL_A, _FULL_A, _FULL_A, _FULL_A, _FULL_B, _FULL_B,
    Claims(IDENTITIES[2], frozenset(), ("s.*",)),  # no scopes at all
    Claims(IDENTITIES[2], ALL_SCOPES, ("s.a*",)),  # a narrow stream grant
    Claims(IDENTITIES[0], ALL_SCOPES - {"sync.append", "sync.checkpoint.write"}, ()),  # no grants
    Claims(IDENTITIES[2], frozenset({"compute.request", "bridge.enqueue"}), ()),
    Claims(IDENTITIES[1], frozenset({"compute.execute", "bridge.mark_sent", "provider.publish"}), ()),
)
claims_st = st.sampled_from(CALLERS)
_BIG = '"' + "x" * (256 * 1024) + '"'
_HEX0 = "sha256:" + "0" * 64
BAD_CALLS: tuple[tuple[str, tuple[Any, ...], str], ...] = (
    # (reducer, args, the error a fully authorized caller gets) -- one row per argument check
    ("append_sync_event", ("s.a1", "bad key!", "{}", None, None), "invalid_argument"),
    ("append_sync_event", ("s.a1", "kx", "{bad", None, None), "non_canonical_payload"),
    ("append_sync_event", ("s.a1", "kx", _BIG, None, None), "payload_too_large"),
    ("append_sync_event", ("s.a1", "kx", "{}", _HEX0, None), "payload_hash_mismatch"),
    ("append_sync_event", ("s.a1", "kx"), "invalid_argument"),  # arity
    ("append_sync_event", (1, "kx", "{}", None, None), "invalid_argument"),  # type
    ("ack_checkpoint", ("bad id!", "s.a1", 0, 0), "invalid_argument"),
    ("ack_checkpoint", ("d9", "s.a1", 0, 10**6), "checkpoint_ahead_of_head"),
    ("upsert_presence", ("p9", "dev", "node", "online", "eu", 10), "invalid_argument"),  # ttl below the minimum
    ("upsert_presence", ("p9", "dev", "node", "busy", "eu", 1000), "invalid_argument"),
    ("upsert_presence", ("p9", "dev", "node", "online", "bad region!", 1000), "invalid_argument"),
    ("publish_provider_capability", ("prov9", "{bad", (5000,), 0, "active"), "non_canonical_payload"),
    ("publish_provider_capability", ("prov9", "{}", (42,), 0, "active"), "invalid_argument"),
    ("publish_provider_capability", ("prov9", "{}", (5000,), 0, "gone"), "invalid_argument"),
    ("open_compute_assignment", ("r9", 42, "{}"), "invalid_argument"),
    ("open_compute_assignment", ("r9", 5000, "{bad"), "non_canonical_payload"),
    ("update_compute_assignment", ("r9", 1, "completed", None, "{bad"), "non_canonical_payload"),
    ("update_compute_assignment", ("r9", 1, "assigned", None, None), "invalid_argument"),
    ("update_compute_assignment", ("r9", 1, "running", None, "{}"), "invalid_argument"),
    ("update_compute_assignment", ("r9", 1, "done", None, None), "invalid_argument"),
    ("enqueue_bridge_event", ("o9", "src", 30078, "{bad", "x"), "non_canonical_payload"),
    ("enqueue_bridge_event", ("o9", "src", 30078, "[1]", "x"), "invalid_argument"),
    ("enqueue_bridge_event", ("o9", "bad source!", 30078, "[]", "x"), "invalid_argument"),
    ("mark_bridge_event_sent", ("o9", "not hex", ()), "invalid_argument"),
    ("mark_bridge_event_sent", ("o9", "1" * 64, ("",)), "invalid_argument"),
    ("record_bridge_failure", ("o9", "", 0), "invalid_argument"),
    ("record_bridge_failure", ("o9", "x", 10**12), "invalid_argument"),
    ("publish_stream_signal", ("s.a1", "shout", "{}"), "invalid_argument"),
    ("publish_stream_signal", ("s.a1", "typing", "{bad"), "non_canonical_payload"),
    ("publish_stream_signal", ("s.a1", "typing", _BIG), "payload_too_large"),
    ("reset_stream_epoch", ("bad id!",), "invalid_argument"),
    ("no_such_reducer", (), "no_such_reducer"),
    # every id argument (a stream id the grant `s.*` still matches, so the id check decides)
    ("append_sync_event", ("s.bad id!", "kx", "{}", None, None), "invalid_argument"),
    ("ack_checkpoint", ("d9", "s.bad id!", 0, 0), "invalid_argument"),
    ("upsert_presence", ("bad id!", "dev", "node", "online", "eu", 1000), "invalid_argument"),
    ("upsert_presence", ("p9", "bad id!", "node", "online", "eu", 1000), "invalid_argument"),
    ("upsert_presence", ("p9", "dev", "bad id!", "online", "eu", 1000), "invalid_argument"),
    ("publish_provider_capability", ("bad id!", "{}", (5000,), 0, "active"), "invalid_argument"),
    ("open_compute_assignment", ("bad id!", 5000, "{}"), "invalid_argument"),
    ("update_compute_assignment", ("bad id!", 1, "cancelled", None, None), "invalid_argument"),
    ("update_compute_assignment", ("r9", 1, "assigned", "bad id!", None), "invalid_argument"),
    ("enqueue_bridge_event", ("bad id!", "src", 30078, "[]", "x"), "invalid_argument"),
    ("mark_bridge_event_sent", ("bad id!", "1" * 64, ()), "invalid_argument"),
    ("record_bridge_failure", ("bad id!", "x", 0), "invalid_argument"),
    ("publish_stream_signal", ("s.bad id!", "typing", "{}"), "invalid_argument"),
    ("reset_stream_epoch", ("s.none",), "invalid_argument"),  # no such stream (the machines never create it)
)
"""Malformed calls and the error each must get (written by hand from the reducers' documented checks)."""
PINNED = Claims(IDENTITIES[0], ALL_SCOPES, ("s.*",), session_id="p1")
"""A token pinned to session ``p1`` (``oa_session_id``): it may upsert that session only."""

"""Mostly fully authorized callers (so state builds up), sometimes arbitrary ones."""


class ModuleMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.db = _mod("spec.state").DbState()
        self.now = 1_000_000
        self.offset = 0
        self.violations: list[tuple[str, str]] = []
        self.sent_acks: list[tuple[Claims, tuple[Any, ...]]] = []
        self.swept = False

    def _run(self, claims: Claims, reducer: str, args: tuple[Any, ...]) -> Any:
        red = _mod("spec.reducers")
        before = self.db
        ctx = red.CallContext(claims, self.now, self.offset + 1, POLICY)
        out = red.call(before, ctx, reducer, args)
        ok = isinstance(out, red.Ok)
        after = out.state if ok else before
        wrote = ok and not out.noop
        granted = not args or not isinstance(args[0], str) or stream_granted(claims, args[0])
        self.violations += check_call(before, claims.scopes, granted, reducer, args, ok,
                                      out.ret if ok else None, None if ok else out.error.code, wrote, after,
                                      claims.identity)
        if wrote:
            self.offset += 1
            self.violations += check_transition(before, after)
        self.db = after
        self.violations += check_state(self.db, POLICY.bridge_max_attempts)
        return out

    @initialize(target=keys)
    def seed_keys(self) -> str:
        return "k1"

    @rule(target=keys, k=st.sampled_from(KEYS))
    def new_key(self, k: str) -> str:
        return k

    @rule(c=claims_st, s=st.sampled_from(STREAMS), k=keys, p=st.sampled_from(PAYLOADS),
          with_hash=st.booleans(), expect=st.one_of(st.none(), st.integers(-1, 2)))
    def append(self, c: Claims, s: str, k: str, p: str, with_hash: bool, expect: int | None) -> None:
        from spec.canonical import canonicalize, payload_hash
        from spec.reducers import virtual_stream
        h = payload_hash(canonicalize(p)) if with_hash else None
        exp = None if expect is None else virtual_stream(self.db, s)[1] + 1 + expect
        self._run(c, "append_sync_event", (s, k, p, h, exp))

    @rule(c=claims_st, s=st.sampled_from(STREAMS), client=st.sampled_from(["d1", "d2"]),
          delta=st.integers(-3, 1), epoch_delta=st.sampled_from([0, 0, 0, -1]))
    def ack(self, c: Claims, s: str, client: str, delta: int, epoch_delta: int) -> None:
        from spec.reducers import virtual_stream
        epoch, head, _ = virtual_stream(self.db, s)
        args = (client, s, epoch + epoch_delta, max(0, head + delta))
        self.sent_acks.append((c, args))
        self._run(c, "ack_checkpoint", args)

    @rule(c=claims_st, s=st.sampled_from(STREAMS), back=st.integers(1, 3))
    def reordered_acks(self, c: Claims, s: str, back: int) -> None:
        """Two acks of one client cross on the wire: the newer lands first."""
        from spec.reducers import virtual_stream
        epoch, head, _ = virtual_stream(self.db, s)
        self._run(c, "ack_checkpoint", ("d1", s, epoch, head))
        self._run(c, "ack_checkpoint", ("d1", s, epoch, max(0, head - back)))

    @rule(data=st.data())
    def replay_old_ack(self, data: st.DataObject) -> None:
        """Acks reorder under retries: an ack sent earlier arrives again, late."""
        if self.sent_acks:
            c, args = data.draw(st.sampled_from(self.sent_acks))
            self._run(c, "ack_checkpoint", args)

    @rule(s=st.sampled_from(STREAMS), w_delta=st.integers(-4, 2), epoch_delta=st.sampled_from([0, 0, 1]),
          ge=st.booleans(), page=st.sampled_from([None, None, 0, 1, 2, 7]), lt=st.booleans())
    def resume_decision(self, s: str, w_delta: int, epoch_delta: int, ge: bool, page: int | None, lt: bool) -> None:
        """STALE-1 at the module level: the server's stale decision for a resume query equals the
        oracle's, around the floor, the head and the budget (``seq > W``, or ``seq >= W + 1``, which
        for W = 0 is ``seq >= 1`` or, as people write it, ``seq >= 0``: watermark 0 either way); and
        for a page of it, ``seq <= W + page`` (or ``seq < W + page + 1``), whose replay held against
        the budget ends at ``min(head, W + page)`` (ADR-0042) -- under the machine's policy (budget 6)
        and under one of budget 0, which pages of 0 and 1 event straddle (the machine's streams are short)."""
        from spec import query as q
        from spec.reducers import virtual_stream
        epoch, head, floor = virtual_stream(self.db, s)
        w = max(0, (floor - 1 if w_delta < 0 else head) + w_delta)
        bound = f"seq >= {w + 1 if w or w_delta % 2 else 0}" if ge else f"seq > {w}"
        upper = None if page is None else w + page
        if upper is not None:
            bound += f" AND seq < {upper + 1}" if lt else f" AND seq <= {upper}"
        text = f"SELECT * FROM sync_event WHERE stream_id = '{s}' AND epoch = {epoch + epoch_delta} AND {bound}"
        for policy in (POLICY, TIGHT_BUDGET):
            err = _mod("spec.delivery").stale_error(self.db, policy, q.parse(text)[0])
            expected = stale_reasons(epoch, head, floor, policy.class_for(s).replay_budget, epoch + epoch_delta, w,
                                     upper)
            got = tuple(err.details["reasons"]) if err is not None else ()
            if got != expected:
                self.violations.append(("STALE-1", f"{s} from {w} to {upper}: server {got}, oracle {expected}"))
            if not got and floor > w + 1:
                self.violations.append(("STALE-2", f"{s} from {w} accepted past floor {floor}"))

    @rule(c=claims_st, session=st.sampled_from(["p1", "p2"]), status=st.sampled_from(["online", "away", "offline"]),
          ttl=st.sampled_from([500, 1000, 3000]))
    def presence(self, c: Claims, session: str, status: str, ttl: int) -> None:
        self._run(c, "upsert_presence", (session, "dev", "node", status, "eu", ttl))

    @rule(dt=st.sampled_from([0, 500_000, 1_000_000, 3_000_000, 1_234_567]))
    def sweep(self, dt: int) -> None:
        red = _mod("spec.reducers")
        self.now += dt
        ok = red.presence_sweep(self.db, self.now)
        self.violations += check_transition(self.db, ok.state) + check_sweep(ok.state, self.now)
        self.violations += check_state(ok.state, POLICY.bridge_max_attempts)
        self.offset += not ok.noop  # a system transaction that writes takes an offset too
        self.db = ok.state

    @rule(c=claims_st, pid=st.sampled_from(["prov1", "prov2"]), cap=st.sampled_from(PAYLOADS),
          kinds=st.sampled_from([(5000,), (5001, 5000), (5001,), (4000,)]), price=st.sampled_from([0, 10]),
          status=st.sampled_from(["active", "withdrawn"]))
    def provider(self, c: Claims, pid: str, cap: str, kinds: tuple[int, ...], price: int, status: str) -> None:
        self._run(c, "publish_provider_capability", (pid, cap, kinds, price, status))

    @rule(c=claims_st, rid=st.sampled_from(["r1", "r2"]), req=st.sampled_from(PAYLOADS[:2]),
          kind=st.sampled_from([5000, 5000, 5001]))
    def open_assignment(self, c: Claims, rid: str, req: str, kind: int) -> None:
        self._run(c, "open_compute_assignment", (rid, kind, req))

    @rule(c=claims_st, rid=st.sampled_from(["r1", "r2"]),
          status=st.sampled_from(["assigned", "running", "completed", "failed", "cancelled", "open"]),
          vdelta=st.sampled_from([0, 0, 0, 1]), result=st.sampled_from([None, '{"ok":true}']))
    def update_assignment(self, c: Claims, rid: str, status: str, vdelta: int, result: str | None) -> None:
        from spec.values import ComputeAssignment
        row = self.db.find(ComputeAssignment, lambda r: r.request_id == rid)
        version = (row.version if row else 1) + vdelta
        provider = "prov1" if status == "assigned" else None
        self._run(c, "update_compute_assignment", (rid, version, status, provider, result))

    @rule(owner=st.sampled_from([_FULL_A, _FULL_B]), executor=claims_st, rid=st.sampled_from(["r1", "r2"]),
          kind=st.sampled_from([5000, 5001]), steps=st.integers(1, 3))
    def assignment_walk(self, owner: Claims, executor: Claims, rid: str, kind: int, steps: int) -> None:
        """A provider ad, a request and the edges walked in order, the execute edges by a random caller
        (the provider's owner or not): the role and availability rules, which random calls reach rarely."""
        from spec.values import ComputeAssignment
        self._run(owner, "publish_provider_capability", ("prov1", '{"gpu":1}', (5000, 5001), 0, "active"))
        self._run(_FULL_A, "open_compute_assignment", (rid, kind, PAYLOADS[0]))
        for status in ("assigned", "running", "completed")[:steps]:
            row = self.db.find(ComputeAssignment, lambda r: r.request_id == rid)
            self._run(_FULL_A if status == "assigned" else executor, "update_compute_assignment",
                      (rid, row.version if row else 1, status, "prov1" if status == "assigned" else None, None))

    @rule(c=claims_st, oid=st.sampled_from(["o1", "o2"]), kind=st.sampled_from([31990, 30078, 1]),
          content=st.sampled_from(["hello", "bye"]), source=st.sampled_from(["src", "src", "other"]))
    def enqueue(self, c: Claims, oid: str, kind: int, content: str, source: str) -> None:
        self._run(c, "enqueue_bridge_event", (oid, source, kind, '[["t","x"]]', content))

    @rule(c=claims_st, oid=st.sampled_from(["o1", "o2"]), eid=st.sampled_from(["1" * 64, "1" * 64, "2" * 64]),
          relays=st.sampled_from([("wss://r1",), ("wss://r2",), ("wss://r2", "wss://r1"), ()]))
    def mark_sent(self, c: Claims, oid: str, eid: str, relays: tuple[str, ...]) -> None:
        self._run(c, "mark_bridge_event_sent", (oid, eid, relays))

    @rule(c=claims_st, oid=st.sampled_from(["o1", "o2"]), retry=st.sampled_from([0, 1000, 60_000]))
    def bridge_failure(self, c: Claims, oid: str, retry: int) -> None:
        self._run(c, "record_bridge_failure", (oid, "relay down", retry))

    @rule(oid=st.sampled_from(["o1", "o2"]), failures=st.integers(1, 4))
    def bridge_failures(self, oid: str, failures: int) -> None:
        """An outbox row enqueued, then failures recorded one after another, up to one past the policy's
        maximum attempts: the dead letter (BRIDGE-1), which random calls reach rarely -- a row must take
        ``bridge_max_attempts`` failures in a row, each drawn for that row by a caller with the scope."""
        self._run(_FULL_A, "enqueue_bridge_event", (oid, "src", 30078, '[["t","x"]]', "hello"))
        for _ in range(failures):
            self._run(_FULL_A, "record_bridge_failure", (oid, "relay down", 1000))

    @rule(c=claims_st, s=st.sampled_from(STREAMS))
    def signal(self, c: Claims, s: str) -> None:
        self._run(c, "publish_stream_signal", (s, "typing", "{}"))

    @rule(case=st.sampled_from(BAD_CALLS))
    def bad_call(self, case: tuple[str, tuple[Any, ...], str]) -> None:
        """A malformed call (the argument checks of every reducer, which well-formed random calls never
        reach): the outcome must be the error code written next to it by hand (an oracle of its own)."""
        self._bad_call(case)

    @precondition(lambda self: not self.swept)
    @rule()
    def every_check(self) -> None:
        """Once per run, in whatever state the run has reached: every malformed call of ``BAD_CALLS``, a
        token pinned to another session, and a provider named on an edge other than assign.  So every
        step of every reducer's check table decides a call in every run (the reach table's ``check``
        cells, tests/support/reach.py), not only when ``bad_call`` happens to draw its row."""
        from spec.values import ComputeAssignment
        self.swept = True
        for case in BAD_CALLS:
            self._bad_call(case)
        self._expect(PINNED, "upsert_presence", ("p9", "dev", "node", "online", "eu", 1000), "forbidden")
        self._run(_FULL_A, "open_compute_assignment", ("r8", 5000, PAYLOADS[0]))
        row = self.db.find(ComputeAssignment, lambda r: r.request_id == "r8")
        if row is not None and row.status == "open" and row.requester == _FULL_A.identity:
            self._expect(_FULL_A, "update_compute_assignment", ("r8", row.version, "cancelled", "prov8", None),
                         "invalid_argument")

    def _expect(self, claims: Claims, reducer: str, args: tuple[Any, ...], code: str) -> None:
        out = self._run(claims, reducer, args)
        got = out.error.code.value if hasattr(out, "error") else "ok"
        if got != code:
            self.violations.append(("BAD-CALL", f"{reducer}{args!r:.80}: expected {code}, got {got}"))

    def _bad_call(self, case: tuple[str, tuple[Any, ...], str]) -> None:
        from spec.reducers import virtual_stream
        reducer, args, code = case
        if reducer == "ack_checkpoint":  # the current epoch, so only the checked argument is wrong
            args = (*args[:2], virtual_stream(self.db, str(args[1]))[0], *args[3:])
        from spec.schema import REDUCER_BY_NAME
        from spec.values import value_has_type
        rdef = REDUCER_BY_NAME.get(reducer)
        if rdef is None or len(args) != len(rdef.args) or not all(
                value_has_type(v, col.type) for col, v in zip(rdef.args, args, strict=True)):
            # refused by ``call`` itself, before any reducer (check_call presumes a well-formed call)
            red = _mod("spec.reducers")
            out = red.call(self.db, red.CallContext(_FULL_A, self.now, self.offset + 1, POLICY), reducer, args)
        else:
            out = self._run(_FULL_A, reducer, args)
        got = out.error.code.value if hasattr(out, "error") else "ok"
        if got != code:
            self.violations.append(("BAD-CALL", f"{reducer}{args!r:.80}: expected {code}, got {got}"))

    @rule(c=claims_st, s=st.sampled_from(STREAMS))
    def reset(self, c: Claims, s: str) -> None:
        self._run(c, "reset_stream_epoch", (s,))

    @rule()
    def compact(self) -> None:
        red = _mod("spec.reducers")
        ok = red.compact(self.db, self.now, POLICY)
        self.violations += check_transition(self.db, ok.state) + check_retention(self.db, ok.state, self.now, POLICY)
        self.violations += check_state(ok.state, POLICY.bridge_max_attempts)
        self.offset += not ok.noop
        self.db = ok.state

    @invariant()
    def holds(self) -> None:
        assert not self.violations, (sorted({v[0] for v in self.violations}), self.violations[:3])


# --- system machine ------------------------------------------------------------------------------

SYSTEM_CLIENTS = [
    # c0: everything but admin, confirmed reads; the dispatcher (compute.assign) of the compute rules
    ("c0", Claims(IDENTITIES[0], ALL_SCOPES - {"sync.admin"}, ("s.*",), session_id=None), True),
    # c1: no compute.assign: a requester and provider owner who reads only its own assignments
    ("c1", Claims(IDENTITIES[1], ALL_SCOPES - {"sync.admin", "compute.assign"}, ("s.*",)), False),
    # c2: a narrowly granted watcher of SELECT * FROM * (and the signals) that also publishes providers and
    # executes jobs: what it may read of compute_assignment is exactly what AUTH-1 / DELIV-2 check
    ("c2", Claims(IDENTITIES[2], frozenset({"sync.subscribe", "sync.checkpoint.write", "provider.publish",
                                            "compute.request", "compute.execute"}), ("s.a*",)), False),
]
WATCH_QUERIES = ("SELECT * FROM *", "SELECT * FROM stream_signal", "SELECT * FROM presence_signal")
PROVIDERS = ("prov1", "prov2")
REQUESTS = ("r1", "r2", "r3")
OUTBOXES = ("o1", "o2")
client_st = st.sampled_from([0, 1])
any_client_st = st.sampled_from([0, 1, 2])


class SystemMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sys = _mod("spec.system").System(POLICY, SYSTEM_CLIENTS, max_queue=8, max_undurable=4)
        self.watching = False
        self.last_restart = 0
        self.jobs = 0
        self.adhoc = 0

    @initialize(follows=st.lists(st.tuples(client_st, st.sampled_from(STREAMS)), max_size=4))
    def start(self, follows: list[tuple[int, str]]) -> None:
        for i in range(3):
            self.sys.connect(i)
        for i, session in ((0, "sess0"), (1, "sess1"), (1, "sess1b")):  # live sessions, so disconnects have
            self.sys.call(i, "upsert_presence", (session, "dev", "node", "online", "eu", 5000))  # presence to mark
        for i, s in follows:
            self.sys.follow(i, s)
        self.watch_all()

    @rule(i=any_client_st)
    def connect(self, i: int) -> None:
        self.sys.connect(i)

    @rule(i=any_client_st)
    def disconnect(self, i: int) -> None:
        self.sys.disconnect(i)

    @rule(i=any_client_st, s=st.sampled_from(STREAMS))
    def follow(self, i: int, s: str) -> None:
        """Follow a stream (c2's grant covers s.a* only: s.b1 must be refused, and stays followed)."""
        self.sys.follow(i, s)

    @rule(i=any_client_st, deliver=st.integers(0, 3))
    def crash_client(self, i: int, deliver: int) -> None:
        """The client's process dies after taking ``deliver`` more messages and restarts from its
        checkpoint store; it reconnects when the machine next connects it."""
        for _ in range(deliver):
            self.sys.deliver(i)
        self.sys.crash_client(i)

    @rule()
    def watch_all(self) -> None:
        if 2 in self.sys.links and not self.watching:
            self.watching = True
            from spec.messages import Subscribe
            self.sys._send(2, [Subscribe(900, 900, WATCH_QUERIES)])

    @rule(i=any_client_st, s=st.sampled_from(STREAMS), form=st.sampled_from([5, 0, 1, 2, 3, 4, 5]),
          w=st.sampled_from([0, 0, 1, 2, 4]))
    def adhoc_query(self, i: int, s: str, form: int, w: int) -> None:
        """A subscription written by hand (then dropped): resume forms with and without the epoch and
        the stream pinned, in the spellings people type and the TS SDK's query builder emits."""
        from spec.messages import Subscribe, Unsubscribe
        from spec.reducers import virtual_stream
        epoch = virtual_stream(self.sys.server.db, s)[0]
        text = (
            f"SELECT * FROM sync_event WHERE stream_id = '{s}' AND seq > {w}",  # no epoch: refused
            f'SELECT * FROM "sync_event" WHERE (("sync_event"."stream_id" = \'{s}\') AND ("sync_event"."epoch" = '
            f'{epoch})) AND ("sync_event"."seq" > {w})',
            f"SELECT * FROM sync_event WHERE seq >= {w}",
            f"SELECT * FROM sync_event WHERE epoch = {epoch} AND {w} < seq",
            f"SELECT * FROM sync_event WHERE stream_id = '{s}'",  # not a resume: no seq bound
            f"SELECT * FROM sync_event WHERE (stream_id = '{s}' AND epoch = {epoch}) AND seq >= {w}",
        )[form]
        self.adhoc += 1
        qs = 700 + self.adhoc
        self.sys._send(i, [Subscribe(qs, qs, (text,)), Unsubscribe(qs + 1, qs)])

    @rule(i=client_st, s=st.sampled_from(STREAMS), k=st.sampled_from(KEYS), p=st.sampled_from(PAYLOADS),
          expect=st.booleans())
    def append(self, i: int, s: str, k: str, p: str, expect: bool) -> None:
        exp = None
        view = self.sys.clients[i].streams.get(s)
        if expect and view is not None:
            exp = view.last + 1
        self.sys.call(i, "append_sync_event", (s, k, p, None, exp))

    @rule(i=client_st, s=st.sampled_from(STREAMS))
    def ack(self, i: int, s: str) -> None:
        view = self.sys.clients[i].streams.get(s)
        if view is not None and view.epoch is not None:
            self.sys.call(i, "ack_checkpoint", (f"c{i}", s, view.epoch, view.last))

    @rule(i=client_st, status=st.sampled_from(["online", "away"]), reap=st.booleans())
    def reconnect_half_open(self, i: int, status: str, reap: bool) -> None:
        """The reconnect path: the client reconnects while the server still holds its old connection,
        re-upserts its session on the new one, and the old one closes later (PRES-3: the close must
        not mark the session)."""
        if self.sys.reconnect_leaving_old_open(i):
            self._handled(i, "upsert_presence", (f"sess{i}", "dev", "node", status, "eu", 5000))
        if reap:
            self.sys.reap()

    @rule(i=client_st, status=st.sampled_from(["online", "away", "offline"]), second=st.booleans())
    def presence(self, i: int, status: str, second: bool) -> None:
        """Upsert the client's session, or its second one (a connection owning two: one close marks both,
        in one transaction)."""
        self.sys.call(i, "upsert_presence", (f"sess{i}{'b' if second else ''}", "dev", "node", status, "eu", 2000))

    @rule(i=client_st, dt=st.sampled_from([0, 0, -1, 1]))
    def close_at_expiry(self, i: int, dt: int) -> None:
        """The clock reaches a live session's expiry (+ dt us) before any sweep, and its client's connection
        closes: the marks take it offline ``ttl_expired`` from the very expiry on, ``disconnected`` before."""
        identity = self.sys.clients[i].claims.identity
        live = sorted(r.expires_at for r in self.sys.server.db.of_type(_mod("spec.values").SessionPresence)
                      if r.identity == identity and r.status != "offline")
        if live and live[0] + dt >= self.sys.server.now:
            self.sys.advance_clock(live[0] + dt)
            self.sys.disconnect(i)

    # --- the other reducers: providers, compute assignments, the bridge outbox, stream signals ----

    @rule(i=any_client_st, pid=st.sampled_from(PROVIDERS), kinds=st.sampled_from([(5000,), (5000, 5001), (5001,)]),
          status=st.sampled_from(["active", "active", "withdrawn"]))
    def provider(self, i: int, pid: str, kinds: tuple[int, ...], status: str) -> None:
        self.sys.call(i, "publish_provider_capability", (pid, '{"gpu":1}', kinds, 10, status))

    @rule(i=any_client_st, rid=st.sampled_from(REQUESTS), kind=st.sampled_from([5000, 5001]))
    def open_assignment(self, i: int, rid: str, kind: int) -> None:
        self.sys.call(i, "open_compute_assignment", (rid, kind, '{"job":1}'))

    @rule(i=any_client_st, rid=st.sampled_from(REQUESTS),
          status=st.sampled_from(["assigned", "assigned", "running", "completed", "failed", "cancelled"]),
          pid=st.sampled_from(PROVIDERS), stale=st.sampled_from([False, False, False, True]))
    def update_assignment(self, i: int, rid: str, status: str, pid: str, stale: bool) -> None:
        """A dispatcher assigns, an executor starts/completes/fails, a requester or dispatcher cancels
        (callers are drawn at random, so the wrong role is tried too); the expected version is the
        server's current one (a client that just read the row), sometimes an older one."""
        from spec.values import ComputeAssignment
        row = self.sys.server.db.find(ComputeAssignment, lambda r: r.request_id == rid)
        version = (row.version if row else 1) - (1 if stale else 0)
        result = '{"ok":true}' if status in ("completed", "failed") else None
        self.sys.call(i, "update_compute_assignment",
                      (rid, max(0, version), status, pid if status == "assigned" else None, result))

    def _handled(self, i: int, reducer: str, args: tuple[Any, ...]) -> None:
        """Call and let the server take the call at once (durability advancing as needed)."""
        self.sys.connect(i)
        self.sys.call(i, reducer, args)
        for _ in range(12):
            link = self.sys.links.get(i)
            if link is None or not link.inbox:
                return
            if not self.sys.server.can_commit():
                self.sys.advance_durable(1)
            self.sys.server_step(i)

    @rule(owner=any_client_st, req=any_client_st, disp=st.sampled_from([0, 0, 1, 2]),
          intruder=st.booleans(), other=any_client_st,
          rid=st.sampled_from([*REQUESTS, "fresh", "fresh"]), pid=st.sampled_from(PROVIDERS),
          kind=st.sampled_from([5000, 5000, 5001]), ad=st.sampled_from(["active", "active", "active", "withdrawn"]),
          path=st.sampled_from([("assigned", "running", "completed"), ("assigned", "running", "failed"),
                                ("assigned", "cancelled"), ("cancelled",), ("assigned", "running", "cancelled")]))
    def job(self, owner: int, req: int, disp: int, intruder: bool, other: int, rid: str, pid: str, kind: int,
            ad: str, path: tuple[str, ...]) -> None:
        """A whole job, each call taken at once: a provider ad, a request, the assignment, the execute
        edges.  The dispatcher is sometimes the wrong role (c1 and c2 hold no compute.assign); with
        ``intruder`` every execute edge is first tried by ``other`` (any client, usually not the
        provider's owner), then by the owner, so the role checks are exercised both ways."""
        from spec.values import ComputeAssignment, ProviderCapability
        if rid == "fresh":
            self.jobs += 1
            rid = f"job{self.jobs}"
        self._handled(owner, "publish_provider_capability", (pid, '{"gpu":1}', (5000,), 10, ad))
        self._handled(req, "open_compute_assignment", (rid, kind, '{"job":1}'))
        for status in path:
            prov = self.sys.server.db.find(ProviderCapability, lambda r: r.provider_id == pid)
            callers = [disp]
            if status in ("running", "completed", "failed"):
                owner_ix = next((k for k, c in enumerate(self.sys.clients)
                                 if prov is not None and c.claims.identity == prov.owner), other)
                callers = [other, owner_ix] if intruder else [owner_ix]
            result = '{"ok":true}' if status in ("completed", "failed") else None
            for who in callers:
                row = self.sys.server.db.find(ComputeAssignment, lambda r: r.request_id == rid)
                self._handled(who, "update_compute_assignment", (rid, row.version if row else 1, status,
                                                                 pid if status == "assigned" else None, result))

    @rule(i=client_st, oid=st.sampled_from(OUTBOXES), op=st.sampled_from(["enqueue", "sent", "failure"]),
          relay=st.sampled_from(["wss://r1", "wss://r2"]))
    def bridge(self, i: int, oid: str, op: str, relay: str) -> None:
        if op == "enqueue":
            self.sys.call(i, "enqueue_bridge_event", (oid, f"src{i}", 30078, '[["t","x"]]', "hello"))
        elif op == "sent":
            self.sys.call(i, "mark_bridge_event_sent", (oid, "1" * 64, (relay,)))
        else:
            self.sys.call(i, "record_bridge_failure", (oid, "relay down", 1000))

    @rule(i=client_st, s=st.sampled_from(STREAMS), kind=st.sampled_from(["typing", "progress"]))
    def signal(self, i: int, s: str, kind: str) -> None:
        self.sys.call(i, "publish_stream_signal", (s, kind, '{"at":1}'))

    @rule(s=st.sampled_from(STREAMS), lost=st.integers(1, 3), after=st.integers(0, 4))
    def crash_after_a_lost_tail(self, s: str, lost: int, after: int) -> None:
        """The case the epoch continuation must get right: the non-confirmed client c1 applies events
        that never become durable, the server crashes, the stream grows again (``after`` events, so
        its head may pass c1's watermark) and c1 comes back.  c1 must rebootstrap (it saw lost
        events); the confirmed c0, which saw only durable ones, must continue."""
        for i in (0, 1):
            self.sys.connect(i)
            self.sys.follow(i, s)
        self.sys.advance_durable(self.sys.server.committed)
        self.quiet(1)
        for k in range(lost):  # committed, delivered to c1, never durable
            self.sys.call(0, "append_sync_event", (s, f"lost{len(self.sys.server.ledger)}-{k}", f'{{"lost":{k}}}',
                                                   None, None))
            self.sys.server_step(0)
        self.quiet(1)
        self.sys.crash()
        self.last_restart = self.sys.server.committed
        self.sys.connect(0)
        for k in range(after):
            self._handled(0, "append_sync_event", (s, f"after{len(self.sys.server.ledger)}-{k}", f'{{"after":{k}}}',
                                                   None, None))
        self.sys.advance_durable(self.sys.server.committed)
        self.quiet(1)

    def quiet(self, i: int) -> None:
        """Let client i take everything released to it (and answer it) for a while."""
        for _ in range(30):
            moved = self.sys.deliver(i)
            moved = self.sys.server_step(i) or moved
            if not moved:
                return

    @rule(i=client_st, s=st.sampled_from(STREAMS), n=st.integers(3, 12), live=st.booleans())
    def burst(self, i: int, s: str, n: int, live: bool) -> None:
        """A producer appends a burst that the server commits at once while nobody reads.  With
        ``live`` the other client first (re-)upserts its session on its current connection, so when
        the burst overflows its queue the slow-consumer close has presence to mark mid-fanout."""
        if live:
            self._handled(1 - i, "upsert_presence", (f"sess{1 - i}", "dev", "node", "online", "eu", 5000))
        for k in range(n):
            self.sys.call(i, "append_sync_event", (s, f"b{len(self.sys.server.ledger)}-{k}", f'{{"burst":{k}}}',
                                                   None, None))
        for _ in range(n):
            self.sys.advance_durable(1)
            self.sys.server_step(i)

    @rule(i=client_st)
    def resend(self, i: int) -> None:
        self.sys.resend(i)

    @rule(i=any_client_st, n=st.integers(1, 6))
    def server_steps(self, i: int, n: int) -> None:
        for _ in range(n):
            self.sys.server_step(i)

    @rule(i=any_client_st, n=st.integers(1, 8))
    def deliver(self, i: int, n: int) -> None:
        for _ in range(n):
            self.sys.deliver(i)

    @rule(n=st.integers(1, 4))
    def pump(self, n: int) -> None:
        """Everyone makes a little progress: the common case between faults.  Disconnected
        clients reconnect first (an SDK reconnects with backoff) and resume."""
        for i in range(3):
            self.sys.connect(i)
        for _ in range(n):
            for i in range(3):
                self.sys.server_step(i)
                self.sys.deliver(i)

    @rule(i=any_client_st)
    def lose_frame(self, i: int) -> None:
        self.sys.lose_frame(i)

    @rule(i=client_st, s=st.sampled_from(STREAMS), n=st.integers(2, 4))
    def lossy_tail(self, i: int, s: str, n: int) -> None:
        """A follower's live tail crosses a lossy middlebox: the other client appends n events,
        one update to the follower is lost, the rest arrive.  The follower must not apply across
        the gap."""
        self.sys.connect(i)
        self.sys.connect(1 - i)
        self.sys.follow(i, s)
        for _ in range(4):
            self.sys.server_step(i)
            self.sys.deliver(i)
        for k in range(n):
            self.sys.call(1 - i, "append_sync_event", (s, f"t{len(self.sys.server.ledger)}-{k}", "[]", None, None))
            self.sys.advance_durable(1)
            self.sys.server_step(1 - i)
        self.sys.lose_frame(i)
        for _ in range(n + 2):
            self.sys.deliver(i)

    @rule(i=any_client_st)
    def duplicate_frame(self, i: int) -> None:
        self.sys.duplicate_frame(i)

    @rule(i=client_st, s=st.sampled_from(STREAMS), n=st.integers(1, 3))
    def duplicated_tail(self, i: int, s: str, n: int) -> None:
        """A replaying proxy on a follower's live tail: the other client appends, each update reaches
        the follower twice.  The second copy must be dropped as a duplicate (REPLAY-1)."""
        self.sys.connect(i)
        self.sys.connect(1 - i)
        self.sys.follow(i, s)
        self.quiet(i)
        for k in range(n):
            self.sys.call(1 - i, "append_sync_event", (s, f"d{len(self.sys.server.ledger)}-{k}", "[]", None, None))
            self.sys.advance_durable(1)
            self.sys.server_step(1 - i)
            self.sys.advance_durable(1)
            self.sys.duplicate_frame(i)
            self.sys.deliver(i)

    @rule(i=any_client_st)
    def reuse_query_set(self, i: int) -> None:
        """A client bug: a Subscribe reusing an active query-set id.  The server closes the connection
        (1011); the client reconnects and resumes like after any other drop."""
        from spec.messages import Subscribe
        link = self.sys.links.get(i)
        conn = self.sys.server.conns.get(link.conn_id) if link is not None else None
        if link is None or conn is None or not conn.query_sets:
            return
        self.sys.server.handle(link.conn_id, Subscribe(10**6, min(conn.query_sets), ("SELECT * FROM sync_stream",)))
        self.sys._after_server_step()

    @rule(k=st.integers(1, 3))
    def durable(self, k: int) -> None:
        self.sys.advance_durable(k)

    def _progressed(self) -> bool:
        return bool(self.sys.server.committed > self.last_restart)

    @precondition(_progressed)
    @rule()
    def crash(self) -> None:
        self.sys.crash()
        self.last_restart = self.sys.server.committed

    @rule(n=st.integers(1, 3))
    def compact_then_crash(self, n: int) -> None:
        """A compaction commits, everyone makes a little progress (an unconfirmed client may rehydrate
        from the new floor), and the server crashes before the compaction is durable: the recovered
        stream retains from the old floor again.  One rule, so the floor the crash lost is never the
        current one between rules (REPLAY-2's allowance must see it all the same)."""
        self.sys.compact()
        self.pump(n)
        if self._progressed():
            self.crash()

    @precondition(_progressed)
    @rule()
    def clean_restart(self) -> None:
        self.sys.clean_restart()
        self.last_restart = self.sys.server.committed

    @rule(dt=st.sampled_from([500_000, 1_500_000, 2_500_000]))
    def tick(self, dt: int) -> None:
        self.sys.tick(dt)

    @rule()
    def compact(self) -> None:
        self.sys.compact()

    @rule(s=st.sampled_from(STREAMS))
    def reset_epoch(self, s: str) -> None:
        self.sys.reset_epoch(s)

    @rule()
    def heal(self) -> None:
        self.sys.quiesce()
        self.sys.check_marks_after_heal()
        self.watching = self.watching and 2 in self.sys.links
        clients = [(c.client_id, c.claims.scopes, c.claims.streams,
                    {s: (v.epoch, v.base, v.last, tuple(v.applied), v.rehydrating) for s, v in c.streams.items()},
                    dict(c.refused)) for c in self.sys.clients]
        unconfirmed = [cid for cid, _, confirmed in SYSTEM_CLIENTS if not confirmed]
        violations = check_convergence(clients, self.sys.server.db, self.sys.server.ledger, unconfirmed=unconfirmed,
                                       floors_committed=self.sys.trace.floors)
        for i, c in enumerate(self.sys.clients):
            self.sys.trace.check_rebootstraps(i, c)
        violations += self.sys.trace.violations
        assert not violations, (sorted({x[0] for x in violations}), violations[:3])

    @invariant()
    def holds(self) -> None:
        v = self.sys.trace.violations
        assert not v, (sorted({x[0] for x in v}), v[:3])  # every invariant violated, then the first cases


def system_run_ok(machine: SystemMachine) -> None:
    """Final heal at teardown so every run ends with the convergence check."""
    machine.heal()


__all__ = ["ModuleMachine", "SyncError", "SystemMachine"]


class DiffMachine(ReadRules, SystemMachine):
    """The system machine over the model and the reference engine in lockstep (tests/support/diff.py):
    every step also compares offsets, tables, live connections and every outbound message; and
    one-off reads, whole and sliced across crashes, compactions and resets, judged by SQLite over the
    model's tables (tests/support/reads.py)."""

    def __init__(self) -> None:
        RuleBasedStateMachine.__init__(self)
        self.sys = _mod("support.diff").DiffSystem(POLICY, SYSTEM_CLIENTS, max_queue=8, max_undurable=4)
        self.watching = False
        self.last_restart = 0
        self.jobs = 0
        self.adhoc = 0
        self._reads_init()

    def _read_engine(self) -> Any:
        return self.sys.ref

    def _read_tables(self) -> Any:
        return self.sys.server.db.tables

    def _read_write(self, what: str, who: int, stream: str) -> None:
        """A write between a read's steps, through client ``who`` (c0: identity a, c1: b); a reset is the
        admin's, and a crash (when the server has progressed) stands in for the outbox mark."""
        from spec.reducers import virtual_stream
        self.adhoc += 1
        if what == "append":
            self._handled(who, "append_sync_event", (stream, f"r{self.adhoc}", '{"v":1}', None, None))
        elif what == "ack":
            epoch, head, _ = virtual_stream(self.sys.server.db, stream)
            self._handled(who, "ack_checkpoint", (f"c{who}", stream, epoch, head))
        elif what == "compact":
            self.sys.compact()
        elif what == "reset":
            self.sys.reset_epoch(stream)
        elif what == "outbox":
            self._handled(who, "enqueue_bridge_event", (f"o{who + 1}", "src", 30078, '[["t","x"]]', "hello"))
        elif self._progressed():
            self.crash()


class DiffModuleMachine(ReaderViews, ModuleMachine):
    """The module machine over the model's reducers and the engine's, call by call: the same
    outcome (error string or return value) and the same tables after every step; and one-off reads
    and readers of several identities subscribed to the private tables, judged by SQLite over the
    model's tables (tests/support/reads.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = _mod("reference.engine").Engine(POLICY, max_queue=10_000, max_undurable=10_000)
        self.engine_conns: dict[Claims, int] = {}
        self.read_writes = 0
        self._reads_init()

    def _read_engine(self) -> Any:
        return self.engine

    def _read_tables(self) -> Any:
        return self.db.tables

    def _read_write(self, what: str, who: int, stream: str) -> None:
        """A write between a read's steps (or between two checks of the readers), by identity a or b."""
        from spec.reducers import virtual_stream
        caller = (_FULL_A, _FULL_B)[who]
        self.read_writes += 1
        if what == "append":
            self._run(caller, "append_sync_event", (stream, f"r{self.read_writes}", '{"v":1}', None, None))
        elif what == "ack":
            epoch, head, _ = virtual_stream(self.db, stream)
            self._run(caller, "ack_checkpoint", (f"d{who + 1}", stream, epoch, head))
        elif what == "compact":
            self.compact()
        elif what == "reset":
            self._run(caller, "reset_stream_epoch", (stream,))
        elif what == "outbox":
            self._run(caller, "enqueue_bridge_event", (f"o{who + 1}", "src", 30078, '[["t","x"]]', "hello"))
        else:
            self._run(caller, "mark_bridge_event_sent", (f"o{who + 1}", "1" * 64, ("wss://r1",)))

    def _compare_tables(self, where: str) -> None:
        if self.db.version_floor != self.engine.db.version_floor:
            self.violations.append(("DIFF", f"{where}: version_floor model {self.db.version_floor} engine "
                                            f"{self.engine.db.version_floor}"))
        for table, rows in self.db.tables.items():
            ref_rows = set(self.engine.db.rows(table))
            if set(rows) != ref_rows:
                self.violations.append(("DIFF", f"{where}: {table} model-only {set(rows) - ref_rows} "
                                                f"ref-only {ref_rows - set(rows)}"))

    def _run(self, claims: Claims, reducer: str, args: tuple[Any, ...]) -> Any:
        from spec.messages import CallReducer, ReducerOk
        red = _mod("spec.reducers")
        self.engine.now = self.now
        out = super()._run(claims, reducer, args)
        if claims not in self.engine_conns:
            self.engine_conns[claims] = self.engine.connect(claims, False)
        conn = self.engine_conns[claims]
        self.engine.handle(conn, CallReducer(1, reducer, args))
        self.engine.advance_durable(self.engine.committed)
        result = self.engine.pop(conn).message
        mine = ("ok", out.ret) if isinstance(out, red.Ok) else ("err", out.error.render())
        theirs = ("ok", result.outcome.ret) if isinstance(result.outcome, ReducerOk) else ("err", result.outcome.error)
        if mine != theirs:
            self.violations.append(("DIFF", f"{reducer}{args}: model {mine} engine {theirs}"))
        if self.engine.committed != self.offset:
            self.violations.append(("DIFF", f"offsets: model {self.offset} engine {self.engine.committed}"))
        self._compare_tables(reducer)
        return out

    @rule(dt=st.sampled_from([0, 500_000, 1_000_000, 3_000_000, 1_234_567]))
    def sweep(self, dt: int) -> None:
        super().sweep(dt)
        self.engine.sweep(self.now)
        self.engine.advance_durable(self.engine.committed)
        self._compare_tables("sweep")

    @rule()
    def compact(self) -> None:
        super().compact()
        self.engine.compact(self.now)
        self.engine.advance_durable(self.engine.committed)
        self._compare_tables("compact")
