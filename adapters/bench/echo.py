"""The transport ceiling: a bare ``websockets`` server in its own process (``python -m adapters.bench.echo``).

It does the least a WebSocket server can do for each bench workload, so syncref's figures can be
read against what the transport alone costs on the same clients:

* a binary message starting with ``0x00`` is echoed back whole (the append workloads: one
  round trip per call);
* ``0x01`` subscribes the connection to broadcasts (answered with the one byte ``0x01``);
* ``0x02`` + payload sends the payload to every subscribed connection with
  ``websockets.broadcast`` (the fanout workloads: the writer's message, N socket writes).

It prints ``echo listening on <port>`` once bound (``--port 0`` picks a free port) and stops on
SIGTERM/SIGINT.  No compression is negotiated, like the syncref runs (``compression=None``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

ECHO, SUBSCRIBE, BROADCAST = 0x00, 0x01, 0x02


async def main(host: str, port: int) -> None:
    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for msg in ws:
                data = msg if isinstance(msg, bytes) else msg.encode("utf-8")
                if not data:
                    continue
                kind = data[0]
                if kind == SUBSCRIBE:
                    subscribers.add(ws)
                    await ws.send(b"\x01")
                elif kind == BROADCAST:
                    broadcast(subscribers, data[1:])
                else:
                    await ws.send(data)
        finally:
            subscribers.discard(ws)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with serve(handler, host, port, compression=None, max_size=None, ping_interval=None,
                     max_queue=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"echo listening on {bound}", flush=True)
        await stop.wait()


def cli() -> None:
    p = argparse.ArgumentParser(description="bare websockets echo/broadcast server (syncref bench's ceiling)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    asyncio.run(main(args.host, args.port))


if __name__ == "__main__":
    cli()
