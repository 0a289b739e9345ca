"""The attack run of issue 16, replayed against ``syncref serve`` with figures, for before/after.

Method: each attack gets a fresh ``syncref serve`` process (default ``Limits``, fresh data
directory, ``MALLOC_MMAP_THRESHOLD_`` fixed so freed memory returns and RSS means something),
run from this checkout or, with ``--pythonpath DIR``, from another one (e.g. the commit before the
fix, extracted with ``git archive``).  Reported per attack: what the attacker got and how long it
took, the server's RSS growth (``VmRSS`` before and after), and a bystander's append latency
during the attack over its idle latency.  Anything that does not answer within ``--timeout``
seconds is reported as such.  The sizes are the attack run's where that is practical on a 2-core
shared machine, scaled down otherwise (each line says what was sent).  Nothing asserts.

Run: ``.venv/bin/python benchmarks/attacks.py [--only NAME ...] [--pythonpath DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters import bsatn, wire  # noqa: E402
from adapters.auth import AuthConfig, Authenticator, KeyStore  # noqa: E402
from benchmarks._frames import binary  # noqa: E402
from spec.schema import SCOPES  # noqa: E402

MIB = 1024 * 1024


class Server:
    def __init__(self, tree: Path, timeout: float) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="syncref-attack-"))
        env = {k: v for k, v in os.environ.items() if k != "ICONTRACT_SLOW"}
        env["PYTHONPATH"] = str(tree)
        env["MALLOC_MMAP_THRESHOLD_"] = env["MALLOC_TRIM_THRESHOLD_"] = str(128 * 1024)
        self.proc = subprocess.Popen([sys.executable, "-m", "adapters.cli", "serve", "--data", str(self.data),
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env, cwd=tree)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{self.port}"
        self.auth = Authenticator(AuthConfig(), KeyStore.load_or_create(self.data))
        self.timeout = timeout

    def token(self, **kw: Any) -> str:
        return self.auth.mint(scopes=frozenset(SCOPES), streams=("*",), ttl_s=3600, **kw)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def http(self, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None,
             timeout: float | None = None) -> tuple[int | str, bytes]:
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            return f"no answer ({type(exc).__name__})", b""

    def call(self, tok: str, reducer: str, body: str | bytes, timeout: float | None = None,
             ctype: str = "application/json") -> tuple[int | str, bytes]:
        return self.http("POST", f"/v1/database/autopilot-sync/call/{reducer}", body,
                         {"Authorization": f"Bearer {tok}", "Content-Type": ctype}, timeout)

    def sql(self, tok: str, text: str | bytes, timeout: float | None = None,
            ctype: str = "text/plain") -> tuple[int | str, bytes]:
        return self.http("POST", "/v1/database/autopilot-sync/sql", text,
                         {"Authorization": f"Bearer {tok}", "Content-Type": ctype}, timeout)

    def ws(self, version: int = 2, tok: str | None = None) -> Any:
        c = connect(f"ws://127.0.0.1:{self.port}/v1/database/autopilot-sync/subscribe?compression=None&token="
                    f"{tok or self.token()}", subprotocols=[f"v{version}.bsatn.spacetimedb"],  # type: ignore[list-item]
                    max_size=None, open_timeout=30)
        wire.decode_server_frame(binary(c.recv(timeout=30)), version)
        return c

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def append_msg(rid: int, stream: str, key: str, payload: str = '{"n":1}') -> bytes:
    return wire.encode_client(wire.CallReducer(rid, 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", (stream, key, payload, None, None))))


def ws_call(c: Any, version: int, rid: int, frame: bytes, timeout: float) -> tuple[Any, float]:
    started = time.perf_counter()
    c.send(frame)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msgs = wire.decode_server_frame(c.recv(timeout=max(0.01, deadline - time.monotonic())), version)
        except TimeoutError:
            break
        for m in msgs:
            if getattr(m, "request_id", None) == rid:
                return m, time.perf_counter() - started
    return None, time.perf_counter() - started


class Bystander:
    def __init__(self, srv: Server) -> None:
        self.c = srv.ws()
        self.n = 0
        self.timeout = srv.timeout
        self.idle = self.appends(10)

    def appends(self, count: int) -> list[float]:
        out = []
        for _ in range(count):
            self.n += 1
            got, took = ws_call(self.c, 2, self.n, append_msg(self.n, "bystander", f"k{self.n}"), self.timeout)
            out.append(took if got is not None else float("inf"))
            if got is None:
                break
        return out

    def ratio(self, during: list[float]) -> str:
        if not during or during[-1] == float("inf"):
            return "bystander: no answer"
        now, idle = statistics.median(during), statistics.median(self.idle)
        return f"bystander p50 {now * 1e3:.1f} ms vs idle {idle * 1e3:.1f} ms ({now / idle:.1f}x)"


def seed(srv: Server, stream: str, count: int, pad: int) -> None:
    c = srv.ws(3)
    payload = json.dumps({"pad": "p" * pad})
    for start in range(0, count, 200):
        ids = list(range(start, min(count, start + 200)))
        c.send(b"".join(append_msg(i + 1, stream, f"seed{i}", payload) for i in ids))
        left = len(ids)
        while left:
            left -= sum(isinstance(m, wire.ReducerResult) for m in wire.decode_server_frame(c.recv(timeout=120), 3))
    c.close()


def ws_frame(payload: bytes) -> bytes:
    n = len(payload)
    head = (bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0x80 | 126]) + struct.pack(">H", n) if n < 65536
            else bytes([0x82, 0x80 | 127]) + struct.pack(">Q", n))
    return head + b"\0\0\0\0" + payload


def raw_ws(srv: Server, version: int = 2, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", srv.port))
    s.sendall((f"GET /v1/database/autopilot-sync/subscribe?token={srv.token()}&compression=None HTTP/1.1\r\n"
               "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v{version}.bsatn.spacetimedb\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s


def read_until_closed(s: socket.socket, seconds: float) -> tuple[str, float]:
    """What ended the connection, and when: the server's close frame (its code), a cut without one,
    or nothing within ``seconds``.  Frames are parsed, so a close frame counts when it arrives."""
    started = time.monotonic()
    s.settimeout(0.5)
    buf = b""
    while time.monotonic() - started < seconds:
        while len(buf) >= 2:
            opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, at = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < at + n:
                break
            if opcode == 0x8:
                code = int.from_bytes(buf[at:at + 2], "big") if n >= 2 else None
                return f"close {code}", time.monotonic() - started
            buf = buf[at + n:]
        try:
            chunk = s.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return "reset", time.monotonic() - started
        if not chunk:
            return "closed without a close frame", time.monotonic() - started
        buf += chunk
    return "still open", time.monotonic() - started


ATTACKS: dict[str, Callable[[Server], dict[str, Any]]] = {}


def attack(fn: Callable[[Server], dict[str, Any]]) -> Callable[[Server], dict[str, Any]]:
    ATTACKS[fn.__name__] = fn
    return fn


@attack
def surrogate(srv: Server) -> dict[str, Any]:
    tok = srv.token()
    srv.call(tok, "enqueue_bridge_event", json.dumps(["ob1", "src", 31990, "[]", "hello"]))
    first = srv.call(tok, "record_bridge_failure", '["ob1","\\ud800",1000]')
    started = time.monotonic()
    nxt = srv.call(tok, "append_sync_event", json.dumps(["s", "k", "{}", {"none": []}, {"none": []}]),
                   timeout=10)
    return {"sent": "record_bridge_failure with a \\ud800 error, then an ordinary append",
            "attacker": f"{first[0]} {first[1][:70]!r}",
            "next call": f"{nxt[0]} after {time.monotonic() - started:.2f} s"}


@attack
def sql_statements(srv: Server) -> dict[str, Any]:
    seed(srv, "sqlbomb", 1500, 200)
    tok = srv.token()
    by = Bystander(srv)
    body = "SELECT * FROM sync_event;" * 400
    before = srv.rss()
    started = time.monotonic()
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(r=srv.sql(tok, body, timeout=120)))
    t.start()
    during = by.appends(10)
    t.join()
    status, data = box["r"]
    took = time.monotonic() - started
    peak = srv.rss()
    return {"sent": f"400 x 'SELECT * FROM sync_event;' ({len(body)} bytes) over 1,500 rows",
            "attacker": f"{status} {len(data)} bytes ({data[:60]!r}) after {took:.1f} s",
            "rss": f"+{(peak - before) / MIB:.0f} MiB", "bystander": by.ratio(during)}


@attack
def and_chain(srv: Server) -> dict[str, Any]:
    seed(srv, "chain", 1500, 50)
    tok = srv.token()
    chain = " AND ".join(f"seq > {i}" for i in range(6500))[: 64 * 1024 - 60]
    chain = chain[:chain.rfind(" AND ")]
    text = f"SELECT * FROM sync_event WHERE {chain}"
    started = time.monotonic()
    status, data = srv.sql(tok, text)
    took1 = time.monotonic() - started
    c = srv.ws()
    huge = "SELECT * FROM sync_event WHERE " + " AND ".join(f"seq > {i}" for i in range(80_000))
    got, took2 = ws_call(c, 2, 9, wire.encode_client(wire.OneOffQuery(9, huge)), srv.timeout)
    return {"sent": f"a {len(text)}-byte AND-chain on /sql; a {len(huge)}-byte one-off over the WebSocket",
            "attacker": f"/sql {status} {data[:70]!r} after {took1:.2f} s; one-off "
                        f"{'no answer' if got is None else repr(got.result)[:70]} after {took2:.2f} s"}


@attack
def chained_subscriptions(srv: Server) -> dict[str, Any]:
    by = Bystander(srv)
    out: dict[str, Any] = {"sent": "40 subscriptions whose chains (1,500 conjuncts; then 30, within the limits) "
                                   "precede stream_id = ..."}
    for n, rid in ((1500, 1), (30, 100)):
        c = srv.ws()
        chain = " AND ".join(f"committed_at > {i}" for i in range(n))
        errors = 0
        for k in range(40):
            got, _ = ws_call(c, 2, rid + k, wire.encode_client(wire.Subscribe(
                rid + k, rid + k, (f"SELECT * FROM sync_event WHERE {chain} AND stream_id = 'h{n}.{k}'",))),
                srv.timeout)
            errors += not isinstance(got, wire.SubscribeApplied)
        during = by.appends(30)
        out[f"{n} conjuncts"] = f"{40 - errors} subscribed, {errors} refused; {by.ratio(during)}"
        c.close()
    return out


@attack
def query_sets(srv: Server) -> dict[str, Any]:
    by = Bystander(srv)
    c = srv.ws(3)
    n = 20_000
    applied = refused = 0
    for start in range(0, n, 2000):  # frames of 2,000, each once the last is answered: under the inbound bound
        c.send(b"".join(wire.encode_client(wire.Subscribe(i + 1, i + 1, ("SELECT * FROM sync_event",)))
                        for i in range(start, start + 2000)))
        deadline = time.monotonic() + srv.timeout * 3
        while applied + refused < start + 2000 and time.monotonic() < deadline:
            try:
                for m in wire.decode_server_frame(c.recv(timeout=5), 3):
                    applied += isinstance(m, wire.SubscribeApplied)
                    refused += isinstance(m, wire.SubscriptionError)
            except TimeoutError:
                break
    during = by.appends(30)
    return {"sent": f"{n} query sets on one connection", "attacker": f"{applied} applied, {refused} refused",
            "bystander": by.ratio(during)}


@attack
def big_payload(srv: Server) -> dict[str, Any]:
    c = srv.ws()
    payload = json.dumps({"x": "y" * (30 * MIB)})
    got, took = ws_call(c, 2, 1, append_msg(1, "big", "k", payload), max(srv.timeout, 60))
    answer = "no answer" if got is None else repr(got.outcome)[:90]
    return {"sent": "append_sync_event with a 30 MiB payload", "attacker": f"{answer} after {took:.2f} s"}


@attack
def v3_count(srv: Server) -> dict[str, Any]:
    s = raw_ws(srv, 3)
    one = wire.encode_client(wire.OneOffQuery(1, ""))
    frame = one * ((32 * MIB - 16) // len(one))
    before = srv.rss()
    peak = [before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], srv.rss())
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    started = time.monotonic()
    with contextlib.suppress(OSError):
        s.sendall(ws_frame(frame))
    how, _ = read_until_closed(s, srv.timeout * 3)
    took = time.monotonic() - started
    stop.set()
    return {"sent": f"one 32 MiB v3 frame of {len(frame) // len(one)} one-off queries",
            "attacker": f"{how} after {took:.1f} s", "rss": f"peak +{(peak[0] - before) / MIB:.0f} MiB"}


@attack
def never_reading(srv: Server) -> dict[str, Any]:
    seed(srv, "fat", 40, 250_000)  # ~10 MB snapshot
    before = srv.rss()
    socks = []
    for _ in range(10):
        s = raw_ws(srv, rcvbuf=4096)
        query = ("SELECT * FROM sync_event WHERE stream_id = 'fat'",)
        for j in range(4):
            s.sendall(ws_frame(wire.encode_client(wire.Subscribe(j + 1, j + 1, query))))
        socks.append(s)
    time.sleep(5)
    held = srv.rss()
    time.sleep(65)  # past the default send_timeout_s (60 s)
    later = srv.rss()
    ends = [read_until_closed(s, 5)[0] for s in socks]
    return {"sent": "10 never-reading connections, each subscribing 4 times to a ~10 MB snapshot",
            "attacker": f"after 70 s: {sorted(set(ends))}",
            "rss": f"+{(held - before) / MIB:.0f} MiB held after 5 s, +{(later - before) / MIB:.0f} MiB after 70 s"}


@attack
def slowloris(srv: Server) -> dict[str, Any]:
    socks = []
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /v1/database/autopilot-sync/subscribe HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    time.sleep(15)
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return {"sent": "500 upgrade requests whose head never ends", "attacker": f"{alive} of 500 still open after 15 s",
            "ping": str(srv.http("GET", "/v1/ping")[0])}


@attack
def bodies(srv: Server) -> dict[str, Any]:
    tok = srv.token()
    deep = srv.call(tok, "append_sync_event", "[" * 100_000 + "]" * 100_000)
    cs = srv.call(tok, "append_sync_event", "[]", ctype="application/json; charset=x-nope")
    bad = srv.sql(tok, b"SELECT * FROM sync_stream WHERE stream_id = '\xff'")
    return {"sent": "/call nested 100k deep; charset=x-nope; invalid UTF-8 in /sql",
            "attacker": f"{deep[0]}; {cs[0]}; {bad[0]}"}


@attack
def exact_sizes(srv: Server) -> dict[str, Any]:
    s = raw_ws(srv)
    head = wire.encode_client(wire.OneOffQuery(5, ""))
    s.settimeout(30)
    try:
        s.sendall(ws_frame(wire.encode_client(wire.OneOffQuery(5, "x" * (32 * MIB - len(head))))))
        first = s.recv(4)
        answer = "an answer frame" if first[:1] == b"\x82" else f"close {int.from_bytes(first[2:4], 'big')}"
    except ConnectionResetError:
        answer = "refused (connection reset while sending: closed 1009)"
    big = srv.token(subject="s" * 36)
    while len(big) < 12_000:
        grants = tuple(f"g{i:05d}.*" for i in range(len(big) // 14 + 200))
        big = srv.auth.mint(scopes=frozenset(SCOPES), streams=grants, ttl_s=3600)
    status, _ = srv.sql(big, "SELECT * FROM sync_stream WHERE stream_id = 'g00000.x'")
    return {"sent": f"a message of exactly 32 MiB; a {len(big)}-character token",
            "attacker": f"32 MiB message: {answer}; token: {status}"}


def run(names: list[str], tree: Path, timeout: float) -> Iterator[dict[str, Any]]:
    for name in names:
        srv = Server(tree, timeout)
        try:
            result = {"attack": name, **ATTACKS[name](srv)}
        except Exception as exc:
            result = {"attack": name, "error": f"{type(exc).__name__}: {exc}"[:200]}
        finally:
            srv.stop()
        yield result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--pythonpath", default=str(ROOT), help="run the server from this checkout")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for result in run(args.only, Path(args.pythonpath), args.timeout):
        print(json.dumps(result) if args.json else " | ".join(f"{k}: {v}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
