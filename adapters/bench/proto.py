"""Lean load-generator clients: a WebSocket client and a Redis (RESP) client on asyncio protocols.

Why not ``websockets``' client and ``redis-py`` here: in the fanout runs one client process takes
up to 250,000 messages a second, and a per-message coroutine hand-off costs more than the
message.  These clients parse what arrives *in* ``data_received`` -- every complete frame or
reply in the buffer, in a loop, handed to a synchronous callback -- and so cost a few
microseconds a message.  What they do not do matters as much: no compression, no fragmentation
on send, no TLS.  The parsers are library code all the same: the masking is ``websockets``' C
``apply_mask``, and RESP replies are parsed by ``hiredis`` (the official C parser).

:class:`WsClient` speaks RFC 6455 as a client: it checks the 101 answer and its
``Sec-WebSocket-Accept``, masks what it sends (random key per frame), answers pings, and treats
a masked or reserved-bit server frame as a protocol error.  :class:`RespClient` writes RESP
arrays of bulk strings and hands back replies in order.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from websockets.speedups import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WsError(Exception):
    """The server broke the WebSocket protocol, refused the upgrade, or the connection dropped."""


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final client frame, masked with ``mask_key`` (random when None)."""
    key = os.urandom(4) if mask_key is None else mask_key
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(n)
    return head + key + apply_mask(payload, key)


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


class FrameParser:
    """Incremental parser of unmasked server frames: ``feed`` returns the complete ones as
    (opcode, payload) pairs; fragments are joined; control frames come out as they arrive."""

    __slots__ = ("_buf", "_frag", "_frag_op")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frag: list[bytes] = []
        self._frag_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise WsError("the server sent a masked frame")
            if b0 & 0x70:
                raise WsError("the server set a reserved bit (no extension was negotiated)")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = _U16.unpack_from(buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = _U64.unpack_from(buf, pos + 2)[0]
                head = 10
            if end - pos < head + n:
                break
            with memoryview(buf) as view:  # one copy of a large frame, not two (slice, then bytes)
                payload = bytes(view[pos + head:pos + head + n])
            pos += head + n
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= 0x8:
                out.append((opcode, payload))
            elif not fin:
                if opcode != OP_CONT:
                    self._frag_op = opcode
                self._frag.append(payload)
            elif opcode == OP_CONT:
                self._frag.append(payload)
                out.append((self._frag_op, b"".join(self._frag)))
                self._frag = []
            else:
                out.append((opcode, payload))
        if pos:
            del buf[:pos]
        return out


class WsClient(asyncio.Protocol):
    """A WebSocket client connection.  Frames go to ``on_frame`` if set (synchronously, in
    arrival order), else they queue for :meth:`recv`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_frame: Callable[[bytes], None] | None = None
        self.on_close: Callable[[WsClient], None] | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.lost_reason = ""  # why the connection ended, when no close frame said it
        self.closed = False
        self._parser = FrameParser()
        self._head = bytearray()
        self._handshake: asyncio.Future[None] | None = None
        self._key = ""
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, path: str, subprotocols: tuple[str, ...] = (),
                      headers: dict[str, str] | None = None, timeout: float = 30.0) -> WsClient:
        loop = asyncio.get_running_loop()
        _transport, proto = await asyncio.wait_for(loop.create_connection(cls, host, port), timeout)
        await asyncio.wait_for(proto._upgrade(host, port, path, subprotocols, headers or {}), timeout)
        return proto

    async def _upgrade(self, host: str, port: int, path: str, subprotocols: tuple[str, ...],
                       headers: dict[str, str]) -> None:
        assert self.transport is not None
        self._key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {self._key}", "Sec-WebSocket-Version: 13"]
        if subprotocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._handshake = asyncio.get_running_loop().create_future()
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self._handshake

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = bytes(self._head[:end]).decode("latin-1"), bytes(self._head[end + 4:])
            self._head = bytearray()
            status, *fields = head.split("\r\n")
            hdrs = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
            if " 101 " not in status + " ":
                self._handshake.set_exception(WsError(f"upgrade refused: {status}"))
                return
            if hdrs.get("sec-websocket-accept") != accept_for(self._key):
                self._handshake.set_exception(WsError("bad Sec-WebSocket-Accept"))
                return
            self.subprotocol = hdrs.get("sec-websocket-protocol")
            self._handshake.set_result(None)
            if not rest:
                return
            data = rest
        try:
            frames = self._parser.feed(data)
        except WsError as exc:
            self.lost_reason = f"client-side parse error: {exc}"
            self._lost()
            if self.transport is not None:
                self.transport.abort()
            return
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_TEXT):
                if self.on_frame is not None:
                    self.on_frame(payload)
                else:
                    self._queue.append(payload)
                    if self._waiter is not None and not self._waiter.done():
                        self._waiter.set_result(None)
            elif opcode == OP_PING:
                self._write(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
                if not self.closed:
                    self._write(OP_CLOSE, payload[:2])
                self._lost()
                if self.transport is not None:
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost_reason:
            self.lost_reason = "TCP connection closed" + (f" ({exc!r})" if exc else " by the peer")
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(WsError(f"connection lost during the upgrade: {exc!r}"))
        self._lost()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.on_close is not None:
            self.on_close(self)

    # --- use ---

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(opcode, payload))

    def send(self, payload: bytes) -> None:
        """Send one binary message (buffered by the transport; never blocks)."""
        if self.closed:
            raise WsError(f"connection closed ({self.close_code} {self.close_reason})")
        self._write(OP_BINARY, payload)

    def send_many(self, payloads: list[bytes]) -> None:
        """Several binary messages in one transport write."""
        if self.closed:
            raise WsError(f"connection closed ({self.close_code} {self.close_reason})")
        assert self.transport is not None
        self.transport.write(b"".join(encode_frame(OP_BINARY, p) for p in payloads))

    async def recv(self) -> bytes:
        while not self._queue:
            if self.closed:
                raise WsError(f"connection closed ({self.close_code} {self.close_reason})")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._queue.popleft()

    def close(self) -> None:
        if not self.closed:
            self._write(OP_CLOSE, _U16.pack(1000))
        if self.transport is not None:
            self.transport.close()
        self._lost()


def encode_command(*args: bytes | str | int) -> bytes:
    """One RESP command: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        data = a if isinstance(a, bytes) else str(a).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespError(Exception):
    """Redis answered with an error, or the connection dropped."""


class RespClient(asyncio.Protocol):
    """A Redis connection.  Replies resolve the futures of :meth:`call` in order; with
    ``on_reply`` set, replies to :meth:`send` go there instead (no future per command)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_reply: Callable[[Any], None] | None = None
        self.on_close: Callable[[RespClient], None] | None = None
        self.closed = False
        self._reader = hiredis.Reader()
        self._pending: deque[asyncio.Future[Any] | None] = deque()

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 30.0) -> RespClient:
        loop = asyncio.get_running_loop()
        _transport, proto = await asyncio.wait_for(loop.create_connection(cls, host, port), timeout)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            fut = self._pending.popleft() if self._pending else None
            if fut is None:
                if self.on_reply is not None:
                    self.on_reply(reply)
            elif not fut.done():
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(RespError(str(reply)))
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_close is not None:
            self.on_close(self)
        while self._pending:
            fut = self._pending.popleft()
            if fut is not None and not fut.done():
                fut.set_exception(RespError(f"connection lost: {exc!r}"))

    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        """Send a command; the future resolves to its reply."""
        assert self.transport is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        self.transport.write(encode_command(*args))
        return fut

    def call_many(self, commands: list[tuple[bytes | str | int, ...]]) -> list[asyncio.Future[Any]]:
        """Pipeline several commands in one write."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        self._pending.extend(futs)
        self.transport.write(b"".join(encode_command(*c) for c in commands))
        return futs

    def send(self, *args: bytes | str | int) -> None:
        """Send a command whose reply goes to ``on_reply``."""
        assert self.transport is not None
        self._pending.append(None)
        self.transport.write(encode_command(*args))

    def send_many(self, commands: list[tuple[bytes | str | int, ...]]) -> None:
        """Pipeline several commands in one write; their replies go to ``on_reply`` in order."""
        assert self.transport is not None
        self._pending.extend([None] * len(commands))
        self.transport.write(b"".join(encode_command(*c) for c in commands))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
