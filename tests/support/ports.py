"""A loopback port the test owns for as long as it needs it, with nothing listening unless it says so.

``free_port()`` (bind port 0, close, hand the number on) leaves a window: between the pick and the
server's bind -- and again between a server's stop and its restart on the same port -- the port is
nobody's, so another xdist worker's server, relay or client can take it.  The test then fails with
"address in use", or worse, its client talks to that other process's server.

:class:`PortReservation` closes the window: it keeps a socket bound to ``127.0.0.1:PORT`` with
``SO_REUSEADDR`` and never calls ``listen()`` on it.  On Linux that socket

- makes connections to the port refused while no server of the test listens there (a relay that is
  down, a closed port);
- keeps the port out of every kernel pick: ``bind(port 0)`` and the ephemeral port of an outgoing
  ``connect()`` skip a port with a bound socket (which is where every other worker's ports come from);
- refuses a plain ``bind()`` of the same port (``EADDRINUSE``), while a server that binds it
  explicitly with ``SO_REUSEADDR`` -- ``syncref serve --port PORT``, asyncio's ``create_server``,
  websockets' ``serve``, uvicorn -- binds and listens beside it, and again after a restart.

So a server started (or restarted) on a reserved port either is the one listening there, or fails
to start with "address in use" because the port is held by a listener the test did not start -- a
loud failure, never a conversation with a stranger.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


class PortReservation:
    """A bound, never-listening ``127.0.0.1`` TCP socket: :attr:`port` is the test's until :meth:`release`."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def held(self) -> bool:
        return self._sock is not None


@contextmanager
def reserved_port() -> Iterator[int]:
    """A port held (refusing connections) for the block; servers the block starts on it bind beside it."""
    reservation = PortReservation()
    try:
        yield reservation.port
    finally:
        reservation.release()
