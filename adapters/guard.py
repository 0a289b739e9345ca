"""Guards at the server's socket edge: a cap on open TCP connections, rate-limited logging.

Descriptor exhaustion and log floods are failures of the process, not of one client, so they
are handled below aiohttp:

* :class:`ConnectionGate` is the listening socket's protocol factory.  It counts open TCP
  connections (HTTP and WebSocket alike) and, at its cap, answers a new one ``503`` and closes
  it at once, so an attacker holding sockets open cannot push the process into ``EMFILE``
  (``accept`` failing for everyone).  Below the cap it hands the connection to aiohttp's
  request handler through :class:`_Counted`, a transparent protocol wrapper whose only job is
  to notice when the connection is gone.  The cap is also kept below the process's descriptor
  limit (:func:`descriptor_budget`), after the soft limit is raised toward the hard one
  (:func:`raise_descriptor_limit`).
* :class:`RateLimitedLog` writes at most one line per key and interval and says how many it
  suppressed, and :func:`quiet_loop_errors` routes the event loop's own error reports (a failing
  ``accept``, say) through it as one line without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

LISTEN_BACKLOG = 511  # connections the kernel queues before accept (Redis's and nginx's default; ADR-0030)
DESCRIPTOR_RESERVE = 64 + LISTEN_BACKLOG  # kept for the log, its WAL, the key file, stdio, and a burst of accepts


def raise_descriptor_limit(want: int) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` toward ``want``, never past the hard limit and never down;
    returns the soft limit before and after.  The soft limit is the one that bites (Debian and
    systemd start services at a soft 1024 under a hard 524288 or more); Redis and Go's runtime raise
    it the same way at start.  Nothing in the process uses ``select(2)``, the reason the soft default
    is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft, soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target <= soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


def descriptor_budget(cap: int, reserve: int = DESCRIPTOR_RESERVE) -> int:
    """``cap``, lowered to fit the process's soft ``RLIMIT_NOFILE`` minus ``reserve``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(1, min(cap, soft - reserve))


@dataclass(slots=True)
class _Key:
    last: float
    suppressed: int = 0


class RateLimitedLog:
    """At most one log line per ``key`` every ``interval_s`` seconds; the next line that gets
    through says how many were suppressed meanwhile.  Keys are meant to be a small set of
    categories (never peer input); past ``max_keys`` the oldest are forgotten."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 1024) -> None:
        self.logger = logger
        self.max_keys = max_keys
        self.interval_s = interval_s
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self.written = 0
        self.suppressed = 0

    def log(self, key: str, level: int, message: str, *, exc_info: BaseException | None = None) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``interval_s`` ago; True if written."""
        now = self._clock()
        state = self._keys.get(key)
        if state is not None and now - state.last < self.interval_s:
            state.suppressed += 1
            self.suppressed += 1
            return False
        missed = state.suppressed if state is not None else 0
        self._keys.pop(key, None)
        if len(self._keys) >= self.max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = _Key(now)
        if missed:
            message = f"{message} ({missed} more like it in the last {self.interval_s:g} s not logged)"
        self.logger.log(level, message, exc_info=exc_info)
        self.written += 1
        return True


def quiet_loop_errors(loop: asyncio.AbstractEventLoop, limiter: RateLimitedLog) -> None:
    """Report the loop's errors (``socket.accept() out of system resource`` and the like) as one
    rate-limited line each: the reason, never a traceback per occurrence."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")
        exc = context.get("exception")
        line = f"{message}: {exc!r}" if exc is not None else message
        limiter.log(f"loop:{message}", logging.ERROR, line)

    loop.set_exception_handler(handler)


REFUSE_LINGER_S = 0.5  # a refused connection is cut this long after its 503 at the latest


class _Refuse(asyncio.Protocol):
    """A connection over the cap: one ``503``, then the write side is shut (FIN after the answer)
    and whatever the peer sends is discarded until it closes, at most ``REFUSE_LINGER_S``.
    Closing a socket with unread input makes the kernel reset it, which can destroy the 503 before
    the peer reads it (under uvloop the request head has usually arrived by the time the
    connection is accepted); reading it away first lets the answer arrive whole."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not a subclass of asyncio.Transport: no isinstance here)
        transport = cast(asyncio.Transport, base)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        b"Connection: close\r\nRetry-After: 1\r\nContent-Length: "
                        + str(len(self._body)).encode() + b"\r\n\r\n" + self._body)
        try:
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()
            return
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded: the answer is already on its way

    def eof_received(self) -> bool:
        return False  # the peer is done: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Counted(asyncio.Protocol):
    """Forwards every protocol callback to aiohttp's handler; tells the gate when it is gone."""

    __slots__ = ("_gate", "_inner")

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self._inner = inner
        self._gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.open -= 1
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGate:
    """The protocol factory for the listening socket: at most ``cap`` open TCP connections."""

    def __init__(self, make: Callable[[], asyncio.Protocol], cap: int, on_refuse: Callable[[], None]) -> None:
        self._make = make
        self.cap = cap
        self.open = 0
        self.refused = 0
        self._on_refuse = on_refuse
        self._body = (f"the server is at its connection limit ({cap} open connections); "
                      "retry later\n").encode()

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.cap:
            self.refused += 1
            self._on_refuse()
            return _Refuse(self._body)
        self.open += 1
        try:
            return _Counted(self._make(), self)
        except BaseException:
            self.open -= 1
            raise
