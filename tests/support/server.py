"""Test harness for the real server: run :class:`adapters.server.SyncServer` on its own event
loop thread, talk to it over real sockets with a small synchronous wire client.

The wire client is deliberately raw (``websockets.sync.client`` + the codec), so tests see
exactly the frames the server sends: tags, batching, close codes and reasons.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from adapters import bsatn, wire
from adapters.auth import AuthConfig, Authenticator, KeyStore
from adapters.server import Limits, ServerConfig, SyncServer
from spec.schema import SCOPES


class ServerThread:
    def __init__(self, config: ServerConfig, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: the event loop the server runs on (a new asyncio loop when None; a test of
        uvloop passes ``uvloop.new_event_loop()``)."""
        self.config = config
        self.loop = asyncio.new_event_loop() if loop is None else loop
        self.server = SyncServer(config)
        self._thread = threading.Thread(target=self.loop.run_forever, name="syncref-test-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (engine access is single-threaded)."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    def token(self, scopes: Any = SCOPES, streams: Any = ("*",), **extra: Any) -> str:
        auth = Authenticator(self.config.auth, KeyStore.load_or_create(self.config.data_dir))
        return auth.mint(scopes=frozenset(scopes), streams=tuple(streams), ttl_s=3600, **extra)


@contextmanager
def running_server(data_dir: Path, *, limits: Limits | None = None, auth: AuthConfig | None = None,
                   **kw: Any) -> Iterator[ServerThread]:
    config = ServerConfig(data_dir=data_dir, port=0, limits=limits or Limits(), auth=auth or AuthConfig(), **kw)
    st = ServerThread(config)
    st.start()
    try:
        yield st
    finally:
        st.stop()


@dataclass
class HttpResult:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http(method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None) -> HttpResult:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return HttpResult(resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, err.read(), {k.lower(): v for k, v in err.headers.items()})


def call_http(st: ServerThread, token: str, reducer: str, args: list[Any]) -> HttpResult:
    return http("POST", f"{st.base}/v1/database/autopilot-sync/call/{reducer}", json.dumps(args),
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


class WireClient:
    """A raw v2/v3 client: sends encoded client messages, returns decoded server messages."""

    def __init__(self, st: ServerThread, token: str | None, *, version: int = 2, compression: str = "None",
                 confirmed: bool | None = None, query: str = "", protocols: list[str] | None = None,
                 database: str = "autopilot-sync") -> None:
        params = [f"compression={compression}"]
        if token is not None:
            params.append(f"token={token}")
        if confirmed is not None:
            params.append(f"confirmed={'true' if confirmed else 'false'}")
        if query:
            params.append(query)
        url = f"{st.ws_base}/v1/database/{database}/subscribe?{'&'.join(params)}"
        protos = protocols or [f"v{version}.bsatn.spacetimedb"]
        self.ws: ClientConnection = connect(url, subprotocols=protos, open_timeout=10,  # type: ignore[arg-type]
                                            max_size=64 * 1024 * 1024)
        self.version = 3 if self.ws.subprotocol == "v3.bsatn.spacetimedb" else 2
        self.pending: list[wire.ServerMessage] = []
        self.frames: list[bytes] = []
        self.other: list[wire.ServerMessage] = []
        first = self.recv()
        assert isinstance(first, wire.InitialConnection), first
        self.initial = first
        self._rid = 100

    def rid(self) -> int:
        self._rid += 1
        return self._rid

    def send(self, *msgs: wire.ClientMessage) -> None:
        if self.version == 3:
            self.ws.send(b"".join(wire.encode_client(x) for x in msgs))
        else:
            for x in msgs:
                self.ws.send(wire.encode_client(x))

    def recv(self, timeout: float = 10) -> wire.ServerMessage:
        while not self.pending:
            frame = self.ws.recv(timeout=timeout)
            assert isinstance(frame, bytes), "the server sent a text frame"
            self.frames.append(frame)
            self.pending.extend(wire.decode_server_frame(frame, self.version))
        return self.pending.pop(0)

    def recv_until(self, kind: type, timeout: float = 10) -> Any:
        while True:
            msg = self.recv(timeout)
            if isinstance(msg, kind):
                return msg

    def subscribe(self, qs: int, *queries: str) -> wire.ServerMessage:
        self.send(wire.Subscribe(self.rid(), qs, tuple(queries)))
        return self.recv()

    def call(self, reducer: str, *args: Any) -> wire.ReducerResult:
        rid = self.rid()
        self.send(wire.CallReducer(rid, 0, reducer, bsatn.encode_args(reducer, tuple(args))))
        while True:
            msg = self.recv()
            if isinstance(msg, wire.ReducerResult) and msg.request_id == rid:
                return msg
            self.other.append(msg)  # kept for tests that look at what arrived meanwhile

    def closed(self, timeout: float = 10) -> tuple[int | None, str]:
        """Wait for the server's close; return (code, reason)."""
        try:
            while True:
                self.ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")

    def close(self) -> None:
        self.ws.close()


class RawSocketClient:
    """A WebSocket client on a bare socket that reads nothing unless asked: a slow consumer or a
    peer that never answers pings.  ``rcvbuf`` shrinks the kernel's receive buffer."""

    def __init__(self, st: ServerThread, token: str, rcvbuf: int | None = None) -> None:
        import socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", st.server.port))
        self.sock.sendall((
            f"GET /v1/database/autopilot-sync/subscribe?token={token}&compression=None HTTP/1.1\r\n"
            "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: v2.bsatn.spacetimedb\r\n\r\n").encode())
        self.sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        self.status_line = head.split(b"\r\n")[0]

    def send(self, msg: wire.ClientMessage) -> None:
        """One masked binary frame (clients must mask)."""
        import os
        import struct
        payload = wire.encode_client(msg)
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def read_all(self, seconds: float) -> bytes:
        """Read until the server closes the TCP connection (or ``seconds`` pass)."""
        import time
        deadline = time.monotonic() + seconds
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return data
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def rows_of(table: str, rl: wire.RowList) -> list[Any]:
    return wire.decode_rows(table, rl)


def with_limits(**kw: Any) -> Limits:
    return replace(Limits(), **kw)


# --- `syncref serve` as a real process -----------------------------------------------------------------

SYNCREF = Path(sys.executable).parent / "syncref"  # the console script of the running venv


@dataclass
class ServedProcess:
    """A running ``syncref serve``: its base URL, data directory, process and stdout lines so far."""

    url: str
    data: Path
    proc: subprocess.Popen[str]
    lines: queue.Queue[str]
    first_line: str = ""  # the listening line

    def stop(self, timeout: float = 20) -> tuple[int, list[str]]:
        """SIGTERM, wait; (exit status, the stdout lines printed after start-up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                out.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
        return self.proc.returncode, out


@contextmanager
def serve_process(data: Path, *extra: str, wait_s: float = 60, env: dict[str, str] | None = None,
                  prefix: tuple[str, ...] = ()) -> Iterator[ServedProcess]:
    """Start ``syncref serve --data DATA --port 0 EXTRA...``, wait for its listening line, stop it
    (SIGTERM) afterwards.  stderr goes to ``DATA.parent/<data name>-server.log``, shown on failure.
    ``env`` replaces the environment; ``prefix`` goes before the command (e.g. a shell setting
    ``ulimit``)."""
    log = (data.parent / f"{data.name}-server.log").open("w+")
    proc = subprocess.Popen([*prefix, str(SYNCREF), "serve", "--data", str(data), "--host", "127.0.0.1", "--port",
                             "0", *extra], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    url = None
    first = ""
    deadline = time.monotonic() + wait_s
    while url is None and time.monotonic() < deadline:
        try:
            first = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        m = re.match(r"syncref listening on (http://\S+)", first)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        proc.wait()
        log.seek(0)
        log_text = log.read()
        log.close()
        raise AssertionError(f"syncref serve did not come up (exit {proc.poll()}):\n{log_text}")
    served = ServedProcess(url, data, proc, lines, first)
    try:
        yield served
    finally:
        served.stop()
        log.close()


def rss_bytes(pid: int) -> int:
    """A process's resident set size (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def metric(base: str, name: str) -> float:
    """The value of an unlabelled Prometheus sample (or the sum of a labelled family)."""
    text = http("GET", f"{base}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def mint_cli(data: Path, scopes: str, streams: str, *extra: str) -> dict[str, str]:
    """``syncref token mint --json``: {"token", "identity"}."""
    out = subprocess.run([str(SYNCREF), "token", "mint", "--data", str(data), "--scopes", scopes, "--streams",
                          streams, "--json", *extra], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    minted: dict[str, str] = json.loads(out.stdout)
    return minted


def populate_big(st: ServerThread, rows: int) -> None:
    """Append ``rows`` events (keys ``k0``.., payloads ``{"i": n}``) to the stream ``big`` in one engine turn
    on the server's loop, then wait until they are durable (the sliced-read and sliced-snapshot tests' data)."""
    engine = st.server.engine
    claims = st.server.auth.verify(st.token()).claims

    def batch() -> None:
        for i in range(rows):
            engine.call_detached(claims, "append_sync_event", ("big", f"k{i}", f'{{"i":{i}}}', None, None))
        st.server._pump()
    st.call(batch)
    while st.call(lambda: engine.committed - engine.durable) > 0:
        time.sleep(0.01)
