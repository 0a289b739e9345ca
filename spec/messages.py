"""Protocol messages of the model, abstracted from the bytes.

These mirror SpacetimeDB's v2 ``ClientMessage``/``ServerMessage`` sets closely enough that the
wire adapter is a codec and nothing more: query sets carry client-chosen ids, subscribe/call
carry request ids, updates are grouped by query set and then by table, each table's rows are
split into inserts and deletes, and event-table rows are marked as such.

Every server message in an outbound queue is tagged with the transaction offset of the state it
was derived from (:class:`Outbound`); confirmed-read gating releases it only once that offset is
durable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spec.values import Row

# --- client -> server ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    request_id: int
    query_set_id: int
    queries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    request_id: int
    query_set_id: int
    send_dropped: bool = False  # SpacetimeDB's SendDroppedRows flag: answer with the rows the set held


@dataclass(frozen=True, slots=True)
class CallReducer:
    request_id: int
    reducer: str
    args: tuple[Any, ...]


ClientMessage = Subscribe | Unsubscribe | CallReducer

# --- server -> client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableRows:
    table: str
    inserts: tuple[Row, ...]
    deletes: tuple[Row, ...] = ()
    event: bool = False  # an event table: rows are transient, delivered once


@dataclass(frozen=True, slots=True)
class QuerySetUpdate:
    query_set_id: int
    tables: tuple[TableRows, ...]


@dataclass(frozen=True, slots=True)
class SubscribeApplied:
    request_id: int
    query_set_id: int
    rows: tuple[TableRows, ...]


@dataclass(frozen=True, slots=True)
class UnsubscribeApplied:
    request_id: int
    query_set_id: int
    rows: tuple[TableRows, ...] | None = None  # the set's rows (to delete) when asked with send_dropped


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    request_id: int | None  # None only for errors found while evaluating a later transaction
    query_set_id: int
    error: str


@dataclass(frozen=True, slots=True)
class TransactionUpdate:
    tx_offset: int
    query_sets: tuple[QuerySetUpdate, ...]


@dataclass(frozen=True, slots=True)
class ReducerOk:
    ret: int | None
    query_sets: tuple[QuerySetUpdate, ...]


@dataclass(frozen=True, slots=True)
class ReducerErr:
    error: str
    internal: bool = False  # the server failed, not the call (SpacetimeDB's ``InternalError``): plain text


@dataclass(frozen=True, slots=True)
class ReducerResult:
    request_id: int
    tx_offset: int  # the offset of the transaction (or of the state read, for no-ops and errors)
    outcome: ReducerOk | ReducerErr


@dataclass(frozen=True, slots=True)
class OneOffQueryResult:
    """The answer to a one-off query (SpacetimeDB's ``OneOffQuery``): rows of the one table it
    reads, or the error text.  Not part of the delivery model: nothing subscribes."""

    request_id: int
    result: TableRows | str


ServerMessage = (SubscribeApplied | UnsubscribeApplied | SubscriptionError | TransactionUpdate | ReducerResult
                 | OneOffQueryResult)


@dataclass(frozen=True, slots=True)
class Outbound:
    offset: int  # offset of the state this message was derived from
    message: ServerMessage


# close reasons (WebSocket close code, reason prefix)
CLOSE_PROTOCOL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_POLICY = 1008
SLOW_CONSUMER_REASON = "slow_consumer"
