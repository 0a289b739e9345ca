"""How long one request holds the server's event loop, per kind of request, at the documented limits.

Method: the real server (:class:`adapters.server.SyncServer`, default ``Limits``, contracts off as
in ``syncref serve``) runs in-process on its own asyncio loop thread, as ``tests/support/server.py``
runs it.  A probe on that loop re-arms ``call_later(0.001)`` and records how late each wakeup is:
a wakeup is late by (about) the longest callback that ran in between, so the probe's worst lateness
while one request is in flight is the longest time that request held the loop for everyone.  Each
request is sent alone from a client thread, answered (a large answer is taken as a raw frame, not decoded, so the
client does not compete with the loop for the interpreter lock), then the probe is read (the idle lateness is
reported as the first row: the probe's own noise).  Each row also says what the cyclic GC did
meanwhile (``gc.callbacks``: collections, full ones, their total and longest pause; "-" for
none): the server and its client share this process and its interpreter lock, so a collection
on either thread stops the loop, and a hold no longer than the row's longest collection may be
the GC's, not the request's.  ``--gc-freeze survivors|start`` applies ``syncref serve``'s GC
freeze policy after start (ADR-0036; the default ``none`` freezes nothing, as the runs before it:
the whole process, client included, is walked by each full collection).  The data: one stream of ``BIG`` events of ~250
KiB payload each (a ~30 MiB snapshot) and one of ``MANY`` small events (for row bounds).

Nothing asserts: these are measurements (docs/performance.md "Loop holds per request at the
limits").  Run: ``PYTHONPATH=tests .venv/bin/python benchmarks/loop_holds.py [--only SUBSTR ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.server import ServerThread, WireClient, http  # type: ignore[import-not-found]  # noqa: E402  (tests/ is not a package mypy checks)

from adapters import bsatn, gcpolicy, wire  # noqa: E402
from adapters.server import Limits, ServerConfig  # noqa: E402
from spec.schema import SCOPES  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
BIG = 120  # events of ~250 KiB: a ~30 MiB snapshot, under max_outbound_message_bytes
MANY = 20_000  # small events


class Probe:
    """Worst lateness of a 1 ms ``call_later`` chain on ``loop``, since the last :meth:`reset`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.worst = 0.0
        self.expected = 0.0
        loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        self.expected = self.loop.time() + 0.001
        self.loop.call_later(0.001, self._tick)

    def _tick(self) -> None:
        late = self.loop.time() - self.expected
        self.worst = max(self.worst, late)
        self._arm()

    def reset(self) -> None:
        time.sleep(0.05)  # let anything left over finish
        self.worst = 0.0

    def read(self) -> float:
        """The worst lateness, once the loop has run a callback again (a hold still going is not over)."""
        async def noop() -> None:
            return None
        asyncio.run_coroutine_threadsafe(noop(), self.loop).result(600)
        time.sleep(0.05)
        return self.worst * 1000


class GcMeter:
    """The cyclic GC's collections since the last :meth:`reset` (a ``gc.callbacks`` hook): how many,
    how many were full (generation 2), and their pauses' total and longest (``clock``, s).  The
    server and its client share this process, so a collection triggered on either thread stops the
    loop too: the column tells a GC pause from a hold."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started: float | None = None
        self.count = self.full = 0
        self.total = self.longest = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = self.clock()
        elif phase == "stop" and self.started is not None:
            took = self.clock() - self.started
            self.started = None
            self.count += 1
            self.full += info["generation"] == 2
            self.total += took
            self.longest = max(self.longest, took)

    def reset(self) -> None:
        self.count = self.full = 0
        self.total = self.longest = 0.0

    def text(self) -> str:
        if not self.count:
            return "-"
        full = f" ({self.full} full)" if self.full else ""
        return f"{self.count}{full}: {self.total * 1000:.1f} ms, longest {self.longest * 1000:.1f}"

    @contextlib.contextmanager
    def installed(self) -> Iterator[GcMeter]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def populate(st: ServerThread, stream: str, n: int, payload: Callable[[int], str], chunk: int,
             streams: int = 1) -> None:
    """``n`` events appended to ``stream`` (``streams`` > 1: event i to ``{stream}{i % streams}``)."""
    engine = st.server.engine
    claims = st.server.auth.verify(st.token()).claims
    done = 0
    while done < n:
        def batch(start: int = done) -> int:
            k = 0
            for i in range(start, min(n, start + chunk)):
                if not engine.can_commit():
                    break
                sid = stream if streams == 1 else f"{stream}{i % streams}"
                engine.call_detached(claims, "append_sync_event", (sid, f"k{i}", payload(i), None, None))
                k += 1
            st.server._pump()
            return k
        done += st.call(batch)
        while st.call(lambda: engine.committed - engine.durable) > 0:
            time.sleep(0.01)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--big", type=int, default=BIG)
    ap.add_argument("--many", type=int, default=MANY)
    ap.add_argument("--streams", type=int, default=0,
                    help="one small event in each of this many more streams t0, t1, ... (sync_stream rows: a big "
                         "non-stream table to subscribe to; 0: none, the runs before ADR-0041)")
    ap.add_argument("--gc-freeze", choices=("none", *gcpolicy.GC_FREEZE_POLICIES), default="none",
                    help="apply syncref serve's [server] gc_freeze policy after start (ADR-0036); none: no "
                         "freeze at all (the runs before ADR-0036)")
    opts = ap.parse_args()
    lim = Limits()
    data = Path(tempfile.mkdtemp(prefix="syncref-holds-"))
    st = ServerThread(ServerConfig(data_dir=data, port=0, limits=lim, contracts=False))
    st.start()
    if opts.gc_freeze != "none":  # as `syncref serve` does once it has recovered
        st.call(gcpolicy.apply, opts.gc_freeze)
    tok = st.token(scopes=[s for s in SCOPES if s != "sync.admin"])
    admin = st.token()
    t0 = time.monotonic()
    populate(st, "big", opts.big, lambda i: json.dumps(os.urandom(125 * KIB - 8).hex()), 20)
    populate(st, "many", opts.many, lambda i: f'{{"i":{i}}}', 500)
    if opts.streams:
        populate(st, "t", opts.streams, lambda i: f'{{"t":{i}}}', 500, streams=opts.streams)
    print(f"# populated in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    probe = Probe(st.loop)
    meter = GcMeter()
    gc.callbacks.append(meter)
    rows: list[tuple[str, str, float, str, str]] = []
    base = f"{st.base}/v1/database/autopilot-sync"
    auth = {"Authorization": f"Bearer {tok}"}

    def measure(name: str, size: str, fn: Callable[[], Any]) -> None:
        if opts.only and not any(o in name for o in opts.only):
            return
        probe.reset()
        meter.reset()
        started = time.monotonic()
        try:
            out = fn()
            note = str(out)[:70]
        except Exception as exc:
            note = f"{type(exc).__name__}: {exc}"[:70]
        wall = time.monotonic() - started
        hold = probe.read()
        rows.append((name, size, hold, f"{note} ({wall * 1000:.0f} ms wall)", meter.text()))
        print(f"| {name} | {size} | {hold:.1f} | {meter.text()} | {note} ({wall * 1000:.0f} ms wall) |", flush=True)

    def raw(client: WireClient) -> int:
        """Take the next frame without decoding it: a client decoding megabytes of rows in this
        process would compete with the server's loop for the interpreter lock (and be measured)."""
        frame = client.ws.recv(timeout=300)
        assert isinstance(frame, bytes)
        return len(frame)

    def ws(version: int = 2, compression: str = "None") -> WireClient:
        return WireClient(st, tok, version=version, compression=compression)

    measure("idle (probe noise)", "-", lambda: time.sleep(0.3))

    # --- WebSocket handshake ---
    measure("handshake v2", "token in query", lambda: ws().close())
    measure("handshake, 7 KiB subprotocol list", "7 KiB header",
            lambda: WireClient(st, tok, protocols=[f"p{i}" for i in range(1200)] + ["v2.bsatn.spacetimedb"]).close())

    # --- CallReducer ---
    c = ws()
    def call(reducer: str, *args: Any) -> str:
        r = c.call(reducer, *args)
        return repr(r.outcome)[:60]
    wide = "[" + ",".join(["0"] * (128 * KIB - 1)) + "]"
    measure("CallReducer append, wide array", f"{len(wide) // KIB} KiB", lambda: call(
        "append_sync_event", "s1", "wide", wide, None, None))
    obj = "{" + ",".join(f'"{i:06d}":0' for i in range(23_000)) + "}"
    measure("CallReducer append, wide object", f"{len(obj) // KIB} KiB", lambda: call(
        "append_sync_event", "s1", "obj", obj, None, None))
    measure("CallReducer append, deep array", "256 KiB", lambda: call(
        "append_sync_event", "s1", "deep", nested(128 * KIB), None, None))
    esc = json.dumps("é" * (120 * KIB), ensure_ascii=True)
    measure("CallReducer append, escaped unicode", f"{len(esc) // KIB} KiB", lambda: call(
        "append_sync_event", "s1", "esc", esc, None, None))
    over = "[" + ",".join(["0"] * (500 * KIB - 1)) + "]"
    measure("CallReducer append, payload over 256 KiB", f"{len(over) // KIB} KiB", lambda: call(
        "append_sync_event", "s1", "over", over, None, None))
    measure("CallReducer append, args over max_call_body_bytes", "1 MiB + 1", lambda: call(
        "append_sync_event", "s1", "over", "x" * MIB, None, None))
    measure("CallReducer publish_provider_capability, kinds", "250k u32", lambda: call(
        "publish_provider_capability", "p1", '{"a":1}', tuple(5000 + i % 1000 for i in range(250_000)), 1, "active"))
    measure("CallReducer enqueue_bridge_event, tags", "1 MiB", lambda: call(
        "enqueue_bridge_event", "o1", "s", 1, json.dumps([["t", "x"]] * 100_000), "c"))
    measure("CallReducer mark_bridge_event_sent, relays", "60k strings", lambda: call(
        "mark_bridge_event_sent", "o1", "e" * 64, tuple(f"wss://r{i}.example" for i in range(60_000))))
    measure("CallReducer publish_stream_signal, wide", "256 KiB", lambda: call(
        "publish_stream_signal", "s1", "custom", wide))

    # --- CallProcedure ---
    def proc() -> str:
        c.send(wire.CallProcedure(c.rid(), 0, "p" * (16 * MIB), b"x" * (15 * MIB)))
        return type(c.recv()).__name__
    measure("CallProcedure, long name and args", "31 MiB", proc)

    # --- Subscribe / OneOffQuery texts ---
    conj = " AND ".join(f"seq > {i}" for i in range(31))
    head = "SELECT * FROM sync_event WHERE stream_id = 'many' AND "
    long_q = head + conj + " " * (8 * KIB - len(head) - len(conj))
    def sub(client: WireClient, qs: int, *texts: str) -> str:
        client.send(wire.Subscribe(client.rid(), qs, tuple(texts)))
        r = client.recv(timeout=300)
        return type(r).__name__ + " " + str(getattr(r, "error", ""))[:40]
    s2 = ws()
    measure("Subscribe 64 x 8 KiB, 32 conjuncts", "512 KiB", lambda: sub(
        s2, 1, *[long_q.replace("seq > 0 ", f"seq > {500_000 + j} ", 1)[:8 * KIB] for j in range(64)]))
    s2.close()
    s2 = ws()
    brackets = "SELECT * FROM sync_event WHERE " + "(" * (8 * KIB - 40) + "seq > 1"
    measure("Subscribe 64 x 8 KiB of brackets", "512 KiB", lambda: sub(s2, 1, *[brackets[:8 * KIB]] * 64))
    quotes = "SELECT * FROM sync_event WHERE stream_id = '" + "''" * (4 * KIB - 30) + "'"
    measure("Subscribe 64 x 8 KiB of quote escapes", "512 KiB", lambda: sub(s2, 2, *[quotes[:8 * KIB]] * 64))
    uni = "SELECT * FROM sync_event WHERE stream_id = '" + "\U0001F600" * (2 * KIB - 20) + "'"
    measure("Subscribe 64 x 8 KiB of 4-byte unicode", "512 KiB", lambda: sub(s2, 3, *[uni] * 64))
    s2.close()
    o = ws()
    def one_off(text: str) -> str:
        o.send(wire.OneOffQuery(o.rid(), text))
        return f"{raw(o)} B frame"
    measure("OneOffQuery 8 KiB, 32 conjuncts", "8 KiB", lambda: one_off(long_q))

    # --- Big snapshots ---
    for comp in ("None", "Gzip", "Brotli"):
        b = ws(compression=comp)
        def snap(b: WireClient = b) -> str:
            b.send(wire.Subscribe(b.rid(), 7, ("SELECT * FROM sync_event WHERE stream_id = 'big'",)))
            return f"{raw(b)} B frame"
        measure(f"Subscribe big snapshot, compression={comp}", "~30 MiB", snap)
        def drop(b: WireClient = b) -> str:
            b.send(wire.Unsubscribe(b.rid(), 7, True))
            return f"{raw(b)} B frame"
        measure(f"Unsubscribe SendDroppedRows, compression={comp}", "~30 MiB", drop)
        b.close()
    b = ws()
    big_q = "SELECT * FROM sync_event WHERE stream_id = 'big'"
    measure("Subscribe snapshot over 32 MiB (refused)", "~60 MiB", lambda: sub(b, 8, big_q, big_q + " AND seq > 0"))
    measure("Subscribe SELECT * FROM * (big + many)", "all tables", lambda: sub(b, 9, "SELECT * FROM *"))
    b.close()
    measure("OneOffQuery big stream", "~30 MiB", lambda: one_off("SELECT * FROM sync_event WHERE stream_id = 'big'"))
    measure("OneOffQuery many stream", f"{opts.many} rows", lambda: one_off(
        "SELECT * FROM sync_event WHERE stream_id = 'many'"))

    # --- big filtered snapshots and their dropped rows (ADR-0041): a key conjunct, so every row is matched ---
    fs = ws()
    def sub_raw(qs: int, text: str) -> str:
        fs.send(wire.Subscribe(fs.rid(), qs, (text,)))
        return f"{raw(fs)} B frame"
    def unsub_raw(qs: int) -> str:
        fs.send(wire.Unsubscribe(fs.rid(), qs, True))
        return f"{raw(fs)} B frame"
    keyed = "SELECT * FROM sync_event WHERE stream_id = 'many' AND idempotency_key > ''"
    measure("Subscribe many stream, key conjunct", f"{opts.many} rows", lambda: sub_raw(11, keyed))
    measure("Unsubscribe many stream, SendDroppedRows", f"{opts.many} rows", lambda: unsub_raw(11))
    if opts.streams:
        measure("Subscribe sync_stream (all streams)", f"{opts.streams + 3} rows", lambda: sub_raw(
            12, "SELECT * FROM sync_stream"))
        measure("Unsubscribe sync_stream, SendDroppedRows", f"{opts.streams + 3} rows", lambda: unsub_raw(12))
    fs.close()

    # --- big filtered one-off answers (ADR-0043): rows built, matched, then encoded, v2/v3 x compression ---
    for version in (2, 3):
        for comp in ("None", "Gzip", "Brotli"):
            oc = ws(version, comp)
            def one_raw(oc: WireClient = oc, text: str = keyed) -> str:
                oc.send(wire.OneOffQuery(oc.rid(), text))
                return f"{raw(oc)} B frame"
            measure(f"OneOffQuery many stream, key conjunct, v{version} compression={comp}", f"{opts.many} rows",
                    one_raw)
            if opts.streams:
                def streams_raw(oc: WireClient = oc) -> str:
                    return one_raw(oc, "SELECT * FROM sync_stream")
                measure(f"OneOffQuery sync_stream, v{version} compression={comp}", f"{opts.streams + 3} rows",
                        streams_raw)
            oc.close()

    # --- queries whose cost is the table's size, not the request's ---
    scan = "SELECT * FROM sync_event WHERE payload_hash = 'sha256:none'"
    measure("OneOffQuery full scan of sync_event (no match)", "60 B", lambda: one_off(scan))
    sc = ws()
    measure("Subscribe 64 x full scan of sync_event (no match)", "4 KiB", lambda: sub(sc, 1, *[scan] * 64))
    sc.close()
    measure("POST /sql 64 x full scan (no match)", "4 KiB", lambda: http(
        "POST", f"{base}/sql", ";".join([scan] * 64), auth).status)
    measure("POST /sql 1 statement over max_sql_rows", "1 statement", lambda: http(
        "POST", f"{base}/sql", "SELECT * FROM sync_event", auth).status)

    # --- v3 frames of many messages ---
    v3 = ws(version=3)
    def v3_burst() -> str:
        n = 4096
        text = "SELECT * FROM sync_stream WHERE stream_id = 'many'"
        v3.ws.send(b"".join(wire.encode_client(wire.OneOffQuery(i, text)) for i in range(n)))
        got = 0
        while got < n:
            v3.recv()
            got += 1
        return f"{got} answers"
    measure("v3 frame of 4096 OneOffQuery", "~270 KiB", v3_burst)
    def v3_heavy() -> str:
        v3.ws.send(b"".join(wire.encode_client(wire.OneOffQuery(i, "SELECT * FROM sync_event WHERE stream_id = 'many'"))
                            for i in range(4)))
        return f"{sum(raw(v3) for _ in range(4))} B in 4 frames"
    measure("v3 frame of 4 OneOffQuery of the many stream", "4 x many rows", v3_heavy)
    def distinct(k: int) -> str:  # the parse cache keeps exact texts: each text new
        return long_q.replace("seq > 0 ", f"seq > {k} ", 1)[:8 * KIB]

    def v3_parse() -> str:
        v3.ws.send(b"".join(wire.encode_client(wire.Subscribe(i, 100 + i, tuple(
            distinct(1_000_000 + 64 * i + j) for j in range(64)))) for i in range(4)))
        for _ in range(4):
            v3.recv(timeout=300)
        return "4 answers"
    measure("v3 frame of 4 Subscribe of 64 x 8 KiB, 32 conjuncts", "2 MiB", v3_parse)
    def v3_calls() -> str:
        n = 4096
        v3.ws.send(b"".join(wire.encode_client(wire.CallReducer(i, 0, "ack_checkpoint", bsatn.encode_args(
            "ack_checkpoint", ("c", "nostream", 1, 0)))) for i in range(n)))
        got = 0
        while got < n:
            v3.recv()
            got += 1
        return f"{got} answers"
    measure("v3 frame of 4096 failing CallReducer", "~200 KiB", v3_calls)
    v3.close()

    # --- HTTP ---
    sql_many = ";".join(["SELECT * FROM sync_event WHERE stream_id = 'many'"] * 64)
    measure("POST /sql 64 statements x many rows", f"{len(sql_many) // KIB} KiB", lambda: http(
        "POST", f"{base}/sql", sql_many, auth).status)
    sql_two = ";".join(["SELECT * FROM sync_event WHERE stream_id = 'many'"] * 2)
    measure("POST /sql 2 statements x many rows (answered)", f"{2 * opts.many} rows", lambda: http(
        "POST", f"{base}/sql", sql_two, auth).status)
    sql_big = ";".join(["SELECT * FROM sync_event WHERE stream_id = 'big'"] * 2)
    measure("POST /sql big stream (16 MiB answer bound)", "2 statements", lambda: http(
        "POST", f"{base}/sql", sql_big, auth).status)
    sql_one = "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq < 60"
    measure("POST /sql ~15 MiB answer", "1 statement", lambda: http("POST", f"{base}/sql", sql_one, auth).status)
    sql_conj = ";".join([long_q[:1000]] * 64)
    measure("POST /sql 64 statements x 32 conjuncts", f"{len(sql_conj) // KIB} KiB", lambda: http(
        "POST", f"{base}/sql", sql_conj, auth).status)
    hdr = {**auth, "Content-Type": "application/json"}
    body = json.dumps(["s1", "hb", "[" + ",".join(["0"] * (400 * KIB)) + "]", None, None])
    measure("POST /call 1 MiB JSON body (payload over)", f"{len(body) // KIB} KiB", lambda: http(
        "POST", f"{base}/call/append_sync_event", body, hdr).status)
    deep = nested(512 * KIB)
    measure("POST /call 1 MiB deep JSON body", "1 MiB", lambda: http(
        "POST", f"{base}/call/append_sync_event", deep, hdr).status)
    kinds = json.dumps(["p2", '{"a":1}', [5000] * 150_000, 1, "active"])
    measure("POST /call 1 MiB vec of u32", f"{len(kinds) // KIB} KiB", lambda: http(
        "POST", f"{base}/call/publish_provider_capability", kinds, hdr).status)
    measure("GET /schema", "-", lambda: http("GET", f"{base}/schema").status)
    measure("GET /metrics", "-", lambda: http("GET", f"{st.base}/metrics").status)
    measure("POST /v1/identity (mint)", "-", lambda: http("POST", f"{st.base}/v1/identity").status)
    measure("GET /ops/data (admin)", "-", lambda: http(
        "GET", f"{st.base}/ops/data", headers={"Authorization": f"Bearer {admin}"}).status)
    measure("compaction pass (periodic; POST .../compact on branch conf)", "-", lambda: st.call(
        lambda: st.server._compact()))
    gz = gzip.compress(b"[" + b"0," * (4 * MIB) + b"0]")
    measure("POST /call gzip Content-Encoding (not accepted?)", f"{len(gz) // KIB} KiB gz", lambda: http(
        "POST", f"{base}/call/append_sync_event", gz, {**hdr, "Content-Encoding": "gzip"}).status)
    measure("idle again (probe noise)", "-", lambda: time.sleep(0.3))
    gc.callbacks.remove(meter)
    st.stop()


if __name__ == "__main__":
    main()
