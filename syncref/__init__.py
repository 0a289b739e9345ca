"""syncref for application developers: ``import syncref``.

The public import path of the Python client SDK (ADR-0007).  Everything an application needs to
connect to a syncref (or SpacetimeDB-compatible) server, follow streams and call reducers is
re-exported here under stable names; the implementation stays in ``adapters.sdk`` (the I/O layer)
and the error vocabulary in ``spec.errors``, so the layer layout ``adapters -> reference -> spec``
is untouched: this package sits on top and nothing imports it.

Quick start (docs/clients.md is the guide)::

    import asyncio, syncref

    async def main() -> None:
        async with syncref.Connection("http://127.0.0.1:3000", token=TOKEN) as conn:
            outcome = await conn.call("append_sync_event", "chat.room-1", "msg-1", '{"text":"hi"}', None, None)
            print("appended at seq", outcome.value)

    asyncio.run(main())
"""

from adapters.sdk import (
    V2,
    V3,
    ApplyResult,
    BacklogTooLarge,
    Backoff,
    CallTimeout,
    Checkpoint,
    CheckpointStore,
    ClientCache,
    ConnectError,
    ConnectInfo,
    Connection,
    ConnectionClosed,
    ConnectionLost,
    DecodedRow,
    DisconnectInfo,
    QuerySetChange,
    ReducerError,
    ReducerInternalError,
    ReducerOutcome,
    SdkError,
    Stale,
    StreamConsumer,
    Subscription,
    SubscriptionFailed,
    SubState,
    TableCache,
    TableChange,
    TokenUnavailable,
)
from spec.errors import CLIENT_ACTIONS, ErrorCode, LocalProtocolError, SyncError
from spec.schema import DEFAULT_DATABASE, PROTOCOL_VERSION, SCHEMA_VERSION
from spec.values import SyncEvent, SyncStream

__all__ = [
    "CLIENT_ACTIONS",
    "DEFAULT_DATABASE",
    "PROTOCOL_VERSION",
    "SCHEMA_VERSION",
    "V2",
    "V3",
    "ApplyResult",
    "BacklogTooLarge",
    "Backoff",
    "CallTimeout",
    "Checkpoint",
    "CheckpointStore",
    "ClientCache",
    "ConnectError",
    "ConnectInfo",
    "Connection",
    "ConnectionClosed",
    "ConnectionLost",
    "DecodedRow",
    "DisconnectInfo",
    "ErrorCode",
    "LocalProtocolError",
    "QuerySetChange",
    "ReducerError",
    "ReducerInternalError",
    "ReducerOutcome",
    "SdkError",
    "Stale",
    "StreamConsumer",
    "SubState",
    "Subscription",
    "SubscriptionFailed",
    "SyncError",
    "SyncEvent",
    "SyncStream",
    "TableCache",
    "TableChange",
    "TokenUnavailable",
]
