"""Differential harness: the model (spec) and the reference engine, driven in lockstep.

:class:`DiffSystem` *is* a :class:`spec.system.System` (so every trace invariant still runs on
the model side) that mirrors every action into a :class:`reference.engine.Engine` and, after
each step, compares: committed and durable offsets, every table's rows, the epoch floor, which
connections are alive, and every connection's outbound queue message by message (offsets and
normalized content: the same outcomes, the same rows, the same order).  Crashes rebuild the
engine from its commit log (:meth:`Engine.recover`) cut at the durable offset, exactly as a
restart from disk would; clean restarts from the whole log.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from reference.engine import Engine
from reference.log import TxRecord
from spec.auth import Claims
from spec.messages import (
    Outbound,
    QuerySetUpdate,
    ReducerOk,
    ReducerResult,
    SubscribeApplied,
    TableRows,
    TransactionUpdate,
)
from spec.policy import Policy
from spec.system import ADMIN, System


class Divergence(AssertionError):
    pass


def _rows(parts: tuple[TableRows, ...]) -> tuple[Any, ...]:
    return tuple(sorted((t.table, t.event, tuple(sorted(map(repr, Counter(t.inserts).elements()))),
                         tuple(sorted(map(repr, Counter(t.deletes).elements())))) for t in parts))


def _updates(ups: tuple[QuerySetUpdate, ...]) -> tuple[Any, ...]:
    return tuple(sorted((u.query_set_id, _rows(u.tables)) for u in ups))


def normalize(out: Outbound) -> tuple[Any, ...]:
    m = out.message
    if isinstance(m, SubscribeApplied):
        return (out.offset, "applied", m.request_id, m.query_set_id, _rows(m.rows))
    if isinstance(m, TransactionUpdate):
        return (out.offset, "tx", m.tx_offset, _updates(m.query_sets))
    if isinstance(m, ReducerResult):
        o = m.outcome
        body = ("ok", o.ret, _updates(o.query_sets)) if isinstance(o, ReducerOk) else ("err", o.error)
        return (out.offset, "result", m.request_id, m.tx_offset, body)
    return (out.offset, type(m).__name__, m)


class DiffSystem(System):
    def __init__(self, policy: Policy, clients: list[tuple[str, Claims, bool]], max_queue: int = 64,
                 max_undurable: int = 8) -> None:
        super().__init__(policy, clients, max_queue=max_queue, max_undurable=max_undurable)
        self.ref = Engine(policy, max_queue=max_queue, max_undurable=max_undurable)
        self.store: list[TxRecord] = []
        self.ref_links: dict[int, int] = {}
        self.ref_zombies: list[int] = []
        self.compared = 0

    # --- bookkeeping -----------------------------------------------------------------------------

    def _flush(self) -> None:
        self.store.extend(self.ref.take_records())

    def _compare(self, where: str) -> None:
        self._flush()
        s, r = self.server, self.ref
        if (s.committed, s.durable) != (r.committed, r.durable):
            raise Divergence(f"{where}: offsets model {(s.committed, s.durable)} ref {(r.committed, r.durable)}")
        for table, rows in s.db.tables.items():
            ref_rows = set(r.db.rows(table))
            if set(rows) != ref_rows:
                raise Divergence(f"{where}: table {table} differs: model-only {set(rows) - ref_rows}, "
                                 f"ref-only {ref_rows - set(rows)}")
        if (s.db.epoch_floor, s.db.version_floor) != (r.db.epoch_floor, r.db.version_floor):
            raise Divergence(f"{where}: floors (epoch, version) {(s.db.epoch_floor, s.db.version_floor)} vs "
                             f"{(r.db.epoch_floor, r.db.version_floor)}")
        for i in list(self.ref_links):
            if r.conns.get(self.ref_links[i]) is None:
                del self.ref_links[i]
        if set(self.links) != set(self.ref_links):
            raise Divergence(f"{where}: live clients model {sorted(self.links)} ref {sorted(self.ref_links)}")
        alive = [(z in s.conns, rz in r.conns) for z, rz in zip(self.zombies, self.ref_zombies, strict=True)]
        if any(a != b for a, b in alive):
            raise Divergence(f"{where}: half-open connections alive model/ref {alive}")
        for i, link in self.links.items():
            mq = [normalize(o) for o in s.conns[link.conn_id].outbound]
            rq = [normalize(o) for o in r.conns[self.ref_links[i]].outbound]
            if mq != rq:
                diff = next((k for k, (a, b) in enumerate(zip(mq, rq, strict=False)) if a != b), min(len(mq), len(rq)))
                raise Divergence(f"{where}: client {i} queues differ at {diff}: model {mq[diff:diff + 1]} "
                                 f"ref {rq[diff:diff + 1]} (lengths {len(mq)}/{len(rq)})")
        self.compared += 1

    def _drop_dead_links(self) -> None:
        super()._drop_dead_links()
        for i in list(self.ref_links):
            if i not in self.links:
                self.ref.close(self.ref_links.pop(i))

    # --- actions ---------------------------------------------------------------------------------

    def connect(self, i: int) -> None:
        if i in self.links:
            return
        c = self.clients[i]
        self.ref_links[i] = self.ref.connect(c.claims, c.confirmed)
        super().connect(i)
        self._compare(f"connect {i}")

    def disconnect(self, i: int) -> None:
        if i not in self.links:
            return
        self.ref.close(self.ref_links.pop(i))
        super().disconnect(i)
        self._compare(f"disconnect {i}")

    def crash_client(self, i: int) -> None:
        rc = self.ref_links.pop(i, None)
        if rc is not None:
            self.ref.close(rc)
        super().crash_client(i)
        self._compare(f"crash client {i}")

    def reconnect_leaving_old_open(self, i: int) -> bool:
        if i not in self.links:
            return False
        self.ref_zombies.append(self.ref_links.pop(i))
        return super().reconnect_leaving_old_open(i)

    def reap(self) -> None:
        zombies, self.ref_zombies = self.ref_zombies, []
        for conn_id in zombies:
            self.ref.close(conn_id)
        super().reap()
        self._compare("reap")

    def server_step(self, i: int) -> bool:
        link = self.links.get(i)
        if link is None or not link.inbox or not self.server.can_commit():
            return False
        msg = link.inbox[0]
        self.ref.handle(self.ref_links[i], msg)
        done = super().server_step(i)
        assert done
        self._compare(f"handle {i} {type(msg).__name__}")
        return True

    def deliver(self, i: int) -> bool:
        link = self.links.get(i)
        if link is None:
            return False
        rc = self.ref_links[i]
        if self.server.releasable(link.conn_id) != self.ref.releasable(rc):
            raise Divergence(f"deliver {i}: releasable differs")
        if not self.server.releasable(link.conn_id):
            return False
        self.ref.pop(rc)
        done = super().deliver(i)
        self._drop_dead_links()
        self._compare(f"deliver {i}")
        return done

    def lose_frame(self, i: int) -> bool:
        link = self.links.get(i)
        if link is None:
            return False
        queue = self.server.conns[link.conn_id].outbound
        k = next((k for k, o in enumerate(queue) if isinstance(o.message, TransactionUpdate)), None)
        if k is None:
            return False
        del self.ref.conns[self.ref_links[i]].outbound[k]
        done = super().lose_frame(i)
        self._compare(f"lose {i}")
        return done

    def advance_durable(self, k: int) -> None:
        super().advance_durable(k)
        self._flush()
        self.ref.advance_durable(self.server.durable)
        self._compare("durable")

    def crash(self) -> None:
        self._flush()
        self.ref_links.clear()  # the old engine dies with its connections
        self.ref_zombies.clear()
        durable = self.server.durable
        self.store = [rec for rec in self.store if rec.offset <= durable]
        super().crash()
        self.ref = Engine.recover(self.store, clean=False, now=self.server.now, policy=self.server.policy,
                                  max_queue=self.server.max_queue, max_undurable=self.server.max_undurable)
        self._flush()
        self.ref.advance_durable(self.ref.committed)
        self.ref_links.clear()
        self._compare("crash")

    def clean_restart(self) -> None:
        self._flush()
        self.ref_links.clear()  # the old engine stops with its connections
        self.ref_zombies.clear()
        super().clean_restart()
        self.ref = Engine.recover(self.store, clean=True, now=self.server.now, policy=self.server.policy,
                                  max_queue=self.server.max_queue, max_undurable=self.server.max_undurable)
        self.ref.advance_durable(self.ref.committed)
        self.ref_links.clear()
        self._compare("clean restart")

    # The engine acts first: the model's step may close connections (slow consumers), which the
    # harness then mirrors into the engine; doing it the other way round would reorder commits.

    def advance_clock(self, to_us: int) -> None:
        super().advance_clock(to_us)
        self.ref.now = self.server.now

    def tick(self, dt_us: int) -> None:
        self.ref.sweep(self.server.now + dt_us)
        super().tick(dt_us)
        self._compare("tick")

    def compact(self) -> None:
        self.ref.compact(self.server.now)
        super().compact()
        self._compare("compact")

    def reset_epoch(self, stream_id: str) -> None:
        if self.server.can_commit():
            self.ref.now = self.server.now
            self.ref.admin_call(ADMIN, "reset_stream_epoch", (stream_id,))
        super().reset_epoch(stream_id)
        self._compare("reset")
