"""Scenario tables for the spec-hardening rules (issue 9), run at three layers.

A :class:`Scenario` is data: people (claims), and steps -- connect, close, a reducer call with
its expected outcome (``ok`` or an error code, plus the detail keys that matter), a subscription
with its expected outcome, time passing (with a presence sweep and/or a retention pass), and
``Sees``: what one connection must hold at that point for a table, projected on some columns.
The expectations are written by hand from the rules in ``docs/adr/ADR-0003-spec-hardening.md``,
not computed by the code under test, so they are an oracle of their own.

The same tables run against

* the model (:class:`ModelDriver`: ``spec.harness.Server``) -- ``tests/spec/test_hardening.py``;
* the reference engine next to the model (:class:`EngineDriver`: every message the engine queues
  must equal the model's, as in ``support.diff``) -- ``tests/reference/test_hardening.py``;
* the real server over WebSockets (:class:`WireDriver`) -- ``tests/adapters/test_hardening_wire.py``.

A connection's mirror is built from what it received (snapshots, then inserts and deletes of
transaction updates and of its own reducer results), per query set, exactly as a client's cache
would be; ``Sees`` compares the union over its query sets with the expected rows.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spec import messages as sm
from spec.auth import Claims
from spec.errors import SyncError
from spec.policy import Policy, StreamClass
from spec.schema import TABLE_BY_NAME
from spec.values import Row

T0 = 1_700_000_000_000_000
"""The clock at the start of every scenario (µs)."""
DAY_US = 86_400 * 10**6

# --- the vocabulary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    scopes: frozenset[str]
    streams: tuple[str, ...] = ()


@dataclass(frozen=True)
class Connect:
    conn: str
    person: str
    confirmed: bool = False


@dataclass(frozen=True)
class Close:
    conn: str


@dataclass(frozen=True)
class Call:
    conn: str
    reducer: str
    args: tuple[Any, ...]
    expect: str = "ok"  # "ok" or an error code
    details: Mapping[str, Any] | None = None  # these detail keys must have these values
    ret: int | None = None  # the expected return value (when not None)


@dataclass(frozen=True)
class CallHttp:
    """A reducer call with no connection (``POST /v1/database/:name/call/:reducer``)."""

    person: str
    reducer: str
    args: tuple[Any, ...]
    expect: str = "ok"


@dataclass(frozen=True)
class Sub:
    conn: str
    queries: tuple[str, ...]
    expect: str = "applied"  # "applied" or an error code
    message: str | None = None  # a substring the error's details["message"] must contain
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Who:
    """The identity of a person, as the layer under test assigns it (a value in ``Sees`` rows)."""

    name: str


@dataclass(frozen=True)
class Sees:
    """What ``conn`` holds of ``table`` (over all its query sets), projected on ``columns``."""

    conn: str
    table: str
    columns: tuple[str, ...]
    rows: frozenset[tuple[Any, ...]]


@dataclass(frozen=True)
class Advance:
    us: int
    sweep: bool = False
    compact: bool = False


@dataclass(frozen=True)
class Hold:
    """From here on nothing becomes durable (the disk stalls) until the next :class:`Crash`."""


@dataclass(frozen=True)
class Crash:
    """The server process dies: everything not durable is lost, every connection is gone, and the
    restart runs the recovery transaction (with ``MAX_UNDURABLE`` as its loss bound)."""


Step = Connect | Close | Call | CallHttp | Sub | Sees | Advance | Hold | Crash
MAX_UNDURABLE = 8
"""The drivers' durability window: an unclean restart bumps epochs and versions by this + 1."""


@dataclass(frozen=True)
class Scenario:
    name: str
    defect: int  # the item of issue 9 "Defects to fix" it pins
    people: tuple[Person, ...]
    steps: tuple[Step, ...]
    policy: Policy = field(default_factory=lambda: Policy(default_class=StreamClass("default", replay_budget=100)))

    @property
    def over_the_wire(self) -> bool:
        """Crashes are not run in-process over the wire (a real SIGKILL is: test_sdk_e2e.py)."""
        return not any(isinstance(step, Hold | Crash) for step in self.steps)


# --- drivers ------------------------------------------------------------------------------------------


class Driver(Protocol):
    def identity(self, person: str) -> str: ...
    def connect(self, conn: str, person: Person, confirmed: bool) -> None: ...
    def close(self, conn: str) -> None: ...
    def send(self, conn: str, msg: sm.ClientMessage) -> None: ...
    def sync(self, conn: str) -> list[sm.ServerMessage]:
        """Everything ``conn`` has been sent so far (all of it: the server is quiescent)."""
        ...
    def advance(self, us: int, sweep: bool, compact: bool) -> None: ...
    def hold(self) -> None: ...
    def crash(self) -> None: ...
    def call_http(self, person: Person, reducer: str, args: tuple[Any, ...]) -> str:
        """``ok`` or the error code."""
        ...


def claims_of(p: Person) -> Claims:
    """The model's claims for a person (the wire mints a token with the same scopes and grants)."""
    return Claims(format(sum(map(ord, p.name)) * 7919, "064x"), p.scopes, p.streams)


class ModelDriver:
    def __init__(self, policy: Policy) -> None:
        from spec.harness import Server
        self.server = Server(policy, max_queue=10_000, max_undurable=MAX_UNDURABLE)
        self.server.now = T0
        self.conns: dict[str, int] = {}
        self.people: dict[str, Claims] = {}
        self.held = False

    def _durable(self) -> None:
        if not self.held:
            self.server.advance_durable(self.server.committed)

    def hold(self) -> None:
        self.held = True

    def crash(self) -> None:
        self.server.crash()
        self.conns.clear()
        self.held = False

    def identity(self, person: str) -> str:
        return self.people[person].identity

    def connect(self, conn: str, person: Person, confirmed: bool) -> None:
        self.people[person.name] = claims_of(person)
        self.conns[conn] = self.server.connect(claims_of(person), confirmed)

    def close(self, conn: str) -> None:
        self.server.close(self.conns.pop(conn))
        self._durable()

    def send(self, conn: str, msg: sm.ClientMessage) -> None:
        self.server.handle(self.conns[conn], msg)
        self._durable()

    def sync(self, conn: str) -> list[sm.ServerMessage]:
        cid = self.conns[conn]
        out = []
        while self.server.releasable(cid):
            out.append(self.server.pop(cid).message)
        return out

    def call_http(self, person: Person, reducer: str, args: tuple[Any, ...]) -> str:
        from spec.reducers import Err
        self.people[person.name] = claims_of(person)
        out = self.server.call_detached(claims_of(person), reducer, args)
        self._durable()
        return out.error.code.value if isinstance(out, Err) else "ok"

    def advance(self, us: int, sweep: bool, compact: bool) -> None:
        from spec.reducers import compact as compact_tx
        from spec.reducers import presence_sweep
        self.server.now += us
        if sweep:
            self.server.system_tx(presence_sweep(self.server.db, self.server.now))
        if compact:
            self.server.system_tx(compact_tx(self.server.db, self.server.now, self.server.policy))
        self._durable()


class EngineDriver:
    """The reference engine, with the model beside it: every message must be the model's."""

    def __init__(self, policy: Policy) -> None:
        from reference.engine import Engine
        self.model = ModelDriver(policy)
        self.policy = policy
        self.engine = Engine(policy, max_queue=10_000, max_undurable=MAX_UNDURABLE)
        self.engine.now = T0
        self.conns: dict[str, int] = {}
        self.records: list[Any] = []  # the commit log

    def _durable(self) -> None:
        self.records += self.engine.take_records()
        if not self.model.held:
            self.engine.advance_durable(self.engine.committed)

    def hold(self) -> None:
        self.model.hold()

    def crash(self) -> None:
        """Restart from the durable prefix of the log, as from disk after a SIGKILL."""
        from reference.engine import Engine
        self.records += self.engine.take_records()
        now = self.engine.now
        self.records = [r for r in self.records if r.offset <= self.engine.durable]
        self.model.crash()
        self.engine = Engine.recover(self.records, clean=False, now=now, policy=self.policy, max_queue=10_000,
                                     max_undurable=MAX_UNDURABLE)
        self.records += self.engine.take_records()
        self.engine.advance_durable(self.engine.committed)
        self.conns.clear()
        self._same_tables("crash")

    def identity(self, person: str) -> str:
        return self.model.identity(person)

    def connect(self, conn: str, person: Person, confirmed: bool) -> None:
        self.model.connect(conn, person, confirmed)
        self.conns[conn] = self.engine.connect(claims_of(person), confirmed)

    def close(self, conn: str) -> None:
        self.model.close(conn)
        self.engine.close(self.conns.pop(conn))
        self._durable()
        self._same_tables("close")

    def send(self, conn: str, msg: sm.ClientMessage) -> None:
        self.model.send(conn, msg)
        self.engine.handle(self.conns[conn], msg)
        self._durable()
        self._same_tables(repr(msg)[:80])

    def sync(self, conn: str) -> list[sm.ServerMessage]:
        from support.diff import normalize
        cid = self.conns[conn]
        mine = []
        while self.engine.releasable(cid):
            mine.append(self.engine.pop(cid))
        theirs = self.model.sync(conn)
        got = [normalize(o) for o in mine]
        want = [normalize(sm.Outbound(o.offset, m)) for o, m in zip(mine, theirs, strict=False)]
        if len(mine) != len(theirs) or got != want:
            raise AssertionError(f"{conn}: engine sent {got}, the model {[type(m).__name__ for m in theirs]}")
        return theirs

    def call_http(self, person: Person, reducer: str, args: tuple[Any, ...]) -> str:
        want = self.model.call_http(person, reducer, args)
        try:
            self.engine.call_detached(claims_of(person), reducer, args)
            got = "ok"
        except SyncError as err:
            got = err.code.value
        self._durable()
        assert got == want, f"http {reducer}: engine {got}, model {want}"
        self._same_tables(f"http {reducer}")
        return got

    def advance(self, us: int, sweep: bool, compact: bool) -> None:
        self.model.advance(us, sweep, compact)
        self.engine.now += us
        if sweep:
            self.engine.sweep(self.engine.now)
        if compact:
            self.engine.compact(self.engine.now)
        self._durable()
        self._same_tables("advance")

    def _same_tables(self, where: str) -> None:
        db = self.model.server.db
        floors = ((db.epoch_floor, db.version_floor), (self.engine.db.epoch_floor, self.engine.db.version_floor))
        if floors[0] != floors[1]:
            raise AssertionError(f"after {where}: floors (epoch, version) model {floors[0]}, engine {floors[1]}")
        for table, rows in db.tables.items():
            if set(rows) != set(self.engine.db.rows(table)):
                raise AssertionError(f"after {where}: table {table} differs: model {rows}, "
                                     f"engine {tuple(self.engine.db.rows(table))}")


class WireDriver:
    """The real server (in a thread) over WebSockets; the clock is the scenario's."""

    BARRIER = 3_000_000_000

    def __init__(self, data_dir: Path, policy: Policy) -> None:
        from support.server import running_server
        from support.wire_diff import FakeClock
        self.clock = FakeClock(T0)
        self._stack = contextlib.ExitStack()
        self.st = self._stack.enter_context(running_server(
            data_dir, clock=self.clock, policy=policy, sweep_interval_s=1e6, compact_interval_s=1e6))
        self.clients: dict[str, Any] = {}
        self.inbox: dict[str, list[sm.ServerMessage]] = {}
        self.people: dict[str, str] = {}
        self._barrier = self.BARRIER

    def identity(self, person: str) -> str:
        return self.people[person]

    def shutdown(self) -> None:
        for c in self.clients.values():
            with contextlib.suppress(Exception):
                c.close()
        self._stack.close()

    def connect(self, conn: str, person: Person, confirmed: bool) -> None:
        from support.server import WireClient
        token = self.st.token(scopes=person.scopes, streams=person.streams, subject=person.name)
        self.clients[conn] = WireClient(self.st, token, confirmed=confirmed)
        self.people[person.name] = self.clients[conn].initial.identity
        self.inbox[conn] = []

    def close(self, conn: str) -> None:
        import time
        before = self.st.call(lambda: len(self.st.server.sessions))
        self.clients.pop(conn).close()
        self.inbox.pop(conn)
        deadline = time.monotonic() + 10
        while self.st.call(lambda: len(self.st.server.sessions)) >= before:  # the server took the close
            assert time.monotonic() < deadline, "the server did not notice the close"
            time.sleep(0.005)

    def hold(self) -> None:
        raise AssertionError("crash scenarios are not run over the wire in-process (Scenario.over_the_wire)")

    def crash(self) -> None:
        raise AssertionError("crash scenarios are not run over the wire in-process (Scenario.over_the_wire)")

    def call_http(self, person: Person, reducer: str, args: tuple[Any, ...]) -> str:
        from adapters import satsjson
        from spec.schema import REDUCER_BY_NAME
        from support.server import call_http
        token = self.st.token(scopes=person.scopes, streams=person.streams, subject=person.name)
        body = [satsjson.to_json(c.type, v) for c, v in zip(REDUCER_BY_NAME[reducer].args, args, strict=True)]
        res = call_http(self.st, token, reducer, body)
        return "ok" if res.status == 200 else SyncError.parse(res.text).code.value

    def send(self, conn: str, msg: sm.ClientMessage) -> None:
        from adapters import bsatn, wire
        c = self.clients[conn]
        if isinstance(msg, sm.CallReducer):
            c.send(wire.CallReducer(msg.request_id, 0, msg.reducer, bsatn.encode_args(msg.reducer, msg.args)))
        elif isinstance(msg, sm.Subscribe):
            c.send(wire.Subscribe(msg.request_id, msg.query_set_id, msg.queries))
        else:
            c.send(wire.Unsubscribe(msg.request_id, msg.query_set_id, 1 if msg.send_dropped else 0))
        self.inbox[conn].extend(self._until_barrier(conn))

    def _until_barrier(self, conn: str) -> list[sm.ServerMessage]:
        """A one-off query answered in order with everything else: once its answer is in, all the
        server had sent this connection before it is in too."""
        from adapters import wire
        c = self.clients[conn]
        self._barrier += 1
        rid = self._barrier
        c.send(wire.OneOffQuery(rid, "SELECT * FROM sync_stream"))
        out: list[sm.ServerMessage] = []
        while True:
            msg = c.recv()
            if isinstance(msg, wire.OneOffQueryResult) and msg.request_id == rid:
                return out
            out.append(wire.server_from_wire(msg))

    def sync(self, conn: str) -> list[sm.ServerMessage]:
        out = self.inbox[conn] + self._until_barrier(conn)
        self.inbox[conn] = []
        return out

    def advance(self, us: int, sweep: bool, compact: bool) -> None:
        self.clock.now += us
        srv = self.st.server

        def run() -> None:
            srv._tick()
            if sweep:
                srv._sweep()
            if compact:
                srv._compact()
            srv._pump()
        self.st.call(run)


# --- running a scenario ---------------------------------------------------------------------------------


@dataclass
class _Conn:
    qs: dict[int, dict[str, Counter[Row]]] = field(default_factory=dict)  # live query set -> table -> rows
    pending: list[sm.ServerMessage] = field(default_factory=list)


def _apply(conn: _Conn, msg: sm.ServerMessage) -> None:
    def rows(parts: tuple[sm.TableRows, ...], mirror: dict[str, Counter[Row]]) -> None:
        for t in parts:
            if TABLE_BY_NAME[t.table].event:
                continue
            bucket = mirror.setdefault(t.table, Counter())
            bucket.update(t.inserts)
            bucket.subtract(t.deletes)

    if isinstance(msg, sm.SubscribeApplied):
        conn.qs[msg.query_set_id] = {}
        rows(msg.rows, conn.qs[msg.query_set_id])
    elif isinstance(msg, sm.TransactionUpdate | sm.ReducerResult):
        sets = msg.query_sets if isinstance(msg, sm.TransactionUpdate) else (
            msg.outcome.query_sets if isinstance(msg.outcome, sm.ReducerOk) else ())
        for u in sets:
            if u.query_set_id in conn.qs:
                rows(u.tables, conn.qs[u.query_set_id])


def _outcome_error(msg: sm.ReducerResult | sm.SubscriptionError) -> SyncError | None:
    if isinstance(msg, sm.SubscriptionError):
        return SyncError.parse(msg.error)
    return SyncError.parse(msg.outcome.error) if isinstance(msg.outcome, sm.ReducerErr) else None


def run(scenario: Scenario, driver: Driver) -> None:
    """Run every step; an unmet expectation raises AssertionError naming the step."""
    people = {p.name: p for p in scenario.people}
    conns: dict[str, _Conn] = {}
    next_id = iter(range(1, 10**6))

    def take(conn: str, want: Callable[[sm.ServerMessage], bool]) -> sm.ServerMessage:
        c = conns[conn]
        c.pending += driver.sync(conn)
        found = None
        for m in c.pending:
            _apply(c, m)
            if found is None and want(m):
                found = m
        c.pending = []
        if found is None:
            raise AssertionError(f"{conn}: no answer")
        return found

    for n, step in enumerate(scenario.steps):
        where = f"{scenario.name} step {n} {step}"
        if isinstance(step, Connect):
            driver.connect(step.conn, people[step.person], step.confirmed)
            conns[step.conn] = _Conn()
        elif isinstance(step, Close):
            driver.close(step.conn)
            del conns[step.conn]
        elif isinstance(step, Call):
            rid = next(next_id)
            driver.send(step.conn, sm.CallReducer(rid, step.reducer, step.args))
            res = take(step.conn, lambda m, rid=rid: isinstance(m, sm.ReducerResult) and m.request_id == rid)
            assert isinstance(res, sm.ReducerResult)
            err = _outcome_error(res)
            got = "ok" if err is None else err.code.value
            assert got == step.expect, f"{where}: got {err.render() if err else 'ok'}"
            if err is not None and step.details is not None:
                assert {k: err.details.get(k) for k in step.details} == dict(step.details), f"{where}: {err.render()}"
            if step.ret is not None:
                assert isinstance(res.outcome, sm.ReducerOk) and res.outcome.ret == step.ret, f"{where}: {res}"
        elif isinstance(step, CallHttp):
            got = driver.call_http(people[step.person], step.reducer, step.args)
            assert got == step.expect, f"{where}: got {got}"
        elif isinstance(step, Sub):
            rid, qs = next(next_id), next(next_id)
            driver.send(step.conn, sm.Subscribe(rid, qs, step.queries))
            ans = take(step.conn, lambda m, qs=qs: isinstance(m, sm.SubscribeApplied | sm.SubscriptionError)
                       and m.query_set_id == qs)
            err = _outcome_error(ans) if isinstance(ans, sm.SubscriptionError) else None
            got = "applied" if err is None else err.code.value
            assert got == step.expect, f"{where}: got {err.render() if err else 'applied'}"
            if err is not None and step.message is not None:
                assert step.message in str(err.details.get("message", "")), f"{where}: {err.render()}"
            if err is not None and step.details is not None:
                assert {k: err.details.get(k) for k in step.details} == dict(step.details), f"{where}: {err.render()}"
        elif isinstance(step, Sees):
            c = conns[step.conn]
            c.pending += driver.sync(step.conn)
            for m in c.pending:
                _apply(c, m)
            c.pending = []
            held = {tuple(getattr(r, col) for col in step.columns)
                    for mirror in c.qs.values() for r, k in mirror.get(step.table, Counter()).items() if k > 0}
            want = {tuple(driver.identity(v.name) if isinstance(v, Who) else v for v in row) for row in step.rows}
            assert held == want, f"{where}: holds {sorted(held)}"
        elif isinstance(step, Hold):
            driver.hold()
        elif isinstance(step, Crash):
            for name in conns:  # what each client had received before the crash stays received
                c = conns[name]
                c.pending += driver.sync(name)
                for m in c.pending:
                    _apply(c, m)
            driver.crash()
            conns.clear()
        else:
            for name in conns:  # deliver what is pending before time moves
                conns[name].pending += driver.sync(name)
            driver.advance(step.us, step.sweep, step.compact)


def run_wire(scenario: Scenario, data_dir: Path) -> None:
    d = WireDriver(data_dir, scenario.policy)
    try:
        run(scenario, d)
    finally:
        d.shutdown()


# --- the scenarios ------------------------------------------------------------------------------------

REQUESTER = Person("requester", frozenset({"sync.subscribe", "compute.request"}))
DISPATCHER = Person("dispatcher", frozenset({"sync.subscribe", "compute.assign"}))
PROVIDER = Person("provider", frozenset({"sync.subscribe", "provider.publish", "compute.execute"}))
SQUATTER = Person("squatter", frozenset({"sync.subscribe", "provider.publish", "compute.execute"}))
EXECUTOR = Person("executor", frozenset({"sync.subscribe", "compute.execute"}))
COMPUTE_PEOPLE = (REQUESTER, DISPATCHER, PROVIDER, SQUATTER, EXECUTOR)
WATCH_COMPUTE = ("SELECT * FROM compute_assignment",)
CAP = '{"gpu":1}'


def _compute_watchers() -> tuple[Step, ...]:
    return tuple(s for p in COMPUTE_PEOPLE for s in (Connect(p.name, p.name), Sub(p.name, WATCH_COMPUTE)))


def _sees_jobs(who: str, *rows: tuple[str, str]) -> Sees:
    return Sees(who, "compute_assignment", ("request_id", "status"), frozenset(rows))


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("assign_to_an_unpublished_provider", 1, COMPUTE_PEOPLE, (
        *_compute_watchers(),
        Call("requester", "open_compute_assignment", ("r1", 5000, '{"prompt":"secret"}')),
        # today: accepted, and whoever publishes prov.x first reads the request
        Call("dispatcher", "update_compute_assignment", ("r1", 1, "assigned", "prov.x", None),
             expect="provider_unavailable", details={"job_kind": 5000, "provider_id": "prov.x", "reason": "missing"}),
        Call("squatter", "publish_provider_capability", ("prov.x", CAP, (5000,), 1, "active")),
        # publishing changes nobody's view: the squatter reads nothing, and nothing was owed to it
        _sees_jobs("squatter"), _sees_jobs("requester", ("r1", "open")), _sees_jobs("dispatcher", ("r1", "open")),
        _sees_jobs("executor"), _sees_jobs("provider"),
    )),
    Scenario("assign_checks_the_provider", 1, COMPUTE_PEOPLE, (
        *_compute_watchers(),
        Call("requester", "open_compute_assignment", ("r1", 5000, '{"prompt":"p"}')),
        Call("provider", "publish_provider_capability", ("prov.p", CAP, (5001,), 1, "active")),
        Call("dispatcher", "update_compute_assignment", ("r1", 1, "assigned", "prov.p", None),
             expect="provider_unavailable", details={"reason": "kind_not_advertised", "job_kind": 5000}),
        Call("provider", "publish_provider_capability", ("prov.p", CAP, (5000, 5001), 1, "withdrawn")),
        Call("dispatcher", "update_compute_assignment", ("r1", 1, "assigned", "prov.p", None),
             expect="provider_unavailable", details={"reason": "withdrawn", "provider_id": "prov.p"}),
        _sees_jobs("provider"),
        Call("provider", "publish_provider_capability", ("prov.p", CAP, (5000, 5001), 1, "active")),
        Call("dispatcher", "update_compute_assignment", ("r1", 1, "assigned", "prov.p", None)),
        # the assignment enters the provider owner's view with the update that names it
        _sees_jobs("provider", ("r1", "assigned")), _sees_jobs("requester", ("r1", "assigned")),
        _sees_jobs("dispatcher", ("r1", "assigned")),
        # compute.execute alone reads nothing; another provider's owner reads nothing
        _sees_jobs("executor"), _sees_jobs("squatter"),
        Sees("provider", "compute_assignment", ("request_id", "provider_id", "provider_owner"),
             frozenset({("r1", "prov.p", Who("provider"))})),
        # withdrawing later does not take the job away (visibility is the row's, not the provider's)
        Call("provider", "publish_provider_capability", ("prov.p", CAP, (5000, 5001), 1, "withdrawn")),
        _sees_jobs("provider", ("r1", "assigned")),
    )),
)


def _forbidden(conn: str, rid: str, version: int, status: str, result: str | None = None,
               provider: str | None = None) -> Call:
    return Call(conn, "update_compute_assignment", (rid, version, status, provider, result), expect="forbidden",
                details={"request_id": rid})


def _edge(conn: str, rid: str, version: int, status: str, provider: str | None = None,
          result: str | None = None) -> Call:
    return Call(conn, "update_compute_assignment", (rid, version, status, provider, result))


SCENARIOS += (
    Scenario("execute_edges_belong_to_the_provider_owner", 2, COMPUTE_PEOPLE, (
        *_compute_watchers(),
        Call("provider", "publish_provider_capability", ("prov.p", CAP, (5000,), 1, "active")),
        Call("squatter", "publish_provider_capability", ("prov.s", CAP, (5000,), 1, "active")),
        Call("requester", "open_compute_assignment", ("r1", 5000, '{"prompt":"p"}')),
        _forbidden("provider", "r1", 1, "assigned", provider="prov.p"),  # an executor is no dispatcher
        _edge("dispatcher", "r1", 1, "assigned", "prov.p"),
        # today every compute.execute holder may start, complete or fail any job
        _forbidden("squatter", "r1", 2, "running"),  # another provider's owner
        _forbidden("executor", "r1", 2, "running"),  # compute.execute, owning no provider
        _forbidden("dispatcher", "r1", 2, "running"),
        _forbidden("requester", "r1", 2, "running"),
        _edge("provider", "r1", 2, "running"),
        _forbidden("squatter", "r1", 3, "completed", '{"forged":true}'),
        _forbidden("squatter", "r1", 3, "failed"),
        _edge("provider", "r1", 3, "completed", result='{"answer":42}'),
        Sees("requester", "compute_assignment", ("request_id", "status", "result", "version"),
             frozenset({("r1", "completed", '{"answer":42}', 4)})),
        # cancel: the requester or a dispatcher, never an executor
        Call("requester", "open_compute_assignment", ("r2", 5000, "{}")),
        _edge("dispatcher", "r2", 1, "assigned", "prov.p"),
        _forbidden("provider", "r2", 2, "cancelled"),
        _edge("requester", "r2", 2, "cancelled"),
        Call("requester", "open_compute_assignment", ("r3", 5000, "{}")),
        _edge("dispatcher", "r3", 1, "assigned", "prov.p"),
        _edge("provider", "r3", 2, "running"),
        _forbidden("squatter", "r3", 3, "cancelled"),
        _edge("dispatcher", "r3", 3, "cancelled"),
        _sees_jobs("provider", ("r1", "completed"), ("r2", "cancelled"), ("r3", "cancelled")),
        _sees_jobs("squatter"),
    )),
)
READER = Person("reader", frozenset({"sync.subscribe", "sync.append"}), ("s.*",))
RESUME_FORM = "SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W"


def _appends(conn: str, stream: str, n: int, start: int = 1) -> tuple[Step, ...]:
    return tuple(Call(conn, "append_sync_event", (stream, f"k{k}", f'{{"n":{k}}}', None, None), ret=k)
                 for k in range(start, start + n))


SCENARIOS += (
    Scenario("resume_needs_stream_and_epoch", 3, (READER,), (
        Connect("reader", "reader"),
        *_appends("reader", "s.a", 3),
        # today: accepted without the epoch check, so a cursor from a lost suffix is valid again later
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND seq > 1",), expect="invalid_query",
            message=RESUME_FORM),
        Sub("reader", ('SELECT * FROM "sync_event" WHERE ("sync_event"."stream_id" = \'s.a\') AND '
                       '("sync_event"."seq" > 2)',), expect="invalid_query", message="missing: epoch"),
        Sub("reader", ("SELECT * FROM sync_event WHERE seq >= 2",), expect="invalid_query",
            message="missing: stream_id, epoch"),
        Sub("reader", ("SELECT * FROM sync_event WHERE epoch = 1 AND 1 < seq",), expect="invalid_query",
            message="missing: stream_id"),
        # one bad query fails the whole set, before any grant or stale check
        Sub("reader", ("SELECT * FROM sync_stream", "SELECT * FROM sync_event WHERE stream_id = 'x.b' AND seq > 0"),
            expect="invalid_query"),
        # the forms that pin both are resumes, in every spelling (the TS SDK's query builder included)
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND seq > 2",)),
        Sub("reader", ('SELECT * FROM "sync_event" WHERE (("sync_event"."stream_id" = \'s.a\') AND '
                       '("sync_event"."epoch" = 1)) AND ("sync_event"."seq" > 1)',)),
        Sub("reader", ('SELECT * FROM "sync_event" WHERE ("sync_event"."stream_id" = \'s.a\') AND '
                       '("sync_event"."epoch" = 1) AND ("sync_event"."seq" >= 3)',)),
        Sees("reader", "sync_event", ("seq",), frozenset({(2,), (3,)})),
        # and a query that does not bound seq is no resume: it reads the stream
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.a'",)),
        Sees("reader", "sync_event", ("seq",), frozenset({(1,), (2,), (3,)})),
        # a resume in another epoch is stale as before
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 2 AND seq > 1",),
            expect="stale_cursor", details={"reasons": ["epoch_changed"]}),
    )),
)
DEVICE = Person("device", frozenset({"sync.subscribe", "presence.write"}))
WATCHER = Person("watcher", frozenset({"sync.subscribe"}))


def _upsert(conn: str, session: str, status: str = "online") -> Call:
    return Call(conn, "upsert_presence", (session, "dev1", "node1", status, "eu", 60_000))


def _presence(*rows: tuple[str, str, str | None]) -> Sees:
    return Sees("watcher", "session_presence", ("session_id", "status", "offline_reason"), frozenset(rows))


SCENARIOS += (
    Scenario("reconnect_does_not_flap_presence", 4, (DEVICE, WATCHER), (
        Connect("watcher", "watcher"), Sub("watcher", ("SELECT * FROM session_presence",)),
        Connect("old", "device"), _upsert("old", "s1"),
        # the device reconnects before the server noticed the old connection is gone, and re-upserts
        Connect("new", "device"), _upsert("new", "s1"),
        Close("old"),  # today: s1 goes offline (disconnected) although "new" is live
        _presence(("s1", "online", None)),
        Close("new"),  # the connection that upserted it last closes: now it is disconnected
        _presence(("s1", "offline", "disconnected")),
        # an upsert over HTTP belongs to no connection: the earlier connection no longer marks it
        Connect("c", "device"), _upsert("c", "s2"),
        CallHttp("device", "upsert_presence", ("s2", "dev1", "node1", "away", "eu", 60_000)),
        Close("c"),
        _presence(("s1", "offline", "disconnected"), ("s2", "away", None)),
        Advance(61 * 10**6, sweep=True),  # ... it expires instead
        _presence(("s1", "offline", "disconnected"), ("s2", "offline", "ttl_expired")),
    )),
)
BRIDGE = Person("bridge", frozenset({"sync.subscribe", "bridge.enqueue", "bridge.mark_sent"}))
EID = "ab" * 32
TAGS = '[["d","receipt:1"]]'


def _outbox(*rows: tuple[Any, ...]) -> Sees:
    return Sees("bridge", "bridge_outbox", ("outbox_id", "status", "attempts", "next_attempt_at", "relays_acked"),
                frozenset(rows))


SCENARIOS += (
    Scenario("outbox_rules_the_bridge_relies_on", 7, (BRIDGE,), (
        Connect("bridge", "bridge"), Sub("bridge", ("SELECT * FROM bridge_outbox",)),
        Call("bridge", "enqueue_bridge_event", ("o1", "receipts", 30078, TAGS, "r1")),
        _outbox(("o1", "pending", 0, T0, ())),  # due at once
        Call("bridge", "enqueue_bridge_event", ("o1", "receipts", 30078, TAGS, "r1")),  # a retry: no-op
        # today: the source is not in the dedupe hash, so another source is a silent no-op
        Call("bridge", "enqueue_bridge_event", ("o1", "providers", 30078, TAGS, "r1"), expect="idempotency_conflict"),
        # today kind 1 (a plain note) is allowed; DESIGN names only 31990 and 30078
        Call("bridge", "enqueue_bridge_event", ("o2", "notes", 1, "[]", "hi"), expect="policy_denied",
             details={"nostr_kind": 1, "outbox_id": "o2"}),
        # today a control character relays serialize differently (NIP-01 verbatim, JSON escaped) is accepted
        Call("bridge", "enqueue_bridge_event", ("o3", "receipts", 30078, "[]", "bell\x07"), expect="policy_denied",
             details={"nostr_kind": 30078, "outbox_id": "o3"}),
        Call("bridge", "enqueue_bridge_event", ("o3", "receipts", 30078, '[["t","\\u001f"]]', "ok"),
             expect="policy_denied", details={"nostr_kind": 30078, "outbox_id": "o3"}),
        Advance(5 * 10**6),
        # today retry_after_ms is validated and dropped
        Call("bridge", "record_bridge_failure", ("o1", "relay timeout", 30_000)),
        _outbox(("o1", "pending", 1, T0 + 35 * 10**6, ())),
        Call("bridge", "mark_bridge_event_sent", ("o1", EID, ("wss://a",))),
        _outbox(("o1", "sent", 1, T0 + 35 * 10**6, ("wss://a",))),
        # today a repeated success ignores the relays acknowledged since
        Call("bridge", "mark_bridge_event_sent", ("o1", EID, ("wss://b", "wss://a"))),
        _outbox(("o1", "sent", 1, T0 + 35 * 10**6, ("wss://a", "wss://b"))),
        Call("bridge", "mark_bridge_event_sent", ("o1", EID, ("wss://b",))),  # nothing new: a no-op
        Call("bridge", "mark_bridge_event_sent", ("o1", "cd" * 32, ("wss://c",)), expect="bridge_event_conflict",
             details={"nostr_event_id": EID, "requested_nostr_event_id": "cd" * 32, "outbox_id": "o1"}),
        _outbox(("o1", "sent", 1, T0 + 35 * 10**6, ("wss://a", "wss://b"))),
    )),
)
KEEPER = Person("keeper", frozenset({"sync.subscribe", "presence.write", "compute.request", "compute.assign",
                                     "bridge.enqueue", "bridge.mark_sent"}))


def _kept(presence: frozenset[tuple[Any, ...]], jobs: frozenset[tuple[Any, ...]],
          outbox: frozenset[tuple[Any, ...]]) -> tuple[Step, ...]:
    return (Sees("keeper", "session_presence", ("session_id", "status"), presence),
            Sees("keeper", "compute_assignment", ("request_id", "status"), jobs),
            Sees("keeper", "bridge_outbox", ("outbox_id", "status"), outbox))


SCENARIOS += (
    Scenario("resume_from_seq_ge_0", 8, (READER,), (
        Connect("reader", "reader"), *_appends("reader", "s.a", 2),
        # today seq >= 0 is watermark -1: a retention floor breach on every stream
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND seq >= 0",)),
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND 0 <= seq",)),
        Sub("reader", ("SELECT * FROM sync_event WHERE stream_id = 's.b' AND epoch = 1 AND seq >= 0",)),
        Sees("reader", "sync_event", ("seq",), frozenset({(1,), (2,)})),
    )),
    Scenario("retention_of_presence_assignments_and_outbox", 8, (KEEPER,), (
        Connect("keeper", "keeper"),
        Sub("keeper", ("SELECT * FROM session_presence", "SELECT * FROM compute_assignment",
                       "SELECT * FROM bridge_outbox")),
        _upsert("keeper", "gone"), _upsert("keeper", "gone", "offline"), _upsert("keeper", "live"),
        Call("keeper", "open_compute_assignment", ("done", 5000, "{}")),
        Call("keeper", "update_compute_assignment", ("done", 1, "cancelled", None, None)),
        Call("keeper", "open_compute_assignment", ("open", 5000, "{}")),
        Call("keeper", "enqueue_bridge_event", ("sent", "r", 30078, "[]", "a")),
        Call("keeper", "mark_bridge_event_sent", ("sent", EID, ())),
        Call("keeper", "enqueue_bridge_event", ("dead", "r", 30078, "[]", "b")),
        *(Call("keeper", "record_bridge_failure", ("dead", "down", 0)) for _ in range(5)),
        Call("keeper", "enqueue_bridge_event", ("wait", "r", 30078, "[]", "c")),
        Advance(DAY_US, compact=True),  # exactly a day: not older than the window yet
        *_kept(frozenset({("gone", "offline"), ("live", "online")}),
               frozenset({("done", "cancelled"), ("open", "open")}),
               frozenset({("sent", "sent"), ("dead", "failed"), ("wait", "pending")})),
        Advance(1, compact=True),  # today nothing is ever removed
        *_kept(frozenset({("live", "online")}), frozenset({("done", "cancelled"), ("open", "open")}),
               frozenset({("sent", "sent"), ("dead", "failed"), ("wait", "pending")})),
        # the live session's TTL ran out long ago: the sweep takes it offline (last_seen kept), and it is
        # past its day at once
        Advance(0, sweep=True, compact=True),
        *_kept(frozenset(), frozenset({("done", "cancelled"), ("open", "open")}),
               frozenset({("sent", "sent"), ("dead", "failed"), ("wait", "pending")})),
        Advance(6 * DAY_US, compact=True),
        *_kept(frozenset(), frozenset({("open", "open")}), frozenset({("dead", "failed"), ("wait", "pending")})),
        # past the window the id names nothing: it is free again (the dedupe horizon is the window)
        Call("keeper", "enqueue_bridge_event", ("sent", "other", 31990, "[]", "new")),
        Call("keeper", "open_compute_assignment", ("done", 5001, '{"again":1}')),
        Advance(23 * DAY_US + 1, compact=True),
        *_kept(frozenset(), frozenset({("open", "open"), ("done", "open")}),
               frozenset({("sent", "pending"), ("wait", "pending")})),
    )),
)
DISPATCHER2 = Person("dispatcher2", frozenset({"sync.subscribe", "compute.assign"}))
V = 1 + MAX_UNDURABLE + 1  # the versions after one unclean restart from versions <= 1


def _versions(who: str, table: str, key: str, *rows: tuple[str, int]) -> Sees:
    return Sees(who, table, (key, "version"), frozenset(rows))


SCENARIOS += (
    Scenario("versions_are_never_reused_after_retention", 5, COMPUTE_PEOPLE, (
        *_compute_watchers(),
        Call("requester", "open_compute_assignment", ("r1", 5000, '{"v":1}')),
        _edge("requester", "r1", 1, "cancelled"),
        _versions("requester", "compute_assignment", "request_id", ("r1", 2)),
        Advance(7 * DAY_US + 1, compact=True),  # retention removes the terminal row ...
        _versions("requester", "compute_assignment", "request_id"),
        # ... and the id comes back above every version it had (today: version 1 again, for new content)
        Call("requester", "open_compute_assignment", ("r1", 5000, '{"v":2}')),
        _versions("requester", "compute_assignment", "request_id", ("r1", 3)),
        Sub("provider", ("SELECT * FROM provider_capability",)),
        Call("provider", "publish_provider_capability", ("prov.new", CAP, (5000,), 1, "active")),
        Sees("provider", "provider_capability", ("provider_id", "version"), frozenset({("prov.new", 3)})),
    )),
    Scenario("versions_are_never_reused_after_a_crash", 5, (*COMPUTE_PEOPLE, DISPATCHER2), (
        *_compute_watchers(),
        Call("requester", "open_compute_assignment", ("r1", 5000, '{"v":1}')),
        Call("provider", "publish_provider_capability", ("prov.p", CAP, (5000,), 1, "active")),
        Call("provider", "publish_provider_capability", ("prov.q", CAP, (5000,), 1, "active")),
        Hold(),  # the disk stalls: what follows is never durable
        _edge("dispatcher", "r1", 1, "assigned", "prov.p"),
        Sees("dispatcher", "compute_assignment", ("request_id", "status", "provider_id", "version"),
             frozenset({("r1", "assigned", "prov.p", 2)})),  # the dispatcher saw version 2 = prov.p
        Crash(),
        # recovery raises every version past what the lost suffix can have handed out
        Connect("dispatcher2", "dispatcher2"), Sub("dispatcher2", WATCH_COMPUTE),
        Sees("dispatcher2", "compute_assignment", ("request_id", "status", "version"), frozenset({("r1", "open", V)})),
        _edge("dispatcher2", "r1", V, "assigned", "prov.q"),
        # today the row rolled back to version 1 and this assign made version 2 name prov.q, so the first
        # dispatcher's compare-and-set against the version 2 it saw (prov.p) succeeded on state it never saw
        Connect("dispatcher", "dispatcher"),
        Call("dispatcher", "update_compute_assignment", ("r1", 2, "cancelled", None, None), expect="version_conflict",
             details={"actual_version": V + 1, "expected_version": 2}),
        Connect("provider", "provider"), Sub("provider", ("SELECT * FROM provider_capability",)),
        Call("provider", "publish_provider_capability", ("prov.r", CAP, (5000,), 1, "active")),
        Sees("provider", "provider_capability", ("provider_id", "version"),
             frozenset({("prov.p", V), ("prov.q", V), ("prov.r", V)})),
    )),
)
WRITER = Person("writer", frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write", "sync.admin"}),
                ("s.*",))
E2 = 1 + MAX_UNDURABLE + 1  # the epoch after one unclean restart from epoch 1


def _resume(at_epoch: int, w: int, expect: str = "applied", **details: Any) -> Sub:
    return Sub("writer", (f"SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = {at_epoch} AND seq > {w}",),
               expect=expect, details=details or None)


SCENARIOS += (
    Scenario("an_unclean_restart_continues_the_epoch", 6, (WRITER,), (
        Connect("writer", "writer"), *_appends("writer", "s.a", 3),
        Call("writer", "ack_checkpoint", ("laptop", "s.a", 1, 3)),
        Hold(), *_appends("writer", "s.a", 1, start=4), Crash(),  # seq 4 was never durable
        Connect("writer", "writer"),
        # today: epoch_changed for everyone and the new epoch starts empty (every client rebootstraps)
        _resume(1, 3, "stale_cursor", reasons=["epoch_changed"], epoch=E2, continues_epoch=1, continues_seq=3,
                floor_seq=1, head_seq=3),
        _resume(1, 4, "stale_cursor", reasons=["epoch_changed", "cursor_ahead_of_head"], continues_seq=3),
        _resume(E2, 3),  # the continue: same watermark, the new epoch
        _resume(E2, 0),  # the durable events are the new epoch's, relabelled
        Sees("writer", "sync_event", ("epoch", "seq"), frozenset({(E2, 1), (E2, 2), (E2, 3)})),
        Sub("writer", ("SELECT * FROM sync_stream WHERE stream_id = 's.a'",)),
        Sees("writer", "sync_stream", ("epoch", "continues_epoch", "continues_seq", "floor_seq", "head_seq"),
             frozenset({(E2, 1, 3, 1, 3)})),
        Sub("writer", ("SELECT * FROM sync_checkpoint",)),
        Sees("writer", "sync_checkpoint", ("epoch", "last_applied_seq"), frozenset({(E2, 3)})),
        Call("writer", "append_sync_event", ("s.a", "k4", '{"new":4}', None, None), ret=4),
        Sees("writer", "sync_event", ("epoch", "seq"), frozenset({(E2, 1), (E2, 2), (E2, 3), (E2, 4)})),
        # an admin reset starts a fresh epoch: it continues nothing
        Call("writer", "reset_stream_epoch", ("s.a",)),
        Sees("writer", "sync_stream", ("epoch", "continues_epoch", "continues_seq", "floor_seq", "head_seq"),
             frozenset({(E2 + 1, 0, 0, 5, 4)})),
        _resume(E2, 4, "stale_cursor", reasons=["epoch_changed"], continues_epoch=0, continues_seq=0),
    )),
)


def scenario_names(defect: int | None = None, wire: bool = False) -> Iterator[str]:
    for s in SCENARIOS:
        if (defect is None or s.defect == defect) and (s.over_the_wire or not wire):
            yield s.name


def people_claims(scenario: Scenario) -> Sequence[Claims]:
    return [claims_of(p) for p in scenario.people]


# --- reach (issue 9, "Measure what is reached"): lifecycle edges the random machines reach rarely ---------

OPS = Person("ops", frozenset({"sync.subscribe", "presence.write", "provider.publish", "compute.request",
                               "compute.assign", "compute.execute", "bridge.enqueue", "bridge.mark_sent"}))
WATCH_LIFECYCLE = ("SELECT * FROM compute_assignment", "SELECT * FROM bridge_outbox",
                   "SELECT * FROM session_presence")
EVENT_A, EVENT_B = "a" * 64, "b" * 64


def _fail_times(conn: str, oid: str, n: int) -> tuple[Step, ...]:
    return tuple(Call(conn, "record_bridge_failure", (oid, "relay down", 1000)) for _ in range(n))


def _job_to(status: str) -> tuple[Step, ...]:
    """Open r.<status> and walk it to ``status`` (ops is requester, dispatcher and provider owner)."""
    rid = f"r.{status}"
    path = {"open": (), "assigned": ("assigned",), "running": ("assigned", "running"),
            "completed": ("assigned", "running", "completed"), "failed": ("assigned", "running", "failed"),
            "cancelled": ("cancelled",)}[status]
    steps: list[Step] = [Call("ops", "open_compute_assignment", (rid, 5000, "{}"))]
    for version, s in enumerate(path, start=1):
        steps.append(_edge("ops", rid, version, s, "prov.o" if s == "assigned" else None,
                           '{"r":1}' if s in ("completed", "failed") else None))
    return tuple(steps)


SCENARIOS += (
    Scenario("lifecycles_to_the_end", 8, (OPS,), (
        Connect("ops", "ops"), Sub("ops", WATCH_LIFECYCLE),
        # presence: online -> away -> away (a refresh) -> offline (explicit)
        Call("ops", "upsert_presence", ("sess.o", "dev", "node", "online", "eu", 60_000)),
        Advance(1000), Call("ops", "upsert_presence", ("sess.o", "dev", "node", "away", "eu", 60_000)),
        Advance(1000), Call("ops", "upsert_presence", ("sess.o", "dev", "node", "away", "eu", 60_000)),
        Advance(1000), Call("ops", "upsert_presence", ("sess.o", "dev", "node", "offline", "eu", 60_000)),
        # outbox: pending -> pending (x4) -> failed at the 5th attempt -> sent (a late success) -> sent (relays merge)
        Call("ops", "enqueue_bridge_event", ("o.1", "src", 30078, "[]", "hello")),
        *_fail_times("ops", "o.1", 4),
        Sees("ops", "bridge_outbox", ("outbox_id", "status", "attempts"), frozenset({("o.1", "pending", 4)})),
        *_fail_times("ops", "o.1", 1),
        Sees("ops", "bridge_outbox", ("outbox_id", "status", "attempts"), frozenset({("o.1", "failed", 5)})),
        Call("ops", "mark_bridge_event_sent", ("o.1", EVENT_A, ("wss://r1",))),
        Call("ops", "mark_bridge_event_sent", ("o.1", EVENT_A, ("wss://r2",))),
        Call("ops", "mark_bridge_event_sent", ("o.1", EVENT_B, ("wss://r2",)), expect="bridge_event_conflict",
             details={"nostr_event_id": EVENT_A, "requested_nostr_event_id": EVENT_B}),
        Sees("ops", "bridge_outbox", ("outbox_id", "status", "relays_acked"),
             frozenset({("o.1", "sent", ("wss://r1", "wss://r2"))})),
        Call("ops", "enqueue_bridge_event", ("o.2", "src", 31990, "[]", "dead letter")),
        *_fail_times("ops", "o.2", 5),
        # assignments in every status, then an unclean restart raises every version (VER-1)
        Call("ops", "publish_provider_capability", ("prov.o", CAP, (5000,), 1, "active")),
        *(s for status in ("open", "assigned", "running", "completed", "failed", "cancelled")
          for s in _job_to(status)),
        Crash(),
        Connect("ops2", "ops"), Sub("ops2", WATCH_LIFECYCLE),
        Sees("ops2", "compute_assignment", ("request_id", "status", "version"), frozenset({
            ("r.open", "open", 1 + MAX_UNDURABLE + 4), ("r.assigned", "assigned", 2 + MAX_UNDURABLE + 3),
            ("r.running", "running", 3 + MAX_UNDURABLE + 2), ("r.completed", "completed", 4 + MAX_UNDURABLE + 1),
            ("r.failed", "failed", 4 + MAX_UNDURABLE + 1), ("r.cancelled", "cancelled", 2 + MAX_UNDURABLE + 3)})),
        # retention: 8 days on, terminal assignments, the sent outbox row and the offline session go; the
        # dead letter stays (30 days), live assignments stay
        Advance(8 * DAY_US, compact=True),
        _sees_jobs("ops2", ("r.open", "open"), ("r.assigned", "assigned"), ("r.running", "running")),
        Sees("ops2", "bridge_outbox", ("outbox_id", "status"), frozenset({("o.2", "failed")})),
        Sees("ops2", "session_presence", ("session_id",), frozenset()),
        Advance(23 * DAY_US, compact=True),
        Sees("ops2", "bridge_outbox", ("outbox_id", "status"), frozenset()),
    )),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}
