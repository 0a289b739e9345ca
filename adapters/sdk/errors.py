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

Caller mistakes (unknown reducer, wrong argument types, using a closed connection) raise
:class:`spec.errors.LocalProtocolError`; malformed server input is a
:class:`spec.errors.RemoteProtocolError` that closes the connection (and reconnects).
"""

from __future__ import annotations

from spec.errors import RemoteProtocolError, SyncError

__all__ = [
    "CallTimeout",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "ReducerError",
    "ReducerInternalError",
    "SdkError",
    "SubscriptionFailed",
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
