"""The application's connection-level callbacks, plain or ``async def``: never silently dropped.

``on_connect``, ``on_disconnect``, ``on_connect_error`` (:class:`~adapters.sdk.connection.Connection`) and
a stream consumer's ``on_error`` may be coroutine functions (or return any awaitable).  The awaitable runs
as a task on the running loop -- it is not awaited where the callback is called, so a slow one never
holds up a reconnect or the consumer's store -- and is kept referenced until it ends.  An exception, from a
plain callback or from the task, is logged (``<name> raised``) and goes no further.  :meth:`Callbacks.drain`
gives the tasks still running a bounded time, then cancels them (``Connection.close`` with
``close_flush_timeout``, ``StreamConsumer.stop`` with ``stop_timeout``): none outlives its owner's end.

Subscription callbacks are different: they hand over rows in order, as each message is routed, so an
``async def`` one is refused when the subscription is made (:class:`~adapters.sdk.session.Subscription`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["Callbacks"]


class Callbacks:
    """Runs callbacks for one owner (a connection, a consumer) and keeps their tasks."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.tasks: set[asyncio.Future[Any]] = set()

    def run(self, what: str, cb: Callable[..., object] | None, *args: object) -> None:
        if cb is None:
            return
        try:
            returned = cb(*args)
        except Exception:
            self.log.exception("%s raised", what)
            return
        if inspect.isawaitable(returned):
            task = asyncio.ensure_future(returned)
            self.tasks.add(task)
            task.add_done_callback(lambda t: self._done(what, t))

    def _done(self, what: str, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("%s raised", what, exc_info=exc)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running callbacks, then cancel those still running -- all
        but the one this is called from (an async ``on_disconnect`` that closes the connection itself)."""
        me = asyncio.current_task()
        pending = [t for t in self.tasks if not t.done() and t is not me]
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=max(timeout, 0.0))
        for t in still:
            t.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
