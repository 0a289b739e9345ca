"""``syncref conformance``: drive scenarios over BSATN WebSockets (v2; v3 and compression in the ``transport``
area) and the HTTP ``call``/``sql`` routes against any server and judge them by the model.

Each scenario is a list of steps (:mod:`adapters.conformance.delivery`: the same steps the delivery
vectors record) over named WebSocket connections.  The runner plays them against the target --
each ``receive`` is closed by a *barrier* (a ``OneOffQuery`` answered in order with everything
else, so once its answer is in, everything the server sent before it is in too) -- then plays the
same steps on the model (:class:`spec.harness.Server`) with the identities the target assigned,
and compares every message of every ``receive``: type, order, request ids, outcomes, error
strings, rows (SATS-JSON by column).  Timestamps are the target's own (its log holds other data) and
are masked; a row's transaction offset is compared by its rank among the scenario's row offsets.  The model runs with
the default policy (``spec.policy.DEFAULT_POLICY``, what ``syncref serve`` uses unconfigured) with the
kit's retention class for ``conformance.retain.*`` (``delivery.KIT_POLICY``): a
target with other stream classes or budgets differs where those show (``replay_budget``).

Scenario stream and outbox ids are under a fresh namespace per run, and every person's grants
are limited to it, so a shared or long-lived target gives the same answers as a fresh one.

Hooks a target may offer (without them the scenarios that need them are *skipped*, with the reason):

``--mint-with DIR``  the target's data directory (its JWT signing key, ``jwt-es256-key.pem``):
                     tokens with the scopes, grants and compatibility claims each scenario needs.
                     With only ``--token T`` just the handshake scenario runs.
``--stall-file PATH`` a path whose existence stalls the target's commit log (``syncref serve``:
                     ``[faults] stall_commits_while``): the confirmed-reads scenario.
``--restart-cmd CMD`` a shell command that restarts the target (and returns once it is started or
                     in the background): replay parity across a restart.
``--compact-cmd CMD`` a shell command that makes the target run its retention (compaction) once, now,
                     and returns once that has committed (``syncref serve``: ``POST
                     /v1/database/:name/compact`` with an admin token); the target also serves the
                     kit's retention class (``delivery.RETAIN_CLASS`` for stream ids starting
                     ``conformance.retain.``): the retention scenario.
``--max-undurable N`` the target's undurable window (``syncref serve``: ``[limits] max_undurable``, 1024):
                     with ``--restart-cmd``, how far an unclean restart must move epochs and versions.
``--max-outbound-queue N`` the target's bound on messages queued for one connection (``[limits]
                     max_outbound_queue``, 16384): the slow-consumer scenario.
``--quiet S``        how long a connection that must hear nothing is listened to after its fence (0.5 s).

Bad targets get a one-line answer per scenario, never a traceback: nothing listening, not a
SpacetimeDB endpoint (the HTTP status of the refused upgrade), a refused token, a close
mid-scenario (code and reason), a server that never answers (where it waited).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from adapters import bsatn, wire
from adapters.conformance import delivery as d
from adapters.conformance.codec import args_to_json, claims_to_json
from adapters.progress import Progress
from spec import messages as sm

# The client library's own log: a target that never answers a close or a keepalive ping makes it log
# a traceback from its keepalive thread ("keepalive ping failed"), on stderr, mid-report.  The runner
# reports every such failure itself (a scenario's message names the connection and the step), so the
# library's log is kept to CRITICAL.
_WS_LOG = logging.getLogger("syncref.conformance.websockets")
_WS_LOG.setLevel(logging.CRITICAL)

BARRIER_BASE = 3_000_000_000
FENCE_BASE = 3_500_000_000
FENCE_PROCEDURE = "conformance_fence"  # no module defines it: answered ProcedureResult InternalError, at once


class ScenarioFailed(Exception):
    """The target diverged from the model, or misbehaved; the message is the first divergence."""


class Skipped(Exception):
    """The scenario needs a hook the target was not given."""


@dataclass
class Options:
    url: str
    database: str
    token: str | None = None
    mint_with: Path | None = None
    only: str | None = None
    restart_cmd: str | None = None
    stall_file: Path | None = None
    timeout: float = 10.0
    compact_cmd: str | None = None
    max_undurable: int | None = None
    quiet_s: float = 0.5  # --quiet: how long a connection that must hear nothing is listened to after its fence
    restart_unclean: bool = False  # --restart-cmd kills the target without a clean shutdown (SIGKILL)
    max_outbound_queue: int | None = None  # --max-outbound-queue: the target's [limits] max_outbound_queue
    max_sql_bytes: int = 64 * 1024  # --max-sql-bytes: the target's [limits] max_sql_bytes (protocol.md's default)
    max_sql_statements: int = 64  # --max-sql-statements: the target's [limits] max_sql_statements (the default)
    body_timeout_s: float | None = None  # --body-timeout: the target's [limits] body_timeout_s
    max_connections_per_identity: int | None = None  # --max-connections-per-identity: its [limits] bound


Tick = Callable[[int, int, str], None]
"""Called before each scenario with its index, the number chosen and ``"area: name"``."""


@dataclass
class Outcome:
    area: str
    scenario: str
    invariants: tuple[str, ...]
    status: str  # pass | fail | skip
    message: str = ""
    seconds: float = 0.0


# --- the target ----------------------------------------------------------------------------------------------

class Conn:
    """One BSATN WebSocket connection: v2 by default; ``version=3`` offers ``v3.bsatn.spacetimedb`` (and
    takes frames of several messages); ``compression`` is the upgrade's parameter, and every frame the
    target sends is checked against it (protocol.md "Frames": a body over 1024 bytes is compressed with
    the connection's compression, any other is sent as it is, tag 0)."""

    def __init__(self, opts: Options, token: str | None, confirmed: bool, name: str, version: int = 2,
                 compression: str = "None", offer: tuple[str, ...] | None = None, rcvbuf: int | None = None) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect
        self.name = name
        self.opts = opts
        self.version = version
        self.compression = wire.Compression(compression)
        self.frames = 0  # frames received
        self.compressed = 0  # of them, bodies over the threshold (compressed, unless compression is None)
        self.most_in_a_frame = 0  # the most messages one frame carried (v3 coalescing)
        protocol = f"v{version}.bsatn.spacetimedb"
        base = opts.url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        url = (f"{base}/v1/database/{opts.database}/subscribe?compression={compression}"
               f"&confirmed={'true' if confirmed else 'false'}")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            sock = None
            if rcvbuf is not None:  # a small receive window, set before the connection is made
                parts = urllib.parse.urlsplit(opts.url)
                sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.settimeout(opts.timeout)
                sock.connect((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
                sock.settimeout(None)  # the client library times its own reads
            self.ws = connect(url, subprotocols=list(offer or (protocol,)),  # type: ignore[arg-type]
                              additional_headers=headers, open_timeout=opts.timeout, max_size=64 * 1024 * 1024,
                              logger=_WS_LOG, sock=sock, max_queue=16 if rcvbuf is None else 1)
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace")[:300] if exc.response.body else ""
            raise ScenarioFailed(f"connection {name}: the WebSocket upgrade was refused: HTTP "
                                 f"{exc.response.status_code} {body!r}") from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise ScenarioFailed(f"connection {name}: cannot open {url}: {type(exc).__name__}: {exc}") from None
        if self.ws.subprotocol != protocol:
            offered = ", ".join(offer or (protocol,))
            raise ScenarioFailed(f"connection {name}: offered {offered}, the server chose subprotocol "
                                 f"{self.ws.subprotocol!r}, not {protocol} (protocol.md \"Upgrade\": the first of "
                                 "the server's preference v3, v2 that the client offers, whatever the client's order)")
        self.pending: list[wire.ServerMessage] = []
        first = self.recv("the InitialConnection")
        if not isinstance(first, wire.InitialConnection):
            raise ScenarioFailed(f"connection {name}: the first message is {type(first).__name__}, "
                                 "not InitialConnection")
        self.identity = first.identity
        self._barrier = BARRIER_BASE
        self._fence = FENCE_BASE

    def send(self, msg: wire.ClientMessage) -> None:
        self._guard(lambda: self.ws.send(wire.encode_client(msg)), "sending")

    def send_frame(self, msgs: list[wire.ClientMessage]) -> None:
        """Several messages in one frame (v3: one or more concatenated client messages)."""
        assert self.version == 3 or len(msgs) == 1
        self._guard(lambda: self.ws.send(b"".join(map(wire.encode_client, msgs))), "sending")

    def recv(self, waiting_for: str, timeout: float | None = None) -> wire.ServerMessage:
        while not self.pending:
            frame = self._guard(lambda: self.ws.recv(timeout=self.opts.timeout if timeout is None else timeout),
                                f"waiting for {waiting_for}")
            if not isinstance(frame, bytes):
                raise ScenarioFailed(f"connection {self.name}: a text frame {frame[:80]!r} (BSATN is binary)")
            try:
                body = wire.unframe_server(frame)
                self._check_tag(frame[0], len(body))
                self.pending.extend(wire.decode_server_frame(b"\x00" + body, self.version))
            except bsatn.BsatnError as exc:
                raise ScenarioFailed(f"connection {self.name}: an undecodable v{self.version} frame ({exc}): "
                                     f"{frame[:64].hex()}...") from None
            self.frames += 1
            self.most_in_a_frame = max(self.most_in_a_frame, len(self.pending))
        return self.pending.pop(0)

    def _check_tag(self, tag: int, length: int) -> None:
        big = length > wire.COMPRESS_THRESHOLD
        self.compressed += big
        want = self.compression.tag if big and self.compression is not wire.Compression.NONE else 0
        if tag != want:
            raise ScenarioFailed(
                f"connection {self.name}: a frame whose body is {length} bytes came with compression tag {tag}; "
                f"with compression={self.compression.value} the protocol says tag {want} (protocol.md \"Frames\": "
                f"a body over {wire.COMPRESS_THRESHOLD} bytes is compressed with the connection's compression -- "
                "1 Brotli, 2 gzip -- any other goes as it is, tag 0)")

    def _guard(self, fn: Callable[[], Any], doing: str) -> Any:
        from websockets.exceptions import ConnectionClosed
        try:
            return fn()
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            how = f"code {rcvd.code} {rcvd.reason!r}" if rcvd is not None else "without a close frame"
            raise ScenarioFailed(f"connection {self.name}: the server closed the connection ({how}) while "
                                 f"{doing}") from None
        except TimeoutError:
            raise ScenarioFailed(f"connection {self.name}: no answer within {self.opts.timeout:g} s while "
                                 f"{doing}") from None

    def until_barrier(self, where: str) -> list[wire.ServerMessage]:
        self._barrier += 1
        rid = self._barrier
        self.send(wire.OneOffQuery(rid, "SELECT * FROM sync_stream WHERE stream_id = 'conformance.barrier'"))
        out: list[wire.ServerMessage] = []
        while True:
            msg = self.recv(f"the barrier query's answer {where}")
            if isinstance(msg, wire.OneOffQueryResult) and msg.request_id == rid:
                return out
            out.append(msg)

    def quiet(self, where: str, listen_s: float | None = None) -> list[wire.ServerMessage]:
        """What the connection was sent by the time the target has handled every message it sent
        before now, and within ``quiet_s`` after that -- for a connection that must hear nothing (a
        confirmed-read connection while the log stalls, whose barrier's answer would wait too).

        The *fence* is a ``CallProcedure`` of a procedure no module defines: its ``ProcedureResult`` is
        not queued behind durability and goes out at once (protocol.md "Confirmed reads"), and the
        target handles a connection's messages strictly in order, so once it is in, every earlier
        request of this connection has been taken and answered or held.  The fence fixes where the
        window starts (a target slow to *handle* a request no longer hides an early answer behind
        its slowness); the window itself (``--quiet``) still bounds how late an early answer may be
        *sent* and be seen: the protocol has no message that must follow a held one while it is held."""
        out = list(self.pending)
        self.pending.clear()
        self._fence += 1
        rid = self._fence
        self.send(wire.CallProcedure(rid, 0, FENCE_PROCEDURE, b""))
        while True:
            msg = self.recv(f"the fence's ProcedureResult {where} (a CallProcedure is answered at once, "
                            "even while the log stalls)")
            if isinstance(msg, wire.ProcedureResult) and msg.request_id == rid:
                break
            out.append(msg)
        deadline = time.monotonic() + (self.opts.quiet_s if listen_s is None else listen_s)
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.recv("nothing", timeout=left))
            except ScenarioFailed as exc:
                if "no answer within" in str(exc):
                    break
                raise
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection is best effort
            self.ws.close()


class Tokens:
    """Tokens for the scenario's people: minted with the target's key, or the one given token."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.auth: Any = None
        if opts.mint_with is not None:
            from adapters.auth import KEY_FILE_NAME, AuthConfig, Authenticator, KeyStore
            key = opts.mint_with / KEY_FILE_NAME
            if not key.exists():
                raise SystemExit(f"syncref conformance: --mint-with {opts.mint_with}: no {KEY_FILE_NAME} there "
                                 "(give the target's data directory)")
            self.auth = Authenticator(AuthConfig(), KeyStore.load_or_create(opts.mint_with))

    @property
    def can_mint(self) -> bool:
        return self.auth is not None

    def token(self, subject: str, claims: dict[str, Any], **compat: Any) -> str | None:
        if self.auth is None:
            return self.opts.token
        token: str = self.auth.mint(subject=subject, scopes=frozenset(claims["scopes"]),
                                    streams=tuple(claims["streams"]), ttl_s=3600, **compat)
        return token


# --- comparing with the model --------------------------------------------------------------------------------

_TS = "__timestamp_micros_since_unix_epoch__"
SCHEDULED: dict[str, str] = {"next_attempt_at": "updated_at", "expires_at": "last_seen"}
"""Timestamp columns a write schedules ahead of the row's own write time: masked to their order
against it (before, same, after) instead of to nothing, so a server that drops a backoff or a TTL
differs where it shows, while the times themselves stay the target's own."""


def _when(v: Any, anchor: Any) -> str:
    if not (isinstance(v, dict) and set(v) == {_TS} and isinstance(anchor, dict) and set(anchor) == {_TS}):
        return "<timestamp>"
    a, b = v[_TS], anchor[_TS]
    return f"<timestamp {'before' if a < b else 'same as' if a == b else 'after'}>"


def _mask(v: Any) -> Any:
    """``v`` with offsets and timestamps masked; the rows of a table part sorted again by their masked
    text (they were sorted by their full text, timestamps included, which differ between the two)."""
    if isinstance(v, dict):
        if set(v) == {_TS}:
            return "<timestamp>"
        return {k: (sorted((_mask(r) for r in x), key=lambda r: json.dumps(r, sort_keys=True))
                    if k in ("inserts", "deletes") and isinstance(x, list) else
                    "<offset>" if k == "tx_offset" and not (isinstance(x, str) and x.startswith("<offset #")) else
                    _when(x, v[SCHEDULED[k]]).replace(">", f" {SCHEDULED[k]}>")
                    if k in SCHEDULED and SCHEDULED[k] in v else _mask(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [_mask(x) for x in v]
    return v


def _rank_offsets(doc: Any) -> Any:
    """``doc`` with every row's ``tx_offset`` (``sync_event``'s: the offset of the transaction that wrote the
    event) replaced by its rank among the distinct row offsets in ``doc`` -- ``<offset #0>``, ``#1``, ... in
    ascending order.  The target's log holds other writes, so its offsets are not the model's, but the
    spec fixes how they relate: one per writing transaction, in commit order (DELIV-1), the same event
    with the same offset wherever it is read.  Ranked over a whole scenario's messages on both sides, two
    rows compare equal only when their offsets agree in order and equality with the model's."""
    seen: set[int] = set()

    def collect(v: Any, in_rows: bool) -> None:
        if isinstance(v, dict):
            if in_rows and isinstance(v.get("tx_offset"), int):
                seen.add(v["tx_offset"])
            for k, x in v.items():
                collect(x, k in ("inserts", "deletes", "rows"))
        elif isinstance(v, list):
            for x in v:
                collect(x, in_rows)

    collect(doc, False)
    rank = {o: i for i, o in enumerate(sorted(seen))}

    def ranked(v: Any, in_rows: bool) -> Any:
        if isinstance(v, dict):
            return {k: (f"<offset #{rank[x]}>" if in_rows and k == "tx_offset" and isinstance(x, int)
                        else ranked(x, k in ("inserts", "deletes", "rows"))) for k, x in v.items()}
        if isinstance(v, list):
            return [ranked(x, in_rows) for x in v]
        return v

    return ranked(doc, False)


def _show(msgs: list[dict[str, Any]]) -> str:
    return json.dumps(msgs, sort_keys=True)[:900]


def _differs_at(a: Any, b: Any, path: str = "") -> str:
    """The first path (``outcome.ok.query_sets[0]...``) where two masked values differ, and both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, "<absent>") != b.get(k, "<absent>"):
                return _differs_at(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}" if path else k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _differs_at(x, y, f"{path}[{i}]")
    if isinstance(a, str) and isinstance(b, str):
        ea, eb = _error_parts(a), _error_parts(b)
        if ea is not None and eb is not None:  # "<code>: <details JSON>": compare code, then the details
            if ea[0] != eb[0]:
                return _differs_at(ea[0], eb[0], f"{path}.code")
            return _differs_at(ea[1], eb[1], f"{path}.details")
        i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        if i > 60:  # show where they part, not only a prefix both share
            return (f"{path or 'the message'} (from character {i}): the target's ...{json.dumps(a[i - 20:])[:200]}, "
                    f"the model's ...{json.dumps(b[i - 20:])[:200]}")
    return (f"{path or 'the message'}: the target's {json.dumps(a, sort_keys=True)[:200]}, the model's "
            f"{json.dumps(b, sort_keys=True)[:200]}")


def _error_parts(text: str) -> tuple[str, Any] | None:
    """``(code, details)`` of a reducer or subscription error string ``<code>: <canonical JSON of details>``,
    else None."""
    code, sep, rest = text.partition(": ")
    if not sep or not re.fullmatch(r"[a-z_]+", code) or not rest.startswith("{"):
        return None
    try:
        return code, json.loads(rest)
    except ValueError:
        return None


def _first_divergence(where: str, got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str | None:
    g, w = _mask(got), _mask(want)
    if g == w:
        return None
    for i, (a, b) in enumerate(zip(g, w, strict=False)):
        if a != b:
            return (f"{where}, message {i} differs at {_differs_at(a, b)}; the target sent "
                    f"{json.dumps(a, sort_keys=True)[:700]}; the model sends {json.dumps(b, sort_keys=True)[:700]}")
    if len(g) > len(w):
        return f"{where}: the target sent {len(g) - len(w)} more message(s): {_show(g[len(w):])}"
    return f"{where}: the target sent {len(w) - len(g)} fewer message(s); the model also sends {_show(w[len(g):])}"


def _named(t: Any, v: Any) -> Any:
    """A value of AlgebraicType JSON ``t`` from ``/sql``'s untyped SATS-JSON (protocol.md "SATS-JSON (HTTP)")
    into the named form of the model's messages: an identity ``"0x" + 64 hex``, a timestamp
    ``{"__timestamp_micros_since_unix_epoch__": n}``, an option ``{"some": v}`` / ``{"none": []}``."""
    if "Product" in t:
        elements = t["Product"]["elements"]
        names = [e["name"]["some"] for e in elements]
        if names == ["__identity__"]:
            return "0x" + str(v[0]).removeprefix("0x").zfill(64)
        if names == [_TS]:
            return {_TS: v[0]}
        return {n: _named(e["algebraic_type"], x) for n, e, x in zip(names, elements, v, strict=True)}
    if "Sum" in t:
        variants = t["Sum"]["variants"]
        tag, inner = v
        name = variants[tag]["name"]["some"]
        return {name: _named(variants[tag]["algebraic_type"], inner) if name != "none" else []}
    if "Array" in t:
        return [_named(t["Array"], x) for x in v]
    return v


SLOW_PAYLOAD_BYTES = 64_000  # each slow-consumer append's payload (about): few updates fill the buffers
SLOW_SLACK_BYTES = 6 * 1024 * 1024  # what the socket buffers between the target's queue and a client that
# does not read may hold (the client's receive buffer is SLOW_RCVBUF and its library holds one frame; the
# rest is the target's send side)
SLOW_RCVBUF = 4096
SLOW_BATCH = 64  # appends sent before the writer's and the reading watcher's barriers
SLOW_PUSH_S = 4.0  # appends that took longer may have outlasted the target's close timeout: no verdict


def _jsons(msgs: list[wire.ServerMessage]) -> list[dict[str, Any]]:
    return [d.message_json(wire.server_from_wire(m)) for m in msgs]


def _seqs(msgs: list[wire.ServerMessage], conn: str) -> list[int]:
    """The seqs of the events a connection's ``TransactionUpdate`` messages insert, in order."""
    out = []
    for m in msgs:
        msg = d.message_json(wire.server_from_wire(m))
        if msg["$type"] != "TransactionUpdate":
            raise ScenarioFailed(f"connection {conn} was sent {msg['$type']} among the updates: {_show([msg])}")
        out += [row["seq"] for qs in msg["query_sets"] for t in qs["tables"] for row in t["inserts"]]
    return out


def _runs(seqs: list[int]) -> str:
    """``1..5, 7, 9..10``: a list of seqs in brief."""
    out: list[str] = []
    start = prev = None
    for x in [*seqs, None]:
        if start is not None and x is not None and prev is not None and x == prev + 1:
            prev = x
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = x
    return ", ".join(out) or "none"


def _compare_reads(compared: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Each read's rows against the model's snapshot of subscribing its query, row offsets ranked over
    all the reads together (:func:`_rank_offsets`)."""
    got = _rank_offsets([g for _, g, _ in compared])
    want = _rank_offsets([w for _, _, w in compared])
    for (where, _, _), g, w in zip(compared, got, want, strict=True):
        diff = _first_divergence(where, [g], [w])
        if diff is not None:
            raise ScenarioFailed(f"{diff} (the model's snapshot of subscribing it, for the same reader: AUTH-1)")


def _reads_setup(ns: str, e0: int) -> tuple[list[sm.CallReducer], tuple[str, ...]]:
    """The writer's writes and the reader's queries of the one-off and ``/sql`` scenarios: events on a
    stream the reader is granted and one it is not, a checkpoint, an outbox row; every table read."""
    a, b, outbox = f"{ns}.a", f"{ns}.b", f"{ns}o5"
    writes = [sm.CallReducer(1, "append_sync_event", (a, "k1", '{"n":1}', None, None)),
              sm.CallReducer(2, "append_sync_event", (b, "k1", '{"n":1}', None, None)),
              sm.CallReducer(3, "ack_checkpoint", ("c1", a, e0, 1)),
              sm.CallReducer(4, "enqueue_bridge_event", (outbox, "receipts", 30078, '[["d","x"]]', "hello"))]
    queries = ("SELECT * FROM sync_event", "SELECT * FROM sync_stream",
               f"SELECT * FROM sync_checkpoint WHERE stream_id = '{a}'",
               f"SELECT * FROM bridge_outbox WHERE outbox_id = '{outbox}'",
               f"SELECT * FROM sync_event WHERE stream_id = '{b}'")
    return writes, queries


def _model_reads(ns: str, folk: dict[str, Any], writes: list[sm.CallReducer], queries: tuple[str, ...],
                 identities: dict[str, str], e0: int, v0: int) -> list[dict[str, Any]]:
    """The model's answer to the reader subscribing each query (a set of its own) after the writes."""
    def connect(conn: str, who: str) -> dict[str, Any]:
        return {"op": "connect", "conn": conn, "person": who, "confirmed": False,
                "claims": {**claims_to_json(folk[who]), "identity": identities[who]}}
    steps = [connect("w", "writer"),
             *({"op": "send", "conn": "w", "message": d.client_message_json(c)} for c in writes),
             {"op": "receive", "conn": "w"}, connect("r", "reader"),
             *({"op": "send", "conn": "r", "message": d.client_message_json(sm.Subscribe(i, 10 + i, (text,)))}
               for i, text in enumerate(queries)), {"op": "receive", "conn": "r"}]
    return d.drive(d.model_target(d.KIT_POLICY, epoch_floor=e0, version_floor=v0), steps)[-1]


LONG_HOLD_QUIETS = 4
"""A played scenario's last stall lasts at least this many ``--quiet`` windows (2 s by default) before its
closing fences: a held message sent undurably within that time is caught, whenever in the stall it goes."""


def fenced(steps: list[dict[str, Any]], long_hold_s: float) -> list[dict[str, Any]]:
    """A delivery scenario's steps as the wire plays them: before each ``release``, a closing fence
    (``receive_quiet`` with ``fence``) on every confirmed connection fenced while that stall lasted, so
    everything it was sent during the stall -- after its listening window too -- is judged (the model
    gives nothing new to a confirmed reader until the release); the last stall's first closing fence waits
    until the stall has lasted ``long_hold_s``; and after the last step a closing ``receive`` (a barrier)
    on every connection still open, so a stray message sent before the scenario's end that no later
    receive would have read (a duplicate, a late update) is judged too.  The added steps are receives to
    the model as well: both sides are compared on them as on any other."""
    confirmed = {s["conn"] for s in steps if s["op"] == "connect" and s["confirmed"]}
    last_release = max((k for k, s in enumerate(steps) if s["op"] == "release"), default=-1)
    out: list[dict[str, Any]] = []
    quieted: list[str] = []
    open_: list[str] = []
    for k, step in enumerate(steps):
        op = step["op"]
        if op == "hold":
            quieted = []
        elif op == "receive_quiet" and step["conn"] in confirmed and step["conn"] not in quieted:
            quieted.append(step["conn"])
        elif op == "release":
            for i, conn in enumerate(c for c in quieted if c in open_):
                fence: dict[str, Any] = {"op": "receive_quiet", "conn": conn, "fence": "release"}
                if k == last_release and i == 0:
                    fence["hold_s"] = long_hold_s
                out.append(fence)
        elif op == "connect":
            open_.append(step["conn"])
        elif op == "close":
            open_.remove(step["conn"])
        out.append(step)
    out += [{"op": "receive", "conn": conn, "fence": "end"} for conn in open_]
    return out


# --- HTTP refusals (protocol.md's tables) --------------------------------------------------------------------

_UPGRADE = (("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "Y29uZm9ybWFuY2Uta2l0IQ=="))
_V2 = (("Sec-WebSocket-Protocol", "v2.bsatn.spacetimedb"),)
_JSON = (("Content-Type", "application/json"),)
_SUB = "{db}/subscribe?compression=None&confirmed=false"
_APPEND = b'["{ns}.a", "k1", "{\\"n\\":1}", null, null]'


@dataclass(frozen=True)
class Refusal:
    """A request with a defect and the answer protocol.md's tables give it: ``status``; ``text``, how the
    body starts (``""``: any text/plain body; ``None``: aiohttp's own answer, status only); or ``code`` (and
    ``details``, when the tables fix them) of a ``<code>: <json>`` body."""
    what: str
    section: str
    route: str  # call | sql | subscribe | compact
    method: str
    path: str  # {db}: /v1/database/NAME; {ns}: the run's namespace
    auth: str  # none | basic | garbage | writer | noscope | partial_admin
    status: int
    text: str | None = ""
    code: str | None = None
    details: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    json: bool = False  # the body is protocol.md "Compatibility"'s JSON rejection (application/json, its code)


_COMPAT = "a token outside the compatibility window (oa_protocol_version without oa_client_build_id)"
_NO_DB = "/v1/database/conformance-no-such-database"

REFUSALS: tuple[Refusal, ...] = (
    # the token, shared by every database route (protocol.md "Transport", below the table)
    Refusal("a call without a token", "Transport", "call", "POST", "{db}/call/append_sync_event", "none", 401,
            "Authorization required", headers=_JSON, body=_APPEND),
    Refusal("a call with an Authorization header that is not Bearer", "Transport", "call", "POST",
            "{db}/call/append_sync_event", "basic", 400, "Authorization is invalid: expected 'Bearer <token>'",
            headers=_JSON, body=_APPEND),
    Refusal("a call with a token that is not a JWT", "Transport", "call", "POST", "{db}/call/append_sync_event",
            "garbage", 401, headers=_JSON, body=_APPEND),
    Refusal("a call to another database", "Transport", "call", "POST",
            "/v1/database/conformance-no-such-database/call/append_sync_event", "writer", 404,
            "`conformance-no-such-database` not found", headers=_JSON, body=_APPEND),
    # HTTP call, in check order
    Refusal(f"a call with {_COMPAT} and no Content-Type (the window is checked first)", "HTTP call", "call",
            "POST", "{db}/call/append_sync_event", "compat", 426, code="invalid_client_build", json=True,
            body=_APPEND),
    Refusal("a call without a Content-Type", "HTTP call", "call", "POST", "{db}/call/append_sync_event", "writer",
            400, "Header of type `content-type` was missing", body=_APPEND),
    Refusal("a call with Content-Type text/plain", "HTTP call", "call", "POST", "{db}/call/append_sync_event",
            "writer", 415, "Expected request with `Content-Type: application/json`",
            headers=(("Content-Type", "text/plain"),), body=_APPEND),
    Refusal("a call of an undefined reducer with Content-Type text/plain", "HTTP call", "call", "POST",
            "{db}/call/conformance_no_such_reducer", "writer", 415,
            "Expected request with `Content-Type: application/json`", headers=(("Content-Type", "text/plain"),),
            body=b"[]"),
    Refusal("a call of a reducer the module does not define", "HTTP call", "call", "POST",
            "{db}/call/conformance_no_such_reducer", "writer", 404, code="no_such_reducer",
            details={"reducer": "conformance_no_such_reducer"}, headers=_JSON, body=b"[]"),
    Refusal("a call whose charset is latin-1", "HTTP call", "call", "POST", "{db}/call/append_sync_event", "writer",
            415, "unsupported charset", headers=(("Content-Type", "application/json; charset=latin-1"),),
            body=_APPEND),
    Refusal("a call body over 1 MiB", "HTTP call", "call", "POST", "{db}/call/append_sync_event", "writer", 413,
            None, headers=_JSON, body=b"[" + b" " * (1 << 20) + b"]"),
    Refusal("a call body that is not UTF-8", "HTTP call", "call", "POST", "{db}/call/append_sync_event", "writer",
            400, code="invalid_argument", headers=_JSON, body=b'["\xff"]'),
    Refusal("a call body that is not JSON", "HTTP call", "call", "POST", "{db}/call/append_sync_event", "writer",
            400, code="invalid_argument", headers=_JSON, body=b"[1,"),
    Refusal("a call body that is JSON but not the reducer's arguments", "HTTP call", "call", "POST",
            "{db}/call/append_sync_event", "writer", 400, code="invalid_argument", headers=_JSON, body=b"[1, 2]"),
    # HTTP SQL
    Refusal(f"/sql with {_COMPAT} and confirmed=maybe (the window is checked first)", "HTTP SQL", "sql", "POST",
            "{db}/sql?confirmed=maybe", "compat", 426, code="invalid_client_build", json=True,
            body=b"SELECT * FROM sync_stream"),
    Refusal("/sql without a token", "Transport", "sql", "POST", "{db}/sql", "none", 401, "Authorization required",
            body=b"SELECT * FROM sync_stream"),
    Refusal("/sql with confirmed=maybe", "HTTP SQL", "sql", "POST", "{db}/sql?confirmed=maybe", "writer", 400,
            "invalid confirmed parameter", body=b"SELECT * FROM sync_stream"),
    Refusal("/sql whose charset is latin-1", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 415,
            "unsupported charset", headers=(("Content-Type", "text/plain; charset=latin-1"),),
            body=b"SELECT * FROM sync_stream"),
    Refusal("/sql text that is not UTF-8", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 400,
            code="invalid_argument", body=b"SELECT * FROM sync_stream WHERE stream_id = '\xff'"),
    Refusal("/sql text of exactly max_sql_bytes (not refused: the limit is inclusive)", "Limits", "sql", "POST",
            "{db}/sql", "writer", 200, None, body=b"<max_sql_bytes>"),
    Refusal("/sql text of max_sql_bytes + 1", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 413,
            "SQL text over {max_sql_bytes} bytes", body=b"<max_sql_bytes + 1>"),
    Refusal("/sql text over 1 MiB", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 413, None,
            body=b"SELECT * FROM sync_stream" + b" " * (1 << 20)),
    Refusal("/sql of exactly max_sql_statements statements (not refused: the limit is inclusive)", "Limits", "sql",
            "POST", "{db}/sql", "writer", 200, None, body=b"<max_sql_statements>"),
    Refusal("/sql of max_sql_statements + 1 statements", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 400,
            code="limit_exceeded", details={"actual": "<max_sql_statements + 1>", "limit": "max_sql_statements",
                                            "max": "<max_sql_statements>"}, body=b"<max_sql_statements + 1>"),
    Refusal("/sql with no statement", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 400, code="invalid_query",
            details={"message": "no statement", "sql": ""}),
    Refusal("/sql that is not the subscription subset", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 400,
            code="invalid_query", body=b"DELETE FROM sync_stream"),
    Refusal("/sql of every table (SELECT * FROM *)", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 400,
            code="invalid_query", body=b"SELECT * FROM *"),
    Refusal("/sql by a token without sync.subscribe", "HTTP SQL", "sql", "POST", "{db}/sql", "noscope", 400,
            code="missing_scope", body=b"SELECT * FROM sync_stream"),
    Refusal("/sql of a stream the token is not granted", "HTTP SQL", "sql", "POST", "{db}/sql", "writer", 400,
            code="forbidden_stream", body=b"SELECT * FROM sync_event WHERE stream_id = 'conformance.elsewhere'"),
    # the upgrade, in check order (protocol.md "Upgrade")
    Refusal("an upgrade without a token", "Upgrade", "subscribe", "GET", _SUB, "none", 401, "Authorization required",
            headers=_UPGRADE + _V2),
    Refusal("an upgrade with connection_id=xyz", "Upgrade", "subscribe", "GET", _SUB + "&connection_id=xyz",
            "writer", 400, "Invalid connection ID: 'xyz' is not 1 to 32 hex digits", headers=_UPGRADE + _V2),
    Refusal("an upgrade with the all-zeros connection_id", "Upgrade", "subscribe", "GET", _SUB + "&connection_id=00",
            "writer", 400, "Invalid connection ID: the all-zeros ConnectionId is reserved.", headers=_UPGRADE + _V2),
    Refusal("an upgrade to another database", "Upgrade", "subscribe", "GET",
            "/v1/database/conformance-no-such-database/subscribe", "writer", 404,
            "`conformance-no-such-database` not found", headers=_UPGRADE + _V2),
    Refusal("an upgrade offering no v2 or v3 subprotocol (and compression=Zstd: the subprotocol is checked first)",
            "Upgrade", "subscribe", "GET", "{db}/subscribe?compression=Zstd", "writer", 400,
            "no valid protocol selected", headers=(*_UPGRADE, ("Sec-WebSocket-Protocol", "v1.json.spacetimedb"))),
    Refusal("an upgrade with compression=Zstd", "Upgrade", "subscribe", "GET", "{db}/subscribe?compression=Zstd",
            "writer", 400, "unknown compression 'Zstd': expected one of None, Brotli, Gzip", headers=_UPGRADE + _V2),
    Refusal("an upgrade with confirmed=maybe", "Upgrade", "subscribe", "GET", "{db}/subscribe?confirmed=maybe",
            "writer", 400, "expected true or false, got 'maybe'", headers=_UPGRADE + _V2),
    # compaction (only against a target with a compaction hook: the route is the kit's way to compact)
    Refusal("a compaction without a token", "Transport", "compact", "POST", "{db}/compact", "none", 401,
            "Authorization required"),
    Refusal("a compaction with a token without sync.admin", "Transport", "compact", "POST", "{db}/compact", "writer",
            403, "compaction needs a token with the sync.admin scope"),
    Refusal("a compaction with sync.admin but not the stream grant '*'", "Transport", "compact", "POST",
            "{db}/compact", "partial_admin", 403, "compaction needs a token with the sync.admin scope"),
    Refusal(f"a compaction with {_COMPAT} (the window before the admin check)", "Transport", "compact", "POST",
            "{db}/compact", "compat", 426, code="invalid_client_build", json=True),
    # the identity and schema routes (protocol.md "Transport"; POST /v1/identity's 403 depends on whether the
    # target allows anonymous identities, a setting the kit cannot read: not driven)
    Refusal("a websocket-token request without a token", "Transport", "identity", "POST",
            "/v1/identity/websocket-token", "none", 401, "Authorization required"),
    Refusal("a websocket-token request with an Authorization header that is not Bearer", "Transport", "identity",
            "POST", "/v1/identity/websocket-token", "basic", 400, "Authorization is invalid"),
    Refusal("a websocket-token request with a token that is not a JWT", "Transport", "identity", "POST",
            "/v1/identity/websocket-token", "garbage", 401),
    Refusal("the identity of another database", "Transport", "identity", "GET", _NO_DB + "/identity", "none", 404,
            "`conformance-no-such-database` not found"),
    Refusal("the schema of another database", "Schema", "schema", "GET", _NO_DB + "/schema", "none", 404,
            "`conformance-no-such-database` not found"),
    Refusal("the schema with version=10 (only 9 and none are served)", "Schema", "schema", "GET",
            "{db}/schema?version=10", "none", 400),
    # the operator's page (only against a target that serves it: GET /ops/app.js answers 200)
    Refusal("the operator's page with an Authorization header that is not Bearer", "Operator's page", "ops",
            "GET", "/", "basic", 400, "Authorization is invalid"),
    Refusal("the operator's page with a token that is not a JWT", "Operator's page", "ops", "GET", "/", "garbage",
            401),
    Refusal("the operator's data with a token without sync.admin", "Operator's page", "ops", "GET", "/ops/data",
            "writer", 403, "the operator's page needs a token with the sync.admin scope"),
    Refusal("the operator's data with wait=x", "Operator's page", "ops", "GET", "/ops/data?wait=x",
            "partial_admin", 400, "wait must be a committed offset"),
    Refusal("an operator's asset that does not exist", "Operator's page", "ops", "GET", "/ops/conformance.js",
            "none", 404, None),
)
"""Every refusal ``http_refusals`` drives, with the answer protocol.md's tables give."""


# --- scenarios ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    area: str
    name: str
    invariants: tuple[str, ...]
    needs: tuple[str, ...] = ()  # "mint", "stall", "restart", "compact", "undurable"
    steps: str | None = None  # the delivery scenario it plays (None: a scenario of its own below)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("protocol", "handshake", ("handshake",)),
    Scenario("delivery", "subscribe_snapshot", ("DELIV-2",), ("mint",), "subscribe_snapshot"),
    Scenario("delivery", "update_and_caller_result", ("DELIV-3",), ("mint",), "update_and_caller_result"),
    Scenario("delivery", "reducer_error_result", ("DELIV-4", "AUTH-2"), ("mint",), "reducer_error_result"),
    Scenario("delivery", "event_tables", ("EVT-2",), ("mint",), "event_tables"),
    Scenario("delivery", "row_filter", ("AUTH-1",), ("mint",), "row_filter"),
    Scenario("delivery", "private_tables", ("AUTH-1",), ("mint",), "private_tables"),
    Scenario("delivery", "unsubscribe", ("DELIV-2",), ("mint",), "unsubscribe"),
    Scenario("delivery", "one_off_row_filter", ("AUTH-1",), ("mint",)),
    Scenario("idempotency", "duplicate_call_is_a_noop", ("IDEM-2",), ("mint",), "duplicate_call_is_a_noop"),
    Scenario("idempotency", "duplicate_frame", ("IDEM-2",), ("mint",), "duplicate_frame"),
    Scenario("idempotency", "idempotency_conflict", ("IDEM-3",), ("mint",), "idempotency_conflict"),
    Scenario("resume", "checkpoint_never_backwards", ("CKPT-2",), ("mint",), "checkpoint_never_backwards"),
    Scenario("resume", "resume_and_stale_cursor", ("STALE-1", "STALE-3"), ("mint",), "resume_and_stale_cursor"),
    Scenario("resume", "stale_cursor_recovery", ("STALE-1", "REPLAY-2"), ("mint",), "stale_cursor_recovery"),
    Scenario("durability", "confirmed_reads_released", ("CONF-1",), ("mint", "stall"), "confirmed_reads_released"),
    Scenario("durability", "confirmed_caller_waits", ("CONF-1",), ("mint", "stall"), "confirmed_caller_waits"),
    Scenario("compat", "negotiation_order", ("COMPAT-1",), ("mint",)),
    Scenario("delivery", "compute_roles", ("AUTH-1", "ASSIGN-3", "ASSIGN-4"), ("mint",), "compute_roles"),
    Scenario("bridge", "bridge_outbox", ("BRIDGE-2", "BRIDGE-3"), ("mint",), "bridge_outbox"),
    Scenario("presence", "presence_ownership", ("PRES-3",), ("mint",), "presence_ownership"),
    Scenario("retention", "retention_floor", ("SEQ-1", "SEQ-4", "STALE-1", "STALE-2"), ("mint", "compact"),
             "retention_floor"),
    Scenario("retention", "retention_tables", ("RET-1",), ("mint", "compact"), "retention_tables"),
    # before replay, so that against a fresh target its restart is the first unclean one: a later recovery
    # starts from the floors earlier ones logged, which can hide a bump that was once too small
    Scenario("recovery", "recovery_moves_past_the_window", ("DUR-2", "VER-1"), ("mint", "restart", "undurable")),
    Scenario("replay", "replay_parity_across_restart", ("REPLAY-2", "DUR-1", "IDEM-2", "CONT-1"), ("mint", "restart")),
    Scenario("transport", "v3_coalesced", ("framing", "DELIV-1"), ("mint",)),
    Scenario("transport", "compression", ("framing",), ("mint",)),
    Scenario("transport", "slow_consumer", ("SLOW-1",), ("mint", "outbound")),
    Scenario("transport", "slow_consumer_bound", ("SLOW-1", "DELIV-1"), ("mint", "stall", "outbound")),
    Scenario("http", "http_sql", ("AUTH-1",), ("mint",)),
    Scenario("http", "http_call", ("DELIV-2", "IDEM-2"), ("mint",)),
    Scenario("http", "http_durable", ("CONF-1",), ("mint", "stall")),
    Scenario("http", "http_refusals", ("http",), ("mint",)),
    Scenario("http", "http_body_timeout", ("http",), ("mint", "body_timeout")),
    Scenario("http", "http_identity_limit", ("http",), ("mint", "identity_limit")),
)
AREAS = tuple(dict.fromkeys(s.area for s in SCENARIOS))
_HOOKS = {"mint": "--mint-with DIR (tokens with distinct identities and grants)",
          "stall": "--stall-file PATH (a way to stall the target's commit log)",
          "restart": "--restart-cmd CMD (a way to restart the target)",
          "compact": "--compact-cmd CMD (a way to make the target run its retention now, and the kit's "
                     "retention class for conformance.retain.*)",
          "outbound": "--max-outbound-queue N (the target's bound on messages queued for one connection: "
                      "how much a client that does not read is sent before it must be closed)",
          "undurable": "--max-undurable N (the target's undurable window: how far an unclean restart moves "
                       "epochs and versions)",
          "body_timeout": "--body-timeout S (the target's time for a call or /sql body to arrive, [limits] "
                          "body_timeout_s: the kit sends a body that stops short and waits that long for the 408)",
          "identity_limit": "--max-connections-per-identity N (the target's bound on one identity's open "
                            "WebSocket connections: the kit opens N and expects the next upgrade's 429)"}


class Runner:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tokens = Tokens(opts)
        self.run_id = uuid.uuid4().hex[:10]
        self.plays = 0  # numbers each played scenario: its own stream and identity namespace
        self.floors: tuple[int, int] | None = None  # the target's epoch and version floors, read again after
        # a scenario that restarts or compacts it (only those move them)

    # --- playing delivery steps ---

    def play(self, name: str, version: int = 2, compression: str = "None") -> tuple[int, int]:
        """Play the delivery scenario ``name`` against the target, over ``version`` (v3: consecutive sends
        on one connection go in one frame) with ``compression``, and compare every receive with the model.
        Returns the number of frames whose body was over the compression threshold and the most messages
        one frame carried, over all the scenario's connections."""
        # one namespace per play, never shared: scenarios run against one server, one after another,
        # and a later one must not find an earlier one's rows (a name hash modulo 10,000 collided once
        # in about a hundred runs, and a snapshot then held another scenario's events)
        ns = self._next_ns()
        e0, v0 = self._run_floors(ns)
        steps = fenced(d.scenarios(ns, e0, v0)[name][1], LONG_HOLD_QUIETS * self.opts.quiet_s)
        conns: dict[str, Conn] = {}
        held_at = 0.0  # when the current stall began
        inbox: dict[str, list[wire.ServerMessage]] = {}
        dirty: set[str] = set()  # connections that sent something since their last barrier
        identities: dict[str, str] = {}
        got: list[list[dict[str, Any]]] = []
        stall = self.opts.stall_file
        frame: list[wire.ClientMessage] = []  # v3: consecutive sends on one connection, sent as one frame
        framed: list[str] = []  # its connection

        def flush() -> None:
            if frame:
                conns[framed[0]].send_frame(frame[:])
                frame.clear()
                framed.clear()

        def settle(conn: str, where: str) -> None:
            for other in sorted(dirty - {conn}):
                inbox.setdefault(other, []).extend(conns[other].until_barrier(where))
                dirty.discard(other)

        try:
            for k, step in enumerate(steps):
                op = step["op"]
                where = f"step {k} ({op} {step.get('conn', '')})"
                if framed and (op != "send" or step["conn"] != framed[0]):
                    flush()
                if op == "connect":
                    person = step["person"]
                    token = self.tokens.token(f"{ns}-{person}", step["claims"])
                    conns[step["conn"]] = c = Conn(self.opts, token, step["confirmed"], step["conn"], version,
                                                   compression)
                    identities[person] = c.identity
                elif op == "send":
                    # the model takes the steps one after another; over a network two connections' frames
                    # may reach the server in either order, so another connection's sends are taken (its
                    # barrier answered, its answers kept in its inbox) before this one sends
                    if not framed:
                        settle(step["conn"], f"before {where}")
                    frame.append(_to_wire(step["message"]))
                    framed[:] = [step["conn"]]
                    if version == 2:
                        flush()
                    dirty.add(step["conn"])
                elif op in ("receive", "receive_quiet"):
                    # a barrier orders one connection only: first make every other connection's sends
                    # taken (their answers wait in their inbox), so their writes reach this one first
                    for other in sorted(dirty - {step["conn"]}):
                        inbox.setdefault(other, []).extend(conns[other].until_barrier(f"after {where}"))
                    dirty.clear()
                    c = conns[step["conn"]]
                    msgs = inbox.pop(step["conn"], [])
                    if "hold_s" in step:  # the scenario's last stall lasts this long before its fences
                        time.sleep(max(0.0, held_at + step["hold_s"] - time.monotonic()))
                    if op == "receive":
                        msgs += c.until_barrier(f"after {where}")
                    else:  # a stall's closing fence listens no longer than its answer
                        msgs += c.quiet(f"after {where}", 0.0 if step.get("fence") else None)
                    got.append([d.message_json(wire.server_from_wire(m)) for m in msgs])
                elif op == "compact":
                    # every write sent so far is in first; then the target's retention runs, and has
                    # committed when the command returns
                    for other in sorted(dirty):
                        inbox.setdefault(other, []).extend(conns[other].until_barrier(f"before {where}"))
                    dirty.clear()
                    self._compact(where)
                    # the target's version floor now: on a shared target the compaction also removed other
                    # writers' terminal assignments, whose versions the model cannot know; it takes this floor
                    # (never lowering its own, so a floor kept too low still shows)
                    steps[k] = {**step, "version_floor": self._floors(f"{ns}c{k}")[1]}
                elif op == "close":
                    settle(step["conn"], f"before {where}")
                    conns[step["conn"]].close()
                    dirty.discard(step["conn"])
                elif op == "await":
                    # what another connection's close caused reaches this one in its own time: wait for
                    # the first message (a target that sends none is judged by the comparison), then
                    # barrier for the rest
                    for other in sorted(dirty - {step["conn"]}):
                        inbox.setdefault(other, []).extend(conns[other].until_barrier(f"after {where}"))
                    dirty.clear()
                    c = conns[step["conn"]]
                    msgs = inbox.pop(step["conn"], [])
                    if not msgs:
                        try:
                            msgs.append(c.recv(f"what {where} awaits"))
                        except ScenarioFailed as exc:
                            if "no answer within" not in str(exc):
                                raise
                    msgs += c.until_barrier(f"after {where}")
                    got.append([d.message_json(wire.server_from_wire(m)) for m in msgs])
                elif op == "hold":
                    assert stall is not None
                    stall.touch()
                    held_at = time.monotonic()
                elif op == "release":
                    assert stall is not None
                    stall.unlink(missing_ok=True)
                else:
                    raise Skipped(f"step {op!r} needs a hook no wire target has (the vector covers it)")
            flush()
        finally:
            if stall is not None:
                stall.unlink(missing_ok=True)
            for c in conns.values():
                c.close()
        stats = (sum(c.compressed for c in conns.values()), max((c.most_in_a_frame for c in conns.values()), default=0))
        # the model, with the identities the target assigned
        for step in steps:
            if step["op"] == "connect":
                step["claims"] = {**step["claims"], "identity": identities[step["person"]]}
        want = d.drive(d.model_target(d.KIT_POLICY, epoch_floor=e0, version_floor=v0), steps)
        got, want = _rank_offsets(got), _rank_offsets(want)  # offsets in rows: compared by order and equality
        receives = [s for s in steps if s["op"] in d.RECEIVES]
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            what = {"release": " (the stall's closing fence, before the log's release: what came before its "
                               "answer was sent while the log stalled)",
                    "end": " (the scenario's closing barrier: nothing may follow the last receive)"}
            diff = _first_divergence(f"receive #{i} on connection {receives[i]['conn']}"
                                     f"{what.get(receives[i].get('fence', ''), '')}", g, w)
            if diff is not None:
                raise ScenarioFailed(diff)
        return stats

    def _next_ns(self) -> str:
        """A fresh namespace for the next play: no two plays of a run share a stream, person or id."""
        self.plays += 1
        return f"cf{self.run_id}{self.plays:04d}"

    def _run_floors(self, ns: str) -> tuple[int, int]:
        """The target's epoch and version floors (:meth:`_floors`), read once per run, by its first play."""
        if self.floors is None:
            self.floors = self._floors(ns)
        return self.floors

    def _floors(self, ns: str) -> tuple[int, int]:
        """The target's epoch and version floors now -- the epoch a new stream gets and the version a new
        assignment gets -- read from a probe stream and assignment under a namespace no scenario person is
        granted.  Both are 1 on a fresh target; an unclean restart raises them (DUR-2, VER-1), and the
        model then starts from the same floors, so the kit runs again against a target that restarted."""
        probe = f"{ns}probe"
        token = self.tokens.token(f"{probe}-prober", {"scopes": ["sync.subscribe", "sync.append", "compute.request"],
                                                      "streams": [f"{probe}.*"]})
        c = Conn(self.opts, token, False, "probe")
        try:
            for rid, reducer, args in ((1, "append_sync_event", (f"{probe}.s", "k", "{}", None, None)),
                                       (2, "open_compute_assignment", (probe, 5050, "{}"))):
                c.send(wire.CallReducer(rid, 0, reducer, bsatn.encode_args(reducer, args)))
            c.send(wire.Subscribe(3, 3, (f"SELECT * FROM sync_stream WHERE stream_id = '{probe}.s'",
                                         f"SELECT * FROM compute_assignment WHERE request_id = '{probe}'")))
            msgs = [d.message_json(wire.server_from_wire(m)) for m in c.until_barrier("after the floors probe")]
        finally:
            c.close()
        applied = [m for m in msgs if m["$type"] == "SubscribeApplied"]
        by_table = {t["table"]: t["inserts"] for t in applied[0]["rows"]} if applied else {}
        streams, jobs = by_table.get("sync_stream", []), by_table.get("compute_assignment", [])
        if len(streams) != 1 or len(jobs) != 1:
            raise ScenarioFailed(f"the floors probe (a new stream and a new assignment, read back) was answered "
                                 f"{_show(msgs)}")
        return int(streams[0]["epoch"]), int(jobs[0]["version"])

    def _compact(self, where: str) -> None:
        assert self.opts.compact_cmd is not None
        try:
            proc = subprocess.run(self.opts.compact_cmd, shell=True, capture_output=True, text=True,
                                  timeout=max(60.0, self.opts.timeout))
        except subprocess.TimeoutExpired:
            raise ScenarioFailed(f"--compact-cmd did not return within {max(60.0, self.opts.timeout):g} s "
                                 f"at {where}") from None
        if proc.returncode != 0:
            raise ScenarioFailed(f"--compact-cmd exited {proc.returncode} at {where}: "
                                 f"{(proc.stderr or proc.stdout).strip()[-300:]}")

    # --- scenarios of their own ---

    def slow_consumer(self) -> None:
        """A client that does not read is closed 1008 ``slow_consumer: ...`` once more than the target's
        ``max_outbound_queue`` messages wait for it, while the others go on being served (protocol.md "Close
        codes", "Limits"; SLOW-1).  A watcher ``s`` with a small receive buffer subscribes to a stream and
        then reads nothing while a writer appends ``N`` + ``SLOW_SLACK_BYTES`` worth of 64 KB events (N:
        ``--max-outbound-queue``), in batches; a watcher ``u`` that reads gets every update, in order, after
        each batch.  Then ``s`` reads: a prefix of the updates (in order, none missing in it), then the close."""
        from websockets.exceptions import ConnectionClosed
        n = self.opts.max_outbound_queue
        assert n is not None
        ns = self._next_ns()
        folk = d.people(ns)
        a = f"{ns}.a"
        query = f"SELECT * FROM sync_event WHERE stream_id = '{a}'"
        payload = '{"n":0,"pad":"' + "0123456789abcdef" * (SLOW_PAYLOAD_BYTES // 16) + '"}'
        total = n + -(-SLOW_SLACK_BYTES // len(payload))
        watcher = self.tokens.token(f"{ns}-watcher", claims_to_json(folk["watcher"]))
        slow = Conn(self.opts, watcher, False, "s", rcvbuf=SLOW_RCVBUF)
        u = Conn(self.opts, watcher, False, "u")
        w = Conn(self.opts, self.tokens.token(f"{ns}-writer", claims_to_json(folk["writer"])), False, "w")
        seen: list[int] = []  # the seqs u was sent
        got: list[int] = []  # the seqs s was sent before its close
        close: Any = None
        started = time.monotonic()
        try:
            for c in (slow, u):
                c.send(wire.Subscribe(1, 10, (query,)))
                answer = c.until_barrier("after subscribing")
                if [type(m).__name__ for m in answer] != ["SubscribeApplied"]:
                    raise ScenarioFailed(f"connection {c.name}: subscribing {query!r} was answered "
                                         f"{[type(m).__name__ for m in answer]}")
            sent = 0
            while sent < total:
                batch = range(sent + 1, min(total, sent + SLOW_BATCH) + 1)
                for k in batch:
                    w.send(wire.CallReducer(k, 0, "append_sync_event", bsatn.encode_args(
                        "append_sync_event", (a, f"k{k}", payload, None, None))))
                results = [wire.server_from_wire(m) for m in w.until_barrier(f"after appends {batch[0]}..{batch[-1]}")]
                failed = [r for r in results if isinstance(r, sm.ReducerResult) and not isinstance(r.outcome,
                                                                                                     sm.ReducerOk)]
                if failed:
                    raise ScenarioFailed(f"an append failed: {failed[0]}")
                seen += _seqs(u.until_barrier(f"after appends {batch[0]}..{batch[-1]}"), "u")
                sent = batch[-1]
            pushed = time.monotonic() - started
            while True:
                try:
                    frame = slow.ws.recv(timeout=self.opts.timeout)
                except ConnectionClosed as exc:
                    close = exc.rcvd
                    break
                except (TimeoutError, OSError):
                    break
                if isinstance(frame, bytes):
                    got += _seqs(wire.decode_server_frame(frame, 2), "s")
                if len(got) >= total:  # every update: it was never closed (a close now would be too late)
                    break
        finally:
            for c in (slow, u, w):
                c.close()
        if seen != list(range(1, total + 1)):
            raise ScenarioFailed(f"the watcher that reads was sent the updates of seqs {_runs(seen)} of the "
                                 f"{total} appends, not each once in order: a slow consumer beside it must not "
                                 "hold it back (SLOW-1)")
        if got != list(range(1, len(got) + 1)):
            raise ScenarioFailed(f"the client that did not read was sent the updates of seqs {_runs(got)}: not a "
                                 "prefix of the appends in order (a slow consumer is closed, never skipped ahead)")
        if close is None and len(got) < total and pushed > SLOW_PUSH_S:
            raise Skipped(f"the client that did not read was sent a prefix of the updates ({len(got)} of {total}) and "
                          f"then the connection ended without a close frame it could read; the appends took "
                          f"{pushed:.1f} s, longer than a target may wait for a closed slow consumer to complete its "
                          f"close ({SLOW_PUSH_S:g} s; syncref serve: close_timeout_s 5 s) -- a loaded machine: "
                          "nothing to judge")
        if close is None or close.code != 1008 or not close.reason.startswith("slow_consumer"):
            how = ("no close frame" if close is None else f"code {close.code} {close.reason!r}")
            raise ScenarioFailed(f"the client that did not read while {total} updates of about {len(payload)} bytes "
                                 f"were sent to it (--max-outbound-queue {n}, in {pushed:.1f} s) then read "
                                 f"{len(got)} of them and {how}; protocol.md \"Close codes\": 1008 "
                                 "'slow_consumer: {...}' past the bound (SLOW-1)")
        # SLOW-1's other half: its watermark survives -- a resume from the last seq it was sent gets the rest
        r = Conn(self.opts, watcher, False, "again")
        try:
            r.send(wire.Subscribe(1, 10, (f"SELECT * FROM sync_stream WHERE stream_id = '{a}'",)))
            applied = [d.message_json(wire.server_from_wire(m)) for m in r.until_barrier("after reading the stream")]
            epoch = applied[0]["rows"][0]["inserts"][0]["epoch"] if applied and applied[0].get("rows") else None
            resume = f"{query} AND epoch = {epoch} AND seq > {len(got)}"
            r.send(wire.Subscribe(2, 11, (resume,)))
            resumed = [d.message_json(wire.server_from_wire(m)) for m in r.until_barrier("after resuming")]
        finally:
            r.close()
        rest = [row["seq"] for m in resumed if m["$type"] == "SubscribeApplied"
                for t in m["rows"] for row in t["inserts"]]
        kinds = [m["$type"] for m in resumed]
        if kinds != ["SubscribeApplied"] or sorted(rest) != list(range(len(got) + 1, total + 1)):
            raise ScenarioFailed(f"the slow consumer, closed after seq {len(got)}, resumed with {resume!r} and was "
                                 f"answered {kinds} with seqs {_runs(sorted(rest))}; the rest "
                                 f"of the stream is {len(got) + 1}..{total} (SLOW-1: its watermark survives)")

    def slow_consumer_bound(self) -> None:
        """The outbound bound, counted exactly (protocol.md "Limits": ``max_outbound_queue`` messages queued for
        one connection, *including those waiting for durability*; "Close codes": past it, 1008
        ``slow_consumer``).  A confirmed reader's messages stay queued while the log stalls -- none reaches a
        socket -- so its queue is known message by message, as ``slow_consumer``'s (a reader that does not
        read, with socket buffers in between) is not.  While the log stalls: a writer's append queues one
        update for the confirmed reader ``c``; ``c`` sends N - 1 one-off reads (each answer held too: N
        queued), and its fence is answered -- still open at the bound; the next append's update is the
        (N+1)-th, and ``c`` is closed 1008 ``slow_consumer``.  ``c`` owned a presence session: its mark (the
        row ``offline``, signal ``disconnected``) is a transaction of its own, committed after the fanout of the
        append that closed ``c`` (ADR-0003 decision 4): two unconfirmed watchers, connected before and after
        ``c``, get that append's update and then the mark, in that order (DELIV-1)."""
        assert self.opts.stall_file is not None and self.opts.max_outbound_queue is not None
        n = self.opts.max_outbound_queue
        ns = self._next_ns()
        folk = d.people(ns)
        stream, session = f"{ns}.a", f"{ns}.slow"
        queries = (f"SELECT * FROM sync_event WHERE stream_id = '{stream}'",
                   f"SELECT * FROM session_presence WHERE session_id = '{session}'")
        stall = self.opts.stall_file

        def person(who: str, name: str) -> str | None:
            return self.tokens.token(f"{ns}-{name}", claims_to_json(folk[who]))

        def call(conn: Conn, rid: int, reducer: str, *args: Any) -> None:
            conn.send(wire.CallReducer(rid, 0, reducer, bsatn.encode_args(reducer, args)))

        conns = [Conn(self.opts, person("writer", "w"), False, "w"),
                 Conn(self.opts, person("watcher", "b"), False, "b"),
                 Conn(self.opts, person("writer", "c"), True, "c"),
                 Conn(self.opts, person("watcher", "e"), False, "e")]
        w, b, c, e = conns
        try:
            call(c, 1, "upsert_presence", session, "d", "n", "online", "r", 300_000)
            for conn in (b, c, e):
                conn.send(wire.Subscribe(2, 10, queries))
            for conn in (b, c, e):
                conn.until_barrier("after subscribing")
            stall.touch()
            call(w, 1, "append_sync_event", stream, "k1", '{"n":1}', None, None)
            for conn in (w, b, e):
                conn.until_barrier("after the first append while the log stalls")
            for i in range(n - 1):
                c.send(wire.OneOffQuery(1000 + i, queries[0]))
            early = c.quiet(f"after {n - 1} one-off reads while the log stalls", 0.0)
            if early:
                raise ScenarioFailed(f"while the log stalled, the target sent the confirmed reader c {len(early)} "
                                     f"message(s) before its fence's answer (CONF-1): {_show(_jsons(early))}")
            call(w, 2, "append_sync_event", stream, "k2", '{"n":2}', None, None)
            w.until_barrier("after the second append while the log stalls")
            got = {conn.name: conn.until_barrier("after the append that takes c past the bound") for conn in (b, e)}
            try:
                left = c.quiet(f"after the append that queued its message {n + 1}", 0.0)
            except ScenarioFailed as exc:
                if "code 1008 'slow_consumer" not in str(exc):
                    raise ScenarioFailed(f"{exc}; with {n + 1} messages queued the protocol closes it 1008 "
                                         "'slow_consumer: ...' (SLOW-1)") from None
            else:
                raise ScenarioFailed(
                    f"the confirmed reader c, whose queue held {n + 1} messages while the log stalled (an update, "
                    f"{n - 1} one-off answers, the next update; --max-outbound-queue {n}), was not closed: the "
                    f"target sent its fence's answer{f' after {len(left)} message(s)' if left else ''}; protocol.md "
                    "\"Limits\": past max_outbound_queue messages queued, including those waiting for durability, "
                    "close 1008 slow_consumer (SLOW-1)")
            for conn in (b, e):  # c's mark follows its close in its own time (as presence_ownership's awaits)
                if len(got[conn.name]) < 2:
                    with contextlib.suppress(ScenarioFailed):
                        got[conn.name].append(conn.recv("c's presence mark, after its close"))
                    got[conn.name] += conn.until_barrier("after c's presence mark")
        finally:
            stall.unlink(missing_ok=True)
            for conn in conns:
                conn.close()
        for name, msgs in ((name, _jsons(ms)) for name, ms in got.items()):
            seen = [sorted(t["table"] for q in m.get("query_sets", ()) for t in q["tables"]) for m in msgs]
            marks = [t["inserts"][0].get("status") for m in msgs for q in m.get("query_sets", ()) for t in q["tables"]
                     if t["table"] == "session_presence" and t["inserts"]]
            if seen != [["sync_event"], ["session_presence"]] or marks != ["offline"]:
                raise ScenarioFailed(
                    f"watcher {name} (connected {'before' if name == 'b' else 'after'} c): the target sent "
                    f"{_show(msgs)}; after the append that closed c, the protocol sends that append's update and then "
                    "c's session marked offline (disconnected), a transaction of its own committed after the append's "
                    "fanout (DELIV-1; ADR-0003 decision 4)")

    def v3_coalesced(self) -> None:
        """v3 (protocol.md "Frames", "Upgrade"): offered both, in the client's order v2 first, the server
        picks v3 (its preference); a frame of several client messages is one message after another (the
        ``bridge_outbox`` scenario, its ten calls in one frame, judged by the model as over v2); the
        answers come coalesced -- at least one frame carries more than one message."""
        token = self.tokens.token(f"cf{self.run_id}-v3", {"scopes": ["sync.subscribe"], "streams": []})
        Conn(self.opts, token, False, "offer", 3, offer=("v2.bsatn.spacetimedb", "v3.bsatn.spacetimedb")).close()
        _, most = self.play("bridge_outbox", 3)
        if most < 2:
            raise ScenarioFailed("over v3 the target sent every message in a frame of its own, ten calls sent in one "
                                 "frame included: the model sends the same messages (they matched), but protocol.md "
                                 "\"Frames\" coalesces a v3 connection's messages, in order, into one frame (up to "
                                 "512 KiB), the answers to one frame of messages sharing a frame")

    def compression(self) -> None:
        """Compression (protocol.md "Frames"): the ``large_rows`` scenario over v2 and over v3 with every
        codec the upgrade takes (``compression=None``, ``Brotli``, ``Gzip``), every frame's tag checked (a
        body over 1024 bytes compressed with the connection's compression, any other tag 0; with ``None``
        every frame tag 0) and every message judged by the model.  One codec per protocol (v2 gzip, v3
        Brotli) let a v2 connection that asked for Brotli and got gzip through (``v2_brotli_sent_as_gzip``)."""
        for version, compression in ((v, c.value) for v in (2, 3) for c in wire.Compression):
            big, _ = self.play("large_rows", version, compression)
            if big < 2:  # the reader's update of the large event, and its snapshot of both
                raise ScenarioFailed(f"over v{version} with compression={compression} only {big} frame(s) had a "
                                     "body over 1024 bytes: the scenario's large rows did not reach the reader")

    def handshake(self) -> None:
        """InitialConnection first; a subscription answered; offsets never go backwards."""
        token = self.tokens.token(f"cf{self.run_id}-hs", {"scopes": ["sync.subscribe"], "streams": []})
        c = Conn(self.opts, token, False, "h")
        try:
            if not re.fullmatch(r"[0-9a-f]{64}", c.identity):
                raise ScenarioFailed(f"InitialConnection identity {c.identity!r} is not 64 lowercase hex")
            c.send(wire.Subscribe(1, 1, ("SELECT * FROM sync_stream WHERE stream_id = 'conformance.none'",)))
            msgs = c.until_barrier("after a subscribe")
            kinds = [type(m).__name__ for m in msgs]
            if kinds not in (["SubscribeApplied"], ["SubscriptionError"]):
                raise ScenarioFailed(f"a subscribe was answered with {kinds}")
        finally:
            c.close()

    def negotiation_order(self) -> None:
        """Every compatibility code, in order: the HTTP answer of the upgrade against the model's
        negotiation with the target's own window (read from its first refusal)."""
        from spec.compat import CompatWindow, negotiate
        from spec.schema import PROTOCOL_VERSION, SCHEMA_VERSION
        cases = [(None, None, None), ("bad", "oa.sync.v1", 2), ("bad", "x", 99), ("20991231T235959Z", "x", 99),
                 ("20260601T000000Z", "x", 2), ("20260601T000000Z", "oa.sync.v1", 99),
                 ("20000101T000000Z", "oa.sync.v1", 2), ("29991231T235959Z", "oa.sync.v1", 2),
                 ("20000101T000000Z", "oa.sync.v1", 99), ("20260601T000000Z", "oa.sync.v1", 2)]
        window: CompatWindow | None = None
        for i, (build, protocol, schema) in enumerate(cases):
            status, body = self._upgrade_status(f"cf{self.run_id}-compat{i}", build, protocol, schema)
            if window is None and status == 426:
                w = body.get("window") or {}
                window = CompatWindow(w["protocol_version"], w["min_schema_version"], w["max_schema_version"],
                                      w["min_client_build_id"], w["max_client_build_id"])
                # the build window is the target's to choose; the protocol and schema are the spec's
                if window.protocol_version != PROTOCOL_VERSION or not (
                        window.min_schema_version <= SCHEMA_VERSION <= window.max_schema_version):
                    raise ScenarioFailed(f"the target's compatibility window {w} does not admit the spec's protocol "
                                         f"{PROTOCOL_VERSION} and schema {SCHEMA_VERSION} (COMPAT-1)")
            model = CompatWindow() if window is None else window
            err = negotiate(model, build, protocol, schema)
            want = (101, None) if err is None else (426, err.code.value)
            got_code = body.get("code") if status == 426 else None
            if (status, got_code) != want:
                raise ScenarioFailed(f"claims build={build!r} protocol={protocol!r} schema={schema!r}: the target "
                                     f"answered HTTP {status} {body!r:.300}; the model says "
                                     f"{'101 (admitted)' if err is None else f'426 {err.code.value}'}")
            if status == 426 and body.get("upgrade_required") != (got_code == "upgrade_required"):
                raise ScenarioFailed(f"a 426 {got_code} body says upgrade_required={body.get('upgrade_required')}")

    def one_off_row_filter(self) -> None:
        """A one-off read (``OneOffQuery``) follows the subscription rules -- scope, grants, row filter; no
        stale check (docs/protocol.md): each query's one-off answer over the wire has the rows, or the
        error code, of the model's answer to subscribing that query, for the same reader and state.  The
        reader is granted one stream; the writer also wrote the other, a checkpoint and an outbox row."""
        ns = self._next_ns()
        e0, v0 = self._run_floors(ns)
        folk = d.people(ns)
        writes, queries = _reads_setup(ns, e0)
        w = Conn(self.opts, self.tokens.token(f"{ns}-writer", claims_to_json(folk["writer"])), False, "w")
        r = Conn(self.opts, self.tokens.token(f"{ns}-reader", claims_to_json(folk["reader"])), False, "r")
        try:
            for call in writes:
                w.send(wire.CallReducer(call.request_id, 0, call.reducer, bsatn.encode_args(call.reducer, call.args)))
            w.until_barrier("after the writes")
            for i, text in enumerate(queries):
                r.send(wire.OneOffQuery(100 + i, text))
            answers = {m.request_id: wire.server_from_wire(m) for m in r.until_barrier("after the one-off reads")
                       if isinstance(m, wire.OneOffQueryResult)}
            identities = {"writer": w.identity, "reader": r.identity}
        finally:
            w.close()
            r.close()
        model = _model_reads(ns, folk, writes, queries, identities, e0, v0)
        compared: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for i, (text, want) in enumerate(zip(queries, model, strict=True)):
            got = answers.get(100 + i)
            if not isinstance(got, sm.OneOffQueryResult):
                raise ScenarioFailed(f"no OneOffQueryResult for {text!r} (request {100 + i})")
            if want["$type"] == "SubscriptionError":
                code = want["error"].split(":")[0]
                if not (isinstance(got.result, str) and got.result.split(":")[0] == code):
                    raise ScenarioFailed(f"the one-off read {text!r} was answered {str(got.result)[:300]}; the model "
                                         f"refuses subscribing it with {code} (AUTH-1)")
                continue
            rows = [t["inserts"] for t in want["rows"]] or [[]]
            got_rows = "an error: " + got.result if isinstance(got.result, str) else d.message_json(
                sm.SubscribeApplied(0, 0, (got.result,)))["rows"][0]["inserts"]
            compared.append((f"the one-off read {text!r}", {"rows": got_rows}, {"rows": rows[0]}))
        _compare_reads(compared)

    def _http(self, method: str, path: str, token: str | None, body: bytes = b"",
              content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the target's database routes: status, headers (lower-case names), body."""
        url = f"{self.opts.url.rstrip('/')}/v1/database/{self.opts.database}/{path}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.opts.timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ScenarioFailed(f"{method} {url}: no answer ({getattr(exc, 'reason', exc)}) within "
                                 f"{self.opts.timeout:g} s") from None

    def _sql(self, token: str | None, text: str) -> tuple[int, Any]:
        """``POST /sql`` of one statement: the status and, for a 200, its one table's rows in the named
        SATS-JSON form the model's messages use (read through the answer's own schema); else the body text."""
        status, _, body = self._http("POST", "sql", token, text.encode())
        if status != 200:
            return status, body.decode("utf-8", "replace")
        try:
            answer = json.loads(body)
            (one,) = answer
            names = [e["name"]["some"] for e in one["schema"]["elements"]]
            types = [e["algebraic_type"] for e in one["schema"]["elements"]]
            return 200, [{n: _named(t, v) for n, t, v in zip(names, types, row, strict=True)} for row in one["rows"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ScenarioFailed(f"/sql {text!r} answered 200 with a body that is not one statement's "
                                 f"{{schema, rows}} (protocol.md \"HTTP SQL\"): {exc!r}: {body[:300]!r}") from None

    def http_sql(self) -> None:
        """``POST /sql`` follows the subscription rules (protocol.md "HTTP SQL": scope, grants, row filter, no
        stale check): for the reader of ``one_off_row_filter``'s writes, each statement's rows -- read back
        from the untyped SATS-JSON through the answer's schema -- are the model's snapshot of subscribing
        it, or the 400's code is the model's refusal code."""
        ns = self._next_ns()
        e0, v0 = self._run_floors(ns)
        folk = d.people(ns)
        writes, queries = _reads_setup(ns, e0)
        reader = self.tokens.token(f"{ns}-reader", claims_to_json(folk["reader"]))
        w = Conn(self.opts, self.tokens.token(f"{ns}-writer", claims_to_json(folk["writer"])), False, "w")
        try:
            for call in writes:
                w.send(wire.CallReducer(call.request_id, 0, call.reducer, bsatn.encode_args(call.reducer, call.args)))
            w.until_barrier("after the writes")
            identities = {"writer": w.identity}
        finally:
            w.close()
        r = Conn(self.opts, reader, False, "r")  # the reader's identity, for the model
        identities["reader"] = r.identity
        r.close()
        answers = [self._sql(reader, text) for text in queries]
        model = _model_reads(ns, folk, writes, queries, identities, e0, v0)
        compared: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for text, (status, got), want in zip(queries, answers, model, strict=True):
            if want["$type"] == "SubscriptionError":
                code = want["error"].split(":")[0]
                if not (status == 400 and isinstance(got, str) and got.split(":")[0] == code):
                    raise ScenarioFailed(f"/sql {text!r} was answered HTTP {status} {str(got)[:300]}; the model "
                                         f"refuses subscribing it with {code} (400 {code}: ...) (AUTH-1)")
                continue
            if status != 200:
                raise ScenarioFailed(f"/sql {text!r} was answered HTTP {status} {str(got)[:300]}; the model "
                                     "answers subscribing it with rows (AUTH-1)")
            rows = [t["inserts"] for t in want["rows"]] or [[]]
            compared.append((f"/sql {text!r}", {"rows": got}, {"rows": rows[0]}))
        _compare_reads(compared)

    def http_call(self) -> None:
        """``POST /call/:reducer`` (protocol.md "HTTP call"): a call has no WebSocket caller, so every
        subscriber -- the caller's own connection included -- gets its ``TransactionUpdate``; success is
        200 with ``syncref-return-value`` (the model's return value, absent when it has none), a reducer
        error 530 ``<code>: <json>`` with the model's code and details, a duplicate a 200 with the first
        seq and no update.  The model plays each call from a connection of the caller's identity that
        subscribes nothing."""
        ns = self._next_ns()
        e0, v0 = self._run_floors(ns)
        folk = d.people(ns)
        a = f"{ns}.a"
        calls = [sm.CallReducer(1, "append_sync_event", (a, "k1", '{"n":1}', None, None)),
                 sm.CallReducer(2, "append_sync_event", (a, "k2", '{"n":2}', None, 5)),  # sequence_conflict
                 sm.CallReducer(3, "append_sync_event", (a, "k1", '{"n":1}', None, None)),  # a duplicate: seq 1
                 sm.CallReducer(4, "append_sync_event", (a, "k2", '{"n":2}', None, 2)),
                 sm.CallReducer(5, "ack_checkpoint", ("c1", a, e0, 2))]  # no return value
        token = self.tokens.token(f"{ns}-writer", claims_to_json(folk["writer"]))
        c = Conn(self.opts, token, False, "c")
        got: list[list[dict[str, Any]]] = []
        answers: list[tuple[int, dict[str, str], bytes]] = []
        query = f"SELECT * FROM sync_event WHERE stream_id = '{a}'"
        try:
            c.send(wire.Subscribe(1, 10, (query,)))
            got.append([d.message_json(wire.server_from_wire(m)) for m in c.until_barrier("after subscribing")])
            for call in calls:
                args = json.dumps(args_to_json(call.reducer, call.args)).encode()
                answers.append(self._http("POST", f"call/{call.reducer}", token, args, "application/json"))
                got.append([d.message_json(wire.server_from_wire(m))
                            for m in c.until_barrier(f"after the HTTP call {call.request_id}")])
        finally:
            c.close()
        claims = {**claims_to_json(folk["writer"]), "identity": c.identity}
        steps: list[dict[str, Any]] = [
            {"op": "connect", "conn": "c", "person": "writer", "confirmed": False, "claims": claims},
            {"op": "connect", "conn": "h", "person": "writer", "confirmed": False, "claims": claims},
            {"op": "send", "conn": "c", "message": d.client_message_json(sm.Subscribe(1, 10, (query,)))},
            {"op": "receive", "conn": "c"}]
        for call in calls:
            steps += [{"op": "send", "conn": "h", "message": d.client_message_json(call)},
                      {"op": "receive", "conn": "h"}, {"op": "receive", "conn": "c"}]
        want = d.drive(d.model_target(d.KIT_POLICY, epoch_floor=e0, version_floor=v0), steps)
        diff = _first_divergence("the subscription's answer on connection c", got[0], want[0])
        if diff is not None:
            raise ScenarioFailed(diff)
        for i, call in enumerate(calls):
            (result,), updates = want[1 + 2 * i], want[2 + 2 * i]
            status, headers, body = answers[i]
            outcome = result["outcome"]
            text = body.decode("utf-8", "replace")
            what = f"the HTTP call {call.reducer}{json.dumps(args_to_json(call.reducer, call.args))}"
            if "err" in outcome:
                want_parts = _error_parts(outcome["err"]["error"])
                if status != 530 or _error_parts(text) != want_parts:
                    raise ScenarioFailed(f"{what} was answered HTTP {status} {text[:300]!r}; the model's answer is "
                                         f"530 {outcome['err']['error'][:300]!r}")
            else:
                ret = outcome["ok"]["ret"]
                header = headers.get("syncref-return-value")
                if status != 200 or (None if header is None else json.loads(header)) != ret:
                    raise ScenarioFailed(f"{what} was answered HTTP {status} {text[:200]!r} with syncref-return-value "
                                         f"{header!r}; the model's answer is 200 with "
                                         f"{'no return value' if ret is None else json.dumps(ret)}")
            diff = _first_divergence(f"after {what}, connection c (the caller's own, subscribed)", got[1 + i],
                                     updates)
            if diff is not None:
                raise ScenarioFailed(diff)

    def _raw_http(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, str, str]:
        """One HTTP request with exactly ``headers`` (urllib adds a ``Content-Type`` to every POST body):
        status, ``Content-Type``, body text.  ``path`` is from the root."""
        import http.client
        parts = urllib.parse.urlsplit(self.opts.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=self.opts.timeout)
        try:
            with contextlib.suppress(OSError):  # refused before the whole body was sent (a 413): its answer is
                conn.request(method, path, body=body or None, headers=headers)  # still there to read
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type") or "", resp.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            raise ScenarioFailed(f"{method} {path}: no answer ({type(exc).__name__}: {exc}) within "
                                 f"{self.opts.timeout:g} s") from None
        finally:
            conn.close()

    def http_refusals(self) -> None:
        """The refusals of protocol.md "Transport", "Upgrade", "HTTP call" and "HTTP SQL", each a request
        with one defect (or two, where the tables' check order decides which answers): its status, that the
        body is a ``text/plain`` one-liner (aiohttp's own 413 excepted), and the body the tables give -- its
        text, or for a ``<code>: <json>`` error its code and details.  The expectations are the tables'
        (:data:`REFUSALS`), not another implementation's."""
        ns = self._next_ns()
        tokens = {"none": None, "basic": "Basic Y29uZm9ybWFuY2U=", "garbage": "Bearer conformance.not.a.jwt"}
        for who, claims in (("writer", {"scopes": ["sync.append", "sync.subscribe"], "streams": [f"{ns}.*"]}),
                            ("noscope", {"scopes": [], "streams": [f"{ns}.*"]}),
                            ("partial_admin", {"scopes": ["sync.admin", "sync.subscribe"], "streams": [f"{ns}.*"]})):
            token = self.tokens.token(f"{ns}-{who}", claims)
            tokens[who] = None if token is None else f"Bearer {token}"
        compat = self.tokens.token(f"{ns}-compat", {"scopes": ["sync.append", "sync.subscribe"],
                                                    "streams": [f"{ns}.*"]}, protocol_version="oa.sync.v1")
        tokens["compat"] = None if compat is None else f"Bearer {compat}"
        db = f"/v1/database/{self.opts.database}"
        # the operator's page is the target's own (syncref's); a target that does not serve it is not judged on it
        ops = self._raw_http("GET", "/ops/app.js", {})[0] == 200
        most = self.opts.max_sql_bytes
        n = self.opts.max_sql_statements
        sized = {b"<max_sql_bytes>": b"SELECT * FROM sync_stream".ljust(most),
                 b"<max_sql_bytes + 1>": b"SELECT * FROM sync_stream".ljust(most + 1),
                 b"<max_sql_statements>": b";".join([b"SELECT * FROM sync_stream"] * n),
                 b"<max_sql_statements + 1>": b";".join([b"SELECT * FROM sync_stream"] * (n + 1))}
        counts = {"<max_sql_statements>": n, "<max_sql_statements + 1>": n + 1}
        for r in REFUSALS:
            if r.route == "compact" and self.opts.compact_cmd is None:
                continue  # a target without a compaction hook need not have the route
            if r.route == "ops" and not ops:
                continue
            path = (r.path.replace("{db}", db).replace("{ns}", ns))
            headers = dict(r.headers)
            if tokens[r.auth] is not None:
                headers["Authorization"] = str(tokens[r.auth])
            body = sized.get(r.body, r.body.replace(b"{ns}", ns.encode()))
            if r.body in (b"<max_sql_statements>", b"<max_sql_statements + 1>") and len(body) > most:
                continue  # that many statements do not fit in max_sql_bytes: the size answers first
            details = None if r.details is None else {k: counts.get(v, v) if isinstance(v, str) else v
                                                      for k, v in r.details.items()}
            want_text = None if r.text is None else r.text.replace("{max_sql_bytes}", str(most))
            status, ctype, text = self._raw_http(r.method, path, headers, body)
            problem = None
            if status != r.status:
                problem = f"the tables' answer is {r.status}"
            elif r.json:
                try:
                    code = json.loads(text).get("code") if ctype.split(";")[0] == "application/json" else None
                except (ValueError, AttributeError):
                    code = None
                if code != r.code:
                    problem = (f"its Content-Type is {ctype!r}; the tables' body is application/json with code "
                               f"{r.code!r} (protocol.md \"Compatibility\")")
            elif want_text is not None and not ctype.startswith("text/plain"):
                problem = f"its Content-Type is {ctype!r}; error bodies are text/plain one-liners"
            elif r.code is not None:
                parts = _error_parts(text)
                if parts is None or parts[0] != r.code or (details is not None and parts[1] != details):
                    problem = (f"the tables' body is {r.code}: "
                               f"{json.dumps(details, sort_keys=True) if details is not None else '<details>'}")
            elif want_text is not None and not text.startswith(want_text):
                problem = f"the tables' body starts {want_text!r}"
            if problem is not None:
                raise ScenarioFailed(f"{r.what}: the target answered HTTP {status} {text[:200]!r}; {problem} "
                                     f"(protocol.md \"{r.section}\")")

    def http_body_timeout(self) -> None:
        """A call and a ``/sql`` whose body stops short of its ``Content-Length`` (protocol.md "HTTP call" 7,
        "HTTP SQL", "Limits" ``body_timeout_s``): each is answered 408 ``the request body did not arrive
        within <n> s``, and not before ``--body-timeout`` has passed since its head was sent (both are sent
        at once, so the scenario costs one timeout)."""
        import concurrent.futures
        assert self.opts.body_timeout_s is not None
        limit = self.opts.body_timeout_s
        ns = self._next_ns()
        token = self.tokens.token(f"{ns}-writer", {"scopes": ["sync.append", "sync.subscribe"],
                                                  "streams": [f"{ns}.*"]})
        db = f"/v1/database/{self.opts.database}"
        short = (("a call", f"{db}/call/append_sync_event", "application/json"),
                 ("/sql", f"{db}/sql", "text/plain"))
        with concurrent.futures.ThreadPoolExecutor(len(short)) as pool:
            answers = list(pool.map(lambda r: self._stopped_short(r[1], r[2], token, limit), short))
        for (what, _path, _ctype), (status, ctype, text, took) in zip(short, answers, strict=True):
            want = f"the request body did not arrive within {limit:g} s"
            if status != 408 or not ctype.startswith("text/plain") or not text.startswith(want):
                raise ScenarioFailed(f"{what} whose body stops short: the target answered HTTP {status} {ctype!r} "
                                     f"{text[:200]!r}; the tables' answer is 408 {want!r} (protocol.md \"Limits\" "
                                     "body_timeout_s)")
            if took < limit:
                raise ScenarioFailed(f"{what} whose body stops short was answered 408 after {took:.2f} s, before "
                                     f"body_timeout_s ({limit:g} s) had passed (protocol.md \"Limits\")")

    def _stopped_short(self, path: str, ctype: str, token: str | None, limit: float) -> tuple[int, str, str, float]:
        """POST ``path`` declaring a 64-byte body and sending 8 of them: status, Content-Type, body text, and the
        seconds from before the connection was opened to the answer (an interval that holds the target's own
        wait for the body, whenever it starts timing it)."""
        import http.client
        parts = urllib.parse.urlsplit(self.opts.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=limit + self.opts.timeout)
        sent = time.monotonic()
        try:
            conn.putrequest("POST", path)
            for name, value in (("Content-Type", ctype), ("Content-Length", "64"),
                                ("Authorization", f"Bearer {token}")):
                conn.putheader(name, value)
            conn.endheaders(b"[" if ctype == "application/json" else b"SELECT *")
            resp = conn.getresponse()
            took = time.monotonic() - sent
            return resp.status, resp.getheader("Content-Type") or "", resp.read().decode("utf-8", "replace"), took
        except (OSError, http.client.HTTPException) as exc:
            raise ScenarioFailed(f"POST {path} with a body that stops short: no answer ({type(exc).__name__}: {exc}) "
                                 f"within body_timeout_s + {self.opts.timeout:g} s") from None
        finally:
            conn.close()

    def http_identity_limit(self) -> None:
        """One identity opens ``--max-connections-per-identity`` WebSocket connections, every one admitted; the
        next upgrade is 429 ``too many connections for this identity (<n> open; limit <n>): close one first``
        (protocol.md "Upgrade" 8, "Limits")."""
        limit = self.opts.max_connections_per_identity
        assert limit is not None
        ns = self._next_ns()
        token = self.tokens.token(f"{ns}-crowd", {"scopes": ["sync.subscribe"], "streams": [f"{ns}.*"]})
        conns: list[Conn] = []
        try:
            for i in range(limit):  # each admitted: a bound enforced one early fails here
                conns.append(Conn(self.opts, token, False, f"crowd{i + 1}"))
            status, ctype, text = self._raw_http("GET", f"/v1/database/{self.opts.database}/subscribe?"
                                                 "compression=None&confirmed=false",
                                                 {**dict(_UPGRADE + _V2), "Authorization": f"Bearer {token}"})
        finally:
            for c in conns:
                c.close()
        want = f"too many connections for this identity ({limit} open; limit {limit}): close one first"
        if status != 429 or not ctype.startswith("text/plain") or text != want:
            raise ScenarioFailed(f"with {limit} WebSocket connections of one identity open, its next upgrade was "
                                 f"answered HTTP {status} {text[:200]!r}; the tables' answer is 429 {want!r} "
                                 "(protocol.md \"Upgrade\" 8, max_connections_per_identity)")

    def http_durable(self) -> None:
        """HTTP answers wait for durability (protocol.md "HTTP call", "HTTP SQL", "Confirmed reads"): while the
        log stalls, a call whose transaction an unconfirmed subscriber has already been sent (so it
        committed), and a ``/sql`` read (``confirmed`` by default) of that state, are not answered while the
        log stalls -- neither within ``--quiet`` nor until the stall ends, at least ``4 x --quiet`` after it began
        (the HTTP side has no fence: an HTTP answer is the request's own, so nothing comes earlier on its
        connection to prove the request was taken; the long hold is the closing fence's counterpart, which
        judges the whole stall) -- and once the stall ends both are, 200."""
        import concurrent.futures
        assert self.opts.stall_file is not None
        ns = self._next_ns()
        folk = d.people(ns)
        a = f"{ns}.a"
        token = self.tokens.token(f"{ns}-writer", claims_to_json(folk["writer"]))
        u = Conn(self.opts, self.tokens.token(f"{ns}-watcher", claims_to_json(folk["watcher"])), False, "u")
        pool = concurrent.futures.ThreadPoolExecutor(2)
        stall = self.opts.stall_file
        try:
            u.send(wire.Subscribe(1, 10, (f"SELECT * FROM sync_event WHERE stream_id = '{a}'",)))
            u.until_barrier("after subscribing")
            status, _, body = self._http("POST", "call/append_sync_event", token,
                                         json.dumps([a, "k0", '{"n":0}', None, None]).encode(), "application/json")
            if status != 200:
                raise ScenarioFailed(f"a first HTTP append was answered {status} {body[:300]!r}")
            if _seqs(u.until_barrier("after the first HTTP append"), "u") != [1]:  # its update taken: the next is k1's
                raise ScenarioFailed("an unconfirmed subscriber was not sent the first HTTP append's update (seq 1)")
            stall.touch()
            call = pool.submit(self._http, "POST", "call/append_sync_event", token,
                               json.dumps([a, "k1", '{"n":1}', None, None]).encode(), "application/json")
            update = u.recv("the update of the HTTP call made while the log stalls (an unconfirmed subscriber is "
                            "sent it once it commits)")
            if _seqs([update], "u") != [2]:
                shown = _show([d.message_json(wire.server_from_wire(update))])
                raise ScenarioFailed("an unconfirmed subscriber was not sent the update of the HTTP append made "
                                     f"while the log stalls (seq 2): {shown}")
            read = pool.submit(self._sql, token, f"SELECT * FROM sync_event WHERE stream_id = '{a}'")
            futures: list[concurrent.futures.Future[Any]] = [call, read]
            stalled = time.monotonic()
            done, _ = concurrent.futures.wait(futures, timeout=self.opts.quiet_s)
            if not done:  # hold the stall 4 x --quiet in all (as the wire scenarios' last stall) before releasing
                done, _ = concurrent.futures.wait(futures, timeout=max(0.0, stalled + 4 * self.opts.quiet_s
                                                                        - time.monotonic()))
            held = time.monotonic() - stalled
            early = [name for f, name in ((call, "the call (200 only once its offset is durable)"),
                                          (read, "the /sql read (confirmed: once the offset it read is durable)"))
                     if f in done]
            stall.unlink()
            answers = call.result(), read.result()
        finally:
            stall.unlink(missing_ok=True)
            pool.shutdown(wait=False)
            u.close()
        if early:
            raise ScenarioFailed(f"while the log stalled, the target answered {' and '.join(early)} within "
                                 f"{held:.1f} s of its transaction's commit (CONF-1): "
                                 f"the call HTTP {answers[0][0]}, the read HTTP {answers[1][0]}")
        if answers[0][0] != 200 or answers[1][0] != 200 or len(answers[1][1]) != 2:
            raise ScenarioFailed(f"once the stall ended the call was answered HTTP {answers[0][0]} and the read "
                                 f"HTTP {answers[1][0]} {str(answers[1][1])[:300]}; the model: 200, and both events")

    def _upgrade_status(self, subject: str, build: str | None, protocol: str | None,
                        schema: int | None) -> tuple[int, dict[str, Any]]:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect
        token = self.tokens.auth.mint(subject=subject, scopes=frozenset({"sync.subscribe"}), streams=(), ttl_s=600,
                                      client_build_id=build, protocol_version=protocol, schema_version=schema)
        base = self.opts.url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            ws = connect(f"{base}/v1/database/{self.opts.database}/subscribe?compression=None",
                         subprotocols=["v2.bsatn.spacetimedb"],  # type: ignore[list-item]
                         additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=self.opts.timeout,
                         logger=_WS_LOG)
        except InvalidStatus as exc:
            raw = exc.response.body or b""
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"text": raw.decode("utf-8", "replace")[:200]}
            return exc.response.status_code, body if isinstance(body, dict) else {"body": body}
        ws.close()
        return 101, {}

    def replay_parity_across_restart(self) -> None:
        """Events read back after a restart equal those before it; a resume from W yields exactly the
        events after W; a retried append is still deduplicated; the next append is head + 1."""
        ns = f"cf{self.run_id}rp"
        claims = {"scopes": ["sync.subscribe", "sync.append"], "streams": [f"{ns}.*"]}
        token = self.tokens.token(f"{ns}-writer", claims)
        stream = f"{ns}.r"
        query = f"SELECT * FROM sync_event WHERE stream_id = '{stream}'"

        def appended(c: Conn, key: str, n: int) -> int | None:
            c.send(wire.CallReducer(n, 0, "append_sync_event",
                                    bsatn.encode_args("append_sync_event", (stream, key, f'{{"n":{n}}}', None, None))))
            for m in c.until_barrier(f"after appending {key}"):
                if isinstance(m, wire.ReducerResult) and m.request_id == n:
                    res = wire.server_from_wire(m)
                    assert isinstance(res, sm.ReducerResult)
                    if not isinstance(res.outcome, sm.ReducerOk):
                        raise ScenarioFailed(f"append {key} failed: {res.outcome.error}")
                    return res.outcome.ret
            raise ScenarioFailed(f"no ReducerResult for append {key}")

        def snapshot(c: Conn, qs: int, q: str) -> list[dict[str, Any]]:
            c.send(wire.Subscribe(qs, qs, (q,)))
            msgs = [d.message_json(wire.server_from_wire(m)) for m in c.until_barrier(f"after subscribing {q}")]
            if [m["$type"] for m in msgs] != ["SubscribeApplied"]:
                raise ScenarioFailed(f"subscribing {q!r} was answered {_show(msgs)}")
            rows: list[dict[str, Any]] = msgs[0]["rows"][0]["inserts"] if msgs[0]["rows"] else []
            return rows

        c = Conn(self.opts, token, True, "before")
        try:
            seqs = [appended(c, f"k{i}", i) for i in range(1, 6)]
            if seqs != [1, 2, 3, 4, 5]:
                raise ScenarioFailed(f"appends to a new stream returned seqs {seqs}, not 1..5")
            before = snapshot(c, 1, query)
        finally:
            c.close()
        def restarted(name: str) -> Conn:
            return self._restarted(token, name)

        def stale_details(c: Conn, qs: int, epoch: int, row: dict[str, Any]) -> None:
            """A resume in an epoch the restart left is stale_cursor (epoch_changed) and its details carry
            the stream row's continuation chain, so the client can continue instead of rebootstrapping."""
            q = f"{query} AND epoch = {epoch} AND seq > 3"
            c.send(wire.Subscribe(qs, qs, (q,)))
            msgs = [d.message_json(wire.server_from_wire(m)) for m in c.until_barrier(f"after subscribing {q}")]
            error = msgs[0].get("error", "") if len(msgs) == 1 else ""
            if not (msgs[0]["$type"] == "SubscriptionError" and error.startswith("stale_cursor: ")):
                raise ScenarioFailed(f"a resume in epoch {epoch}, which the restart left, was answered {_show(msgs)}; "
                                     "the model answers one SubscriptionError stale_cursor (epoch_changed)")
            details = json.loads(error[len("stale_cursor: "):])
            want = {k: row.get(k) for k in ("continues_epoch", "continues_seq", "earlier_epochs", "earlier_seqs")}
            got = {k: details.get(k) for k in want}
            if details.get("reasons") != ["epoch_changed"] or got != want:
                raise ScenarioFailed(f"a resume in epoch {epoch}, which the restart left: the target sent a "
                                     f"stale_cursor with reasons {details.get('reasons')} and continuation {got}; "
                                     "the model sends "
                                     f"['epoch_changed'] and the stream row's {want}")

        c = restarted("after")
        try:
            after = snapshot(c, 1, query)
            stream_rows = snapshot(c, 3, f"SELECT * FROM sync_stream WHERE stream_id = '{stream}'")
            same = [{k: r[k] for k in ("seq", "idempotency_key", "payload", "payload_hash")} for r in after]
            if same != [{k: r[k] for k in ("seq", "idempotency_key", "payload", "payload_hash")} for r in before]:
                raise ScenarioFailed(f"after the restart the stream reads {_show(after)}; before it {_show(before)}")
            old_epoch, new_epoch = before[0]["epoch"], after[0]["epoch"]
            row = stream_rows[0] if stream_rows else {}
            if new_epoch != old_epoch and not (row.get("continues_epoch") == old_epoch
                                               and row.get("continues_seq", 0) >= 5):
                raise ScenarioFailed(f"the restart moved the stream from epoch {old_epoch} to {new_epoch} without "
                                     f"continuing it past seq 5: {_show([row])}")
            if new_epoch != old_epoch:
                stale_details(c, 4, old_epoch, row)
            resumed = snapshot(c, 2, f"{query} AND epoch = {new_epoch} AND seq > 3")
            if resumed != [r for r in after if r["seq"] > 3]:
                raise ScenarioFailed(f"a resume from W=3 after the restart read {_show(resumed)}")
            if appended(c, "k2", 2) != 2:
                raise ScenarioFailed("a retried append after the restart was not deduplicated to seq 2")
            if appended(c, "k6", 6) != 6:
                raise ScenarioFailed("the first new append after the restart is not seq 6")
        finally:
            c.close()
        # a second unclean restart: a reader two epochs behind can still continue (ADR-0010's chain)
        c = restarted("again")
        try:
            rows = snapshot(c, 3, f"SELECT * FROM sync_stream WHERE stream_id = '{stream}'")
            row2 = rows[0] if rows else {}
            if old_epoch != new_epoch != row2.get("epoch") and (
                    row2.get("continues_epoch") != new_epoch or (row2.get("earlier_epochs") or [None])[0] != old_epoch
                    or (row2.get("earlier_seqs") or [None])[0] != 5):
                raise ScenarioFailed(f"two restarts moved the stream through epochs {old_epoch}, {new_epoch}, "
                                     f"{row2.get('epoch')} but its row does not chain back to epoch {old_epoch} at "
                                     f"seq 5 (continues_epoch {new_epoch}, earlier_epochs starting {old_epoch}, "
                                     f"earlier_seqs with 5): the target sent {_show([row2])}")
            if row2.get("epoch") != new_epoch:
                stale_details(c, 5, old_epoch, row2)
        finally:
            c.close()

    def recovery_moves_past_the_window(self) -> None:
        """An unclean restart moves a stream to an epoch, and every live versioned row (here a provider
        capability) to a version, past everything the target's undurable window (N transactions, each
        raising the largest epoch or version by at most one) can have handed out: at least old + N + 1
        (DUR-2, VER-1), the row's content kept.  A clean restart (the epoch kept) has nothing to judge."""
        n = self.opts.max_undurable
        assert n is not None
        ns = f"cf{self.run_id}rb"
        token = self.tokens.token(f"{ns}-owner", {"scopes": ["sync.subscribe", "sync.append", "provider.publish",
                                                             "compute.request"], "streams": [f"{ns}.*"]})
        stream, provider = f"{ns}.r", f"{ns}p"
        rows_q = (f"SELECT * FROM sync_stream WHERE stream_id = '{stream}'",
                  f"SELECT * FROM provider_capability WHERE provider_id = '{provider}'")

        def rows(c: Conn, qs: int) -> tuple[dict[str, Any], dict[str, Any]]:
            c.send(wire.Subscribe(qs, qs, rows_q))
            msgs = [d.message_json(wire.server_from_wire(m)) for m in c.until_barrier("after subscribing")]
            if [m["$type"] for m in msgs] != ["SubscribeApplied"]:
                raise ScenarioFailed(f"subscribing {rows_q} was answered {_show(msgs)}")
            by_table = {t["table"]: t["inserts"] for t in msgs[0]["rows"]}
            got = by_table.get("sync_stream", []), by_table.get("provider_capability", [])
            if [len(x) for x in got] != [1, 1]:
                raise ScenarioFailed(f"the stream and provider rows read {_show(msgs)}")
            return got[0][0], got[1][0]

        c = Conn(self.opts, token, True, "before")
        try:
            for rid, reducer, args in ((1, "append_sync_event", (stream, "k1", '{"n":1}', None, None)),
                                       (2, "publish_provider_capability", (provider, "{}", (5050,), 10, "active"))):
                c.send(wire.CallReducer(rid, 0, reducer, bsatn.encode_args(reducer, args)))
                answers = [wire.server_from_wire(m) for m in c.until_barrier(f"after calling {reducer}")]
                if not any(isinstance(a, sm.ReducerResult) and isinstance(a.outcome, sm.ReducerOk) for a in answers):
                    raise ScenarioFailed(f"{reducer} did not succeed: {_show([d.message_json(a) for a in answers])}")
            stream_before, cap_before = rows(c, 1)
        finally:
            c.close()
        c = self._restarted(token, "after")
        try:
            stream_after, cap_after = rows(c, 1)
            # rows created after the recovery start at its floors, which must be past the window too: a new
            # stream in an epoch, a new assignment at a version, that a lost transaction may have handed out
            # would alias it (the floors probe takes the target's floors as given, so only this shows them)
            fresh_stream, job = f"{ns}.new", f"{ns}q"
            creating: tuple[tuple[int, str, tuple[Any, ...]], ...] = (
                (3, "append_sync_event", (fresh_stream, "k1", '{"n":1}', None, None)),
                (4, "open_compute_assignment", (job, 5050, "{}")))
            for rid, reducer, fields in creating:
                c.send(wire.CallReducer(rid, 0, reducer, bsatn.encode_args(reducer, fields)))
            c.send(wire.Subscribe(2, 2, (f"SELECT * FROM sync_stream WHERE stream_id = '{fresh_stream}'",
                                         f"SELECT * FROM compute_assignment WHERE request_id = '{job}'")))
            msgs = [d.message_json(wire.server_from_wire(m)) for m in c.until_barrier("after creating rows")]
        finally:
            c.close()
        applied = [m for m in msgs if m["$type"] == "SubscribeApplied"]
        created = {t["table"]: t["inserts"] for t in applied[0]["rows"]} if applied else {}
        if [len(created.get(t, [])) for t in ("sync_stream", "compute_assignment")] != [1, 1]:
            raise ScenarioFailed(f"a new stream and assignment after the restart were answered {_show(msgs)}")
        new_stream_row, job_row = created["sync_stream"][0], created["compute_assignment"][0]
        old, new = stream_before["epoch"], stream_after["epoch"]
        if new == old and self.opts.restart_unclean:
            raise ScenarioFailed(f"after an unclean restart (--restart-unclean) the target sent the stream row in "
                                 f"the epoch it had before, {old}: {_show([stream_after])}; with the undurable "
                                 f"window {n} the model moves it to at least {old + n + 1} (DUR-2)")
        if new == old:
            raise Skipped("the restart was clean (the stream kept its epoch): no recovery to judge (give "
                          "--restart-unclean if --restart-cmd kills the target)")
        if new < old + n + 1:
            raise ScenarioFailed(f"after an unclean restart the target sent the stream row in epoch {new} (before "
                                 f"it: {old}): {_show([stream_after])}; with the undurable window {n} the model "
                                 f"moves it to at least {old + n + 1} (DUR-2)")
        if new_stream_row["epoch"] < old + n + 1:
            raise ScenarioFailed(f"after an unclean restart the target sent a stream created after it in epoch "
                                 f"{new_stream_row['epoch']}: {_show([new_stream_row])}; with the undurable window "
                                 f"{n} the model's epoch floor is at least {old + n + 1} (DUR-2: a lost "
                                 "transaction may have handed out every epoch below)")
        v0, v1 = cap_before["version"], cap_after["version"]
        if job_row["version"] < v0 + n + 1:
            raise ScenarioFailed(f"after an unclean restart the target sent an assignment opened after it at version "
                                 f"{job_row['version']}: {_show([job_row])}; with the undurable window {n} the "
                                 f"model's version floor is at least {v0 + n + 1} (VER-1)")
        if v1 < v0 + n + 1 or {**cap_after, "version": v0, "updated_at": None} != {**cap_before, "version": v0,
                                                                                     "updated_at": None}:
            raise ScenarioFailed(f"after an unclean restart the target sent the provider row {_show([cap_after])} "
                                 f"(before it: {_show([cap_before])}); with the undurable window {n} the model "
                                 f"keeps its content and raises its version to at least {v0 + n + 1} (VER-1)")

    def _restarted(self, token: str | None, name: str) -> Conn:
        """Run ``--restart-cmd`` and connect again once the target answers (60 s at most)."""
        assert self.opts.restart_cmd is not None
        proc = subprocess.run(self.opts.restart_cmd, shell=True, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ScenarioFailed(f"--restart-cmd exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        deadline = time.monotonic() + 60
        while True:
            try:
                return Conn(self.opts, token, True, name)
            except ScenarioFailed as exc:
                if time.monotonic() > deadline:
                    raise ScenarioFailed(f"the target did not come back within 60 s of --restart-cmd: "
                                         f"{exc}") from None
                time.sleep(0.2)

    # --- running ---

    def run(self, tick: Tick | None = None) -> list[Outcome]:
        out = []
        chosen = [s for s in SCENARIOS if self.opts.only is None or s.area == self.opts.only]
        for i, s in enumerate(chosen):
            if tick is not None:
                tick(i, len(chosen), f"{s.area}: {s.name}")
            missing = [h for h in s.needs if not self._has(h)]
            start = time.monotonic()
            moves_floors = bool({"restart", "compact"} & set(s.needs))
            if moves_floors:
                self.floors = None
            if missing:
                out.append(Outcome(s.area, s.name, s.invariants, "skip",
                                   "needs " + "; ".join(_HOOKS[h] for h in missing)))
                continue
            try:
                if s.steps is not None:
                    self.play(s.steps)
                else:
                    getattr(self, s.name)()
            except Skipped as exc:
                out.append(Outcome(s.area, s.name, s.invariants, "skip", str(exc)))
            except ScenarioFailed as exc:
                out.append(Outcome(s.area, s.name, s.invariants, "fail", str(exc), time.monotonic() - start))
            except Exception as exc:  # a runner bug or an odd answer: one line
                out.append(Outcome(s.area, s.name, s.invariants, "fail",
                                   f"unexpected {type(exc).__name__}: {exc}"[:900], time.monotonic() - start))
            else:
                out.append(Outcome(s.area, s.name, s.invariants, "pass", "", time.monotonic() - start))
            if moves_floors:
                self.floors = None
        return out

    def _has(self, hook: str) -> bool:
        return {"mint": self.tokens.can_mint, "stall": self.opts.stall_file is not None,
                "restart": self.opts.restart_cmd is not None, "compact": self.opts.compact_cmd is not None,
                "undurable": self.opts.max_undurable is not None,
                "outbound": self.opts.max_outbound_queue is not None,
                "body_timeout": self.opts.body_timeout_s is not None,
                "identity_limit": self.opts.max_connections_per_identity is not None}[hook]


def _to_wire(doc: dict[str, Any]) -> wire.ClientMessage:
    msg = d.client_message_from_json(doc)
    if isinstance(msg, sm.CallReducer):
        return wire.CallReducer(msg.request_id, 0, msg.reducer, bsatn.encode_args(msg.reducer, msg.args))
    if isinstance(msg, sm.Subscribe):
        return wire.Subscribe(msg.request_id, msg.query_set_id, msg.queries)
    assert isinstance(msg, sm.Unsubscribe)
    return wire.Unsubscribe(msg.request_id, msg.query_set_id, msg.send_dropped)


def preflight(opts: Options) -> str | None:
    """None if something that looks like a SpacetimeDB host answers at the URL, else why not."""
    url = opts.url.rstrip("/") + "/v1/ping"
    try:
        with urllib.request.urlopen(url, timeout=opts.timeout) as resp:
            resp.read(1024)
    except urllib.error.HTTPError as exc:
        return (f"{url} answered HTTP {exc.code}: not a SpacetimeDB host (it serves GET /v1/ping)")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"nothing usable at {opts.url}: {reason}"
    return None


# --- reports ---------------------------------------------------------------------------------------------------

def table(outcomes: list[Outcome]) -> str:
    lines = []
    for area in dict.fromkeys(o.area for o in outcomes):
        lines.append(f"== {area}")
        for o in (x for x in outcomes if x.area == area):
            lines.append(f"  {o.status.upper():<5} {o.scenario:<34} {' '.join(o.invariants)}")
            if o.message:
                lines.append(f"        {o.message}")
    n = {k: sum(o.status == k for o in outcomes) for k in ("pass", "fail", "skip")}
    lines.append(f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped"
                 + ("" if n["pass"] or n["fail"] else ": nothing ran (exit 1)"))
    return "\n".join(lines)


def junit(outcomes: list[Outcome]) -> str:
    cases = []
    for o in outcomes:
        inner = ""
        if o.status == "fail":
            inner = f"<failure message={quoteattr(o.message[:300])}>{escape(o.message)}</failure>"
        elif o.status == "skip":
            inner = f"<skipped message={quoteattr(o.message)}/>"
        cases.append(f'  <testcase classname={quoteattr("conformance." + o.area)} name={quoteattr(o.scenario)} '
                     f'time="{o.seconds:.3f}">{inner}</testcase>')
    n_fail = sum(o.status == "fail" for o in outcomes)
    n_skip = sum(o.status == "skip" for o in outcomes)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="syncref-conformance" tests="{len(outcomes)}" '
            f'failures="{n_fail}" skipped="{n_skip}">\n' + "\n".join(cases) + "\n</testsuite>\n")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conformance", help="run the conformance scenarios against a server over v2 BSATN "
                                           "(docs/conformance.md)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="the server, e.g. http://127.0.0.1:3000")
    target.add_argument("--local", action="store_true", help="start a throwaway syncref serve with every hook "
                        "(minting, a stallable log, a SIGKILL restart, compaction on demand) and run against it")
    p.add_argument("--database", default="autopilot-sync")
    p.add_argument("--token", help="one bearer token (only the handshake runs without --mint-with)")
    p.add_argument("--mint-with", type=Path, metavar="DIR", help="the target's data directory: mint tokens "
                   "with its signing key")
    p.add_argument("--only", choices=AREAS, help="run one area")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write the results as JUnit XML")
    p.add_argument("--restart-cmd", metavar="CMD", help="a shell command that restarts the target")
    p.add_argument("--stall-file", type=Path, metavar="PATH",
                   help="a path whose existence stalls the target's commit log ([faults] stall_commits_while)")
    p.add_argument("--compact-cmd", metavar="CMD", help="a shell command that makes the target run its retention "
                   "(compaction) now; the target serves the kit's retention class (docs/conformance.md)")
    p.add_argument("--restart-unclean", action="store_true", help="--restart-cmd kills the target without a "
                   "clean shutdown (SIGKILL): a stream that kept its epoch then fails DUR-2 instead of skipping")
    p.add_argument("--max-outbound-queue", type=int, metavar="N", help="the target's bound on messages queued for "
                   "one connection (syncref serve: [limits] max_outbound_queue): the slow-consumer scenario")
    p.add_argument("--max-undurable", type=int, metavar="N", help="the target's undurable window (syncref serve: "
                   "[limits] max_undurable): how far an unclean restart must move epochs and versions")
    p.add_argument("--max-sql-bytes", type=int, default=64 * 1024, metavar="N", help="the target's bound on /sql "
                   "text (syncref serve: [limits] max_sql_bytes; default 65536, protocol.md's)")
    p.add_argument("--max-sql-statements", type=int, default=64, metavar="N", help="the target's bound "
                   "on statements in one /sql body (syncref serve: [limits] max_sql_statements; default 64)")
    p.add_argument("--body-timeout", type=_positive_seconds, metavar="S", help="the target's time for a call or "
                   "/sql body to arrive (syncref serve: [limits] body_timeout_s): the 408 scenario waits this long")
    p.add_argument("--max-connections-per-identity", type=int, metavar="N", help="the target's bound on one "
                   "identity's open WebSocket connections (syncref serve: [limits] max_connections_per_identity): "
                   "the 429 scenario opens N")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for any one answer")
    p.add_argument("--quiet", type=_positive_seconds, default=0.5, metavar="S",
                   help="seconds a connection that must hear nothing (a confirmed read while the log stalls) is "
                        "listened to after its fence is answered (default 0.5; docs/conformance.md)")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 600], got {text!r}")
    return value



def run_options(opts: Options, tick: Tick | None = None) -> list[Outcome]:
    """Every selected scenario against ``opts.url``: one outcome each (all failed, naming why, when
    nothing usable answers there).  ``tick(i, n, label)`` is called before each scenario."""
    problem = preflight(opts)
    if problem is not None:
        return [Outcome(s.area, s.name, s.invariants, "fail", problem) for s in SCENARIOS
                if opts.only is None or s.area == opts.only]
    return Runner(opts).run(tick)


def run_local(only: str | None = None, timeout: float = 10.0, tick: Tick | None = None,
              quiet_s: float = 0.5) -> list[Outcome]:
    """Every selected scenario against a throwaway ``syncref serve`` with every hook (``--local``)."""
    from adapters.conformance.local import local_target

    with tempfile.TemporaryDirectory(prefix="syncref-conformance-") as tmp, local_target(Path(tmp)) as t:
        opts = Options(t.url, "autopilot-sync", None, t.data, only, t.restart_cmd, t.stall_file, timeout,
                       compact_cmd=t.compact_cmd, max_undurable=t.max_undurable, restart_unclean=True,  # SIGKILL
                       quiet_s=quiet_s, max_outbound_queue=t.max_outbound_queue, max_sql_bytes=t.max_sql_bytes,
                       max_sql_statements=t.max_sql_statements, body_timeout_s=t.body_timeout_s,
                       max_connections_per_identity=t.max_connections_per_identity)
        return run_options(opts, tick)


def _steps(progress: Progress) -> Tick:
    return lambda _i, _n, label: progress.step(label)


def _operator_mistake(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags, found before any scenario runs (None: nothing)."""
    for flag, n in (("--max-sql-bytes", args.max_sql_bytes), ("--max-sql-statements", args.max_sql_statements),
                    ("--max-connections-per-identity", args.max_connections_per_identity)):
        if n is not None and n < 1:
            return f"{flag} must be a positive number, got {n}"
    if not args.local:
        url = urllib.parse.urlsplit(args.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"--url must be http://HOST:PORT or https://HOST:PORT, got {args.url[:100]!r}"
    for flag, path in (("--json", args.json), ("--junit", args.junit)):
        if path is not None and not path.parent.is_dir():
            return f"{flag}: no directory {path.parent} to write {path.name} in"
    if args.mint_with is not None:
        from adapters.auth import KEY_FILE_NAME, KeyStore
        key = args.mint_with / KEY_FILE_NAME
        if not key.is_file():
            return f"--mint-with {args.mint_with}: no {KEY_FILE_NAME} there (give the target's data directory)"
        try:
            KeyStore.from_pem(key.read_bytes(), source=str(key))
        except (ValueError, OSError) as exc:
            return f"--mint-with: {exc} (the kit signs with an unencrypted P-256 PEM private key)"
    return None


def main(args: argparse.Namespace) -> int:
    selected = sum(args.only is None or s.area == args.only for s in SCENARIOS)
    if args.local and (args.token or args.mint_with or args.restart_cmd or args.stall_file or args.compact_cmd
                       or args.max_undurable is not None or args.restart_unclean
                       or args.max_outbound_queue is not None or args.max_sql_bytes != 64 * 1024
                       or args.max_sql_statements != 64
                       or args.body_timeout is not None or args.max_connections_per_identity is not None):
        print("syncref conformance: --local brings its own hooks; drop --token/--mint-with/--restart-cmd/"
              "--restart-unclean/--stall-file/--compact-cmd/--max-undurable/--max-outbound-queue/--max-sql-bytes/"
              "--max-sql-statements/"
              "--body-timeout/--max-connections-per-identity", file=sys.stderr)
        return 2
    mistake = _operator_mistake(args)
    if mistake is not None:
        print(f"syncref conformance: {mistake}", file=sys.stderr)
        return 2
    progress = Progress(selected)
    try:
        if args.local:
            outcomes = run_local(args.only, args.timeout, _steps(progress), args.quiet)
        else:
            opts = Options(args.url, args.database, args.token, args.mint_with, args.only, args.restart_cmd,
                           args.stall_file, args.timeout, compact_cmd=args.compact_cmd,
                           max_undurable=args.max_undurable, restart_unclean=args.restart_unclean,
                           quiet_s=args.quiet, max_outbound_queue=args.max_outbound_queue,
                           max_sql_bytes=args.max_sql_bytes, max_sql_statements=args.max_sql_statements,
                           body_timeout_s=args.body_timeout,
                           max_connections_per_identity=args.max_connections_per_identity)
            outcomes = run_options(opts, _steps(progress))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        progress.finish()
        print(f"syncref conformance: {exc}", file=sys.stderr)
        return 2
    progress.finish()
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=2) + "\n")
    if args.junit:
        args.junit.write_text(junit(outcomes))
    # nothing ran -- every scenario skipped for a missing hook -- is no pass either (a CI job whose
    # --mint-with went missing must not stay green)
    return 1 if any(o.status == "fail" for o in outcomes) or all(o.status == "skip" for o in outcomes) else 0

