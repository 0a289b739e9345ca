"""Publishing to several relays at once, each relay isolated from the others and from the caller.

:class:`RelayPool` runs one worker task per relay, each with its own queue, its own connection
(:class:`RelaySession`) and its own backoff.  :meth:`RelayPool.publish` never waits: it puts the
event on every relay's queue and returns a :class:`PublishTicket` at once, whose per-relay
outcomes settle independently.  So a relay that is down, slow, hanging or rejecting delays only
its own queue -- never another relay's, never the caller.

A worker takes one event at a time from its queue and

1. if the relay is *backing off* after a failure, fails the event at once, with the last failure's
   reason and ``retry_after`` (the seconds left), without touching the network;
2. else (re)connects if needed (``open_timeout``) and publishes, waiting ``ack_timeout`` for the
   ``OK``.  ``OK true`` or any ``duplicate:`` answer is ``acked``; any other ``OK false`` is
   ``rejected`` with the relay's reason (the relay is healthy: no backoff, the connection stays);
   a failed connect, a dropped connection, a missing ``OK`` or garbage from the relay is ``failed``
   with a one-line reason: the connection is dropped and the relay backs off.

The backoff is :class:`adapters.sdk.backoff.Backoff` (capped, jittered exponential): after the
``n``-th consecutive failure the relay is left alone for a random time in ``[c(1 - jitter), c]``,
``c = min(cap, base * factor^n)``; one success resets it.  Failing fast while backing off is the
point: the events are not lost -- the caller (the bridge's outbox) keeps them and retries after
``retry_after``.  A queue holds at most ``max_queue`` events; past that, publishing to that relay
fails at once (``queue full``).

Outcomes carry ``latency``: seconds from :meth:`RelayPool.publish` to the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adapters.nostr.client import RelaySession
from adapters.nostr.connection import Acknowledged, check_relay_url
from adapters.nostr.errors import NostrUsageError, RelayProtocolError, RelayUnavailable, one_line
from adapters.nostr.event import Event
from adapters.sdk.backoff import Backoff

__all__ = ["OutcomeStatus", "PoolConfig", "PublishResult", "PublishTicket", "RelayOutcome", "RelayPool",
           "RelayStatus"]

log = logging.getLogger("syncref.nostr")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Per-relay timeouts, backoff and queue bound (defaults are documented in docs/bridge.md)."""

    open_timeout: float = 5.0
    ack_timeout: float = 10.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, cap=60.0, factor=2.0, jitter=0.5))
    max_queue: int = 1000
    ping_interval: float | None = 20.0

    def __post_init__(self) -> None:
        if not self.open_timeout > 0 or not self.ack_timeout > 0:
            raise NostrUsageError("open_timeout and ack_timeout must be positive")
        if self.max_queue < 1:
            raise NostrUsageError("max_queue must be at least 1")


class OutcomeStatus(enum.StrEnum):
    ACKED = "acked"  # OK true, or a duplicate: answer
    REJECTED = "rejected"  # OK false with another reason
    FAILED = "failed"  # no verdict: unreachable, dropped, timed out, garbage, backing off, queue full
    PENDING = "pending"  # not settled yet (only in a result taken before every relay answered)


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    relay: str
    status: OutcomeStatus
    reason: str = ""  # the relay's OK message, or why it failed
    duplicate: bool = False
    retry_after: float | None = None  # FAILED: seconds until this relay is tried again
    latency: float | None = None  # seconds from publish() to this outcome


@dataclass(frozen=True, slots=True)
class PublishResult:
    event_id: str
    outcomes: tuple[RelayOutcome, ...]  # in the pool's relay order

    def _with(self, status: OutcomeStatus) -> tuple[str, ...]:
        return tuple(o.relay for o in self.outcomes if o.status is status)

    @property
    def acked(self) -> tuple[str, ...]:
        """The relays that have the event (``OK true`` or ``duplicate:``)."""
        return self._with(OutcomeStatus.ACKED)

    @property
    def rejected(self) -> tuple[str, ...]:
        return self._with(OutcomeStatus.REJECTED)

    @property
    def failed(self) -> tuple[str, ...]:
        return self._with(OutcomeStatus.FAILED)

    @property
    def pending(self) -> tuple[str, ...]:
        return self._with(OutcomeStatus.PENDING)

    def outcome(self, relay: str) -> RelayOutcome:
        for o in self.outcomes:
            if o.relay == relay:
                return o
        raise NostrUsageError(f"relay {relay!r} is not in this result")


class PublishTicket:
    """The settling outcomes of one :meth:`RelayPool.publish`."""

    def __init__(self, event_id: str, futures: Mapping[str, asyncio.Future[RelayOutcome]]) -> None:
        self.event_id = event_id
        self._futures = dict(futures)

    @property
    def relays(self) -> tuple[str, ...]:
        return tuple(self._futures)

    def result(self) -> PublishResult:
        """The outcomes so far; relays that have not answered are ``pending``."""
        return PublishResult(self.event_id, tuple(
            f.result() if f.done() and not f.cancelled() else RelayOutcome(url, OutcomeStatus.PENDING)
            for url, f in self._futures.items()))

    async def wait(self, timeout: float | None = None) -> PublishResult:
        """Wait until every relay settled, or ``timeout`` seconds (then the rest are ``pending``)."""
        pending = [f for f in self._futures.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return self.result()

    async def outcome(self, relay: str, timeout: float | None = None) -> RelayOutcome:
        """Wait for one relay's outcome (``pending`` if ``timeout`` passes first)."""
        future = self._futures.get(relay)
        if future is None:
            raise NostrUsageError(f"relay {relay!r} is not in this pool")
        await asyncio.wait([future], timeout=timeout)
        return future.result() if future.done() else RelayOutcome(relay, OutcomeStatus.PENDING)


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """A snapshot of one relay's worker (for logs and metrics)."""

    relay: str
    connected: bool
    queued: int
    consecutive_failures: int
    retry_in: float  # seconds until the relay is tried again (0 when not backing off)
    last_error: str
    acked: int
    rejected: int
    failed: int


@dataclass
class _Job:
    event: Event
    future: asyncio.Future[RelayOutcome]
    started: float


class _RelayWorker:
    def __init__(self, url: str, config: PoolConfig, clock: Callable[[], float]) -> None:
        self.url = url
        self.config = config
        self.clock = clock
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.session: RelaySession | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.counts = {OutcomeStatus.ACKED: 0, OutcomeStatus.REJECTED: 0, OutcomeStatus.FAILED: 0}
        self.task: asyncio.Task[None] | None = None

    def submit(self, job: _Job) -> None:
        if self.queue.qsize() >= self.config.max_queue:
            self._settle(job, OutcomeStatus.FAILED, f"queue full ({self.config.max_queue} events waiting)",
                         retry_after=max(0.0, self.retry_at - self.clock()) or self.config.backoff.base)
            return
        self.queue.put_nowait(job)

    def _settle(self, job: _Job, status: OutcomeStatus, reason: str = "", *, duplicate: bool = False,
                retry_after: float | None = None) -> None:
        if job.future.done():
            return
        self.counts[status] += 1
        job.future.set_result(RelayOutcome(self.url, status, one_line(reason), duplicate, retry_after,
                                           self.clock() - job.started))

    def _failed(self, reason: str) -> float:
        delay = self.config.backoff.delay(self.failures)
        self.failures += 1
        self.retry_at = self.clock() + delay
        self.last_error = one_line(reason)
        log.warning("relay %s failed (%d in a row), retrying in %.2fs: %s", self.url, self.failures, delay, reason)
        return delay

    async def _drop_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), 5.0)

    async def _ensure_session(self) -> RelaySession:
        if self.session is not None and self.session.closed is None:
            return self.session
        await self._drop_session()
        self.session = await RelaySession.connect(self.url, open_timeout=self.config.open_timeout,
                                                  ping_interval=self.config.ping_interval)
        log.info("relay %s connected", self.url)
        return self.session

    async def run(self) -> None:
        # Connect eagerly so the first event does not pay for the handshake; a failure only backs off.
        try:
            await self._ensure_session()
        except RelayUnavailable as exc:
            self._failed(str(exc))
        while True:
            job = await self.queue.get()
            try:
                await self._publish(job)
            except asyncio.CancelledError:
                self._settle(job, OutcomeStatus.FAILED, f"{self.url}: the pool closed")
                raise
            except Exception as exc:  # a bug here must not stop this relay's queue for good
                log.exception("relay %s: unexpected error while publishing", self.url)
                await self._drop_session()
                reason = f"{self.url}: internal error: {type(exc).__name__}: {exc}"
                self._settle(job, OutcomeStatus.FAILED, reason, retry_after=self._failed(reason))

    async def _publish(self, job: _Job) -> None:
        if job.future.done():
            return
        wait = self.retry_at - self.clock()
        if wait > 0:
            self._settle(job, OutcomeStatus.FAILED, f"{self.last_error} (backing off)", retry_after=wait)
            return
        try:
            session = await self._ensure_session()
            verdict = await session.publish(job.event, timeout=self.config.ack_timeout)
        except (RelayUnavailable, RelayProtocolError) as exc:
            await self._drop_session()
            self._settle(job, OutcomeStatus.FAILED, str(exc), retry_after=self._failed(str(exc)))
            return
        self.failures = 0
        self.retry_at = 0.0
        if isinstance(verdict, Acknowledged):
            self._settle(job, OutcomeStatus.ACKED, verdict.message, duplicate=verdict.duplicate)
        else:
            self._settle(job, OutcomeStatus.REJECTED, verdict.message)

    def status(self) -> RelayStatus:
        return RelayStatus(self.url, self.session is not None and self.session.closed is None, self.queue.qsize(),
                           self.failures, max(0.0, self.retry_at - self.clock()), self.last_error,
                           self.counts[OutcomeStatus.ACKED], self.counts[OutcomeStatus.REJECTED],
                           self.counts[OutcomeStatus.FAILED])

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        while not self.queue.empty():
            self._settle(self.queue.get_nowait(), OutcomeStatus.FAILED, f"{self.url}: the pool closed")
        await self._drop_session()


class RelayPool:
    """Publish events to several relays, each isolated (see the module essay).

    Use as ``async with RelayPool(urls) as pool: ticket = pool.publish(event)``."""

    def __init__(self, relays: Sequence[str], config: PoolConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(relays, str) or not relays:
            raise NostrUsageError("a relay pool needs at least one relay URL")
        urls = [check_relay_url(url) for url in relays]
        duplicates = sorted({url for url in urls if urls.count(url) > 1})
        if duplicates:
            raise NostrUsageError(f"relay URL listed twice: {duplicates[0]}")
        self.config = config or PoolConfig()
        self._clock = clock
        self._workers = {url: _RelayWorker(url, self.config, clock) for url in urls}
        self._started = False
        self._closed = False

    @property
    def relays(self) -> tuple[str, ...]:
        return tuple(self._workers)

    async def start(self) -> None:
        if self._started:
            raise NostrUsageError("the relay pool is already started")
        self._started = True
        for url, worker in self._workers.items():
            worker.task = asyncio.get_running_loop().create_task(worker.run(), name=f"nostr-relay-worker {url}")

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(w.close() for w in self._workers.values()))

    async def __aenter__(self) -> RelayPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def publish(self, event: Event, relays: Sequence[str] | None = None) -> PublishTicket:
        """Queue ``event`` for every relay (or only those of ``relays``, in pool order) and return at once."""
        if not self._started or self._closed:
            raise NostrUsageError("publish needs a started, open relay pool")
        if not isinstance(event, Event):
            raise NostrUsageError(f"publish needs an Event, got {type(event).__name__}")
        if relays is not None:
            unknown = sorted(set(relays) - set(self._workers))
            if unknown or isinstance(relays, str):
                raise NostrUsageError(f"relay {unknown[0] if unknown else relays!r} is not in this pool")
        loop = asyncio.get_running_loop()
        now = self._clock()
        futures: dict[str, asyncio.Future[RelayOutcome]] = {}
        for url, worker in self._workers.items():
            if relays is not None and url not in relays:
                continue
            future: asyncio.Future[RelayOutcome] = loop.create_future()
            futures[url] = future
            worker.submit(_Job(event, future, now))
        return PublishTicket(event.id, futures)

    def status(self) -> tuple[RelayStatus, ...]:
        return tuple(w.status() for w in self._workers.values())
