"""The syncref Python client SDK.  Applications import it as ``syncref`` (ADR-0007; the guide is
docs/clients.md); this package is where it lives in the layer layout.

A SpacetimeDB-compatible client (v2 and v3 BSATN WebSocket protocols) for the sync module, plus the
piece the official SDKs lack: a stream consumer that applies a sync stream exactly once into the
application's SQLite database, resuming and rebootstrapping by the delivery contract.

* :class:`Connection` (:mod:`.connection`) -- connect, reconnect with backoff, subscribe, call
  reducers (typed, with parsed errors);
* :class:`ClientCache` (:mod:`.cache`) -- the refcounted table cache with insert/delete/update callbacks;
* :class:`StreamConsumer` (:mod:`.consumer`) with :class:`CheckpointStore` (:mod:`.checkpoints`) --
  durable, atomic apply with watermark, gap and stale handling, acks; after the server's unclean
  restart it continues into the new epoch without calling ``on_rebootstrap`` when everything it
  applied survived (always, with confirmed reads; ADR-0003);
* :class:`Session` (:mod:`.session`) and :class:`ConsumerCore` -- the sans-I/O cores underneath.

Example::

    async with Connection("http://127.0.0.1:3000", token=token) as conn:
        store = CheckpointStore("app.sqlite")
        def apply(tx, ev):                      # inside the checkpoint's transaction
            tx.execute("INSERT INTO msgs VALUES (?, ?)", (ev.seq, ev.payload))

        def on_rebootstrap(tx, stale):          # drop local state, rehydrate from the authority
            tx.execute("DELETE FROM msgs")
            return None                         # re-read the retained window

        consumer = StreamConsumer(conn, store, "chat.room-1", client_id="laptop",
                                  apply=apply, on_rebootstrap=on_rebootstrap)
        await consumer.start()
        seq = (await conn.call("append_sync_event", "chat.room-1", "k1", '{"text":"hi"}', None, None)).value
        await consumer.wait_for(seq)
"""

from adapters.sdk.backoff import Backoff
from adapters.sdk.cache import ClientCache, TableCache
from adapters.sdk.checkpoints import ApplyResult, Checkpoint, CheckpointStore
from adapters.sdk.connection import V2, V3, ConnectInfo, Connection, DisconnectInfo, ReducerOutcome
from adapters.sdk.consumer import ConsumerCore, Stale, StreamConsumer
from adapters.sdk.errors import (
    BacklogTooLarge,
    CallTimeout,
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    ReducerError,
    ReducerInternalError,
    SdkError,
    SubscriptionFailed,
    TokenUnavailable,
)
from adapters.sdk.rows import DecodedRow, QuerySetChange, TableChange
from adapters.sdk.session import Session, Subscription, SubState

__all__ = [
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
    "ConsumerCore",
    "DecodedRow",
    "DisconnectInfo",
    "QuerySetChange",
    "ReducerError",
    "ReducerInternalError",
    "ReducerOutcome",
    "SdkError",
    "Session",
    "Stale",
    "StreamConsumer",
    "SubState",
    "Subscription",
    "SubscriptionFailed",
    "TableCache",
    "TableChange",
    "TokenUnavailable",
]
