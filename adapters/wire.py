"""SpacetimeDB's v2 WebSocket messages, byte for byte, with v3 framing and the model translation.

The dataclasses below copy the field order and sum tags of upstream
``crates/client-api-messages/src/websocket/{common,v2}.rs`` (BSATN ignores names, so order *is*
the format).  Two things are easy to get wrong and are pinned by golden tests:
``PersistentTableRows`` puts inserts *before* deletes (v1 had the opposite), and
``ProcedureResult`` puts ``request_id`` *last*.  ``QuerySetId`` is a one-field product, so on
the wire it is a plain u32; ``CallReducer``/``CallProcedure`` flags are a u8 that must be 0.

Frames.  A client frame is the bare BSATN of one ``ClientMessage`` (v2) or of one or more
concatenated messages (v3); it is never compressed.  A server frame is a compression tag
(0 none, 1 brotli, 2 gzip) followed by the body, which is one ``ServerMessage`` (v2) or one or
more concatenated ones (v3).  As upstream, a body is compressed only when it is longer than
1024 bytes (brotli quality 1, gzip level 1), and v3 coalesces consecutive messages up to a
512 KiB uncompressed soft cap (:func:`batch_v3`).  Decompression is bounded (``max_size``) so
a small frame cannot expand without limit.

Row lists (``BsatnRowList``) carry rows as one byte string plus a size hint.  :meth:`RowList.of`
builds the hint the way upstream's ``BsatnRowListBuilder`` does for rows without a static size:
``RowOffsets(())`` when empty, ``FixedSize(n)`` when every row has the same nonzero length
``n`` that fits a u16, else the start offset of each row.  Decoding checks the hint against the
data, so a decoded row list always splits cleanly.

Decoding is strict: any malformed input raises :class:`adapters.bsatn.BsatnError` (a
``RemoteProtocolError``) and nothing else, and a single-message decode rejects trailing bytes.
Given ``max_queries`` (the server's ``max_queries_per_connection``), a ``Subscribe`` with more
query texts decodes to :class:`OverlongSubscribe` without its texts: the count is all the answer
needs, and decoding a frame of short texts first built ~10x the frame in ``str`` objects.  The
bound is per message: a v3 frame of many ``Subscribe`` s at the bound decodes all their texts, and
what bounds those is the caller's ``max_messages`` (the server's inbound queue room).  Stepping
over skipped texts still costs a Python step per length (~65 ns): a 32 MiB ``Subscribe`` of 8.4M
empty texts held the event loop ~0.5-2 s.  So a ``Subscribe`` over ``max_queries`` that declares
more than :data:`SKIP_MOST_QUERIES` texts is malformed (:class:`adapters.bsatn.BsatnError`, the
server closes 1011) before any length is read: no client needs that many texts in one message.

Translation.  :func:`to_wire` turns the model's server messages (:mod:`spec.messages`) into
these, encoding rows with :mod:`adapters.bsatn`: a snapshot table becomes one
``SingleTableRows``; an update table becomes one ``TableUpdate`` with a single rows entry,
``EventTableRows`` for event tables and ``PersistentTableRows`` otherwise; a reducer's return
value is its BSATN u64 (empty for none) and its error is a BSATN ``String``.  A
:class:`RowCache` lets a fan-out encode each row once.  :func:`from_wire` goes the other way
for client messages; :func:`server_from_wire` and :func:`decode_rows` serve client code.
"""

from __future__ import annotations

import contextlib
import enum
import gzip
import operator
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, overload

import brotli

import spec.messages as sm
from adapters.bsatn import (
    BsatnError,
    Reader,
    Writer,
    column_rows_size,
    decode_args,
    decode_row,
    encode_event_runs,
    encode_row,
    encode_sync_event,
    is_column_rows,
    row_size,
    sync_event_size,
)
from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import REDUCER_BY_NAME
from spec.values import Row, SyncEvent

# --- row lists --------------------------------------------------------------------------------

U16_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class FixedSize:
    """Every row is ``size`` bytes (a u16)."""

    size: int


@dataclass(frozen=True, slots=True)
class RowOffsets:
    """The start offset of each row (u64s); a row ends where the next starts, or at the end."""

    offsets: tuple[int, ...]


RowSizeHint = FixedSize | RowOffsets


def _split(hint: RowSizeHint, data: bytes) -> list[bytes]:
    if isinstance(hint, FixedSize):
        size = hint.size
        if size == 0:
            if data:
                raise BsatnError(f"row list: FixedSize(0) with {len(data)} bytes of rows_data")
            return []
        if len(data) % size:
            raise BsatnError(f"row list: rows_data length {len(data)} is not a multiple of FixedSize({size})")
        return [data[i:i + size] for i in range(0, len(data), size)]
    offsets = hint.offsets
    if not offsets:
        if data:
            raise BsatnError(f"row list: {len(data)} bytes of rows_data but no row offsets")
        return []
    if offsets[0] != 0:
        raise BsatnError(f"row list: first row offset is {offsets[0]}, must be 0")
    ends = (*offsets[1:], len(data))
    if not any(map(operator.gt, offsets, ends)):  # the common case, checked in one pass
        return [data[start:end] for start, end in zip(offsets, ends, strict=True)]
    return _misplaced(offsets, ends, data)


def _check_split(hint: RowSizeHint, data: bytes) -> None:
    """Raise what :func:`_split` raises for a hint that does not fit ``data``, without cutting the
    rows out (a decoder checks the list and keeps it whole: a client counts or reads its rows later)."""
    if isinstance(hint, FixedSize):
        size = hint.size
        if (not len(data) % size) if size else not data:
            return
        _split(hint, data)  # raises
        return
    offsets = hint.offsets
    if offsets and offsets[0] == 0:
        if not any(map(operator.gt, offsets, (*offsets[1:], len(data)))):
            return
    elif not offsets and not data:
        return
    _split(hint, data)  # raises


def _misplaced(offsets: tuple[int, ...], ends: tuple[int, ...], data: bytes) -> list[bytes]:
    rows = []
    for i, (start, end) in enumerate(zip(offsets, ends, strict=True)):  # name the first one out of place
        if end < start or end > len(data):
            raise BsatnError(f"row list: row offset {i + 1} ({end}) is not within {start}..{len(data)}")
        rows.append(data[start:end])
    return rows


@dataclass(frozen=True, slots=True)
class RowList:
    """``BsatnRowList``: a size hint and the concatenated row bytes."""

    size_hint: RowSizeHint
    rows_data: bytes

    @staticmethod
    def of(rows: Sequence[bytes]) -> RowList:
        """Pack encoded rows with upstream's size-hint rule."""
        if not rows:
            return EMPTY_ROWS
        first = len(rows[0])
        data = b"".join(rows)
        if 0 < first <= U16_MAX and len(data) == first * len(rows) and all(len(r) == first for r in rows):
            return RowList(FixedSize(first), data)
        offsets = []
        pos = 0
        for r in rows:
            offsets.append(pos)
            pos += len(r)
        return RowList(RowOffsets(tuple(offsets)), data)

    @staticmethod
    def joined(data: bytes, lengths: Sequence[int]) -> RowList:
        """``RowList.of`` of the rows lying back to back in ``data``, ``lengths[i]`` bytes each
        (the same list, without splitting the rows out)."""
        if not lengths:
            return EMPTY_ROWS
        return RowList(_hint(lengths, len(data)), data)

    def count(self) -> int:
        """How many rows the hint gives (``len(self.rows())`` for a list that decoded; this does
        not check that the rows fit the data, :meth:`rows` and the decoder do)."""
        hint = self.size_hint
        if isinstance(hint, FixedSize):
            return len(self.rows_data) // hint.size if hint.size else 0
        return len(hint.offsets)

    def rows(self) -> list[bytes]:
        """The encoded rows; a hint that does not fit the data raises :class:`BsatnError`."""
        return _split(self.size_hint, self.rows_data)


EMPTY_ROWS = RowList(RowOffsets(()), b"")

_ROWS_DATA_SLOT = RowList.__dict__["rows_data"]  # the dataclass's slot, under the property below
PIECES_MIN = 65536  # row data this large is kept as its pieces (as _PartsWriter keeps a large value)


class RowPieces(RowList):
    """A :class:`RowList` whose rows lie in ``pieces`` back to back (a replay's chunk bytes from
    the run cache): the same value as ``RowList(size_hint, b"".join(pieces))`` -- equal to it
    both ways, the same hash, repr and rows, a copy or pickle is that plain ``RowList`` -- but the
    join happens only when ``rows_data`` is read.  The server's encoder never reads it: the
    pieces go into the body as parts (:class:`_PartsWriter`), so a full replay's megabytes are not
    copied into one fresh block (ADR-0024; ADR-0020's addendum left this copy)."""

    __slots__ = ("pieces", "total")
    pieces: tuple[bytes, ...]
    total: int

    def __init__(self, size_hint: RowSizeHint, pieces: Sequence[bytes], total: int) -> None:
        object.__setattr__(self, "size_hint", size_hint)
        object.__setattr__(self, "pieces", tuple(pieces))
        object.__setattr__(self, "total", total)

    @property
    def rows_data(self) -> bytes:
        try:
            data: bytes = _ROWS_DATA_SLOT.__get__(self, RowPieces)
        except AttributeError:
            data = b"".join(self.pieces)
            _ROWS_DATA_SLOT.__set__(self, data)
        return data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowList):
            return self.size_hint == other.size_hint and self.rows_data == other.rows_data
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.size_hint, self.rows_data))

    def __reduce__(self) -> tuple[type[RowList], tuple[RowSizeHint, bytes]]:
        return RowList, (self.size_hint, self.rows_data)


def rows_from_pieces(pieces: Sequence[bytes], lengths: Sequence[int]) -> RowList:
    """``RowList.joined(b"".join(pieces), lengths)``, with the pieces kept as they are when
    there are several and they hold at least :data:`PIECES_MIN` bytes (a :class:`RowPieces`)."""
    total = sum(lengths)
    if len(pieces) < 2 or total < PIECES_MIN:
        return RowList.joined(b"".join(pieces), lengths)
    return RowPieces(_hint(lengths, total), pieces, total)


def _hint(lengths: Sequence[int], total: int) -> RowSizeHint:
    """Upstream's size-hint rule for rows of these lengths, ``total`` bytes in all."""
    first = lengths[0]
    if 0 < first <= U16_MAX and total == first * len(lengths) and lengths.count(first) == len(lengths):
        return FixedSize(first)
    return RowOffsets(tuple(accumulate(lengths[:-1], initial=0)))

# --- client messages (ClientMessage, tags 0..4) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    request_id: int
    query_set_id: int
    query_strings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    request_id: int
    query_set_id: int
    send_dropped_rows: bool = False  # UnsubscribeFlags: 0 Default, 1 SendDroppedRows


@dataclass(frozen=True, slots=True)
class OneOffQuery:
    request_id: int
    query_string: str


@dataclass(frozen=True, slots=True)
class CallReducer:
    request_id: int
    flags: int
    reducer: str
    args: bytes


@dataclass(frozen=True, slots=True)
class CallProcedure:
    request_id: int
    flags: int
    procedure: str
    args: bytes


ClientMessage = Subscribe | Unsubscribe | OneOffQuery | CallReducer | CallProcedure


@dataclass(frozen=True, slots=True)
class OverlongSubscribe:
    """What the decoder makes of a ``Subscribe`` with more than its ``max_queries`` query texts:
    the ids and the count, the texts skipped undecoded (their lengths are checked, so a frame
    splits as ever; their UTF-8 is not).  Not a wire message: a receiver answers it as it answers
    a ``Subscribe`` of that many texts.  Without it, a 32 MiB frame of short texts built ~10x its
    size in ``str`` objects before the server's count check could refuse them."""

    request_id: int
    query_set_id: int
    count: int


Received = ClientMessage | OverlongSubscribe  # what a decoder given ``max_queries`` returns
SKIP_MOST_QUERIES = 1024  # an over-bound Subscribe declaring more texts is malformed, not stepped over


def _too_many_to_skip(count: int, max_queries: int) -> BsatnError:
    # (short: a close reason holds 123 bytes, "malformed message: " included)
    return BsatnError(f"a Subscribe of {count} query texts: over max_queries_per_connection ({max_queries}) "
                      f"and the {SKIP_MOST_QUERIES} a decoder skips")

# --- server messages (ServerMessage, tags 0..7) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SingleTableRows:
    table: str
    rows: RowList


@dataclass(frozen=True, slots=True)
class QueryRows:
    tables: tuple[SingleTableRows, ...]


@dataclass(frozen=True, slots=True)
class PersistentTableRows:
    inserts: RowList
    deletes: RowList


@dataclass(frozen=True, slots=True)
class EventTableRows:
    events: RowList


TableUpdateRows = PersistentTableRows | EventTableRows


@dataclass(frozen=True, slots=True)
class TableUpdate:
    table_name: str
    rows: tuple[TableUpdateRows, ...]


@dataclass(frozen=True, slots=True)
class QuerySetUpdate:
    query_set_id: int
    tables: tuple[TableUpdate, ...]


@dataclass(frozen=True, slots=True)
class InitialConnection:
    identity: str  # 64-char big-endian hex; 32 little-endian bytes on the wire
    connection_id: int  # u128
    token: str


@dataclass(frozen=True, slots=True)
class SubscribeApplied:
    request_id: int
    query_set_id: int
    rows: QueryRows


@dataclass(frozen=True, slots=True)
class UnsubscribeApplied:
    request_id: int
    query_set_id: int
    rows: QueryRows | None


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    request_id: int | None
    query_set_id: int
    error: str


@dataclass(frozen=True, slots=True)
class TransactionUpdate:
    query_sets: tuple[QuerySetUpdate, ...]


@dataclass(frozen=True, slots=True)
class OneOffQueryResult:
    request_id: int
    result: QueryRows | str  # Result: ok = 0 (QueryRows), err = 1 (String)


@dataclass(frozen=True, slots=True)
class ReducerOk:
    ret_value: bytes
    transaction_update: TransactionUpdate


@dataclass(frozen=True, slots=True)
class ReducerOkEmpty:
    pass


@dataclass(frozen=True, slots=True)
class ReducerErr:
    error: bytes  # BSATN of the reducer's error value (a String here)


@dataclass(frozen=True, slots=True)
class ReducerInternalError:
    message: str


ReducerOutcome = ReducerOk | ReducerOkEmpty | ReducerErr | ReducerInternalError


@dataclass(frozen=True, slots=True)
class ReducerResult:
    request_id: int
    timestamp: int  # µs since the Unix epoch
    outcome: ReducerOutcome


@dataclass(frozen=True, slots=True)
class ProcedureReturned:
    value: bytes


@dataclass(frozen=True, slots=True)
class ProcedureInternalError:
    message: str


ProcedureStatus = ProcedureReturned | ProcedureInternalError


@dataclass(frozen=True, slots=True)
class ProcedureResult:
    status: ProcedureStatus
    timestamp: int
    total_host_execution_duration: int  # TimeDuration, µs
    request_id: int  # last on the wire


ServerMessage = (InitialConnection | SubscribeApplied | UnsubscribeApplied | SubscriptionError | TransactionUpdate
                 | OneOffQueryResult | ReducerResult | ProcedureResult)

# --- encoding ---------------------------------------------------------------------------------


def _w_rowlist(w: Writer, rl: RowList) -> None:
    hint = rl.size_hint
    if isinstance(hint, FixedSize):
        w.u8(0)
        w.u16(hint.size)
    else:
        w.u8(1)
        w.u32(len(hint.offsets))
        packed = None
        if set(map(type, hint.offsets)) <= {int}:
            with contextlib.suppress(struct.error):  # a value past u64: the loop below names it
                packed = struct.pack(f"<{len(hint.offsets)}Q", *hint.offsets)  # one call for a replay's 20,000
        if packed is None:
            for o in hint.offsets:
                w.u64(o)  # raises the writer's error for the value that is not a u64
        else:
            w.raw(packed)
    if type(rl) is RowPieces and isinstance(w, _PartsWriter):
        w.pieces(rl.pieces, rl.total)  # kept as parts, not joined (ADR-0024)
    else:
        w.bytes_(rl.rows_data)


def _w_query_rows(w: Writer, qr: QueryRows) -> None:
    w.u32(len(qr.tables))
    for t in qr.tables:
        w.string(t.table)
        _w_rowlist(w, t.rows)


def _w_tx_update(w: Writer, tu: TransactionUpdate) -> None:
    w.u32(len(tu.query_sets))
    for qs in tu.query_sets:
        w.u32(qs.query_set_id)
        w.u32(len(qs.tables))
        for t in qs.tables:
            w.string(t.table_name)
            w.u32(len(t.rows))
            for rows in t.rows:
                if isinstance(rows, PersistentTableRows):
                    w.u8(0)
                    _w_rowlist(w, rows.inserts)
                    _w_rowlist(w, rows.deletes)
                elif isinstance(rows, EventTableRows):
                    w.u8(1)
                    _w_rowlist(w, rows.events)
                else:
                    raise LocalProtocolError(f"not a TableUpdateRows: {rows!r:.80}")


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise LocalProtocolError(f"{what} must be a bool, got {value!r:.80}")
    return value


def encode_client(msg: ClientMessage) -> bytes:
    """The BSATN of one client message (a whole v2 frame)."""
    w = Writer()
    if isinstance(msg, Subscribe):
        w.u8(0)
        w.u32(msg.request_id)
        w.u32(msg.query_set_id)
        w.u32(len(msg.query_strings))
        for q in msg.query_strings:
            w.string(q)
    elif isinstance(msg, Unsubscribe):
        w.u8(1)
        w.u32(msg.request_id)
        w.u32(msg.query_set_id)
        w.u8(1 if _bool(msg.send_dropped_rows, "send_dropped_rows") else 0)
    elif isinstance(msg, OneOffQuery):
        w.u8(2)
        w.u32(msg.request_id)
        w.string(msg.query_string)
    elif isinstance(msg, CallReducer | CallProcedure):
        w.u8(3 if isinstance(msg, CallReducer) else 4)
        w.u32(msg.request_id)
        w.u8(msg.flags)
        w.string(msg.reducer if isinstance(msg, CallReducer) else msg.procedure)
        w.bytes_(msg.args)
    else:
        raise LocalProtocolError(f"not a wire ClientMessage: {msg!r:.80}")
    return w.getvalue()


class _PartsWriter(Writer):
    """A :class:`Writer` that keeps large ``bytes`` values (a replay's megabytes of rows) as parts
    and joins everything once at the end, instead of copying them into its buffer and then out."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def __len__(self) -> int:
        return sum(map(len, self._parts)) + super().__len__()

    def bytes_(self, value: bytes) -> None:
        if len(value) < 65536 or not isinstance(value, bytes):
            super().bytes_(value)
            return
        self.u32(len(value))
        self._parts += (super().getvalue(), value)
        self._buf = bytearray()

    def pieces(self, pieces: Sequence[bytes], total: int) -> None:
        """``bytes_(b"".join(pieces))`` (``total``: their length), the pieces kept as parts."""
        self.u32(total)
        self._parts += (super().getvalue(), *pieces)
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return b"".join((*self._parts, self._buf)) if self._parts else super().getvalue()

    def parts(self) -> list[bytes]:
        """The buffer so far as parts whose concatenation is :meth:`getvalue` (nothing large copied)."""
        return [*self._parts, super().getvalue()] if self._parts else [super().getvalue()]


def encode_server(msg: ServerMessage) -> bytes:
    """The BSATN of one server message (a frame body, before the compression tag)."""
    return _write_server(msg).getvalue()


def encode_server_parts(msg: ServerMessage) -> list[bytes]:
    """:func:`encode_server` as parts, never empty, whose concatenation is its bytes: a
    ``SubscribeApplied``'s (``UnsubscribeApplied``'s, ``OneOffQueryResult``'s) row data over 64
    KiB stays the object it was built as, so a replay's megabytes reach the socket without being
    copied (ADR-0020 addendum, ADR-0043); any other message is one part."""
    w = _write_server(msg)
    return w.parts() if isinstance(w, _PartsWriter) else [w.getvalue()]


def _write_server(msg: ServerMessage) -> Writer:
    w = _PartsWriter() if isinstance(msg, SubscribeApplied | UnsubscribeApplied | OneOffQueryResult) else Writer()
    if isinstance(msg, InitialConnection):
        w.u8(0)
        w.identity(msg.identity)
        w.connection_id(msg.connection_id)
        w.string(msg.token)
    elif isinstance(msg, SubscribeApplied):
        w.u8(1)
        w.u32(msg.request_id)
        w.u32(msg.query_set_id)
        _w_query_rows(w, msg.rows)
    elif isinstance(msg, UnsubscribeApplied):
        w.u8(2)
        w.u32(msg.request_id)
        w.u32(msg.query_set_id)
        if msg.rows is None:
            w.u8(1)
        else:
            w.u8(0)
            _w_query_rows(w, msg.rows)
    elif isinstance(msg, SubscriptionError):
        w.u8(3)
        if msg.request_id is None:
            w.u8(1)
        else:
            w.u8(0)
            w.u32(msg.request_id)
        w.u32(msg.query_set_id)
        w.string(msg.error)
    elif isinstance(msg, TransactionUpdate):
        w.u8(4)
        _w_tx_update(w, msg)
    elif isinstance(msg, OneOffQueryResult):
        w.u8(5)
        w.u32(msg.request_id)
        if isinstance(msg.result, str):
            w.u8(1)
            w.string(msg.result)
        else:
            w.u8(0)
            _w_query_rows(w, msg.result)
    elif isinstance(msg, ReducerResult):
        w.u8(6)
        w.u32(msg.request_id)
        w.timestamp(msg.timestamp)
        _w_outcome(w, msg.outcome)
    elif isinstance(msg, ProcedureResult):
        w.u8(7)
        if isinstance(msg.status, ProcedureReturned):
            w.u8(0)
            w.bytes_(msg.status.value)
        else:
            w.u8(1)
            w.string(msg.status.message)
        w.timestamp(msg.timestamp)
        w.i64(msg.total_host_execution_duration)
        w.u32(msg.request_id)
    else:
        raise LocalProtocolError(f"not a wire ServerMessage: {msg!r:.80}")
    return w


def _w_outcome(w: Writer, outcome: ReducerOutcome) -> None:
    if isinstance(outcome, ReducerOk):
        w.u8(0)
        w.bytes_(outcome.ret_value)
        _w_tx_update(w, outcome.transaction_update)
    elif isinstance(outcome, ReducerOkEmpty):
        w.u8(1)
    elif isinstance(outcome, ReducerErr):
        w.u8(2)
        w.bytes_(outcome.error)
    elif isinstance(outcome, ReducerInternalError):
        w.u8(3)
        w.string(outcome.message)
    else:
        raise LocalProtocolError(f"not a ReducerOutcome: {outcome!r:.80}")


# --- decoding ---------------------------------------------------------------------------------


def _r_rowlist(r: Reader, what: str) -> RowList:
    hint: RowSizeHint
    if r.tag("RowSizeHint", 2) == 0:
        hint = FixedSize(r.u16(f"{what} FixedSize"))
    else:
        n = r.length(f"{what} RowOffsets", 8)
        hint = RowOffsets(struct.unpack(f"<{n}Q", r.raw(8 * n)))
    data = r.bytes_(f"{what} rows_data")
    rl = RowList(hint, data)
    try:
        _check_split(hint, data)
    except BsatnError as exc:
        raise BsatnError(f"{what} before offset {r.offset}: {exc}") from None
    return rl


def _r_query_rows(r: Reader) -> QueryRows:
    n = r.length("QueryRows.tables", 4 + 1 + 4)
    return QueryRows(tuple(SingleTableRows(r.string("table"), _r_rowlist(r, "rows")) for _ in range(n)))


def _r_table_update_rows(r: Reader) -> TableUpdateRows:
    if r.tag("TableUpdateRows", 2) == 0:
        return PersistentTableRows(_r_rowlist(r, "inserts"), _r_rowlist(r, "deletes"))
    return EventTableRows(_r_rowlist(r, "events"))


def _r_tx_update(r: Reader) -> TransactionUpdate:
    sets = []
    for _ in range(r.length("TransactionUpdate.query_sets", 8)):
        qsid = r.u32("query_set_id")
        tables = []
        for _ in range(r.length("QuerySetUpdate.tables", 8)):
            name = r.string("table_name")
            rows = tuple(_r_table_update_rows(r) for _ in range(r.length("TableUpdate.rows", 1)))
            tables.append(TableUpdate(name, rows))
        sets.append(QuerySetUpdate(qsid, tuple(tables)))
    return TransactionUpdate(tuple(sets))


def _r_flags(r: Reader, kind: str) -> int:
    pos = r.offset
    flags = r.u8(f"{kind} flags")
    if flags != 0:
        raise BsatnError(f"invalid {kind} flag {flags} at offset {pos}")
    return flags


def _r_client(r: Reader, max_queries: int | None = None) -> Received:
    tag = r.tag("ClientMessage", 5)
    if tag == 0:
        rid, qsid = r.u32("request_id"), r.u32("query_set_id")
        count = r.length("query_strings", 4)
        if max_queries is not None and count > max_queries:
            if count > SKIP_MOST_QUERIES:
                raise _too_many_to_skip(count, max_queries)
            for _ in range(count):
                r.skip_bytes("query", "String")
            return OverlongSubscribe(rid, qsid, count)
        return Subscribe(rid, qsid, tuple(r.string("query") for _ in range(count)))
    if tag == 1:
        rid, qsid = r.u32("request_id"), r.u32("query_set_id")
        return Unsubscribe(rid, qsid, r.tag("UnsubscribeFlags", 2) == 1)
    if tag == 2:
        return OneOffQuery(r.u32("request_id"), r.string("query_string"))
    rid = r.u32("request_id")
    if tag == 3:
        flags = _r_flags(r, "call reducer")
        return CallReducer(rid, flags, r.string("reducer"), r.bytes_("args"))
    flags = _r_flags(r, "call procedure")
    return CallProcedure(rid, flags, r.string("procedure"), r.bytes_("args"))


def _r_outcome(r: Reader) -> ReducerOutcome:
    tag = r.tag("ReducerOutcome", 4)
    if tag == 0:
        return ReducerOk(r.bytes_("ret_value"), _r_tx_update(r))
    if tag == 1:
        return ReducerOkEmpty()
    if tag == 2:
        return ReducerErr(r.bytes_("error"))
    return ReducerInternalError(r.string("message"))


def _r_server(r: Reader) -> ServerMessage:
    tag = r.tag("ServerMessage", 8)
    if tag == 0:
        return InitialConnection(r.identity(), r.connection_id(), r.string("token"))
    if tag == 1:
        rid, qsid = r.u32("request_id"), r.u32("query_set_id")
        return SubscribeApplied(rid, qsid, _r_query_rows(r))
    if tag == 2:
        rid, qsid = r.u32("request_id"), r.u32("query_set_id")
        return UnsubscribeApplied(rid, qsid, _r_query_rows(r) if r.tag("Option<QueryRows>", 2) == 0 else None)
    if tag == 3:
        opt_rid = r.u32("request_id") if r.tag("Option<u32>", 2) == 0 else None
        return SubscriptionError(opt_rid, r.u32("query_set_id"), r.string("error"))
    if tag == 4:
        return _r_tx_update(r)
    if tag == 5:
        rid = r.u32("request_id")
        result: QueryRows | str = _r_query_rows(r) if r.tag("Result", 2) == 0 else r.string("error")
        return OneOffQueryResult(rid, result)
    if tag == 6:
        rid, ts = r.u32("request_id"), r.timestamp()
        return ReducerResult(rid, ts, _r_outcome(r))
    status: ProcedureStatus
    if r.tag("ProcedureStatus", 2) == 0:
        status = ProcedureReturned(r.bytes_("value"))
    else:
        status = ProcedureInternalError(r.string("message"))
    ts, dur = r.timestamp(), r.i64("TimeDuration")
    return ProcedureResult(status, ts, dur, r.u32("request_id"))


_TAG_IDS = struct.Struct("<BII")  # a message tag, then request and query-set ids
_U32_AT = struct.Struct("<I").unpack_from


def _fast_client(data: bytes, pos: int, max_queries: int | None = None) -> tuple[Received, int] | None:
    """The client message at ``pos`` and the offset past it, for the messages every append and
    every resume sends (``Subscribe``, ``Unsubscribe``, ``CallReducer``), read with a few
    ``unpack_from`` instead of a :class:`Reader` call per field; None for anything else --
    another message, a truncated or invalid field -- which :func:`_r_client` then decodes, with
    its errors.  So what decodes is the same value, and what fails fails the same way (a
    ``Subscribe`` over ``max_queries`` included: :class:`OverlongSubscribe`)."""
    end = len(data)
    if pos + 9 > end:
        return None
    tag, rid, word = _TAG_IDS.unpack_from(data, pos)
    if tag == 3:  # CallReducer: request id, flags (0), reducer name, args
        if data[pos + 5] or pos + 10 > end:
            return None
        n = _U32_AT(data, pos + 6)[0]
        at = pos + 10 + n
        if at + 4 > end:
            return None
        try:
            reducer = data[pos + 10:at].decode("utf-8")
        except UnicodeDecodeError:
            return None
        m = _U32_AT(data, at)[0]
        if at + 4 + m > end:
            return None
        return CallReducer(rid, 0, reducer, data[at + 4:at + 4 + m]), at + 4 + m
    if tag == 0:  # Subscribe: request id, query set id, query strings
        if pos + 13 > end:
            return None
        count = _U32_AT(data, pos + 9)[0]
        at = pos + 13
        if 4 * count > end - at:
            return None
        if max_queries is not None and count > max_queries:  # skipped, not decoded
            if count > SKIP_MOST_QUERIES:
                return None  # (_r_client raises)
            for _ in range(count):
                if at + 4 > end:
                    return None
                at += 4 + _U32_AT(data, at)[0]
                if at > end:
                    return None
            return OverlongSubscribe(rid, word, count), at
        queries = []
        for _ in range(count):
            if at + 4 > end:
                return None
            n = _U32_AT(data, at)[0]
            if at + 4 + n > end:
                return None
            try:
                queries.append(data[at + 4:at + 4 + n].decode("utf-8"))
            except UnicodeDecodeError:
                return None
            at += 4 + n
        return Subscribe(rid, word, tuple(queries)), at
    if tag == 1:  # Unsubscribe: request id, query set id, flags (0 or 1)
        if pos + 10 > end or data[pos + 9] > 1:
            return None
        return Unsubscribe(rid, word, data[pos + 9] == 1), pos + 10
    return None


@overload
def decode_client(data: bytes, *, max_queries: None = None) -> ClientMessage: ...
@overload
def decode_client(data: bytes, *, max_queries: int) -> Received: ...
def decode_client(data: bytes, *, max_queries: int | None = None) -> Received:
    """Exactly one client message; trailing bytes are an error.  ``max_queries``: a ``Subscribe``
    of more query texts comes out as :class:`OverlongSubscribe`, its texts not decoded."""
    data = bytes(data)  # (the same object when it is bytes already)
    fast = _fast_client(data, 0, max_queries)
    if fast is not None and fast[1] == len(data):
        return fast[0]
    r = Reader(data)
    msg = _r_client(r, max_queries)
    r.expect_end()
    return msg


def decode_server(data: bytes) -> ServerMessage:
    """Exactly one server message (a frame body without its tag); trailing bytes are an error."""
    r = Reader(data)
    msg = _r_server(r)
    r.expect_end()
    return msg


def _check_version(version: int) -> None:
    if version not in (2, 3):
        raise LocalProtocolError(f"unsupported wire version {version!r} (2 or 3)")


class TooManyMessages(RemoteProtocolError):
    """A v3 frame holds more messages than the receiver takes (found while decoding, so no more
    than ``max_messages + 1`` are ever decoded)."""


@overload
def client_frame_messages(data: bytes, version: int, max_messages: int | None = None, *,
                          max_queries: None = None) -> Iterator[ClientMessage]: ...
@overload
def client_frame_messages(data: bytes, version: int, max_messages: int | None = None, *,
                          max_queries: int) -> Iterator[Received]: ...
def client_frame_messages(data: bytes, version: int, max_messages: int | None = None, *,
                          max_queries: int | None = None) -> Iterator[Received]:
    """The messages of a client frame one at a time (so a caller can pause between them), with
    :func:`decode_client_frame`'s errors; :class:`TooManyMessages` once past ``max_messages``;
    a ``Subscribe`` of more than ``max_queries`` texts as :class:`OverlongSubscribe`."""
    _check_version(version)
    if max_messages is not None and max_messages < 1:
        raise TooManyMessages("no room for another client message")
    if version == 2:
        yield decode_client(data, max_queries=max_queries)
        return
    if not data:
        raise BsatnError("empty v3 client frame")
    data = bytes(data)
    r = Reader(data)
    n = 0
    pos, end = 0, len(data)
    while pos < end:
        fast = _fast_client(data, pos, max_queries)
        if fast is None:
            r.seek(pos)
            msg = _r_client(r, max_queries)
            pos = r.offset
        else:
            msg, pos = fast
        n += 1
        if max_messages is not None and n > max_messages:
            raise TooManyMessages(f"a v3 frame with more than {max_messages} messages")
        yield msg


@overload
def decode_client_frame(data: bytes, version: int, max_messages: int | None = None, *,
                        max_queries: None = None) -> list[ClientMessage]: ...
@overload
def decode_client_frame(data: bytes, version: int, max_messages: int | None = None, *,
                        max_queries: int) -> list[Received]: ...
def decode_client_frame(data: bytes, version: int, max_messages: int | None = None, *,
                        max_queries: int | None = None) -> list[ClientMessage] | list[Received]:
    """A client binary frame: one message (v2) or one or more concatenated messages (v3).
    Decoding stops with :class:`TooManyMessages` as soon as it passes ``max_messages``."""
    return list(client_frame_messages(data, version, max_messages, max_queries=max_queries))


# --- compression and server frames ------------------------------------------------------------

COMPRESS_THRESHOLD = 1024
V3_SOFT_CAP = 512 * 1024
MAX_FRAME_SIZE = 32 * 1024 * 1024


class Compression(enum.Enum):
    """The ``compression`` query parameter (case-sensitive spellings, as upstream)."""

    NONE = "None"
    BROTLI = "Brotli"
    GZIP = "Gzip"

    @property
    def tag(self) -> int:
        return _TAGS[self]

    @classmethod
    def parse(cls, text: str | None) -> Compression:
        """``None`` (absent) means Brotli, upstream's default."""
        if text is None:
            return cls.BROTLI
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown compression {text!r}: expected one of None, Brotli, Gzip") from None


_TAGS = {Compression.NONE: 0, Compression.BROTLI: 1, Compression.GZIP: 2}


def frame_server(body: bytes, compression: Compression) -> bytes:
    """Tag and, if longer than 1024 bytes and asked for, compress a server frame body."""
    if compression is Compression.NONE or len(body) <= COMPRESS_THRESHOLD:
        return b"\x00" + body
    return _TAG_BYTES[compression] + _compress(body, compression)


_TAG_BYTES = {c: bytes((c.tag,)) for c in Compression}


def _compress(body: bytes, compression: Compression) -> bytes:
    if compression is Compression.BROTLI:
        compressed: bytes = brotli.compress(body, quality=1)
        return compressed
    return gzip.compress(body, compresslevel=1, mtime=0)


def frame_server_parts(parts: Sequence[bytes], compression: Compression) -> list[bytes]:
    """:func:`frame_server` of the concatenation of ``parts``, as parts (concatenated, the same
    bytes).  Uncompressed, the tag goes in front of the first part and the others are passed
    through uncopied; compressed, the parts are joined (the compressor reads the whole body) and the
    frame is the tag and the compressed bytes, two parts (the compressed bytes are not copied)."""
    if not parts:
        return [b"\x00"]
    if compression is Compression.NONE or sum(map(len, parts)) <= COMPRESS_THRESHOLD:
        return [b"\x00" + parts[0], *parts[1:]]
    return [_TAG_BYTES[compression], _compress(b"".join(parts), compression)]


def batch_v3(bodies: Sequence[bytes], soft_cap: int = V3_SOFT_CAP) -> list[bytes]:
    """Coalesce consecutive encoded messages into v3 bodies of at most ``soft_cap`` bytes each,
    except that a single larger message goes alone.  Order is kept; no body is empty."""
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for body in bodies:
        if not body:
            raise LocalProtocolError("an encoded server message is never empty")
        if current and size + len(body) > soft_cap:
            out.append(b"".join(current))
            current, size = [], 0
        current.append(body)
        size += len(body)
    if current:
        out.append(b"".join(current))
    return out


def server_frames(messages: Iterable[ServerMessage], version: int, compression: Compression) -> list[bytes]:
    """Encode and frame messages for one connection: one frame each (v2) or coalesced (v3)."""
    _check_version(version)
    bodies = [encode_server(m) for m in messages]
    if version == 3:
        bodies = batch_v3(bodies)
    return [frame_server(b, compression) for b in bodies]


def _too_big(max_size: int) -> BsatnError:
    return BsatnError(f"decompressed frame exceeds max_size {max_size} bytes")


def _brotli_decompress(data: bytes, max_size: int) -> bytes:
    d = brotli.Decompressor()
    try:
        out = d.process(data, output_buffer_limit=max_size + 1)
        while len(out) <= max_size and not d.can_accept_more_data():
            out += d.process(b"", output_buffer_limit=max_size + 1 - len(out))
    except brotli.error as exc:
        raise BsatnError(f"invalid brotli frame body: {exc}") from None
    if len(out) > max_size:
        raise _too_big(max_size)
    if not d.is_finished():
        raise BsatnError("truncated brotli frame body")
    assert isinstance(out, bytes)
    return out


def _gzip_decompress(data: bytes, max_size: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, max_size + 1)
    except zlib.error as exc:
        raise BsatnError(f"invalid gzip frame body: {exc}") from None
    if len(out) > max_size:
        raise _too_big(max_size)
    if not d.eof:
        raise BsatnError("truncated gzip frame body")
    if d.unused_data:
        raise BsatnError(f"trailing bytes: {len(d.unused_data)} after the gzip stream")
    return out


def unframe_server(frame: bytes, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """Strip the compression tag and decompress (bounded by ``max_size``)."""
    if not frame:
        raise BsatnError("empty server frame (no compression tag)")
    tag, body = frame[0], frame[1:]
    if tag == 0:
        if len(body) > max_size:
            raise _too_big(max_size)
        return body
    if tag == 1:
        return _brotli_decompress(body, max_size)
    if tag == 2:
        return _gzip_decompress(body, max_size)
    raise BsatnError(f"unknown compression tag {tag} at offset 0")


def decode_server_frame(frame: bytes, version: int, max_size: int = MAX_FRAME_SIZE) -> list[ServerMessage]:
    """A server binary frame: tag, (de)compression, then one (v2) or one or more (v3) messages."""
    _check_version(version)
    body = unframe_server(frame, max_size)
    if version == 2:
        return [decode_server(body)]
    if not body:
        raise BsatnError("empty v3 server frame body")
    r = Reader(body)
    out = []
    while not r.at_end():
        out.append(_r_server(r))
    return out


# --- translation to and from the model --------------------------------------------------------


class RowCache:
    """Memoizes :func:`adapters.bsatn.encode_row` per row value, so a fan-out encodes each row
    once.  Rows are frozen and hashable; the cache is cleared when it grows past ``max_entries``
    rows or ``max_bytes`` bytes of encodings (so large rows cannot pin memory)."""

    __slots__ = ("_bytes", "_rows", "max_bytes", "max_entries")

    def __init__(self, max_entries: int = 65536, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._rows: dict[Row, bytes] = {}
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def encode(self, row: Row) -> bytes:
        data = self._rows.get(row)
        if data is None:
            data = encode_row(row)
            if len(self._rows) >= self.max_entries or self._bytes + len(data) > self.max_bytes:
                self._rows.clear()
                self._bytes = 0
            if len(data) <= self.max_bytes:
                self._rows[row] = data
                self._bytes += len(data)
        return data


class RowSizes:
    """Memoizes :func:`adapters.bsatn.row_size` per row value (cleared past ``max_entries``)."""

    __slots__ = ("_sizes", "max_entries")

    def __init__(self, max_entries: int = 65536) -> None:
        self._sizes: dict[Row, int] = {}
        self.max_entries = max_entries

    def __call__(self, row: Row) -> int:
        size = self._sizes.get(row)
        if size is None:
            size = row_size(row)
            if len(self._sizes) >= self.max_entries:
                self._sizes.clear()
            self._sizes[row] = size
        return size


def rowlist_bytes(rl: RowList) -> int:
    """``len(rl.rows_data)``, without joining a :class:`RowPieces`."""
    return rl.total if type(rl) is RowPieces else len(rl.rows_data)


def _rows_size(t: sm.TableRows, size_of: Callable[[Row], int]) -> int:
    if isinstance(t, EncodedRows):  # encoded already: its exact size
        return rowlist_bytes(t.encoded)
    if t.table != "sync_event":
        return sum(map(size_of, (*t.inserts, *t.deletes)))
    inserts = column_rows_size(t.inserts) if is_column_rows(t.inserts) \
        else sum(map(sync_event_size, t.inserts))  # type: ignore[arg-type]
    return inserts + sum(map(sync_event_size, t.deletes))  # type: ignore[arg-type]


def _rows_bound(tables: Iterable[sm.TableRows], size_of: Callable[[Row], int]) -> int:
    # per table: its name (4 + UTF-8), one or two row lists (tag, hint of at most 4 + 8 per row,
    # data length), an entry count and a variant tag
    return sum(24 + len(t.table.encode()) + 2 * 9 + 8 * (len(t.inserts) + len(t.deletes)) + _rows_size(t, size_of)
               for t in tables)


def _sets_bound(sets: Iterable[sm.QuerySetUpdate], size_of: Callable[[Row], int]) -> int:
    return 4 + sum(8 + _rows_bound(qs.tables, size_of) for qs in sets)


def message_size_bound(msg: sm.ServerMessage, size_of: Callable[[Row], int] = row_size) -> int:
    """An upper bound on ``len(encode_server(to_wire(msg)))``, computed from row sizes without
    encoding anything: what a queued message will take once it is a frame body."""
    head = 32  # tag, request and query-set ids, timestamp, option and result tags, counts
    if isinstance(msg, sm.SubscribeApplied):
        return head + _rows_bound(msg.rows, size_of)
    if isinstance(msg, sm.UnsubscribeApplied):
        return head + (0 if msg.rows is None else _rows_bound(msg.rows, size_of))
    if isinstance(msg, sm.SubscriptionError):
        return head + len(msg.error.encode("utf-8", "surrogatepass"))
    if isinstance(msg, sm.TransactionUpdate):
        return head + _sets_bound(msg.query_sets, size_of)
    if isinstance(msg, sm.ReducerResult):
        if isinstance(msg.outcome, sm.ReducerOk):
            return head + 12 + _sets_bound(msg.outcome.query_sets, size_of)
        return head + 8 + len(msg.outcome.error.encode("utf-8", "surrogatepass"))
    if isinstance(msg, sm.OneOffQueryResult):
        if isinstance(msg.result, str):
            return head + len(msg.result.encode("utf-8", "surrogatepass"))
        return head + _rows_bound((msg.result,), size_of)
    raise LocalProtocolError(f"not a model ServerMessage: {msg!r:.80}")


def _rowlist(rows: Iterable[Row], cache: RowCache | None) -> RowList:
    enc = cache.encode if cache is not None else encode_row
    return RowList.of([enc(r) for r in rows])


@dataclass(frozen=True, slots=True)
class EncodedRows(sm.TableRows):
    """A snapshot's (or dropped rows') table whose row list was encoded ahead, a slice at a time
    (``adapters.server.SyncServer._encode_ahead``, ADR-0041): the same rows, and ``encoded`` is
    exactly what :func:`_snapshot_rowlist` makes of them, which then takes it as it is (and
    :func:`message_size_bound` counts its exact size)."""

    encoded: RowList = EMPTY_ROWS


def snapshot_row_encoder(t: sm.TableRows, cache: RowCache | None) -> Callable[[Row], bytes] | None:
    """How :func:`_snapshot_rowlist` encodes each row of ``t`` (``(*t.inserts, *t.deletes)`` in
    that order, then ``RowList.of``); None: ``t`` is encoded from the store's columns in runs, not
    row by row."""
    if t.table == "sync_event":  # a replay: thousands of rows met once; encoded directly, not cached
        if not t.deletes and is_column_rows(t.inserts):  # straight from the store's columns
            return None
        return encode_sync_event  # type: ignore[return-value]
    return cache.encode if cache is not None else encode_row


def column_row_slices(t: sm.TableRows, rows: int) -> Iterator[tuple[list[bytes], list[int]]]:
    """:func:`_snapshot_rowlist` of a table :func:`snapshot_row_encoder` has no row encoder for
    (a stream's rows as the store's columns), a step at a time: each step the pieces and row
    lengths of about ``rows`` more rows (whole runs, so a step may take a run's worth more), in
    order; ``rows_from_pieces`` of all the steps' pieces and lengths is its row list, the same
    object it makes in one go (``encode_event_runs`` encodes run by run)."""
    view = t.inserts
    stream_id = view.stream_id  # type: ignore[attr-defined]
    batch: list[Any] = []
    n = 0
    for run in view.runs():  # type: ignore[attr-defined]
        batch.append(run)
        n += 1 if isinstance(run, SyncEvent) else len(run)
        if n >= rows:
            yield encode_event_runs(stream_id, batch)
            batch, n = [], 0
    if batch:
        yield encode_event_runs(stream_id, batch)


def _snapshot_rowlist(t: sm.TableRows, cache: RowCache | None) -> RowList:
    if isinstance(t, EncodedRows):
        return t.encoded
    enc = snapshot_row_encoder(t, cache)
    if enc is None:
        pieces, lengths = encode_event_runs(t.inserts.stream_id, t.inserts.runs())  # type: ignore[attr-defined]
        return rows_from_pieces(pieces, lengths)
    return RowList.of([enc(r) for r in (*t.inserts, *t.deletes)])


def _wire_query_rows(tables: Iterable[sm.TableRows], cache: RowCache | None) -> QueryRows:
    # A QueryRows has one list per table: a snapshot's rows are its inserts (dropped rows may be
    # given as deletes; both go in, inserts first).
    return QueryRows(tuple(SingleTableRows(t.table, _snapshot_rowlist(t, cache)) for t in tables))


def _wire_query_sets(sets: Iterable[sm.QuerySetUpdate], cache: RowCache | None) -> TransactionUpdate:
    out = []
    for qs in sets:
        tables = []
        for t in qs.tables:
            rows: TableUpdateRows
            if t.event:
                if t.deletes:
                    raise LocalProtocolError(f"event table {t.table} update with deletes")
                rows = EventTableRows(_rowlist(t.inserts, cache))
            else:
                rows = PersistentTableRows(_rowlist(t.inserts, cache), _rowlist(t.deletes, cache))
            tables.append(TableUpdate(t.table, (rows,)))
        out.append(QuerySetUpdate(qs.query_set_id, tuple(tables)))
    return TransactionUpdate(tuple(out))


def _string_bytes(text: str) -> bytes:
    w = Writer()
    w.string(text)
    return w.getvalue()


# A ReducerResult whose outcome is Ok with a u64 return value (or none) and no rows -- the answer
# to every append that touches no subscription of its caller -- laid out in one pack: tag 6,
# request_id u32, timestamp i64, outcome tag 0, ret_value (u32 length 8 + u64, or length 0), and
# an empty TransactionUpdate (u32 count 0).
_OK_U64 = struct.Struct("<BIqBIQI")
_OK_NONE = struct.Struct("<BIqBII")
_U32_MAX, _I64_MIN, _I64_MAX, _U64_MAX = (1 << 32) - 1, -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


def encode_reducer_result(msg: sm.ReducerResult, timestamp: int, cache: RowCache | None = None) -> bytes:
    """``encode_server(to_wire(msg, timestamp=timestamp, cache=cache))``, the common case without
    building the wire objects: an Ok outcome with no rows and a return value that is an int in u64
    range or None, with a request id and a timestamp in range.  Anything else takes the general
    path (which also raises for out-of-range values).  The test holds the two to the same bytes."""
    outcome = msg.outcome
    rid, ret = msg.request_id, getattr(outcome, "ret", 0)
    if (type(outcome) is sm.ReducerOk and not outcome.query_sets and type(rid) is int and 0 <= rid <= _U32_MAX
            and type(timestamp) is int and _I64_MIN <= timestamp <= _I64_MAX):
        if ret is None:
            return _OK_NONE.pack(6, rid, timestamp, 0, 0, 0)
        if type(ret) is int and 0 <= ret <= _U64_MAX:
            return _OK_U64.pack(6, rid, timestamp, 0, 8, ret, 0)
    return encode_server(to_wire(msg, timestamp=timestamp, cache=cache))


_SUB_HEAD = struct.Struct("<BIII")  # SubscribeApplied: tag 1, request_id, query_set_id, the table count
_FIXED_HINT = struct.Struct("<BH")  # RowSizeHint FixedSize: tag 0, the size
_LEN = struct.Struct("<I")


def subscribe_applied_parts(msg: sm.SubscribeApplied, cache: RowCache | None = None) -> list[bytes]:
    """``encode_server_parts(to_wire(msg, cache=cache))`` -- the same parts -- written straight
    from the row lists (:func:`_snapshot_rowlist`, the encoding of the rows themselves), without
    the wire message objects and the generic writer: a resume's ``SubscribeApplied``, made for one
    receiver and encoded once (ADR-0031).  The parts are split where :class:`_PartsWriter` splits
    them (row data of 64 KiB or more, and :class:`RowPieces`, stay parts of their own).  A value
    out of its field's range takes the general path, which raises its error."""
    rid, qs, tables = msg.request_id, msg.query_set_id, msg.rows
    if not (type(rid) is int and 0 <= rid <= _U32_MAX and type(qs) is int and 0 <= qs <= _U32_MAX):
        return encode_server_parts(to_wire(msg, cache=cache))
    parts: list[bytes] = []
    buf = [_SUB_HEAD.pack(1, rid, qs, len(tables))]
    try:
        for t in tables:
            rl = _snapshot_rowlist(t, cache)
            name = t.table.encode("utf-8")
            hint = rl.size_hint
            if isinstance(hint, FixedSize):
                head = _FIXED_HINT.pack(0, hint.size)
            else:
                offsets = hint.offsets
                head = struct.pack(f"<BI{len(offsets)}Q", 1, len(offsets), *offsets)
            buf += (_LEN.pack(len(name)), name, head)
            if type(rl) is RowPieces:
                buf.append(_LEN.pack(rl.total))
                parts += (b"".join(buf), *rl.pieces)
                buf = []
                continue
            data = rl.rows_data
            buf.append(_LEN.pack(len(data)))
            if len(data) < 65536 or not isinstance(data, bytes):
                buf.append(data)
            else:
                parts += (b"".join(buf), data)
                buf = []
    except (struct.error, UnicodeEncodeError, AttributeError, TypeError):
        return encode_server_parts(to_wire(msg, cache=cache))
    parts.append(b"".join(buf))
    return parts


def to_wire(msg: sm.ServerMessage, *, timestamp: int = 0, cache: RowCache | None = None) -> ServerMessage:
    """The v2 wire form of a model server message (``timestamp`` goes into ``ReducerResult``)."""
    if isinstance(msg, sm.SubscribeApplied):
        return SubscribeApplied(msg.request_id, msg.query_set_id, _wire_query_rows(msg.rows, cache))
    if isinstance(msg, sm.UnsubscribeApplied):
        dropped = msg.rows
        return UnsubscribeApplied(msg.request_id, msg.query_set_id,
                                  None if dropped is None else _wire_query_rows(dropped, cache))
    if isinstance(msg, sm.SubscriptionError):
        return SubscriptionError(msg.request_id, msg.query_set_id, msg.error)
    if isinstance(msg, sm.TransactionUpdate):
        return _wire_query_sets(msg.query_sets, cache)
    if isinstance(msg, sm.ReducerResult):
        outcome: ReducerOutcome
        if isinstance(msg.outcome, sm.ReducerOk):
            ret = b""
            if msg.outcome.ret is not None:
                w = Writer()
                w.u64(msg.outcome.ret)
                ret = w.getvalue()
            outcome = ReducerOk(ret, _wire_query_sets(msg.outcome.query_sets, cache))
        elif msg.outcome.internal:
            outcome = ReducerInternalError(msg.outcome.error)
        else:
            outcome = ReducerErr(_string_bytes(msg.outcome.error))
        return ReducerResult(msg.request_id, timestamp, outcome)
    if isinstance(msg, sm.OneOffQueryResult):
        result = msg.result if isinstance(msg.result, str) else _wire_query_rows((msg.result,), cache)
        return OneOffQueryResult(msg.request_id, result)
    raise LocalProtocolError(f"not a model ServerMessage: {msg!r:.80}")


def from_wire(msg: ClientMessage, max_items: int | None = None) -> sm.ClientMessage:
    """The model form of a client message.  Arguments of a known reducer are decoded (a
    :class:`BsatnError` propagates, and :class:`bsatn.TooManyItems` for an array argument over
    ``max_items``); an unknown reducer gets ``args=()`` so the engine answers ``no_such_reducer``.
    OneOffQuery and CallProcedure have no model form."""
    if isinstance(msg, Subscribe):
        return sm.Subscribe(msg.request_id, msg.query_set_id, msg.query_strings)
    if isinstance(msg, Unsubscribe):
        return sm.Unsubscribe(msg.request_id, msg.query_set_id, send_dropped=msg.send_dropped_rows)
    if isinstance(msg, CallReducer):
        args = decode_args(msg.reducer, msg.args, max_items) if msg.reducer in REDUCER_BY_NAME else ()
        return sm.CallReducer(msg.request_id, msg.reducer, args)
    raise LocalProtocolError(f"{type(msg).__name__} has no model counterpart; handle it before from_wire")


def decode_rows(table: str, rows: RowList) -> list[Row]:
    """Decode every row of a row list of ``table``."""
    return [decode_row(table, data) for data in rows.rows()]


def decode_string(data: bytes) -> str:
    """A whole byte string that must be one BSATN ``String`` (e.g. ``ReducerErr.error``)."""
    r = Reader(data)
    text = r.string("error")
    r.expect_end()
    return text


def _ret_from_wire(data: bytes) -> int | None:
    if not data:
        return None
    r = Reader(data)
    value = r.u64("ret_value")
    r.expect_end()
    return value


def _model_tables_snapshot(qr: QueryRows) -> tuple[sm.TableRows, ...]:
    return tuple(sm.TableRows(t.table, tuple(decode_rows(t.table, t.rows))) for t in qr.tables)


def _model_query_sets(tu: TransactionUpdate) -> tuple[sm.QuerySetUpdate, ...]:
    out = []
    for qs in tu.query_sets:
        tables = []
        for t in qs.tables:
            for rows in t.rows:
                if isinstance(rows, EventTableRows):
                    tables.append(sm.TableRows(t.table_name, tuple(decode_rows(t.table_name, rows.events)), (),
                                               event=True))
                else:
                    tables.append(sm.TableRows(t.table_name, tuple(decode_rows(t.table_name, rows.inserts)),
                                               tuple(decode_rows(t.table_name, rows.deletes))))
        out.append(sm.QuerySetUpdate(qs.query_set_id, tuple(tables)))
    return tuple(out)


def server_from_wire(msg: ServerMessage, *, tx_offset: int = 0) -> sm.ServerMessage:
    """The model form of a server message, for client code and tests (rows decoded; one model
    ``TableRows`` per wire rows entry).  The wire has no transaction offsets: ``tx_offset`` fills
    them in.  A reducer's internal error becomes a model ``ReducerErr`` with its text and ``internal``.
    InitialConnection and ProcedureResult have no model form."""
    if isinstance(msg, SubscribeApplied):
        return sm.SubscribeApplied(msg.request_id, msg.query_set_id, _model_tables_snapshot(msg.rows))
    if isinstance(msg, UnsubscribeApplied):
        dropped = None if msg.rows is None else _model_tables_snapshot(msg.rows)
        return sm.UnsubscribeApplied(msg.request_id, msg.query_set_id, rows=dropped)
    if isinstance(msg, SubscriptionError):
        return sm.SubscriptionError(msg.request_id, msg.query_set_id, msg.error)
    if isinstance(msg, TransactionUpdate):
        return sm.TransactionUpdate(tx_offset, _model_query_sets(msg))
    if isinstance(msg, ReducerResult):
        outcome: sm.ReducerOk | sm.ReducerErr
        o = msg.outcome
        if isinstance(o, ReducerOk):
            outcome = sm.ReducerOk(_ret_from_wire(o.ret_value), _model_query_sets(o.transaction_update))
        elif isinstance(o, ReducerOkEmpty):
            outcome = sm.ReducerOk(None, ())
        elif isinstance(o, ReducerErr):
            outcome = sm.ReducerErr(decode_string(o.error))
        else:
            outcome = sm.ReducerErr(o.message, internal=True)
        return sm.ReducerResult(msg.request_id, tx_offset, outcome)
    if isinstance(msg, OneOffQueryResult):
        if isinstance(msg.result, str):
            return sm.OneOffQueryResult(msg.request_id, msg.result)
        tables = _model_tables_snapshot(msg.result)
        if len(tables) != 1:
            raise BsatnError(f"OneOffQueryResult holds {len(tables)} tables, expected exactly one")
        return sm.OneOffQueryResult(msg.request_id, tables[0])
    raise LocalProtocolError(f"{type(msg).__name__} has no model counterpart")
