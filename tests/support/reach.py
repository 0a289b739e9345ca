"""The reach table: which rule cells the machines actually reach, and how often.

A *cell* is one case of a rule the spec distinguishes:

* ``outcome``   (reducer, outcome): ``ok``, ``noop`` (when the reducer has one) and every error code
                the reducer can return -- from :data:`spec.rules.REDUCER_RULES`;
* ``check``     (reducer, step): every named step of the reducer's check table
                (:data:`spec.reducers.CHECKS`, ADR-0012) *decides* some call -- a ``Check`` refuses it or a
                ``NoOp`` holds -- so no step is dead weight and every refusal path is exercised on its own,
                not only through an outcome code several steps share (the ``invalid_argument`` of six ids);
* ``role``      (reducer, role, accepted|refused): the caller's relation to the call (the roles of
                :data:`spec.rules.REDUCER_RULES`; see that module for their definitions);
* ``assignment`` / ``outbox`` / ``presence`` (from, to): every transition edge of those rows, from
                :mod:`spec.transitions`, plus creation (``-``), retention (``removed``) and the
                recovery transaction's version raise (``s -> s``);
* ``stale``     every stale-cursor reason of :data:`spec.resume.STALE_REASONS`, and ``fresh``;
* ``close``     every reason the model closes a connection for (client close, slow consumer, a
                1011 protocol close, a server restart);
* ``client``    every client apply rule (:data:`spec.client.APPLY_RULES`, and events of another epoch
                skipped) and the epoch decisions (continue, rebootstrap).

Instrumentation is at the harness level: :func:`observe` rebinds the model's boundary functions
(``spec.reducers.call``, the check evaluator ``decide``, the system transactions wherever they are
bound, ``stale_error``, ``Server.close``/``_restart``, the client's row handler) to wrappers that
record the call and its
result and then return it unchanged; the reducer bodies are not edited.  Whatever drives the model
-- a Hypothesis machine, the scenario tables, the engine or wire differential (which run the model
in lockstep) -- is counted under the name given to :func:`observe`.

:func:`evaluate` compares the counts with the expected cells: a cell no machine reached fails unless
:data:`UNREACHABLE` lists it with the reason; a cell listed unreachable that *is* reached fails (the
reason is wrong); an observed cell that is not expected fails (an error the rules table does not
list, or with other detail keys: the table drifted from the reducers).
"""

from __future__ import annotations

import contextlib
import fnmatch
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Cell = tuple[str, ...]
"""(group, *key), e.g. ("outcome", "append_sync_event", "sequence_conflict")."""

CREATED = "-"
UNKNOWN_REDUCER = "(unknown reducer)"
REMOVED = "removed"


# --- the expected cells, from spec data ------------------------------------------------------------------

def expected_cells() -> list[Cell]:
    from spec.client import APPLY_RULES
    from spec.messages import CLOSE_PROTOCOL, SLOW_CONSUMER_REASON
    from spec.reducers import CHECKS
    from spec.resume import STALE_REASONS
    from spec.rules import REDUCER_RULES, outcomes
    from spec.transitions import (
        ASSIGNMENT_STATUSES,
        ASSIGNMENT_TRANSITIONS,
        BRIDGE_STATUSES,
        BRIDGE_TRANSITIONS,
        PRESENCE_STATUSES,
    )

    cells: list[Cell] = []
    for rule in REDUCER_RULES:
        cells += [("outcome", rule.reducer, o) for o in outcomes(rule)]
        cells += [("role", rule.reducer, role, verdict) for role in rule.roles for verdict in ("accepted", "refused")]
        cells += [("check", rule.reducer, step.name) for step in CHECKS[rule.reducer]]
    cells.append(("outcome", UNKNOWN_REDUCER, "no_such_reducer"))
    cells.append(("assignment", CREATED, "open"))
    cells += [("assignment", a, b) for a, b in ASSIGNMENT_TRANSITIONS]
    cells += [("assignment", s, s) for s in ASSIGNMENT_STATUSES]  # the recovery transaction raises versions
    cells += [("assignment", s, REMOVED) for s in ASSIGNMENT_STATUSES]
    cells.append(("outbox", CREATED, "pending"))
    cells += [("outbox", a, b) for a, b in BRIDGE_TRANSITIONS]
    cells += [("outbox", s, REMOVED) for s in BRIDGE_STATUSES]
    targets = ("online", "away", "offline:explicit_offline", "offline:ttl_expired", "offline:disconnected",
               REMOVED)
    cells += [("presence", a, b) for a in (CREATED, *PRESENCE_STATUSES) for b in targets]
    cells += [("stale", r) for r in (*STALE_REASONS, "fresh")]
    cells += [("close", r) for r in ("closed", SLOW_CONSUMER_REASON, str(CLOSE_PROTOCOL), "server restart")]
    cells += [("client", r) for r in (*APPLY_RULES, "other_epoch", "continue", "rebootstrap", "rehydrate",
                                      "refused", "restart")]
    return cells


UNREACHABLE: tuple[tuple[str, str], ...] = (
    # (cell pattern, fnmatch over "group reducer/from key..." joined by spaces, the reason)
    ("role * missing_scope accepted",
     "authorization is checked first: a caller without the reducer's scope is always refused (AUTH-2)"),
    ("role * missing_grant accepted",
     "authorization is checked first: a stream the token does not grant is always refused (AUTH-2)"),
    ("role * non_owner accepted", "a row owned by another identity is refused with forbidden before any other check"),
    ("role update_compute_assignment no_row accepted", "an update of a missing request id is assignment_missing"),
    ("role update_compute_assignment no_role accepted",
     "every edge names its roles; a caller holding none of them is refused with forbidden (ASSIGN-4)"),
    ("assignment open removed", "retention removes terminal assignments only (RET-1)"),
    ("assignment assigned removed", "retention removes terminal assignments only (RET-1)"),
    ("assignment running removed", "retention removes terminal assignments only (RET-1)"),
    ("outbox pending removed", "retention removes sent and failed outbox rows only (RET-1)"),
    ("presence - removed", "there is no row to remove"),
    ("presence - offline:ttl_expired", "the sweep expires existing rows only"),
    ("presence - offline:disconnected", "a close marks existing rows only"),
    ("presence online removed", "retention removes offline presence rows only (RET-1)"),
    ("presence away removed", "retention removes offline presence rows only (RET-1)"),
    ("presence offline offline:ttl_expired", "the sweep skips rows that are already offline"),
    ("presence offline offline:disconnected", "a close marks live (non-offline) sessions only"),
    ("client other_epoch", "a resume query pins epoch = E, and the server holds one epoch's events per stream "
     "(recovery relabels them, a reset drops them; a new epoch's row reaches a rehydrate before its events): no "
     "event of another epoch reaches the client's apply loop (its epoch check is defensive)"),
)
"""Cells no machine can reach, each with the reason: a cell pattern (``fnmatch``) and why."""


def _key(cell: Cell) -> str:
    return " ".join(cell)


def unreachable_reason(cell: Cell) -> str | None:
    text = _key(cell)
    for pattern, reason in UNREACHABLE:
        if fnmatch.fnmatchcase(text, pattern):
            return reason
    return None


# --- observation ---------------------------------------------------------------------------------------

@dataclass
class Recorder:
    counts: dict[str, Counter[Cell]] = field(default_factory=dict)
    machine: str = "?"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, *cell: str) -> None:
        with self.lock:
            self.counts.setdefault(self.machine, Counter())[tuple(cell)] += 1


RECORDER = Recorder()


def _role(claims: Any, reducer: str, args: tuple[Any, ...], db: Any) -> str | None:
    """The caller's relation to the call (see spec.rules); None for a malformed call."""
    from spec.auth import stream_granted
    from spec.schema import REDUCER_BY_NAME
    from spec.values import (
        ComputeAssignment,
        ProviderCapability,
        SessionPresence,
        SyncCheckpoint,
        value_has_type,
    )

    rdef = REDUCER_BY_NAME.get(reducer)
    if rdef is None or len(args) != len(rdef.args) or not all(
            value_has_type(v, c.type) for c, v in zip(rdef.args, args, strict=True)):
        return None
    scopes, me = claims.scopes, claims.identity
    if reducer == "update_compute_assignment":
        if not scopes & {"compute.request", "compute.assign", "compute.execute"}:
            return "missing_scope"
    elif rdef.scope not in scopes:
        return "missing_scope"
    stream = {"append_sync_event": 0, "publish_stream_signal": 0, "ack_checkpoint": 1}.get(reducer)
    if stream is not None and not stream_granted(claims, args[stream]):
        return "missing_grant"

    def owned(row: Any, column: str) -> str:
        return "first_writer" if row is None else "owner" if getattr(row, column) == me else "non_owner"

    if reducer == "ack_checkpoint":
        cid = f"{args[0]}|{args[1]}"
        return owned(db.find(SyncCheckpoint, lambda r: r.checkpoint_id == cid), "owner")
    if reducer == "upsert_presence":
        return owned(db.find(SessionPresence, lambda r: r.session_id == args[0]), "identity")
    if reducer == "publish_provider_capability":
        return owned(db.find(ProviderCapability, lambda r: r.provider_id == args[0]), "owner")
    if reducer == "open_compute_assignment":
        role = owned(db.find(ComputeAssignment, lambda r: r.request_id == args[0]), "requester")
        return "requester" if role == "owner" else role
    if reducer == "update_compute_assignment":
        row = db.find(ComputeAssignment, lambda r: r.request_id == args[0])
        if row is None:
            return "no_row"
        if row.provider_owner == me and "compute.execute" in scopes:
            return "provider_owner"
        if row.requester == me:
            return "requester"
        return "dispatcher" if "compute.assign" in scopes else "no_role"
    if reducer == "reset_stream_epoch":
        return "admin"
    return "holder"


def _pk(table: str, row: Any) -> Any:
    return {"compute_assignment": "request_id", "bridge_outbox": "outbox_id",
            "session_presence": "session_id"}[table], getattr(row, {"compute_assignment": "request_id",
                                                                   "bridge_outbox": "outbox_id",
                                                                   "session_presence": "session_id"}[table])


def _label(table: str, row: Any) -> str:
    if table == "session_presence" and row.status == "offline":
        return f"offline:{row.offline_reason}"
    return str(row.status)


def record_edges(before: Any, after: Any) -> None:
    """Every row of the three lifecycle tables that the step created, changed or removed."""
    for table, group in (("compute_assignment", "assignment"), ("bridge_outbox", "outbox"),
                         ("session_presence", "presence")):
        old_rows, new_rows = before.rows(table), after.rows(table)
        if old_rows is new_rows or old_rows == new_rows:
            continue
        old = {_pk(table, r): r for r in old_rows}
        new = {_pk(table, r): r for r in new_rows}
        for k in old.keys() | new.keys():
            a, b = old.get(k), new.get(k)
            if a == b:
                continue
            src = CREATED if a is None else str(a.status)
            dst = REMOVED if b is None else _label(table, b) if table == "session_presence" else str(b.status)
            RECORDER.hit(group, src, dst)


def _on_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(db: Any, ctx: Any, reducer: str, args: tuple[Any, ...]) -> Any:
        from spec.rules import REDUCER_RULE_BY_NAME
        out = fn(db, ctx, reducer, args)
        rule = REDUCER_RULE_BY_NAME.get(reducer)
        role = _role(ctx.claims, reducer, args, db) if rule is not None else None
        if hasattr(out, "error"):
            code = out.error.code.value
            RECORDER.hit("outcome", reducer if rule is not None else UNKNOWN_REDUCER, code)
            if rule is not None:
                listed = rule.errors.get(out.error.code)
                keys = tuple(sorted(out.error.details))
                if listed is not None and keys != listed:
                    RECORDER.hit("detail_keys", reducer, code, ",".join(keys))
            if role is not None:
                RECORDER.hit("role", reducer, role, "refused")
        else:
            RECORDER.hit("outcome", reducer, "noop" if out.noop else "ok")
            if role is not None:
                RECORDER.hit("role", reducer, role, "accepted")
            if not out.noop:
                record_edges(db, out.state)
        return out
    return wrapped


def _on_decide(fn: Callable[..., Any]) -> Callable[..., Any]:
    from spec.reducers import CHECKS
    reducer_of = {id(steps): reducer for reducer, steps in CHECKS.items()}

    def wrapped(steps: Any, call: Any) -> Any:
        out = fn(steps, call)
        reducer = reducer_of.get(id(steps))
        if out is not None and reducer is not None:
            RECORDER.hit("check", reducer, out[0].name)
        return out
    return wrapped


def _on_system_tx(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(db: Any, *args: Any, **kwargs: Any) -> Any:
        out = fn(db, *args, **kwargs)
        record_edges(db, getattr(out, "state", out))
        return out
    return wrapped


def _on_stale(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(db: Any, policy: Any, query: Any) -> Any:
        from spec import query as q
        err = fn(db, policy, query)
        if err is not None:
            for r in err.details["reasons"]:
                RECORDER.hit("stale", r)
        elif query.table == "sync_event" and q.resume_watermark(query) is not None:
            RECORDER.hit("stale", "fresh")
        return err
    return wrapped


def _on_close(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any, conn_id: int, reason: str = "closed") -> None:
        if conn_id in self.conns:
            from spec.messages import CLOSE_PROTOCOL
            RECORDER.hit("close", str(CLOSE_PROTOCOL) if reason.startswith(f"{CLOSE_PROTOCOL}:") else reason)
        fn(self, conn_id, reason)
    return wrapped


def _on_restart(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any) -> None:
        for _ in self.conns:
            RECORDER.hit("close", "server restart")
        fn(self)
    return wrapped


def _on_rows(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any, stream_id: str, tables: Any, snapshot: bool = False) -> Any:
        from spec.values import SyncEvent
        view = self.streams[stream_id]
        rehydrating = view.rehydrating
        epoch, last, moved = view.epoch, view.last, (view.rebootstraps, view.continues)
        out = fn(self, stream_id, tables, snapshot)
        if rehydrating:
            if not view.rehydrating:
                RECORDER.hit("client", "rehydrate")
            return out  # its events are the window it starts from, applied from the floor
        if (view.rebootstraps, view.continues) != moved:
            return out  # the sync_stream row decided (continue / rebootstrap): no event was looked at
        events = sorted((r for t in tables if t.table == "sync_event" for r in t.inserts if isinstance(r, SyncEvent)),
                        key=lambda e: e.seq)
        for e in events:
            if e.epoch != epoch:
                RECORDER.hit("client", "other_epoch")
            elif e.seq <= last:
                RECORDER.hit("client", "duplicate")
            elif e.seq == last + 1:
                RECORDER.hit("client", "apply")
                last = e.seq
            else:
                RECORDER.hit("client", "gap")
                break
        return out
    return wrapped


def _on_client(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    def wrapped(self: Any, *args: Any) -> Any:
        RECORDER.hit("client", what)
        return fn(self, *args)
    return wrapped


def _on_refusal(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any, msg: Any) -> Any:
        before = dict(self.refused)
        out = fn(self, msg)
        if self.refused != before:
            RECORDER.hit("client", "refused")
        return out
    return wrapped


_SYSTEM_TX = ("presence_sweep", "disconnect_sessions", "compact", "unclean_restart")


@contextlib.contextmanager
def observe(machine: str) -> Iterator[Recorder]:
    """Count every cell the model reaches while the block runs, under ``machine``."""
    import spec.client as client
    import spec.delivery as delivery
    import spec.harness as harness
    import spec.reducers as reducers

    patches: list[tuple[Any, str, Any]] = []

    def rebind(name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]], home: Any) -> None:
        original = getattr(home, name)
        wrapper = make(original)
        for mod in list(sys.modules.values()):
            modname = getattr(mod, "__name__", "") or ""
            if (modname.startswith(("spec.", "support.")) or modname == "spec") and \
                    getattr(mod, name, None) is original:
                patches.append((mod, name, original))
                setattr(mod, name, wrapper)

    def method(cls: Any, name: str, wrapper: Callable[..., Any]) -> None:
        patches.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, wrapper)

    previous = RECORDER.machine
    RECORDER.machine = machine
    rebind("call", _on_call, reducers)
    rebind("decide", _on_decide, reducers)
    for name in _SYSTEM_TX:
        rebind(name, _on_system_tx, reducers)
    rebind("stale_error", _on_stale, delivery)
    method(harness.Server, "close", _on_close(harness.Server.close))
    method(harness.Server, "_restart", _on_restart(harness.Server._restart))
    method(client.Client, "_on_rows", _on_rows(client.Client.__dict__["_on_rows"]))
    method(client.Client, "_continue", _on_client(client.Client._continue, "continue"))
    method(client.Client, "_rebootstrap", _on_client(client.Client._rebootstrap, "rebootstrap"))
    method(client.Client, "crash", _on_client(client.Client.crash, "restart"))
    method(client.Client, "on_message", _on_refusal(client.Client.on_message))
    try:
        yield RECORDER
    finally:
        for target, name, original in reversed(patches):
            setattr(target, name, original)
        RECORDER.machine = previous


def run_scenarios(machine: str = "scenarios") -> None:
    """Every scenario table (``support.scenarios``) on the model, observed under ``machine``; the
    engine differential of the same tables is ``tests/reference/test_hardening_engine.py``."""
    from support.scenarios import SCENARIOS, ModelDriver, run

    with observe(machine):
        for s in SCENARIOS:
            run(s, ModelDriver(s.policy))


# --- evaluation ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    cell: Cell
    counts: Mapping[str, int]  # machine -> hits
    unreachable: str | None  # the listed reason, if any
    verdict: str  # "reached", "unreachable", "UNREACHED", "UNEXPECTED", "REACHED-BUT-LISTED"


@dataclass(frozen=True)
class Report:
    rows: tuple[Row, ...]
    machines: tuple[str, ...]
    stale_entries: tuple[str, ...]  # UNREACHABLE patterns that match no expected cell

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.verdict not in ("reached", "unreachable")]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stale_entries


def evaluate(counts: Mapping[str, Counter[Cell]], expected: list[Cell] | None = None,
             unreachable: tuple[tuple[str, str], ...] | None = None) -> Report:
    expected = expected_cells() if expected is None else expected
    table = UNREACHABLE if unreachable is None else unreachable
    machines = tuple(counts)

    def reason(cell: Cell) -> str | None:
        return next((why for pat, why in table if fnmatch.fnmatchcase(_key(cell), pat)), None)

    rows: list[Row] = []
    seen = set(expected)
    for cell in expected:
        per = {m: counts[m][cell] for m in machines if counts[m][cell]}
        why = reason(cell)
        verdict = ("REACHED-BUT-LISTED" if per and why else "reached" if per else "unreachable" if why
                   else "UNREACHED")
        rows.append(Row(cell, per, why, verdict))
    extra = sorted({c for m in machines for c in counts[m]} - seen)
    for cell in extra:
        rows.append(Row(cell, {m: counts[m][cell] for m in machines if counts[m][cell]}, None, "UNEXPECTED"))
    stale = tuple(pat for pat, _ in table if not any(fnmatch.fnmatchcase(_key(c), pat) for c in expected))
    return Report(tuple(rows), machines, stale)


def render(report: Report) -> str:
    short = {m: m.replace("Machine", "")[:10] for m in report.machines}
    width = max([61, *(len(" ".join(r.cell)) for r in report.rows)]) + 1  # a cell is always named in full
    head = f"{'cell':<{width}}" + "".join(f"{short[m]:>11}" for m in report.machines) + "  verdict"
    lines = [head]
    for r in report.rows:
        name = " ".join(r.cell)
        line = f"{name:<{width}}" + "".join(f"{r.counts.get(m, 0):>11}" for m in report.machines)
        line += f"  {r.verdict}" + (f" ({r.unreachable})" if r.unreachable and r.verdict != "reached" else "")
        lines.append(line)
    n = len(report.rows)
    reached = sum(r.verdict == "reached" for r in report.rows)
    unr = sum(r.verdict == "unreachable" for r in report.rows)
    lines.append(f"reach: {reached}/{n} cells reached, {unr} listed unreachable with a reason, "
                 f"{len(report.failures)} failing")
    for pat in report.stale_entries:
        lines.append(f"reach: UNREACHABLE entry {pat!r} matches no cell (stale)")
    return "\n".join(lines)
