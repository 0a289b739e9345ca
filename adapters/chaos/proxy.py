"""A TCP proxy for chaos runs: clients connect to it, it forwards to the server.

:meth:`ChaosProxy.cut` closes every open connection at once, in both directions, wherever the
bytes are (mid-frame, mid-handshake): the clients see their sockets die and reconnect through the
proxy.  :meth:`ChaosProxy.delay` holds every forwarded chunk for ``delay_s`` until
:meth:`ChaosProxy.clear`.  When the server is down the upstream connect fails and the client's
connection is closed at once (the client backs off and retries).  Counters say what it did.
"""

from __future__ import annotations

import asyncio
import contextlib


class ChaosProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.upstream_port = host, upstream_port
        self.delay_s = 0.0
        self.port = 0
        self.accepted = self.cuts = self.refused = self.bytes = 0
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

    def clear(self) -> None:
        self.delay_s = 0.0

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
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                self.bytes += len(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
