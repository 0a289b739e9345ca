"""The operator's page: what a running server is doing, gathered as data (sans-I/O).

``syncref serve`` answers ``GET /`` with a page (``adapters/ops_page/``: HTML, CSS and a script,
all served by the server itself) that polls ``GET /ops/data``.  This module is everything but the
HTTP: :func:`access` decides who may look, :func:`gather` turns the engine's state plus a few
facts only the I/O layer knows (:class:`ServerFacts`) into one JSON-ready dict, and
:class:`RecentErrors` keeps the last warnings and errors the server logged.  The routes in
``adapters.server`` only authenticate, call these and write the answer.

Who sees what (docs/protocol.md, "Operator's page"):

* no token, or a token that does not verify: 401 (the route's job, as every route);
* a token without the ``sync.admin`` scope: 403, and nothing else is said;
* an admin token granted every stream (``*``): everything;
* an admin token granted some streams only (*limited*): the streams its grants cover, the
  server-wide durability offsets and presence (which every identity may read anyway); the
  sections that are not about its streams (connections, assignments, the bridge outbox, stale
  cursors, disconnects, errors) are left out and named in ``hidden``.

Every list is capped (``MAX_ROWS``) with the total reported, and every text a client chose is cut
(``MAX_QUERY_CHARS_SHOWN``), so the answer stays small whatever the server holds.  Values are JSON
numbers and strings; timestamps are µs since the epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reference.engine import Engine
from spec.auth import Claims, grant_matches
from spec.values import BridgeOutbox, ComputeAssignment, SessionPresence, SyncStream

ADMIN_SCOPE = "sync.admin"
MAX_ROWS = 500  # rows per list on the page (streams, connections, presence); the total is reported
MAX_QUERIES_SHOWN = 8  # query texts shown per connection
MAX_QUERY_CHARS_SHOWN = 200  # of each, the first characters (clients choose them: up to 8 KiB each)
MAX_ERRORS = 50  # recent warnings/errors kept
BATCH_WINDOW = 256  # group-commit batch sizes kept for the page's statistics
LIMITED_HIDDEN = ("connections", "assignments", "outbox", "stale_cursors", "disconnects", "errors")


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a verified caller may not see the page (an HTTP status and a plain message)."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the I/O layer knows about one WebSocket connection that the engine does not."""

    conn_id: int
    protocol: str  # "v3.bsatn.spacetimedb" / "v2.bsatn.spacetimedb"
    compression: str
    connected_at_us: int


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    at_us: int
    level: str
    logger: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """The server-side facts :func:`gather` needs besides the engine."""

    database: str
    now_us: int
    started_at_us: int
    sessions: Sequence[SessionFacts] = ()
    batch_sizes: Sequence[int] = ()  # the most recent group-commit batches (records per COMMIT)
    batches: int = 0  # COMMITs written since start
    records_written: int = 0
    tcp_connections: int = 0
    closes: Mapping[str, int] = dataclasses.field(default_factory=dict)  # server-initiated closes by cause
    refused: Mapping[str, int] = dataclasses.field(default_factory=dict)  # refusals by limit
    errors: Sequence[ErrorEntry] = ()
    durability_failed: str | None = None
    log_id: str | None = None  # the log's id (meta.log_id, ADR-0039)
    head_mark_offset: int = 0  # the offset the head mark written last holds (0: none since the start)
    head_marks: int = 0  # head marks written since the start
    head_mark_errors: int = 0  # of the head mark's writes, failed


def access(claims: Claims) -> Denied | None:
    """None if ``claims`` may see the page, else why not (403: the token verified but is not an
    admin's)."""
    if ADMIN_SCOPE not in claims.scopes:
        return Denied(403, f"the operator's page needs a token with the {ADMIN_SCOPE} scope "
                           "(syncref token mint --scopes sync.admin --streams '*')")
    return None


def is_full(claims: Claims) -> bool:
    """An admin granted every stream sees every section."""
    return "*" in claims.streams


def _sees(claims: Claims, stream_id: str) -> bool:
    return any(grant_matches(g, stream_id) for g in claims.streams)


def _row(row: object) -> dict[str, Any]:
    """A row as a JSON object, every column of the schema (new columns show up by themselves)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(row):  # type: ignore[arg-type]
        value = getattr(row, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _capped(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"total": len(rows), "rows": rows[:MAX_ROWS]}


def _streams(engine: Engine, viewer: Claims) -> dict[str, Any]:
    db = engine.db
    ids = {key[0] for key in db.pk.get("sync_stream", {}) if isinstance(key, tuple)} | set(db.logs)
    rows = []
    for sid in sorted(i for i in ids if isinstance(i, str)):
        if not _sees(viewer, sid):
            continue
        stream = db.get("sync_stream", (sid,))
        row: dict[str, Any] = _row(stream) if isinstance(stream, SyncStream) else {"stream_id": sid}
        log = db.logs.get(sid)
        events = log.events if log is not None else []
        row["retained_events"] = len(events)
        if events:
            last = events[-1]
            row["last_append"] = {"seq": last.seq, "at": last.committed_at, "tx_offset": last.tx_offset,
                                  "producer": last.producer}
        else:
            row["last_append"] = None
        rows.append(row)
    return _capped(rows)


def _lag(engine: Engine, conn_id: int) -> dict[str, int]:
    conn = engine.conns[conn_id]
    oldest = conn.outbound[0].offset if conn.outbound else engine.committed
    return {"transactions": max(0, engine.committed - oldest),
            "unreleased": sum(1 for o in conn.outbound if o.offset > engine.durable) if conn.confirmed else 0}


def _connections(engine: Engine, facts: ServerFacts) -> dict[str, Any]:
    by_id = {s.conn_id: s for s in facts.sessions}
    rows = []
    for conn_id in sorted(engine.conns):
        conn = engine.conns[conn_id]
        if conn.closed_reason is not None:
            continue
        sess = by_id.get(conn_id)
        texts = [qq.text for queries in conn.query_sets.values() for qq in queries]
        shown = [t if len(t) <= MAX_QUERY_CHARS_SHOWN else t[:MAX_QUERY_CHARS_SHOWN] + "\u2026"
                 for t in texts[:MAX_QUERIES_SHOWN]]
        rows.append({
            "conn_id": conn_id,
            "identity": conn.claims.identity,
            "protocol": sess.protocol if sess is not None else "http",
            "compression": sess.compression if sess is not None else None,
            "connected_at": sess.connected_at_us if sess is not None else None,
            "confirmed_reads": conn.confirmed,
            "query_sets": len(conn.query_sets),
            "subscriptions": len(texts),
            "queries": shown,
            "outbound_queue": len(conn.outbound),
            "outbound_bytes": conn.outbound_bytes,
            "lag": _lag(engine, conn_id),
        })
    return _capped(rows)


def _durability(engine: Engine, facts: ServerFacts) -> dict[str, Any]:
    sizes = list(facts.batch_sizes)
    return {
        "committed_offset": engine.committed,
        "durable_offset": engine.durable,
        "undurable": engine.committed - engine.durable,
        "max_undurable": engine.max_undurable,
        "batches": facts.batches,
        "records_written": facts.records_written,
        "recent_batches": {
            "count": len(sizes),
            "min": min(sizes) if sizes else None,
            "max": max(sizes) if sizes else None,
            "mean": round(sum(sizes) / len(sizes), 2) if sizes else None,
            "last": sizes[-16:],
        },
        "failed": facts.durability_failed,
        "log_id": facts.log_id,
        "head_mark": {"offset": facts.head_mark_offset,
                      # the writer's durable offset may be a COMMIT ahead of the engine's: never below 0
                      "behind": max(0, engine.durable - facts.head_mark_offset) if facts.head_mark_offset else None,
                      "written": facts.head_marks, "errors": facts.head_mark_errors},
    }


def _presence(engine: Engine) -> dict[str, Any]:
    rows = [_row(r) for r in engine.db.rows("session_presence") if isinstance(r, SessionPresence)]
    rows.sort(key=lambda r: (r["status"] == "offline", -int(r["last_seen"])))
    by_status = Counter(str(r["status"]) for r in rows)
    return {"by_status": dict(sorted(by_status.items())), **_capped(rows)}


def _by_status(rows: list[Any]) -> dict[str, int]:
    return dict(sorted(Counter(str(r.status) for r in rows).items()))


def gather(engine: Engine, facts: ServerFacts, viewer: Claims) -> dict[str, Any]:
    """The page's data for ``viewer`` (who passed :func:`access`): one JSON-ready dict."""
    full = is_full(viewer)
    data: dict[str, Any] = {
        "server": {"database": facts.database, "now": facts.now_us, "started_at": facts.started_at_us,
                   "uptime_s": round(max(0, facts.now_us - facts.started_at_us) / 1e6, 1)},
        "viewer": {"identity": viewer.identity, "streams": list(viewer.streams),
                   "scope": "full" if full else "limited"},
        "hidden": [] if full else list(LIMITED_HIDDEN),
        "streams": _streams(engine, viewer),
        "durability": _durability(engine, facts),
        "presence": _presence(engine),
    }
    if not full:
        return data
    assignments = [r for r in engine.db.rows("compute_assignment") if isinstance(r, ComputeAssignment)]
    outbox = [r for r in engine.db.rows("bridge_outbox") if isinstance(r, BridgeOutbox)]
    dead = sorted((r for r in outbox if r.status == "failed"), key=lambda r: -r.updated_at)
    data["server"]["tcp_connections"] = facts.tcp_connections
    data["connections"] = _connections(engine, facts)
    data["assignments"] = {"by_status": _by_status(assignments), "total": len(assignments)}
    data["outbox"] = {
        "by_status": _by_status(outbox),
        "backlog": sum(1 for r in outbox if r.status == "pending"),
        "dead_letters": len(dead),
        "recent_dead": [{"outbox_id": r.outbox_id, "attempts": r.attempts, "last_error": r.last_error,
                         "updated_at": r.updated_at} for r in dead[:20]],
    }
    data["stale_cursors"] = dict(sorted(engine.stale_reasons.items()))
    data["disconnects"] = {"slow_consumer": int(facts.closes.get("slow_consumer", 0)),
                           "by_cause": dict(sorted((k, int(v)) for k, v in facts.closes.items())),
                           "refused_by_limit": dict(sorted((k, int(v)) for k, v in facts.refused.items()))}
    data["errors"] = [dataclasses.asdict(e) for e in reversed(facts.errors)]
    return data


class RecentErrors(logging.Handler):
    """Keeps the last ``MAX_ERRORS`` warnings and errors logged under a logger (for the page)."""

    def __init__(self, keep: int = MAX_ERRORS, clock: Any = time.time) -> None:
        super().__init__(logging.WARNING)
        self.entries: deque[ErrorEntry] = deque(maxlen=keep)
        self._clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        self.entries.append(ErrorEntry(int(self._clock() * 1e6), record.levelname, record.name, message[:500]))
