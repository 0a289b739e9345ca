"""The asyncio adapter: one WebSocket connection to one relay (``websockets``), driven by the core.

:class:`RelaySession` owns a ``websockets`` client connection and a :class:`RelayConnection`.  A
reader task feeds every frame to the core and settles the futures of the calls waiting on it:
:meth:`RelaySession.publish` (the event's verdict) and :meth:`RelaySession.query` (a ``REQ`` read
until ``EOSE``, then ``CLOSE``).  Everything that can go wrong surfaces as one of two exceptions,
each with a one-line message naming the relay:

* :class:`RelayUnavailable` -- the connection could not be opened within ``open_timeout`` (refused,
  DNS, TLS, a server that accepts TCP and never answers the handshake), it dropped, or no answer
  came within the call's timeout;
* :class:`RelayProtocolError` -- the relay sent a frame that is not a NIP-01 relay message.  The
  session then closes the connection (code 1002), since nothing later on it can be trusted.

A session is single-use: once closed, the caller opens a new one (the pool does, with backoff).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from adapters.nostr.connection import (
    Acknowledged,
    AuthRequested,
    ConnectionEvent,
    EventReceived,
    InvalidEventReceived,
    NoticeReceived,
    PublishFailed,
    Rejected,
    RelayConnection,
    StoredEventsEnd,
    SubscriptionEnded,
    check_relay_url,
)
from adapters.nostr.errors import RelayProtocolError, RelayUnavailable, one_line
from adapters.nostr.event import Event
from adapters.nostr.messages import Filter

__all__ = ["MAX_FRAME_BYTES", "QueryResult", "RelaySession"]

log = logging.getLogger("syncref.nostr")

MAX_FRAME_BYTES = 1 << 20  # largest frame accepted from a relay; a bigger one closes the connection (1009)
_MAX_NOTICES = 32
_sub_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What a ``REQ`` returned: verified events, events that failed verification (id, reason), and
    ``closed`` -- the relay's ``CLOSED`` reason if it ended the query before ``EOSE``."""

    events: tuple[Event, ...]
    invalid: tuple[tuple[str, str], ...] = ()
    closed: str | None = None


@dataclass
class _Query:
    done: asyncio.Future[str | None]
    events: list[Event] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return one_line(text, 200)


class RelaySession:
    """One connection to one relay.  Open with :meth:`connect`; close with :meth:`close`."""

    def __init__(self, url: str, ws: ClientConnection) -> None:
        self.url = url
        self.core = RelayConnection(url)
        self._ws = ws
        self._acks: dict[str, asyncio.Future[Acknowledged | Rejected]] = {}
        self._queries: dict[str, _Query] = {}
        self._closed: str | None = None
        self.notices: collections.deque[str] = collections.deque(maxlen=_MAX_NOTICES)  # the latest
        self.notices_seen = 0
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"nostr-relay-reader {url}")

    @classmethod
    async def connect(cls, url: str, *, open_timeout: float = 10.0, ping_interval: float | None = 20.0,
                      max_size: int = MAX_FRAME_BYTES) -> RelaySession:
        check_relay_url(url)
        try:
            ws = await ws_connect(url, open_timeout=open_timeout, ping_interval=ping_interval,
                                  ping_timeout=ping_interval, close_timeout=2.0, max_size=max_size,
                                  user_agent_header="syncref-nostr")
        except TimeoutError:
            raise RelayUnavailable(f"{url}: connect failed: no WebSocket handshake within {open_timeout:g}s") from None
        except (OSError, websockets.exceptions.InvalidHandshake, websockets.exceptions.InvalidURI,
                websockets.exceptions.ConnectionClosed) as exc:
            raise RelayUnavailable(f"{url}: connect failed: {_describe(exc)}") from None
        return cls(url, ws)

    @property
    def closed(self) -> str | None:
        """Why the session ended, or ``None`` while it is usable."""
        return self._closed

    async def publish(self, event: Event, *, timeout: float) -> Acknowledged | Rejected:
        """Send ``event`` and wait for its ``OK``: :class:`Acknowledged` (``OK true`` or
        ``duplicate:``) or :class:`Rejected`; raises :class:`RelayUnavailable` /
        :class:`RelayProtocolError` (after which the session is closed or should be)."""
        self._check_open()
        frame = self.core.publish(event)
        future: asyncio.Future[Acknowledged | Rejected] = asyncio.get_running_loop().create_future()
        self._acks[event.id] = future
        try:
            await self._send(frame, timeout)
        except RelayUnavailable:
            self._acks.pop(event.id, None)
            if future.done():  # failed by _end: retrieved here, raised below
                future.exception()
            future.cancel()
            raise
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._acks.pop(event.id, None)
            future.cancel()  # nobody waits for it any more; the caller drops this session
            raise RelayUnavailable(f"{self.url}: no OK for event {event.id[:16]} within {timeout:g}s") from None

    async def query(self, filters: Sequence[Filter], *, timeout: float,
                    subscription_id: str | None = None) -> QueryResult:
        """``REQ`` until ``EOSE`` (or the relay's ``CLOSED``), then ``CLOSE``; events are verified."""
        self._check_open()
        sub = subscription_id or f"syncref-{next(_sub_ids)}"
        frame = self.core.subscribe(sub, filters)
        query = _Query(asyncio.get_running_loop().create_future())
        self._queries[sub] = query
        try:
            await self._send(frame, timeout)
            closed = await asyncio.wait_for(asyncio.shield(query.done), timeout)
        except TimeoutError:
            query.done.cancel()
            raise RelayUnavailable(f"{self.url}: no EOSE for subscription {sub!r} within {timeout:g}s") from None
        except RelayUnavailable:
            if query.done.done() and not query.done.cancelled():  # failed by _end: retrieved, raised here
                query.done.exception()
            raise
        finally:
            self._queries.pop(sub, None)
        if closed is None and self._closed is None and sub in self.core.subscriptions:
            with contextlib.suppress(RelayUnavailable):
                await self._send(self.core.unsubscribe(sub), timeout)
        return QueryResult(tuple(query.events), tuple(query.invalid), closed)

    async def close(self) -> None:
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def _check_open(self) -> None:
        if self._closed is not None:
            raise RelayUnavailable(f"{self.url}: {self._closed}")

    async def _send(self, frame: str, timeout: float | None = None) -> None:
        """Send one frame; a relay that stops reading its socket makes ``send`` wait for the
        buffers to drain, so past ``timeout`` the session ends (the connection is aborted: part of
        the frame may be out) and :class:`RelayUnavailable` says the relay is not reading."""
        try:
            await asyncio.wait_for(self._ws.send(frame), timeout)
        except websockets.exceptions.ConnectionClosed as exc:
            raise RelayUnavailable(f"{self.url}: connection lost: {_describe(exc)}") from None
        except TimeoutError:
            reason = f"the relay is not reading: a frame could not be sent within {timeout:g}s"
            self._end(reason, None)
            self._ws.transport.abort()
            raise RelayUnavailable(f"{self.url}: {reason}") from None

    async def _read(self) -> None:
        reason = "connection closed"
        error: Exception | None = None
        try:
            async for frame in self._ws:
                try:
                    events = self.core.receive(frame)
                except RelayProtocolError as exc:
                    error = RelayProtocolError(f"{self.url}: protocol error: {exc}")
                    reason = f"protocol error: {exc}"
                    log.warning("relay %s sent garbage, closing: %s", self.url, exc)
                    self._end(reason, error)  # settle the waiters now, not after the close handshake
                    await self._ws.close(1002, "protocol error")
                    return
                for event in events:
                    self._dispatch(event)
                await asyncio.sleep(0)  # frames already buffered do not yield: a flooding relay would hold the loop
            reason = f"connection closed by the relay ({_close_text(self._ws)})"
        except websockets.exceptions.ConnectionClosed as exc:
            reason = f"connection lost: {_describe(exc)}"
        except Exception as exc:  # the socket failed in a way websockets did not wrap
            reason = f"connection failed: {_describe(exc)}"
        finally:
            self._end(reason, error)

    def _end(self, reason: str, error: Exception | None) -> None:
        """Mark the session closed and fail everything waiting on it (idempotent)."""
        if self._closed is not None:
            return
        self._closed = reason
        failure: Exception = error or RelayUnavailable(f"{self.url}: {reason}")
        for event in self.core.connection_lost(reason):
            if isinstance(event, PublishFailed):
                self._settle_ack(event.event_id, failure)
            elif isinstance(event, SubscriptionEnded):
                query = self._queries.get(event.subscription_id)
                if query and not query.done.done():
                    query.done.set_exception(failure)

    def _settle_ack(self, event_id: str, outcome: Acknowledged | Rejected | Exception) -> None:
        future = self._acks.pop(event_id, None)
        if future is None or future.done():
            return
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _dispatch(self, event: ConnectionEvent) -> None:
        if isinstance(event, Acknowledged | Rejected):
            self._settle_ack(event.event_id, event)
        elif isinstance(event, EventReceived | InvalidEventReceived | StoredEventsEnd | SubscriptionEnded):
            query = self._queries.get(event.subscription_id)
            if query is None or query.done.done():
                return
            if isinstance(event, EventReceived):
                query.events.append(event.event)
            elif isinstance(event, InvalidEventReceived):
                log.warning("relay %s served an invalid event: %s", self.url, event.reason)
                query.invalid.append((event.event_id, event.reason))
            elif isinstance(event, StoredEventsEnd):
                query.done.set_result(None)
            else:
                query.done.set_result(event.reason or "closed")
        elif isinstance(event, NoticeReceived):
            self.notices_seen += 1
            if self.notices_seen <= _MAX_NOTICES:  # a flooding relay must not flood the log too
                log.info("relay %s: NOTICE %s%s", self.url, one_line(event.message, 200),
                         " (further NOTICEs on this connection are not logged)"
                         if self.notices_seen == _MAX_NOTICES else "")
            self.notices.append(event.message)
        elif isinstance(event, AuthRequested):
            log.debug("relay %s asked for NIP-42 auth; not supported, ignored", self.url)


def _close_text(ws: ClientConnection) -> str:
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code}" + (f" {one_line(rcvd.reason, 80)!r}" if rcvd.reason else "")
