"""A TCP proxy for chaos runs: clients connect to it, it forwards to the server.

:meth:`ChaosProxy.cut` closes every open connection at once, in both directions, wherever the
bytes are (mid-frame, mid-handshake): the clients see their sockets die and reconnect through the
proxy.  :meth:`ChaosProxy.delay` holds every forwarded chunk for ``delay_s`` until
:meth:`ChaosProxy.clear`.  When the server is down the upstream connect fails and the client's
connection is closed at once (the client backs off and retries).  Counters say what it did.

:meth:`ChaosProxy.duplicate` (until :meth:`ChaosProxy.clear`) makes it resend client frames: it
splits the client-to-server stream into the HTTP upgrade request and WebSocket frames
(:class:`ClientFrames`, sans-I/O), keys each connection by the token of its upgrade request, and
for each complete binary frame a client sends, sends it twice; and when a client with the same
token connects again, it first replays that client's last few frames from its earlier connections
(the frames a confused middlebox or a naive retry layer would resend across a reconnect).  Calls,
subscribes and acks arrive twice, on the same connection and on a later one: what the server and
the SDK do with them (dedupe by idempotency key, request ids unique within an SDK session, a
reused query set id closed 1011) is what the run checks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

REPLAY_KEEP = 8  # frames kept per token for replay on its next connection
MAX_HEAD = 64 * 1024  # an upgrade request longer than this is passed through unparsed


@dataclass(frozen=True, slots=True)
class Frame:
    raw: bytes  # the frame as the client sent it (header, mask and masked payload)
    opcode: int
    fin: bool


class ClientFrames:
    """Cuts a client-to-server byte stream into the upgrade request and WebSocket frames.

    :meth:`feed` returns what can be forwarded now: ``bytes`` for the request head (passed on as it
    arrives, never held back; :attr:`head` is set once its blank line is seen), then one
    :class:`Frame` per complete frame.  If there is no blank line within ``MAX_HEAD`` bytes, or a
    frame is not masked (no WebSocket client sends that), the rest of the stream is passed on as
    plain ``bytes``: the proxy then forwards without looking."""

    def __init__(self) -> None:
        self.buf = b""
        self.seen = b""  # the head so far
        self.head: bytes | None = None
        self.opaque = False

    def feed(self, data: bytes) -> list[bytes | Frame]:
        out: list[bytes | Frame] = []
        if self.opaque:
            return [data] if data else []
        if self.head is None:
            start = len(self.seen)
            self.seen += data
            end = self.seen.find(b"\r\n\r\n", max(0, start - 3))
            if end < 0:
                if len(self.seen) > MAX_HEAD:
                    self.opaque = True
                out.append(data)
                return out
            self.head = self.seen[:end + 4]
            out.append(self.head[start:])
            data = self.seen[end + 4:]
        self.buf += data
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, at = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, at = int.from_bytes(self.buf[2:10], "big"), 10
            if not b1 & 0x80:
                self.opaque = True
                out.append(self.buf)
                self.buf = b""
                return out
            total = at + 4 + n
            if len(self.buf) < total:
                break
            out.append(Frame(self.buf[:total], b0 & 0x0F, bool(b0 & 0x80)))
            self.buf = self.buf[total:]
        return out


def token_of(head: bytes) -> str | None:
    """Who an upgrade request is from: the ``iss`` and ``sub`` of the token it carries
    (``Authorization: Bearer`` or ``?token=``; the SDK trades its token for a fresh websocket token
    per connection, and those keep the subject), read without checking the signature."""
    m = re.search(rb"(?im)^authorization:\s*bearer\s+(\S+)", head) or re.search(rb"[?&]token=([^&\s]+)", head)
    if m is None:
        return None
    parts = m.group(1).split(b".")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
        return f"{claims['iss']} {claims['sub']}"
    except (IndexError, ValueError, KeyError, TypeError):
        return m.group(1).decode("ascii", "replace")


class ChaosProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1", seed: int = 0) -> None:
        self.host, self.upstream_port = host, upstream_port
        self.rng = random.Random(seed)  # which frames are sent twice
        self.delay_s = 0.0
        self.port = 0
        self.accepted = self.cuts = self.refused = self.bytes = 0
        self.duplicating = False
        self.duplicated = self.replayed = 0
        self._sent: dict[str, deque[bytes]] = {}
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def cut(self) -> int:
        """Close every open connection; return how many."""
        pairs = list(self._pairs)
        for a, b in pairs:
            for w in (a, b):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self._pairs.clear()
        self.cuts += len(pairs)
        return len(pairs)

    def delay(self, seconds: float) -> None:
        self.delay_s = seconds

    def duplicate(self) -> None:
        """From now until :meth:`clear`: every client binary frame twice, and replays on reconnect."""
        self.duplicating = True

    def clear(self) -> None:
        self.delay_s = 0.0
        self.duplicating = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            self.refused += 1
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer, self._client_side()), self._pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.transport.abort()

    def _client_side(self) -> Callable[[bytes], list[bytes]]:
        """What to send upstream for each chunk a client sends (see :meth:`duplicate`)."""
        frames = ClientFrames()
        key: str | None = None
        replay: list[bytes] = []

        def forward(chunk: bytes) -> list[bytes]:
            nonlocal key, replay
            out: list[bytes] = []
            keyed = frames.head is not None
            for piece in frames.feed(chunk):
                if not keyed and frames.head is not None:
                    keyed = True
                    key = token_of(frames.head)
                    if self.duplicating and key is not None:
                        replay = list(self._sent.get(key, ()))
                if isinstance(piece, bytes):
                    out.append(piece)
                    continue
                if piece.opcode == 2 and piece.fin:
                    if replay:  # before the client's first frame on this connection: after the upgrade
                        out.extend(replay)
                        self.replayed += len(replay)
                        replay = []
                    if key is not None:
                        self._sent.setdefault(key, deque(maxlen=REPLAY_KEEP)).append(piece.raw)
                    if self.duplicating and self.rng.random() < 0.5:
                        out.append(piece.raw)
                        self.duplicated += 1
                out.append(piece.raw)
            return out

        return forward

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    forward: Callable[[bytes], list[bytes]] | None = None) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                for piece in [chunk] if forward is None else forward(chunk):
                    writer.write(piece)
                    self.bytes += len(piece)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
