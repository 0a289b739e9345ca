"""The SDK's exceptions.

Everything the SDK raises for a *remote* outcome derives from :class:`SdkError`:

* :class:`ReducerError` -- the reducer ran and refused (``ReducerResult`` ``Err``); it carries the
  server's error string and, when the string has the module's ``<code>: <json>`` form, the parsed
  :class:`spec.errors.SyncError` (``.code``, ``.details``).  Nothing was written.
* :class:`ReducerInternalError` -- the server could not run the call (``InternalError``: unknown
  reducer, bad arguments, a crash).  Distinct, because it is not the module's answer.
* :class:`CallTimeout` (also a :class:`TimeoutError`) and :class:`ConnectionLost` -- no answer.  The
  call may or may not have run; retry with the same idempotency key.
* :class:`SubscriptionFailed` -- a ``SubscriptionError`` for a query set (``.error`` parsed as above).
* :class:`ConnectError` -- the server refused the connection before the WebSocket opened (HTTP
  status, body); ``.permanent`` tells whether retrying can help.
* :class:`ConnectionClosed` -- the connection was closed by the application.
* :class:`TokenUnavailable` -- the application's token provider raised (a connect attempt fails and is
  retried with backoff; ``on_connect_error`` sees it, its ``__cause__`` is what the provider raised).
* :class:`BacklogTooLarge` -- a stream consumer cannot catch up even in pages: one event is over the
  server's one-message bound, or a rehydrate's window is over it and over the replay budget (ADR-0040).

Caller mistakes (unknown reducer, wrong argument types, using a closed connection) raise
:class:`spec.errors.LocalProtocolError`; malformed server input is a
:class:`spec.errors.RemoteProtocolError` that closes the connection (and reconnects).
"""

from __future__ import annotations

from spec.errors import RemoteProtocolError, SyncError

__all__ = [
    "BacklogTooLarge",
    "CallTimeout",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "ReducerError",
    "ReducerInternalError",
    "SdkError",
    "SubscriptionFailed",
    "TokenUnavailable",
    "parse_error",
]


def parse_error(text: str) -> SyncError | None:
    """The module's ``<code>: <json>`` error, or None for any other text (e.g. from a real SpacetimeDB)."""
    try:
        return SyncError.parse(text)
    except RemoteProtocolError:
        return None


class SdkError(Exception):
    """Base of every remote outcome the SDK raises."""


class ReducerError(SdkError):
    def __init__(self, reducer: str, message: str) -> None:
        super().__init__(f"{reducer}: {message}")
        self.reducer = reducer
        self.message = message
        self.error = parse_error(message)

    @property
    def code(self) -> str | None:
        return None if self.error is None else self.error.code.value


class ReducerInternalError(SdkError):
    def __init__(self, reducer: str, message: str) -> None:
        super().__init__(f"{reducer}: internal error: {message}")
        self.reducer = reducer
        self.message = message


class CallTimeout(SdkError, TimeoutError):
    def __init__(self, reducer: str, timeout: float) -> None:
        super().__init__(f"{reducer}: no result within {timeout} s (the call may still run)")
        self.reducer = reducer
        self.timeout = timeout


class ConnectionLost(SdkError):
    """The connection dropped before an answer arrived."""


class ConnectionClosed(SdkError):
    """The connection was closed for good (by the application, or after a permanent refusal)."""


class SubscriptionFailed(SdkError):
    def __init__(self, query_set_id: int, request_id: int | None, message: str) -> None:
        super().__init__(message)
        self.query_set_id = query_set_id
        self.request_id = request_id
        self.message = message
        self.error = parse_error(message)


class ConnectError(SdkError):
    def __init__(self, status: int | None, message: str, *, permanent: bool) -> None:
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)
        self.status = status
        self.message = message
        self.permanent = permanent


class BacklogTooLarge(SdkError):
    """A :class:`~adapters.sdk.consumer.StreamConsumer` cannot read its backlog even in pages (ADR-0040).

    ``reason`` is ``event_too_large`` (event ``seq`` alone is over the server's ``limit``, e.g.
    ``max_outbound_message_bytes``: no message of this server can carry it) or ``window_over_replay_budget``
    (a rehydrate's window is over one message, and a page of it from ``seq - 1`` is a resume the replay
    budget refuses) or ``backlog_over_max_scan_rows`` (the backlog from ``seq`` is over one message, and the
    server counts each page of it as every event after ``seq - 1`` against ``max_scan_rows``).  None goes
    away by retrying: raise the server's limit, or (the last two) return a watermark of your own from
    ``on_rebootstrap``.  ``details`` are the server's."""

    def __init__(self, stream_id: str, epoch: int, seq: int, reason: str, message: str,
                 details: dict[str, object]) -> None:
        super().__init__(f"{stream_id}: {message}")
        self.stream_id, self.epoch, self.seq, self.reason = stream_id, epoch, seq, reason
        self.details = details


class TokenUnavailable(SdkError):
    """A :class:`~adapters.sdk.connection.Connection`'s token provider raised: this connect attempt fails and
    is retried with backoff (``on_connect_error`` is told); ``__cause__`` is the provider's exception."""
