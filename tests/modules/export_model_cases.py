"""EXPORTER OF MODEL CASES for the TypeScript module (modules/syncref-ts) -- not the conformance kit.

This script runs the executable model's reducers (``spec.reducers.call``, ``presence_sweep``,
``disconnect_sessions``) and stale-cursor decision (``spec.delivery.stale_error``) over
hand-written scenarios and seeded random walks, and writes what the model did as JSON:
``modules/syncref-ts/test/model-cases/{scenarios,walks,stale}.json`` and the schema dump
``modules/syncref-ts/test/model-cases/schema.json``. The TypeScript tests replay every step
through the module's pure rules and an in-memory store and must get the same outcome (return
value, no-op or write, error string), the same emitted event rows, and the same final tables.

The conformance kit's language-neutral vectors (``adapters/conformance/vectors``) are run by the
module too (``test/kit.test.ts``); these cases cover what the kit does not: retention, sweeps,
disconnects, stream classes, raised floors and long seeded random sequences. Values use SATS-JSON
as ``adapters.satsjson`` writes it (identities ``"0x<hex>"``, timestamps
``{"__timestamp_micros_since_unix_epoch__": n}``, options ``{"some": v}``/``{"none": []}``).

    .venv/bin/python tests/modules/export_model_cases.py           # rewrite the files
    .venv/bin/python tests/modules/export_model_cases.py --check   # exit 1 on drift
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters import satsjson
from spec import query as q
from spec.auth import Claims
from spec.canonical import canonicalize, payload_hash
from spec.delivery import stale_error
from spec.errors import SyncError
from spec.policy import DEFAULT_POLICY, Policy, StreamClass
from spec.reducers import CallContext, Err, Ok, call, compact, disconnect_sessions, presence_sweep
from spec.schema import PERSISTENT_TABLES, REDUCER_BY_NAME, REDUCERS, TABLES, table_of
from spec.state import DbState, with_epoch_floor
from spec.values import ComputeAssignment, Row, SatsType, SyncStream, sats_name

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "modules" / "syncref-ts" / "test" / "model-cases"

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
ALL_SCOPES = frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write",
                        "provider.publish", "compute.request", "compute.assign", "compute.execute",
                        "bridge.enqueue", "bridge.mark_sent", "sync.admin"})

SMALL_POLICY = Policy(classes=(("small.", StreamClass("small", max_payload_bytes=40, replay_budget=3, retain_count=3)),
                               ("small.big.", StreamClass("small_big", max_payload_bytes=200, replay_budget=5))),
                      bridge_max_attempts=2, presence_max_ttl_ms=5_000, bridge_max_retry_after_ms=10_000,
                      max_error_text=20, retain_offline_presence_us=5_000_000, retain_terminal_assignment_us=4_000_000,
                      retain_sent_outbox_us=3_000_000, retain_failed_outbox_us=None)
RETENTION_POLICY = Policy(classes=(("s.age.", StreamClass("aged", retain_age_us=5_000_000)),
                                   ("s.count.", StreamClass("counted", retain_count=2))),
                          retain_offline_presence_us=2_000_000, retain_terminal_assignment_us=2_000_000,
                          retain_sent_outbox_us=2_000_000, retain_failed_outbox_us=4_000_000, bridge_max_attempts=1)


def _key(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=True)


def row_json(row: Row) -> dict[str, Any]:
    t = table_of(row)
    return {c.name: satsjson.to_json(c.type, getattr(row, c.name)) for c in t.columns}


def state_json(db: DbState) -> dict[str, Any]:
    return {"epoch_floor": db.epoch_floor, "version_floor": db.version_floor,
            "tables": {t.name: sorted((row_json(r) for r in db.rows(t.name)), key=_key) for t in PERSISTENT_TABLES}}


def claims_json(c: Claims) -> dict[str, Any]:
    out: dict[str, Any] = {"identity": c.identity, "scopes": sorted(c.scopes), "streams": list(c.streams)}
    if c.device_id is not None:
        out["device_id"] = c.device_id
    if c.session_id is not None:
        out["session_id"] = c.session_id
    return out


def policy_json(p: Policy) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)
                           if f.name not in ("classes", "default_class", "bridge_kinds")}
    out["classes"] = [[prefix, dataclasses.asdict(c)] for prefix, c in p.classes]
    out["default_class"] = dataclasses.asdict(p.default_class)
    out["bridge_kinds"] = sorted(p.bridge_kinds)
    return out


def error_json(e: SyncError) -> dict[str, Any]:
    return {"code": e.code.value, "details": json.loads(json.dumps(dict(e.details))), "render": e.render()}


def signals_json(result: Ok) -> list[dict[str, Any]]:
    out = []
    for name in ("presence_signal", "stream_signal"):
        for r in result.delta.for_table(name).inserts:
            out.append({"table": name, "row": row_json(r)})
    return out


class Recorder:
    """Runs ops on the model and records each with its outcome."""

    def __init__(self, policy: Policy, db: DbState | None = None) -> None:
        self.policy = policy
        self.db = db if db is not None else DbState()
        self.pre = state_json(self.db)
        self.steps: list[dict[str, Any]] = []
        self.now = 1_700_000_000_000_000
        self.offset = 1

    def tick(self, us: int = 1_000_000) -> None:
        self.now += us

    def call(self, claims: Claims, reducer: str, *args: Any) -> Ok | Err:
        ctx = CallContext(claims, self.now, self.offset, self.policy)
        out = call(self.db, ctx, reducer, tuple(args))
        rdef = REDUCER_BY_NAME[reducer]
        step: dict[str, Any] = {"op": "call", "reducer": reducer, "claims": claims_json(claims), "now": self.now,
                                "tx_offset": self.offset,
                                "args": [satsjson.to_json(c.type, v) for c, v in zip(rdef.args, args, strict=True)]}
        if isinstance(out, Err):
            step["expect"] = {"ok": False, "error": error_json(out.error)}
        else:
            step["expect"] = {"ok": True, "ret": out.ret, "noop": out.noop, "signals": signals_json(out)}
            self.db = out.state
            if not out.noop:
                self.offset += 1
        self.steps.append(step)
        self.tick()
        return out

    def sweep(self) -> None:
        out = presence_sweep(self.db, self.now)
        self.steps.append({"op": "sweep", "now": self.now, "expect": {"noop": out.noop, "signals": signals_json(out)}})
        self.db = out.state
        self.tick()

    def disconnect(self, identity: str, sessions: list[str]) -> None:
        out = disconnect_sessions(self.db, self.now, identity, frozenset(sessions))
        self.steps.append({"op": "disconnect", "now": self.now, "identity": identity, "sessions": sorted(sessions),
                           "expect": {"noop": out.noop, "signals": signals_json(out)}})
        self.db = out.state
        self.tick()

    def compact(self) -> None:
        out = compact(self.db, self.now, self.policy)
        self.steps.append({"op": "compact", "now": self.now,
                           "expect": {"noop": out.noop, "version_floor": out.state.version_floor}})
        self.db = out.state
        self.tick()

    def stale(self, stream_id: str, epoch: int | None, watermark: int) -> None:
        where = f"stream_id = '{stream_id}'" + (f" AND epoch = {epoch}" if epoch is not None else "")
        (query,) = q.parse(f"SELECT * FROM sync_event WHERE {where} AND seq > {watermark}")
        err = stale_error(self.db, self.policy, query)
        self.steps.append({"op": "stale", "stream_id": stream_id, "requested_epoch": epoch, "watermark": watermark,
                           "expect": None if err is None else error_json(err)})

    def case(self, name: str, description: str) -> dict[str, Any]:
        return {"name": name, "description": description, "policy": policy_json(self.policy), "pre": self.pre,
                "steps": self.steps, "post": state_json(self.db)}


def cl(identity: str, scopes: frozenset[str] | set[str] = ALL_SCOPES, streams: tuple[str, ...] = ("s.*", "small.*"),
       device_id: str | None = None, session_id: str | None = None) -> Claims:
    return Claims(identity, frozenset(scopes), streams, device_id=device_id, session_id=session_id)


def h(text: str) -> str:
    return payload_hash(canonicalize(text))


# --- hand-written scenarios: every error code and no-op path of every reducer -------------------


def scenarios() -> list[dict[str, Any]]:
    out = []

    def scenario(name: str, description: str, policy: Policy = DEFAULT_POLICY,
                 db: DbState | None = None) -> Callable[[Callable[[Recorder], None]], None]:
        def deco(fn: Callable[[Recorder], None]) -> None:
            r = Recorder(policy, db)
            fn(r)
            out.append(r.case(name, description))
        return deco

    @scenario("append_basics", "create on first append, dedupe before sequence, conflicts, hash, limits, ids")
    def _(r: Recorder) -> None:
        a = cl(A)
        r.call(a, "append_sync_event", "s.1", "k1", '{"b":1, "a":[true,null]}', None, None)
        r.call(a, "append_sync_event", "s.1", "k2", '"x"', h('"x"'), 2)
        r.call(a, "append_sync_event", "s.1", "k1", '{"a":[true,null],"b":1}', None, 7)  # dedupe before sequence
        r.call(a, "append_sync_event", "s.1", "k1", '{"a":2}', None, None)  # idempotency_conflict
        r.call(a, "append_sync_event", "s.1", "k3", '1', None, 2)  # sequence_conflict
        r.call(a, "append_sync_event", "s.1", "k3", '1', "sha256:" + "0" * 64, None)  # hash mismatch
        r.call(a, "append_sync_event", "s.1", "k3", '1.5', None, None)  # non canonical
        r.call(a, "append_sync_event", "s.1", "k3", '{"a":1,"a":2}', None, None)
        r.call(a, "append_sync_event", "s.1", "bad key", '1', None, None)
        r.call(a, "append_sync_event", "bad stream", "k", '1', None, None)
        r.call(a, "append_sync_event", "t.1", "k", '1', None, None)  # forbidden_stream
        r.call(cl(B, set()), "append_sync_event", "s.1", "k", '1', None, None)  # missing_scope
        r.call(cl(B, {"sync.append"}, ()), "append_sync_event", "s.1", "k", '1', None, None)  # no grants
        r.call(a, "append_sync_event", "s.1", "k4", '"' + "x" * 262_143 + '"', None, None)  # too large
        r.call(a, "append_sync_event", "s.1", "k5", '["\\u00e9\\ud83d\\ude00",-0]', None, 3)
        r.call(a, "publish_stream_signal", "s.1", "typing", '{"on":true}')
        r.call(a, "publish_stream_signal", "s.2", "typing", '{}')  # does not create the stream
        r.call(a, "publish_stream_signal", "s.1", "shout", '{}')
        r.call(a, "publish_stream_signal", "x.1", "typing", '{}')
        r.call(a, "publish_stream_signal", "s.1", "custom", '[1e3]')

    @scenario("append_small_class", "stream classes: payload limit and replay budget by longest prefix",
              SMALL_POLICY)
    def _(r: Recorder) -> None:
        a = cl(A)
        r.call(a, "append_sync_event", "small.1", "k1", '"' + "x" * 40 + '"', None, None)
        r.call(a, "append_sync_event", "small.1", "k1", '"' + "x" * 38 + '"', None, None)
        r.call(a, "append_sync_event", "small.big.1", "k1", '"' + "x" * 100 + '"', None, None)
        r.call(a, "publish_stream_signal", "small.1", "progress", '"' + "x" * 40 + '"')
        for i in range(6):
            r.call(a, "append_sync_event", "small.1", f"n{i}", str(i), None, None)
        r.stale("small.1", 1, 1)
        r.stale("small.1", 1, 4)
        r.stale("small.big.1", 1, 0)

    @scenario("checkpoints", "owner-bound acks, stale epoch, ahead of head, lower acks are no-ops")
    def _(r: Recorder) -> None:
        a, b = cl(A), cl(B)
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 0)  # stream does not exist: epoch 1, head 0
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 1)  # ahead of head
        for i in range(3):
            r.call(a, "append_sync_event", "s.1", f"k{i}", str(i), None, None)
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 2)
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 1)  # lower: no-op
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 2)  # equal: no-op
        r.call(a, "ack_checkpoint", "c1", "s.1", 2, 3)  # stale epoch
        r.call(b, "ack_checkpoint", "c1", "s.1", 1, 3)  # forbidden: A's checkpoint
        r.call(b, "ack_checkpoint", "c 1", "s.1", 1, 3)
        r.call(cl(B, {"sync.append"}), "ack_checkpoint", "c2", "s.1", 1, 1)
        r.call(a, "ack_checkpoint", "c1", "t.1", 1, 0)
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 3)
        r.call(cl(C, {"sync.admin"}), "reset_stream_epoch", "s.1")
        r.call(cl(C, {"sync.admin"}), "reset_stream_epoch", "s.9")
        r.call(cl(C, {"sync.append"}), "reset_stream_epoch", "s.1")
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, 3)  # stale epoch now
        r.call(a, "ack_checkpoint", "c1", "s.1", 2, 3)
        r.call(a, "append_sync_event", "s.1", "k0", '0', None, 4)  # key forgotten with its event
        r.stale("s.1", 1, 2)
        r.stale("s.1", 2, 3)
        r.stale("s.1", 2, 2)
        r.stale("s.1", 2, 9)
        r.stale("s.1", None, 0)
        r.stale("s.new", 1, 0)

    @scenario("presence", "presence upserts, claims binding, signals on change, sweep and disconnect",
              SMALL_POLICY)
    def _(r: Recorder) -> None:
        a = cl(A, device_id="dev1", session_id="sess1")
        r.call(a, "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 2000)
        r.call(a, "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 3000)  # no signal
        r.call(a, "upsert_presence", "sess1", "dev1", "node1", "away", "", 3000)
        r.call(a, "upsert_presence", "sess2", "dev1", "node1", "online", "eu", 3000)  # claim mismatch
        r.call(a, "upsert_presence", "sess1", "dev2", "node1", "online", "eu", 3000)
        r.call(cl(B), "upsert_presence", "sess1", "dev1", "node1", "online", "eu", 3000)  # someone else's row
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "busy", "eu", 3000)
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "online", "e u", 3000)
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "online", "eu", 999)
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "online", "eu", 5001)
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "online", "eu", 5000)
        r.call(cl(C), "upsert_presence", "sessC", "devC", "n", "offline", "", 1000)
        r.call(cl(D, set()), "upsert_presence", "sessD", "devD", "n", "online", "", 1000)
        r.sweep()
        r.tick(3_000_000)
        r.sweep()
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "online", "eu", 5000)
        r.disconnect(B, ["sessB", "sess1"])
        r.disconnect(B, ["sessB"])
        r.call(cl(B), "upsert_presence", "sessB", "devB", "n", "online", "eu", 1000)
        r.tick(2_000_000)
        r.disconnect(B, ["sessB"])  # TTL ran out first: ttl_expired
        r.call(cl(C), "upsert_presence", "sessE", "devE", "n", "online", "eu", 3000)
        r.tick(-1_000_000)  # the same call at the same instant: the row would not change, a no-op
        r.call(cl(C), "upsert_presence", "sessE", "devE", "n", "online", "eu", 3000)

    @scenario("providers_and_compute", "provider versions, assignment transitions and roles, ADR-0003 rules")
    def _(r: Recorder) -> None:
        req, disp = cl(A, {"compute.request"}), cl(B, {"compute.assign"})
        prov = cl(C, {"provider.publish", "compute.execute"})
        other = cl(D, {"compute.execute", "provider.publish"})
        r.call(prov, "publish_provider_capability", "p1", '{"m":"x"}', (5100, 5050, 5100), 10, "active")
        r.call(prov, "publish_provider_capability", "p1", '{ "m" : "x" }', (5050, 5100), 10, "active")  # no-op
        r.call(prov, "publish_provider_capability", "p1", '{"m":"x"}', (5050, 5100), 11, "active")
        r.call(other, "publish_provider_capability", "p1", '{}', (5050,), 1, "active")  # forbidden
        r.call(other, "publish_provider_capability", "p2", '{}', (4999,), 1, "active")
        r.call(other, "publish_provider_capability", "p2", '{}', (5050,), 1, "paused")
        r.call(other, "publish_provider_capability", "p2", '{', (5050,), 1, "active")
        r.call(other, "publish_provider_capability", "p2", '{}', (5050,), 1, "withdrawn")
        r.call(cl(A, set()), "publish_provider_capability", "p3", '{}', (5050,), 1, "active")
        r.call(req, "open_compute_assignment", "r1", 5050, '{"q":1}')
        r.call(req, "open_compute_assignment", "r1", 5050, '{"q":1}')  # no-op
        r.call(req, "open_compute_assignment", "r1", 5050, '{"q":2}')  # conflict
        r.call(req, "open_compute_assignment", "r1", 5051, '{"q":1}')  # conflict (kind)
        r.call(cl(B, {"compute.request"}), "open_compute_assignment", "r1", 5050, '{"q":1}')  # forbidden
        r.call(req, "open_compute_assignment", "r2", 6000, '{}')
        r.call(req, "open_compute_assignment", "r2", 5050, '[1,]')
        r.call(req, "update_compute_assignment", "r1", 1, "assigned", "p1", None)  # requester cannot assign
        r.call(disp, "update_compute_assignment", "r1", 1, "assigned", None, None)
        r.call(disp, "update_compute_assignment", "r1", 1, "assigned", "p9", None)  # missing provider
        r.call(disp, "update_compute_assignment", "r1", 1, "assigned", "p2", None)  # withdrawn
        r.call(disp, "update_compute_assignment", "r1", 1, "running", None, None)  # invalid transition
        r.call(disp, "update_compute_assignment", "r9", 1, "assigned", "p1", None)  # missing
        r.call(disp, "update_compute_assignment", "r1", 2, "assigned", "p1", None)  # version conflict
        r.call(disp, "update_compute_assignment", "r1", 1, "paused", "p1", None)
        r.call(disp, "update_compute_assignment", "r1", 1, "assigned", "p1", '{}')
        r.call(cl(B, {"sync.append"}), "update_compute_assignment", "r1", 1, "assigned", "p1", None)
        r.call(req, "open_compute_assignment", "r3", 5051, '{}')
        r.call(disp, "update_compute_assignment", "r3", 1, "assigned", "p1", None)  # kind not advertised
        r.call(disp, "update_compute_assignment", "r1", 1, "assigned", "p1", None)
        r.call(other, "update_compute_assignment", "r1", 2, "running", None, None)  # not the provider's owner
        r.call(prov, "update_compute_assignment", "r1", 2, "running", "p2", None)  # only assign sets provider
        r.call(prov, "update_compute_assignment", "r1", 2, "running", "p1", None)
        r.call(prov, "update_compute_assignment", "r1", 3, "completed", None, '{"out": [1,2]}')
        r.call(prov, "update_compute_assignment", "r1", 4, "cancelled", None, None)  # terminal
        r.call(req, "update_compute_assignment", "r3", 1, "cancelled", None, None)
        r.call(req, "open_compute_assignment", "r4", 5100, '{}')
        r.call(disp, "update_compute_assignment", "r4", 1, "assigned", "p1", None)
        r.call(prov, "update_compute_assignment", "r4", 2, "running", None, None)
        r.call(prov, "update_compute_assignment", "r4", 3, "failed", None, '"boom"')
        r.call(disp, "update_compute_assignment", "r2", 1, "cancelled", None, None)

    @scenario("bridge", "outbox enqueue dedupe, policy allowlist, sent/failed edges, relay merge, dead letter",
              SMALL_POLICY)
    def _(r: Recorder) -> None:
        e, m = cl(A, {"bridge.enqueue"}), cl(B, {"bridge.mark_sent"})
        ev1, ev2 = "1" * 64, "2" * 64
        r.call(e, "enqueue_bridge_event", "o1", "provider", 31990, '[["d","x"], ["k","5050"]]', "hello")
        r.call(e, "enqueue_bridge_event", "o1", "provider", 31990, '[["d","x"],["k","5050"]]', "hello")
        r.call(e, "enqueue_bridge_event", "o1", "provider", 31990, '[]', "hello")
        r.call(e, "enqueue_bridge_event", "o2", "provider", 1, '[]', "x")
        r.call(e, "enqueue_bridge_event", "o2", "provider", 30078, '[["a",1]]', "x")
        r.call(e, "enqueue_bridge_event", "o2", "provider", 30078, '{"a":1}', "x")
        r.call(e, "enqueue_bridge_event", "o2", "pro vider", 30078, '[]', "x")
        r.call(m, "enqueue_bridge_event", "o2", "provider", 30078, '[]', "x")
        r.call(e, "enqueue_bridge_event", "o2", "receipt", 30078, '[]', "x\u2028y")
        r.call(m, "mark_bridge_event_sent", "o1", ev1, ("wss://r1",))
        r.call(m, "mark_bridge_event_sent", "o1", ev1, ("wss://r1",))  # no-op
        r.call(m, "mark_bridge_event_sent", "o1", ev1, ("wss://r2", "wss://r0"))  # merge
        r.call(m, "mark_bridge_event_sent", "o1", ev2, ("wss://r1",))  # conflict
        r.call(m, "mark_bridge_event_sent", "o9", ev1, ())
        r.call(m, "mark_bridge_event_sent", "o1", "X" * 64, ())
        r.call(m, "mark_bridge_event_sent", "o1", ev1, ("",))
        r.call(m, "record_bridge_failure", "o1", "late", 10)  # not pending: no-op
        r.call(m, "record_bridge_failure", "o2", "timeout", 1000)
        r.call(m, "record_bridge_failure", "o2", "", 1000)
        r.call(m, "record_bridge_failure", "o2", "é" * 21, 1000)
        r.call(m, "record_bridge_failure", "o2", "é" * 20, 1000)
        r.call(m, "record_bridge_failure", "o2", "x", 10_001)
        r.call(m, "record_bridge_failure", "o2", "again", 0)  # dead letter at 2 attempts
        r.call(m, "record_bridge_failure", "o2", "again", 0)
        r.call(m, "mark_bridge_event_sent", "o2", ev2, ("wss://r1",))  # late success from failed
        r.call(m, "record_bridge_failure", "o9", "x", 0)
        r.call(e, "record_bridge_failure", "o2", "x", 0)

    @scenario("u64_bounds", "u64 arguments at 2^53 and 2^64 - 1 (exact in the model, in the module's bigints and "
              "in the exported JSON): conflicts echo them, a price keeps them")
    def _(r: Recorder) -> None:
        a, top, past_double = cl(A), 2**64 - 1, 2**53 + 1
        r.call(a, "append_sync_event", "s.1", "k1", "1", None, top)  # sequence_conflict echoes it
        r.call(a, "append_sync_event", "s.1", "k1", "1", None, past_double)
        r.call(a, "append_sync_event", "s.1", "k1", "1", None, None)
        r.call(a, "ack_checkpoint", "c1", "s.1", top, 1)  # stale_epoch echoes it
        r.call(a, "ack_checkpoint", "c1", "s.1", 1, top)  # checkpoint_ahead_of_head echoes it
        r.call(a, "upsert_presence", "p1", "d", "n", "online", "", top)  # out of the TTL range
        r.call(a, "publish_provider_capability", "v1", "{}", (5000,), top, "active")  # stored exactly
        r.call(a, "publish_provider_capability", "v1", "{}", (5000,), top - 1, "active")  # a change: version 2
        r.call(a, "open_compute_assignment", "r1", 5000, "{}")
        r.call(a, "update_compute_assignment", "r1", top, "cancelled", None, None)  # version_conflict echoes it
        r.call(a, "enqueue_bridge_event", "o1", "s", 31990, "[]", "x")
        r.call(a, "record_bridge_failure", "o1", "e", top)  # past the retry bound

    @scenario("raised_floors", "a state after an unclean restart: new streams and rows start above the floors",
              db=DbState(DbState().tables, 5, 7))
    def _(r: Recorder) -> None:
        r.call(cl(A), "append_sync_event", "s.1", "k", '1', None, None)
        r.call(cl(A), "ack_checkpoint", "c", "s.1", 1, 1)
        r.call(cl(A), "ack_checkpoint", "c", "s.1", 5, 1)
        r.call(cl(A), "publish_provider_capability", "p", '{}', (5050,), 0, "active")
        r.call(cl(A), "open_compute_assignment", "r", 5050, '{}')
        r.call(cl(A), "update_compute_assignment", "r", 1, "assigned", "p", None)
        r.call(cl(A), "update_compute_assignment", "r", 7, "assigned", "p", None)
        r.stale("s.new", 1, 0)
        r.stale("s.new", 5, 0)

    @scenario("retention", "compaction: events by count and age (a prefix only), offline presence, terminal "
              "assignments (raising the version floor), sent and failed outbox rows", RETENTION_POLICY)
    def _(r: Recorder) -> None:
        a = cl(A)
        for i in range(4):
            r.call(a, "append_sync_event", "s.count.1", f"k{i}", str(i), None, None)
            r.call(a, "append_sync_event", "s.age.1", f"k{i}", str(i), None, None)
        r.call(a, "append_sync_event", "s.1", "k", "1", None, None)
        r.call(a, "upsert_presence", "p1", "d", "n", "offline", "", 1000)
        r.call(a, "upsert_presence", "p2", "d", "n", "online", "", 60_000)
        r.call(a, "publish_provider_capability", "pv", "{}", (5050,), 0, "active")
        r.call(a, "open_compute_assignment", "r1", 5050, "{}")
        r.call(a, "update_compute_assignment", "r1", 1, "cancelled", None, None)
        r.call(a, "open_compute_assignment", "r2", 5050, "{}")
        r.call(a, "enqueue_bridge_event", "o1", "s", 31990, "[]", "x")
        r.call(a, "enqueue_bridge_event", "o2", "s", 31990, "[]", "y")
        r.call(a, "enqueue_bridge_event", "o3", "s", 31990, "[]", "z")
        r.call(a, "mark_bridge_event_sent", "o1", "1" * 64, ("wss://r",))
        r.call(a, "record_bridge_failure", "o2", "down", 0)
        # the clock steps back between two appends: only a prefix of old events may go
        r.call(a, "append_sync_event", "s.age.2", "k0", "0", None, None)
        r.tick(-20_000_000)
        r.call(a, "append_sync_event", "s.age.2", "k1", "1", None, None)
        r.tick(20_000_000)
        r.call(a, "append_sync_event", "s.age.2", "k2", "2", None, None)
        r.compact()
        r.stale("s.age.2", 1, 0)  # k1 is past the window, k0 is not: nothing may go yet
        r.stale("s.count.1", 1, 0)
        r.stale("s.count.1", 1, 1)
        r.call(a, "append_sync_event", "s.count.1", "k0", "0", None, None)  # key forgotten: a new event
        r.tick(3_000_000)
        r.compact()
        r.tick(2_000_000)
        r.compact()
        r.call(a, "open_compute_assignment", "r1", 5050, "{}")  # comes back above every version it had
        r.compact()
        r.stale("s.age.1", 1, 0)
        r.stale("s.age.1", 1, 4)
        r.stale("s.age.2", 1, 0)

    return out


# --- seeded random walks over every reducer ---------------------------------------------------

IDS = ["s.1", "s.2", "small.1", "t.1"]
PAYLOADS = ['{"a":1}', '{"a": 1}', '[1,2]', '"x"', "1.5", '{"a":1,"a":1}', '"' + "y" * 50 + '"', "null",
            '{"\\u00e9":"\\ud83d\\ude00","b":[]}', "[", "9007199254740992"]


def walks(n_walks: int = 24, n_steps: int = 60) -> list[dict[str, Any]]:
    out = []
    for w in range(n_walks):
        rnd = random.Random(1000 + w)
        policy = SMALL_POLICY if w % 2 else DEFAULT_POLICY
        db = DbState() if w % 3 else with_epoch_floor(DbState(), 2)
        r = Recorder(policy, db)
        identities = [A, B, C]
        claims = {A: cl(A), B: cl(B, ALL_SCOPES - {"compute.assign", "sync.admin"}, ("s.1", "small.*")),
                  C: cl(C, {"compute.execute", "provider.publish", "sync.append", "bridge.mark_sent", "presence.write"},
                        ("s.*",))}
        versions: dict[str, int] = {}
        for _ in range(n_steps):
            who = claims[rnd.choice(identities)]
            op = rnd.randrange(14)
            sid = rnd.choice(IDS)
            if op <= 3:
                head = next((s.head_seq for s in r.db.of_type(SyncStream) if s.stream_id == sid), 0)
                r.call(who, "append_sync_event", sid, f"k{rnd.randrange(5)}", rnd.choice(PAYLOADS),
                       rnd.choice([None, None, h('{"a":1}')]), rnd.choice([None, head + 1, head + 1, head, 1]))
            elif op == 4:
                srow = next((x for x in r.db.of_type(SyncStream) if x.stream_id == sid), None)
                epoch = srow.epoch if srow is not None and rnd.random() < 0.7 else rnd.choice([1, 2, 3])
                head = srow.head_seq if srow is not None else 0
                seq = rnd.choice([head, head, rnd.randrange(5)])
                r.call(who, "ack_checkpoint", f"c{rnd.randrange(2)}", sid, epoch, seq)
            elif op == 5:
                r.call(who, "upsert_presence", f"sess{rnd.randrange(3)}", "dev", "node",
                       rnd.choice(["online", "away", "offline"]), rnd.choice(["", "eu"]),
                       rnd.choice([1000, 2000, 60_000]))
            elif op == 6:
                r.call(who, "publish_provider_capability", f"p{rnd.randrange(2)}", rnd.choice(['{}', '{"v":1}']),
                       tuple(rnd.sample([5050, 5100, 5200], rnd.randrange(1, 3))), rnd.randrange(2),
                       rnd.choice(["active", "active", "withdrawn"]))
            elif op == 7:
                r.call(who, "open_compute_assignment", f"r{rnd.randrange(3)}", rnd.choice([5050, 5100]),
                       rnd.choice(['{}', '{"q":1}']))
            elif op == 8:
                rid = f"r{rnd.randrange(3)}"
                row = next((x for x in r.db.of_type(ComputeAssignment) if x.request_id == rid), None)
                ver = row.version if row is not None else versions.get(rid, 1)
                natural = {"open": "assigned", "assigned": "running", "running": rnd.choice(["completed", "failed"])}
                status = (natural[row.status] if row is not None and row.status in natural and rnd.random() < 0.6
                          else rnd.choice(["assigned", "running", "completed", "failed", "cancelled"]))
                res = rnd.choice([None, '{"r":1}']) if status in ("completed", "failed") else None
                r.call(who, "update_compute_assignment", rid, rnd.choice([ver, ver, ver + 1]), status,
                       rnd.choice([None, "p0", "p1"]) if status == "assigned" else None, res)
            elif op == 9:
                r.call(who, "enqueue_bridge_event", f"o{rnd.randrange(2)}", "src", rnd.choice([31990, 30078, 1]),
                       rnd.choice(['[]', '[["d","x"]]']), rnd.choice(["a", "b"]))
            elif op == 10:
                r.call(who, "mark_bridge_event_sent", f"o{rnd.randrange(2)}", rnd.choice(["1" * 64, "2" * 64]),
                       tuple(rnd.sample(["wss://a", "wss://b"], rnd.randrange(0, 3))))
            elif op == 11:
                r.call(who, "record_bridge_failure", f"o{rnd.randrange(2)}", "err", rnd.choice([0, 1000]))
            elif op == 12:
                r.call(who, "publish_stream_signal", sid, rnd.choice(["typing", "custom", "loud"]),
                       rnd.choice(PAYLOADS))
            else:
                choice = rnd.randrange(5)
                if choice == 4:
                    r.compact()
                elif choice == 0:
                    r.sweep()
                elif choice == 1:
                    r.disconnect(who.identity, [f"sess{i}" for i in range(3)])
                elif choice == 2:
                    r.call(who, "reset_stream_epoch", sid)
                else:
                    r.stale(sid, rnd.choice([None, 1, 2, 3]), rnd.randrange(6))
            if rnd.random() < 0.2:
                r.tick(rnd.choice([500_000, 3_000_000, 70_000_000]))
        out.append(r.case(f"walk_{w:02d}", f"seeded random walk {w} (seed {1000 + w})"))
    return out


# --- canonical JSON: texts with several defects, in the model's order ---------------------------
#
# The kit's canonical vectors hold one defect each; which reason a text with several gets is the
# order of Python's json scanner (spec.canonical): the first defect met left to right, where a
# duplicate key counts when its object closes (object_pairs_hook) and a lone surrogate or a
# container past MAX_DEPTH only in the walk after a successful parse.  The module's parser must
# keep that order (the error string is the wire contract).  Hand-picked texts, then seeded random
# ones (nesting at most ~10: deeper unbalanced texts hit Python's recursion limit, whose depth
# depends on the caller's stack, so their reason is not a fixed function of the text).

CANONICAL_TEXTS = [
    '{"a":1,"a":2,"b":1.5}', '{"a":1,"a":2', '{"a":1,"a":2,"b":NaN}', '{"a":1,"a":2,"b":9007199254740992}',
    '{"a":1,"a":2} x', '{"a":{"b":1,"b":2},"a":1.5}', '[{"a":1,"a":2},1.5]', '{"a":"\\ud800","a":1}',
    '{"a":1,"a":["\\ud800"]}', '{"a":[' + '[' * 70 + ']' * 70 + '],"a":1}', '{"a":1,"a":2,"b":[}',
    '[1.5,{"a":1,"a":2}]', '{"a":1,"b":{"c":1,"c":2},"a":2}', '{"a":1,"a":2,"b":"\x01"}',
    '1' * 5000, '1' * 5000 + '.5', '-' + '1' * 5000 + 'e1', '[' + '1' * 5000 + '.5]', '1' * 4096 + '.5',
    '1' * 4095 + '.5', '9' * 17 + 'e0', '[' + '1' * 20 + ',1.5]', '{"a":' + '2' * 4100 + '.0,"a":1}',
    '["\\ud800",1.5]', '["\\ud800",' + '[' * 65 + ']' * 65 + ']', '[' + '[' * 65 + ']' * 65 + ',"\\ud800"]',
    '[' * 70 + '1.5' + ']' * 70, '[' * 70 + ']' * 69, '[NaN,1.5]', '[1e5,NaN]', '[-Infinity,"\\x"]',
    # spec.canonical.SCAN_DEPTH_LIMIT (512): deeper is too_deep before parsing, brackets in string literals
    # not counted (a literal ends at the next unescaped quote or at the end of the text)
    '[' * 512 + 'x', '[' * 511 + '[],[x', '[' * 513 + 'x', 'x' + '[' * 513, '[' * 513 + ']' * 513,
    '{"a":' * 513 + '1' + '}' * 513,
    '[' * 950, '[' * 513 + '1.5', '{"a":1,"a":' + '[' * 600, '"' + '[' * 600, '"\\\\"' + '[' * 600,
    '"\\\\\\"' + '[' * 600, '[]' * 600, '["' + '[' * 600 + '"]', '"' + '[' * 600 + '"',
    '\ufeff' + '[' * 513, '[' * 300 + '"\\u' + '[' * 300, '["\\ud800",' + '[' * 513 + ']' * 514,
]
_ATOMS = ['0', '-0', '1', '9007199254740991', '-9007199254740992', '1.0', '1e3', '01', '1.', '-', 'true', 'nul', 'NaN',
          '-Infinity', '"a"', '""', '"\\u00e9"', '"\\ud83d\\ude00"', '"\\ud83d"', '"\\ude00x"', '"\\/"', '"\\x"',
          '"\\u12"', '"\x01"', '"\x7f"', '"\u2028"', '"\u00e9"', '"\U0001f600"', '"\\u0000"', '"\\\\"',
          '12345678901234567890', '[]', '{}']
_KEYS = ['"a"', '"b"', '"A"', '"\u00e9"', '"\U0001f600"', '"\uffff"', '"\ue000"', '""', '"\\u00e9"',
         '"\\ud83d\\ude00"', '"a"', '"\\ud800"']
_WS = ['', '', '', ' ', '\n', '\t', '\r', '\x0b', '\xa0']


def _random_text(rnd: random.Random, depth: int = 0) -> str:
    r = rnd.random()
    if depth > 3 or r < 0.4:
        return rnd.choice(_ATOMS)

    def w() -> str:
        return rnd.choice(_WS)
    items = rnd.randrange(4)
    if r < 0.7:
        return "[" + w() + ("," + w()).join(_random_text(rnd, depth + 1) for _ in range(items)) + w() + "]"
    return "{" + w() + ("," + w()).join(rnd.choice(_KEYS) + w() + ":" + w() + _random_text(rnd, depth + 1)
                                       for _ in range(items)) + w() + "}"


def _mangle(rnd: random.Random, text: str) -> str:
    r, i = rnd.random(), rnd.randrange(len(text) + 1)
    if r < 0.6:
        return text
    if r < 0.8:
        return text[:i] + rnd.choice([",", "]", "}", '"', ":", "\\", "\ud800"]) + text[i:]
    return text[:i] + text[i + 1:]


def canonical_cases(n_random: int = 1500) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    texts = CANONICAL_TEXTS + [_mangle(rnd, _random_text(rnd)) for _ in range(n_random)]
    out = []
    for text in texts:
        try:
            canon = canonicalize(text)
        except SyncError as e:
            out.append({"input": text, "code": e.code.value, "reason": e.details["reason"]})
        else:
            out.append({"input": text, "canonical": canon, "hash": payload_hash(canon)})
    return out


# --- seeded random walks with hostile arguments -------------------------------------------------
#
# Every argument drawn from values at or just past a rule's edge: ids of 128 and 129 characters, ids
# with a space, a bar, a control character, a non-ASCII letter; empty strings; texts counted in code
# points (astral characters); C0 controls the outbox refuses and those it allows; u64 values at 2^53
# and 2^64 - 1; kinds at 4999/5000/5999/6000 and the u32 maximum; grants with a bare *, an empty
# grant and a session/device pin.  Mostly refusals, so each reducer's argument checks and their order
# are compared with the model's, with the same error strings.

_H_IDS = (["s.1", "s.2", "x" * 128, "a:b-c_d.e"],
          ["x" * 129, "", "a|b", "\u00e9", "s.1 ", "s\n1", "s.\x01", "s.*", "*", "s.\U0001f600"])
_H_TEXTS = (["x", "\u00e9" * 5, "\x7f", "\n", "a\tb", "\u2028", "\U0001f600", "\b", "x" * 20, "\U0001f600" * 20],
            ["", "\x01", "\x1f", "\x0b", "\x00", "x" * 21, "\U0001f600" * 21])
_H_PAYLOADS = (["{}", "[]", "1", '"\\u0001"', '{"b":1,"a":2}', '{"\\u00e9":1}', "null", '"\U0001f600"', "-0",
                "[9007199254740991]", '{"\U0001f600":1,"\uffff":2}', '"' + "y" * 38 + '"', '"' + "\u00e9" * 19 + '"'],
               ['"\x01"', "[1.0]", '{"a":1,"a":2}', '"' + "\u00e9" * 20 + '"', "[9007199254740992]", ""])
_H_TAGS = (["[]", '[["a"]]', '[["\\b"]]', '[["\x7f"]]', "[[]]", '[["a"],["b","c"]]', '[["\\n\\r\\t\\f"]]'],
           ['[["\x01"]]', '[["\\u0001"]]', '[["a",1]]', "[1]", "{}", '[["\\u000b"]]', '[["\\u001f"]]'])
_H_U64 = ([1, 2, 1000, 5000], [0, 999, 5001, 10_000, 10_001, 300_001, 2**53, 2**64 - 1])
_H_KINDS = ([5000, 5999, 30078, 31990], [0, 4999, 6000, 2**32 - 1])
_H_RELAYS = (["wss://a", "wss://b", "x" * 512, "\U0001f600" * 300], ["", "x" * 513, "\x01"])


def hostile_walks(n_walks: int = 10, n_steps: int = 80) -> list[dict[str, Any]]:
    out = []
    for w in range(n_walks):
        rnd = random.Random(5000 + w)

        def ch(values: tuple[list[Any], list[Any]] | list[Any], rnd: random.Random = rnd) -> Any:
            if isinstance(values, tuple):  # (at or inside the edge, past it): mostly the first
                return rnd.choice(values[0] if rnd.random() < 0.75 else values[1])
            return rnd.choice(values)
        r = Recorder(SMALL_POLICY if w % 2 else DEFAULT_POLICY)
        whos = [cl(A), cl(B, ALL_SCOPES - {"sync.admin"}, ("s.*", "x*", "")),
                cl(C, {"compute.execute", "provider.publish", "sync.append", "bridge.enqueue"}, ("*",), device_id="d",
                   session_id="s.1"),
                cl(A, ALL_SCOPES, ("s.1",), session_id="s.2")]
        for _ in range(n_steps):
            who, op = ch(whos), rnd.randrange(12)
            if op == 0:
                r.call(who, "append_sync_event", ch(_H_IDS), ch(_H_IDS), ch(_H_PAYLOADS),
                       ch([None, None, None, "", "sha256:" + "0" * 64]), ch([None, None, 1, 2, 0, 2**64 - 1]))
            elif op == 1:
                r.call(who, "ack_checkpoint", ch(_H_IDS), ch(_H_IDS), ch([1, 1, 2, 0, 2**64 - 1]), ch([0, 1, 2, 3]))
            elif op == 2:
                r.call(who, "upsert_presence", ch(_H_IDS), ch((["d"], _H_IDS[0] + _H_IDS[1])), ch(_H_IDS),
                       ch((["online", "away", "offline"], ["Online", ""])), ch(([""], [*_H_IDS[0], *_H_IDS[1]])),
                       ch(_H_U64))
            elif op == 3:
                r.call(who, "publish_provider_capability", ch(_H_IDS), ch(_H_PAYLOADS),
                       tuple(ch(_H_KINDS) for _ in range(rnd.randrange(3))), ch(_H_U64),
                       ch((["active", "withdrawn"], ["x"])))
            elif op == 4:
                r.call(who, "open_compute_assignment", ch(_H_IDS), ch(_H_KINDS), ch(_H_PAYLOADS))
            elif op == 5:
                r.call(who, "update_compute_assignment", ch(_H_IDS), ch([1, 2, 0, 2**64 - 1]),
                       ch((["assigned", "running", "completed", "failed", "cancelled"], ["open", "x"])),
                       ch(([None, "s.1", "s.2"], ["", "\u00e9"])), ch(([None, "{}"], ["1.5", '"\x01"'])))
            elif op == 6:
                r.call(who, "enqueue_bridge_event", ch(_H_IDS), ch(_H_IDS), ch(_H_KINDS), ch(_H_TAGS), ch(_H_TEXTS))
            elif op == 7:
                r.call(who, "mark_bridge_event_sent", ch(_H_IDS), ch((["1" * 64, "2" * 64], ["A" * 64, "1" * 63, ""])),
                       tuple(ch(_H_RELAYS) for _ in range(rnd.randrange(3))))
            elif op == 8:
                r.call(who, "record_bridge_failure", ch(_H_IDS), ch(_H_TEXTS), ch(_H_U64))
            elif op == 9:
                r.call(who, "publish_stream_signal", ch(_H_IDS), ch((["typing", "progress", "custom"], ["TYPING", ""])),
                       ch(_H_PAYLOADS))
            elif op == 10:
                r.call(who, "reset_stream_epoch", ch(_H_IDS))
            else:
                x = rnd.randrange(3)
                if x == 0:
                    r.sweep()
                elif x == 1:
                    r.compact()
                else:
                    r.disconnect(who.identity, [ch(_H_IDS) for _ in range(3)])
            if rnd.random() < 0.3:
                r.tick(ch([1, 1_000_000, 400_000_000]))
        out.append(r.case(f"hostile_{w:02d}", f"seeded random walk with hostile arguments {w} (seed {5000 + w})"))
    return out


def _type_json(t: SatsType) -> str:
    return sats_name(t)


def schema_dump() -> dict[str, Any]:
    return {
        "tables": [{"name": t.name, "columns": [[c.name, _type_json(c.type)] for c in t.columns],
                    "primary_key": list(t.primary_key) if t.primary_key else None,
                    "unique": [list(u) for u in t.unique], "event": t.event, "public": t.public,
                    "visibility": t.visibility.value} for t in TABLES],
        "reducers": [{"name": r.name, "args": [[c.name, _type_json(c.type)] for c in r.args], "scope": r.scope,
                      "returns": _type_json(r.returns) if r.returns else None} for r in REDUCERS],
        # the policy a new reference server starts with (and the one the module's binding runs: DEFAULT_POLICY)
        "default_policy": policy_json(DEFAULT_POLICY),
    }


HEADER = ("GENERATED by tests/modules/export_model_cases.py from the executable model (spec/); "
          "model cases for modules/syncref-ts, not the conformance kit. Do not edit.")


def _exact(doc: Any) -> Any:
    """Integers past 2^53 - 1 as ``{"__int__": "<digits>"}``: a JSON reader with doubles (JavaScript's
    JSON.parse) would round them; the TS runner turns them back into bigints."""
    if isinstance(doc, bool):
        return doc
    if isinstance(doc, int) and abs(doc) > 2**53 - 1:
        return {"__int__": str(doc)}
    if isinstance(doc, list):
        return [_exact(v) for v in doc]
    if isinstance(doc, dict):
        return {k: _exact(v) for k, v in doc.items()}
    return doc


def render() -> dict[str, str]:
    files = {
        "scenarios.json": {"generated": HEADER, "format": "syncref.model_cases.v1", "cases": scenarios()},
        "walks.json": {"generated": HEADER, "format": "syncref.model_cases.v1", "cases": walks()},
        "hostile.json": {"generated": HEADER, "format": "syncref.model_cases.v1", "cases": hostile_walks()},
        "canonical.json": {"generated": HEADER, "format": "syncref.canonical_cases.v1", "cases": canonical_cases()},
        "schema.json": {"generated": HEADER, "format": "syncref.schema.v1", **schema_dump()},
    }
    return {name: json.dumps(_exact(doc), ensure_ascii=True, separators=(",", ":")) + "\n"
            for name, doc in files.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        if stale:
            print(f"model cases out of date: {stale}; run tests/modules/export_model_cases.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for n, text in files.items():
        (OUT / n).write_text(text)
    print(f"wrote {', '.join(files)} to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
