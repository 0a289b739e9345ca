"""BSATN, SpacetimeDB's binary value format, for the types of the sync module.

BSATN (``crates/sats/src/bsatn/{ser,de}.rs`` upstream) writes a value with no names and no
self-description; the reader must know the type:

* integers are little-endian and fixed width (u8 1, u16 2, u32 4, u64/i64 8 bytes);
* ``bool`` is one byte, 0 or 1 (anything else is malformed);
* ``String`` and ``bytes`` are a u32 byte length then the bytes (UTF-8 for strings);
* ``Vec<T>`` is a u32 element count then the elements; products are their fields in order;
* sums are a u8 tag (the variant index) then the payload: ``Option`` is ``some`` = 0 /
  ``none`` = 1, ``Result`` is ``ok`` = 0 / ``err`` = 1;
* ``Identity`` is a u256 in 32 little-endian bytes.  Its display form (:data:`spec.values.Identity`)
  is big-endian hex, so the wire bytes are ``bytes.fromhex(hex)[::-1]``;
* ``ConnectionId`` is a u128 (16 bytes LE); ``Timestamp`` and ``TimeDuration`` are i64 µs.

:class:`Writer` and :class:`Reader` are the primitives; :func:`encode_value` /
:func:`decode_value` walk a :data:`spec.values.SatsType`; rows and reducer arguments are the
BSATN products of the columns of :mod:`spec.schema`, never restated here.

Blame is split the usual way.  Writing a value that does not fit its type is a caller bug
(:class:`spec.errors.LocalProtocolError`).  Reading bytes that do not parse is the peer's fault
(:class:`BsatnError`, a :class:`spec.errors.RemoteProtocolError`), and it is the *only* exception
a read raises: no ``struct.error``, ``IndexError`` or ``UnicodeDecodeError`` escapes.  Every
message names what was being read, the offset, and what was wrong.  A length or count is checked
against the bytes left before anything is allocated, so a hostile ``0xffffffff`` costs nothing.
"""

from __future__ import annotations

import binascii
import functools
import struct
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard, runtime_checkable

from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import REDUCER_BY_NAME, REDUCERS, TABLE_BY_NAME, TABLE_BY_ROW_TYPE, Column, Table
from spec.values import (
    BOOL,
    I64,
    IDENTITY,
    STRING,
    TIMESTAMP,
    U32,
    U64,
    ArrayT,
    OptionT,
    Prim,
    Row,
    SatsType,
    SyncEvent,
    is_identity,
    sats_name,
    value_has_type,
)

__all__ = [
    "RETURN_TYPES",
    "RUN_CACHE",
    "BsatnError",
    "ColumnRows",
    "EventRun",
    "Reader",
    "RunCache",
    "Writer",
    "column_rows_size",
    "decode_args",
    "decode_ret",
    "decode_row",
    "decode_value",
    "encode_args",
    "encode_event_columns",
    "encode_event_runs",
    "encode_ret",
    "encode_row",
    "encode_sync_event",
    "encode_value",
    "is_column_rows",
    "min_size",
    "sync_event_size",
]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")

OPTION_SOME = 0
OPTION_NONE = 1


class BsatnError(RemoteProtocolError):
    """The peer's bytes are not valid BSATN for the expected type (the message says where and why)."""


class TooManyItems(Exception):
    """An array argument declares more items than the caller's bound (``decode_args``'s
    ``max_items``); raised before any of them is read.  ``count``: what it declares."""

    def __init__(self, parameter: str, count: int) -> None:
        super().__init__(f"{parameter}: {count} items")
        self.parameter = parameter
        self.count = count


def _label(what: str, default: str) -> str:
    return f"{default} ({what})" if what else default


# --- writing ----------------------------------------------------------------------------------


class Writer:
    """An append-only BSATN buffer.  Out-of-range values raise :class:`LocalProtocolError`."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def _int(self, value: int, lo: int, hi: int, kind: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise LocalProtocolError(f"cannot write {value!r:.80} as {kind}")

    def u8(self, value: int) -> None:
        self._int(value, 0, 0xFF, "u8")
        self._buf.append(value)

    def u16(self, value: int) -> None:
        self._int(value, 0, 0xFFFF, "u16")
        self._buf += _U16.pack(value)

    def u32(self, value: int) -> None:
        self._int(value, 0, 0xFFFF_FFFF, "u32")
        self._buf += _U32.pack(value)

    def u64(self, value: int) -> None:
        self._int(value, 0, 2**64 - 1, "u64")
        self._buf += _U64.pack(value)

    def i64(self, value: int) -> None:
        self._int(value, -(2**63), 2**63 - 1, "i64")
        self._buf += _I64.pack(value)

    def u128(self, value: int) -> None:
        self._int(value, 0, 2**128 - 1, "u128")
        self._buf += value.to_bytes(16, "little")

    def bool_(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise LocalProtocolError(f"cannot write {value!r:.80} as bool")
        self._buf.append(1 if value else 0)

    def string(self, value: str) -> None:
        if not isinstance(value, str):
            raise LocalProtocolError(f"cannot write {value!r:.80} as String")
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise LocalProtocolError(f"String is not encodable as UTF-8: {exc}") from None
        self.u32(len(data))
        self._buf += data

    def bytes_(self, value: bytes) -> None:
        """``bytes``/``Vec<u8>``: a u32 length prefix, then the bytes."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"cannot write {type(value).__name__} as bytes")
        self.u32(len(value))
        self._buf += value

    def raw(self, value: bytes) -> None:
        """Bytes with no prefix (an already encoded value)."""
        self._buf += value

    def identity(self, value: str) -> None:
        if not value_has_type(value, IDENTITY):
            raise LocalProtocolError(f"cannot write {value!r:.80} as Identity (64 lowercase hex chars)")
        self._buf += bytes.fromhex(value)[::-1]

    def connection_id(self, value: int) -> None:
        self.u128(value)

    def timestamp(self, value: int) -> None:
        self.i64(value)


# --- reading ----------------------------------------------------------------------------------


class Reader:
    """A cursor over BSATN bytes.  Every read raises only :class:`BsatnError`.

    The optional ``what`` argument of each read names the field for error messages."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def offset(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        """Go on reading at ``pos`` (within the data)."""
        if not 0 <= pos <= len(self._data):
            raise LocalProtocolError(f"cannot seek to {pos} in {len(self._data)} bytes")
        self._pos = pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def expect_end(self) -> None:
        if self.remaining:
            raise BsatnError(f"trailing bytes: {self.remaining} after offset {self._pos}")

    def _take(self, n: int, what: str, default: str) -> bytes:
        """``n`` bytes; the error names the field (its label is built only on that path: a read
        that succeeds formats nothing)."""
        pos = self._pos
        if n > len(self._data) - pos:
            raise BsatnError(f"truncated {_label(what, default)} at offset {pos}: need {n} bytes but "
                             f"{len(self._data) - pos} left")
        self._pos = pos + n
        return self._data[pos:pos + n]

    def u8(self, what: str = "") -> int:
        return self._take(1, what, "u8")[0]

    def u16(self, what: str = "") -> int:
        value: int = _U16.unpack(self._take(2, what, "u16"))[0]
        return value

    def u32(self, what: str = "") -> int:
        value: int = _U32.unpack(self._take(4, what, "u32"))[0]
        return value

    def u64(self, what: str = "") -> int:
        value: int = _U64.unpack(self._take(8, what, "u64"))[0]
        return value

    def i64(self, what: str = "") -> int:
        value: int = _I64.unpack(self._take(8, what, "i64"))[0]
        return value

    def u128(self, what: str = "") -> int:
        return int.from_bytes(self._take(16, what, "u128"), "little")

    def bool_(self, what: str = "") -> bool:
        pos = self._pos
        byte = self._take(1, what, "bool")[0]
        if byte > 1:
            raise BsatnError(f"invalid bool byte 0x{byte:02x} at offset {pos}")
        return byte == 1

    def length(self, kind: str, min_item: int = 1, what: str = "") -> int:
        """A u32 length/count prefix, rejected unless ``count * min_item`` bytes remain.  The
        errors name ``kind``, or ``kind (what)`` when ``what`` is given."""
        pos = self._pos
        data = self._data
        if pos + 4 > len(data):
            label = _label(what, kind)
            raise BsatnError(f"truncated u32 ({label} length) at offset {pos}: need 4 bytes but {len(data) - pos} left")
        n: int = _U32.unpack_from(data, pos)[0]
        self._pos = pos + 4
        if n * min_item > len(data) - pos - 4:
            label = _label(what, kind)
            need = f"length {n}" if min_item == 1 else f"count {n} needs at least {n * min_item} bytes"
            raise BsatnError(f"truncated {label} at offset {pos}: {need} but {self.remaining} bytes left")
        return n

    def string(self, what: str = "") -> str:
        pos = self._pos
        n = self.length("String", 1, what)
        start = self._pos
        self._pos = start + n  # length() checked that n bytes remain
        try:
            return self._data[start:start + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BsatnError(f"invalid UTF-8 in {_label(what, 'String')} at offset {pos}: {exc.reason} "
                             f"at byte {exc.start}") from None

    def bytes_(self, what: str = "") -> bytes:
        n = self.length("bytes", 1, what)
        start = self._pos
        self._pos = start + n
        return self._data[start:start + n]

    def skip_bytes(self, what: str = "", kind: str = "bytes") -> None:
        """Step over a length-prefixed ``bytes`` or ``String`` (``kind``, named in the errors as
        :meth:`bytes_` and :meth:`string` name it) without reading it (nothing is copied or
        decoded: a ``String`` skipped this way is not checked for UTF-8)."""
        n = self.length(kind, 1, what)  # (first: it moves past the prefix)
        self._pos += n

    def raw(self, n: int, what: str = "") -> bytes:
        """``n`` bytes with no prefix."""
        if n < 0:
            raise LocalProtocolError(f"cannot read {n} bytes")
        return self._take(n, what, "bytes")

    def identity(self, what: str = "") -> str:
        return self._take(32, what, "Identity")[::-1].hex()

    def connection_id(self, what: str = "") -> int:
        return self.u128(_label(what, "ConnectionId"))

    def timestamp(self, what: str = "") -> int:
        return self.i64(_label(what, "Timestamp"))

    def tag(self, sum_name: str, variants: int) -> int:
        """A sum tag that must be below ``variants``."""
        pos = self._pos
        tag = self.u8(f"{sum_name} tag")
        if tag >= variants:
            raise BsatnError(f"invalid sum tag {tag} for {sum_name} at offset {pos}")
        return tag


# --- typed values -----------------------------------------------------------------------------


def min_size(t: SatsType) -> int:
    """The fewest bytes a value of ``t`` can take (used to bound counts before allocating)."""
    if isinstance(t, OptionT):
        return 1
    if isinstance(t, ArrayT) or t == STRING:
        return 4
    return {BOOL: 1, U32: 4, U64: 8, I64: 8, TIMESTAMP: 8, IDENTITY: 32}.get(t, 1)


_Enc = Callable[[Writer, object], None]
_Dec = Callable[[Reader], object]

_PRIM_ENCODERS: Mapping[Prim, _Enc] = {
    STRING: lambda w, v: w.string(v),  # type: ignore[arg-type]
    BOOL: lambda w, v: w.bool_(v),  # type: ignore[arg-type]
    U32: lambda w, v: w.u32(v),  # type: ignore[arg-type]
    U64: lambda w, v: w.u64(v),  # type: ignore[arg-type]
    I64: lambda w, v: w.i64(v),  # type: ignore[arg-type]
    TIMESTAMP: lambda w, v: w.timestamp(v),  # type: ignore[arg-type]
    IDENTITY: lambda w, v: w.identity(v),  # type: ignore[arg-type]
}

_PRIM_DECODERS: Mapping[Prim, _Dec] = {
    STRING: Reader.string, BOOL: Reader.bool_, U32: Reader.u32, U64: Reader.u64, I64: Reader.i64,
    TIMESTAMP: Reader.timestamp, IDENTITY: Reader.identity,
}


@functools.cache
def _encoder(t: SatsType) -> _Enc:
    if isinstance(t, OptionT):
        inner = _encoder(t.inner)

        def enc_option(w: Writer, v: object) -> None:
            if v is None:
                w.u8(OPTION_NONE)
            else:
                w.u8(OPTION_SOME)
                inner(w, v)
        return enc_option
    if isinstance(t, ArrayT):
        item = _encoder(t.inner)

        def enc_array(w: Writer, v: object) -> None:
            assert isinstance(v, tuple)
            w.u32(len(v))
            for x in v:
                item(w, x)
        return enc_array
    try:
        return _PRIM_ENCODERS[t]
    except KeyError:
        raise LocalProtocolError(f"no BSATN encoding for SATS type {sats_name(t)}") from None


@functools.cache
@functools.cache
def _decoder(t: SatsType, max_items: int | None = None, parameter: str = "") -> _Dec:
    """``max_items``: an array longer than this raises :class:`TooManyItems` (naming
    ``parameter``) before its items are read."""
    name = sats_name(t)
    if isinstance(t, OptionT):
        inner = _decoder(t.inner, max_items, parameter)

        def dec_option(r: Reader) -> object:
            return inner(r) if r.tag(name, 2) == OPTION_SOME else None
        return dec_option
    if isinstance(t, ArrayT):
        item = _decoder(t.inner)
        least = min_size(t.inner)

        if max_items is not None:
            most = max_items

            def dec_bounded(r: Reader) -> object:
                n = r.length(name, least)
                if n > most:
                    raise TooManyItems(parameter, n)
                return tuple(item(r) for _ in range(n))
            return dec_bounded

        def dec_array(r: Reader) -> object:
            return tuple(item(r) for _ in range(r.length(name, least)))
        return dec_array
    try:
        return _PRIM_DECODERS[t]
    except KeyError:
        raise LocalProtocolError(f"no BSATN decoding for SATS type {name}") from None


def encode_value(w: Writer, t: SatsType, v: object) -> None:
    """Append the BSATN of ``v``; a value that is not of type ``t`` is a :class:`LocalProtocolError`."""
    if not value_has_type(v, t):
        raise LocalProtocolError(f"value {v!r:.80} is not a {sats_name(t)}")
    _encoder(t)(w, v)


def decode_value(r: Reader, t: SatsType) -> object:
    """Read one value of type ``t`` (``Option`` none is ``None``, ``Vec`` is a tuple)."""
    return _decoder(t)(r)


# --- rows -------------------------------------------------------------------------------------


def _table_for(row: Row) -> Table:
    table = TABLE_BY_ROW_TYPE.get(type(row))
    if table is None:
        raise LocalProtocolError(f"{type(row).__name__} is not a row type of the schema")
    return table


def encode_row_into(w: Writer, row: Row) -> None:
    table = _table_for(row)
    for col in table.columns:
        value = getattr(row, col.name)
        if not value_has_type(value, col.type):
            raise LocalProtocolError(f"{table.name}.{col.name}: {value!r:.80} is not a {sats_name(col.type)}")
        _encoder(col.type)(w, value)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


_FIXED_SIZES: Mapping[Prim, int] = {BOOL: 1, U32: 4, U64: 8, I64: 8, TIMESTAMP: 8, IDENTITY: 32}


@functools.cache
def _sizer(t: SatsType) -> Callable[[object], int]:
    if isinstance(t, OptionT):
        inner = _sizer(t.inner)
        return lambda v: 1 if v is None else 1 + inner(v)
    if isinstance(t, ArrayT):
        item = _sizer(t.inner)

        def array_size(v: object) -> int:
            assert isinstance(v, tuple)
            return 4 + sum(item(x) for x in v)
        return array_size
    if t == STRING:
        return lambda v: 4 + _utf8_len(v)  # type: ignore[arg-type]
    try:
        n = _FIXED_SIZES[t]
    except KeyError:
        raise LocalProtocolError(f"no BSATN encoding for SATS type {sats_name(t)}") from None
    return lambda _v: n


def row_size(row: Row) -> int:
    """``len(encode_row(row))``, computed without encoding (to bound what a message will take)."""
    return sum(_sizer(col.type)(getattr(row, col.name)) for col in _table_for(row).columns)


def encode_row(row: Row) -> bytes:
    """The row's BSATN: the product of its table's columns in schema order."""
    w = Writer()
    encode_row_into(w, row)
    return w.getvalue()


# --- sync_event fast path ----------------------------------------------------------------------
#
# A replay sends thousands of ``sync_event`` rows at once; the generic encoder above walks the
# schema per column (a type check and an encoder lookup each).  ``encode_sync_event`` writes the
# same bytes with one ``struct`` call and a join, for rows whose every field is plainly in range;
# any other row (a lone surrogate, an int past the column's range, a producer that is not an
# identity, a non-str where a str belongs) goes to :func:`encode_row`, which raises its usual
# error.  ``tests/adapters/test_bsatn_fast.py`` checks the two give equal bytes row by row.

_EV_MID = struct.Struct("<QQI")  # epoch, seq, key length
_EV_TAIL = struct.Struct("<qQ")  # committed_at, tx_offset
_PRODUCERS: dict[str, bytes] = {}  # identity hex -> its 32 BSATN bytes (a bounded memo)
_PRODUCERS_MAX = 4096
_U63 = 1 << 63
_U64_END = 1 << 64


def _producer_bytes(producer: object) -> bytes | None:
    if type(producer) is not str:
        return None
    raw = _PRODUCERS.get(producer)
    if raw is None:
        if not is_identity(producer):
            return None
        if len(_PRODUCERS) >= _PRODUCERS_MAX:
            _PRODUCERS.clear()
        raw = _PRODUCERS[producer] = bytes.fromhex(producer)[::-1]
    return raw


def encode_sync_event(ev: SyncEvent) -> bytes:
    """``encode_row(ev)`` for a ``sync_event`` row, by a shorter path (same bytes, same errors)."""
    sid, key, h, payload = ev.stream_id, ev.idempotency_key, ev.payload_hash, ev.payload
    epoch, seq, at, tx = ev.epoch, ev.seq, ev.committed_at, ev.tx_offset
    producer = _producer_bytes(ev.producer)
    if (producer is None or type(ev) is not SyncEvent
            or not (type(sid) is type(key) is type(h) is type(payload) is str)
            or not (type(epoch) is type(seq) is type(at) is type(tx) is int)
            or not (0 <= epoch < _U64_END and 0 <= seq < _U64_END and -_U63 <= at < _U63 and 0 <= tx < _U64_END)):
        return encode_row(ev)
    try:
        sb, kb, hb, pb = sid.encode("utf-8"), key.encode("utf-8"), h.encode("utf-8"), payload.encode("utf-8")
    except UnicodeEncodeError:
        return encode_row(ev)  # raises the generic encoder's error
    return b"".join((_U32.pack(len(sb)), sb, _EV_MID.pack(epoch, seq, len(kb)), kb, _U32.pack(len(hb)), hb,
                     _U32.pack(len(pb)), pb, producer, _EV_TAIL.pack(at, tx)))


_HASH_HEAD = _U32.pack(71) + b"sha256:"
EventColumns = SyncEvent | tuple[int, int, bytes, bytes, bytes, str, int, int]


@runtime_checkable
class ColumnRows(Protocol):
    """Rows of one stream's ``sync_event`` given by their stored fields (what
    :class:`reference.eventlog.RetainedRows` offers): see :func:`encode_event_columns`."""

    @property
    def stream_id(self) -> str: ...

    def columns(self) -> Iterable[EventColumns]: ...

    def column_bytes(self) -> tuple[int, int, list[SyncEvent]]: ...

    def runs(self) -> Iterable[SyncEvent | EventRun]: ...


_COLUMN_ROW_TYPES: dict[type, bool] = {}


def is_column_rows(rows: object) -> TypeGuard[ColumnRows]:
    """``isinstance(rows, ColumnRows)``, remembered per type (a runtime protocol check walks the
    protocol's members on every call: 3 % of a small replay's server time)."""
    kind = type(rows)
    known = _COLUMN_ROW_TYPES.get(kind)
    if known is None:
        known = isinstance(rows, ColumnRows)
        if len(_COLUMN_ROW_TYPES) < 256:
            _COLUMN_ROW_TYPES[kind] = known
    return known


class EventRun(Protocol):
    """Consecutive ``sync_event`` rows of one stream and epoch given as columns (what
    :class:`reference.eventlog.ColumnRun` is): row ``i`` has seq ``first_seq + i`` and its bytes in
    ``data`` from ``ends[i - 1]`` (``start`` for row 0) to ``ends[i]``: a 32-byte hash digest, the
    key (``key_lens[i]`` bytes of UTF-8), the payload (UTF-8).  ``token`` is None, or objects that
    hold the run's rows as rows ``offset .. offset + len - 1`` of a chunk of the store whose rows
    never change while the token's objects are alive (row ``r`` of them has seq
    ``first_seq - offset + r``): such a run's bytes, and those of any run of the same objects,
    epoch and stream, may be kept in a :class:`RunCache`.  ``part(a, b)`` is the run of rows
    ``a .. b - 1`` of this one."""

    @property
    def epoch(self) -> int: ...

    @property
    def first_seq(self) -> int: ...

    @property
    def offset(self) -> int: ...

    def __len__(self) -> int: ...

    def part(self, a: int, b: int) -> EventRun: ...

    @property
    def data(self) -> bytearray: ...

    @property
    def start(self) -> int: ...

    @property
    def ends(self) -> Sequence[int]: ...

    @property
    def key_lens(self) -> Sequence[int]: ...

    @property
    def producers(self) -> Sequence[str]: ...

    @property
    def committed_at(self) -> Sequence[int]: ...

    @property
    def tx_offset(self) -> Sequence[int]: ...

    @property
    def token(self) -> tuple[object, object] | None: ...


def encode_event_columns(stream_id: str, columns: Iterable[EventColumns]) -> list[bytes]:
    """The BSATN of each row, given as a whole row (encoded as :func:`encode_sync_event` does)
    or as ``(epoch, seq, digest, key UTF-8, payload UTF-8, producer, committed_at, tx_offset)`` of
    a row of ``stream_id`` with payload hash ``sha256:<digest hex>``: its bytes written from those
    fields as they are, no row built -- unless a field is out of its column's range, when the row
    is built and :func:`encode_row` gives its error."""
    try:
        sb: bytes | None = stream_id.encode("utf-8")
    except UnicodeEncodeError:
        sb = None
    head = b"" if sb is None else _U32.pack(len(sb)) + sb
    mid, tail, u32 = _EV_MID.pack, _EV_TAIL.pack, _U32.pack
    out: list[bytes] = []
    for c in columns:
        if type(c) is not tuple:
            assert isinstance(c, SyncEvent)
            out.append(encode_sync_event(c))
            continue
        epoch, seq, digest, kb, pb, producer, at, tx = c
        prod = _producer_bytes(producer)
        if prod is None or sb is None or not (0 <= epoch < _U64_END and 0 <= seq < _U64_END and -_U63 <= at < _U63
                                              and 0 <= tx < _U64_END):
            out.append(encode_row(SyncEvent(stream_id, epoch, seq, kb.decode("utf-8"), "sha256:" + digest.hex(),
                                            pb.decode("utf-8"), producer, at, tx)))
            continue
        out.append(b"".join((head, mid(epoch, seq, len(kb)), kb, _HASH_HEAD, digest.hex().encode(),
                             u32(len(pb)), pb, prod, tail(at, tx))))
    return out


class RunCache:
    """Encoded rows of the store's chunks, one entry per chunk (stream, seq of the chunk's row 0,
    epoch): the BSATN of a contiguous range of the chunk's rows and each row's length.  A run
    (:class:`EventRun` with a ``token``) is served from its chunk's entry when the entry holds its
    rows (a slice of the kept bytes, nothing written); when its rows overlap or touch the entry's,
    only the rows the entry lacks are written and the entry grows to hold both; otherwise the run
    is written and becomes the entry.  An entry is used only for a run of the very objects it
    was made from (it holds them, so their ``id`` cannot be reused while it lives): a rollback, a
    retention change or a copy puts new buffers in the store (a miss), a relabel changes the
    epoch (another entry), so no run meets bytes of other rows; within the same objects a row is
    the same stored row, and the entry's bytes for it are its bytes with the entry's epoch.

    Least recently used out first, bounded by ``max_bytes``: an entry costs its encoded rows, 4
    bytes a row of lengths and the chunk buffers it keeps alive (``sys.getsizeof`` of the
    token's objects when it was last put -- a chunk still being appended to grows after that, at
    most to a full chunk; a chunk the store has dropped costs its memory until its entry goes).
    Shared by every connection of the process (the event-loop thread; the lock makes it safe
    elsewhere).  ``hits``: runs served from an entry; ``extended``: runs that wrote only the rows
    an entry lacked; ``misses``: runs written whole."""

    __slots__ = ("_bytes", "_entries", "_lock", "extended", "hits", "max_bytes", "misses")

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._entries: OrderedDict[tuple[str, int, int],
                                   tuple[tuple[object, object], int, bytes, array[int], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.hits = 0
        self.extended = 0
        self.misses = 0

    @property
    def size(self) -> int:
        """The bytes the entries account for (at most ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(stream_id: str, run: EventRun) -> tuple[str, int, int]:
        return (stream_id, run.first_seq - run.offset, run.epoch)  # the chunk: the seq of its row 0

    def get(self, stream_id: str, run: EventRun) -> tuple[int, bytes, array[int]] | None:
        """The entry of the run's chunk -- ``(lo, bytes, lengths)``: the encoded rows
        ``lo .. lo + len(lengths) - 1`` of the chunk -- if one was made from the run's very token
        objects with its stream and epoch (made most recently used), else None."""
        token = run.token
        if token is None:
            return None
        key = self._key(stream_id, run)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0][0] is not token[0] or entry[0][1] is not token[1]:
                return None
            self._entries.move_to_end(key)
            return entry[1], entry[2], entry[3]

    def put(self, stream_id: str, run: EventRun, lo: int, data: bytes, lengths: Sequence[int]) -> None:
        """Keep ``data``, the encoded rows ``lo ..`` (``lengths``: theirs) of the chunk of ``run``
        (its token, stream, epoch), in place of the chunk's entry; nothing when the run has no
        token or the entry would cost more than ``max_bytes``."""
        token = run.token
        if token is None:
            return
        lens = lengths if isinstance(lengths, array) and lengths.typecode == "I" else array("I", lengths)
        cost = len(data) + 4 * len(lens) + sys.getsizeof(token[0]) + sys.getsizeof(token[1]) + 200
        if cost > self.max_bytes:
            return
        key = self._key(stream_id, run)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[4]
            while self._entries and self._bytes + cost > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][4]
            self._entries[key] = (token, lo, data, lens, cost)
            self._bytes += cost

    def rows(self, stream_id: str, head: bytes, run: EventRun) -> tuple[bytes, Sequence[int]] | None:
        """The run's rows' BSATN back to back and each row's length (``head``: the stream id's
        BSATN), served and kept as the class says; None if a field is out of its column's range
        (the caller then builds the rows)."""
        i = run.offset
        k = i + len(run)
        entry = self.get(stream_id, run)
        if entry is not None:
            lo, data, lens = entry
            hi = lo + len(lens)
            if lo <= i and k <= hi:
                self.hits += 1
                return _rows_slice(data, lens, i - lo, k - lo)
            if i <= hi and lo <= k:  # overlapping or touching: write only the rows the entry lacks
                before = _encode_run(head, run.part(0, lo - i)) if i < lo else (b"", [])
                after = _encode_run(head, run.part(hi - i, k - i)) if k > hi else (b"", [])
                if before is None or after is None:
                    return None
                self.extended += 1
                grown = array("I", before[1])
                grown += lens
                grown.extend(after[1])
                data = b"".join((before[0], data, after[0]))
                lo = min(lo, i)
                self.put(stream_id, run, lo, data, grown)
                return _rows_slice(data, grown, i - lo, k - lo)
        self.misses += 1
        enc = _encode_run(head, run)
        if enc is not None:
            self.put(stream_id, run, i, *enc)
        return enc

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _rows_slice(data: bytes, lens: array[int], a: int, b: int) -> tuple[bytes, Sequence[int]]:
    """Rows ``a .. b - 1`` of the rows lying back to back in ``data`` (``lens``: their lengths)."""
    if a == 0 and b == len(lens):
        return data, lens
    start = sum(lens[:a])
    return data[start:start + sum(lens[a:b])], lens[a:b]


RUN_CACHE = RunCache()
"""The process's cache of encoded full chunks (32 MiB; docs/protocol.md "Limits")."""

_RUN_FIXED = 80 + 71 - 32  # a stored row's bytes beyond its stream id and its data (digest, key, payload)


def _encode_run(head: bytes, run: EventRun) -> tuple[bytes, list[int]] | None:
    """The rows' BSATN back to back and each row's length, written from the columns in one pass
    (no row, no per-row tuple), or None if a field is out of its column's range."""
    epoch, seq, ends = run.epoch, run.first_seq, run.ends
    n = len(ends)
    if not n:
        return b"", []
    ats, txs = run.committed_at, run.tx_offset
    if not (0 <= epoch < _U64_END and seq >= 0 and seq + n <= _U64_END and min(ats) >= -_U63 and max(ats) < _U63
            and min(txs) >= 0 and max(txs) < _U64_END):
        return None
    producers = run.producers
    prods: dict[str, bytes] = {}
    for producer in set(producers):
        raw = _producer_bytes(producer)
        if raw is None:
            return None
        prods[producer] = raw
    d = bytes(run.data)
    mid, tail, u32, hexl, hash_head = _EV_MID.pack, _EV_TAIL.pack, _U32.pack, binascii.hexlify, _HASH_HEAD
    parts: list[bytes] = []
    put = parts.extend
    s = run.start
    for e, kl, producer, at, tx in zip(ends, run.key_lens, producers, ats, txs, strict=True):
        k = s + 32 + kl
        put((head, mid(epoch, seq, kl), d[s + 32:k], hash_head, hexl(d[s:s + 32]), u32(e - k), d[k:e],
             prods[producer], tail(at, tx)))
        s = e
        seq += 1
    fixed = _RUN_FIXED + len(head) - 4
    s = run.start
    lengths = []
    for e in ends:
        lengths.append(fixed + e - s)
        s = e
    return b"".join(parts), lengths


def _run_rows(stream_id: str, run: EventRun) -> list[SyncEvent]:
    """The run's rows, built (for the odd cases the one-pass writer leaves to the generic encoder)."""
    d, s, rows = bytes(run.data), run.start, []
    columns = zip(run.ends, run.key_lens, run.producers, run.committed_at, run.tx_offset, strict=True)
    for i, (e, kl, producer, at, tx) in enumerate(columns):
        k = s + 32 + kl
        rows.append(SyncEvent(stream_id, run.epoch, run.first_seq + i, d[s + 32:k].decode("utf-8"),
                              "sha256:" + d[s:s + 32].hex(), d[k:e].decode("utf-8"), producer, at, tx))
        s = e
    return rows


def encode_event_runs(stream_id: str, runs: Iterable[SyncEvent | EventRun],
                      cache: RunCache | None = RUN_CACHE) -> tuple[list[bytes], list[int]]:
    """The BSATN of the rows of ``runs`` (rows kept whole, or :class:`EventRun` s of stream
    ``stream_id``): pieces whose concatenation is every row's ``encode_row`` bytes in order, and
    each row's length.  A run is written in one pass (:func:`_encode_run`), or served through
    ``cache`` (:meth:`RunCache.rows`: rows of its chunk met before are not written again); a run
    with a field out of range has its rows built and given to :func:`encode_sync_event` (same
    bytes or the same error as ``encode_row``)."""
    try:
        sb = stream_id.encode("utf-8")
    except UnicodeEncodeError:
        sb = None
    head = b"" if sb is None else _U32.pack(len(sb)) + sb
    pieces: list[bytes] = []
    lengths: list[int] = []
    for run in runs:
        if isinstance(run, SyncEvent):
            row = encode_sync_event(run)
            pieces.append(row)
            lengths.append(len(row))
            continue
        if cache is not None and run.token is not None and sb is not None:
            enc: tuple[bytes, Sequence[int]] | None = cache.rows(stream_id, head, run)
        else:
            enc = None if sb is None else _encode_run(head, run)
        if enc is None:
            for ev in _run_rows(stream_id, run):
                row = encode_sync_event(ev)
                pieces.append(row)
                lengths.append(len(row))
            continue
        pieces.append(enc[0])
        lengths += enc[1]
    return pieces, lengths


def column_rows_size(rows: ColumnRows) -> int:
    """``sum(row_size(r) for r in rows)``, from the columns' byte counts: a stored row takes
    80 fixed bytes, its stream id, ``sha256:`` and 64 hex digits for its 32-byte digest, and its
    key and payload (the digest, key and payload are what the data holds)."""
    n, data, odd = rows.column_bytes()
    return n * (80 + _utf8_len(rows.stream_id) + 71 - 32) + data + sum(sync_event_size(ev) for ev in odd)


def sync_event_size(ev: SyncEvent) -> int:
    """``row_size(ev)`` for a ``sync_event`` row: 80 fixed bytes plus its four strings' UTF-8."""
    if type(ev) is not SyncEvent or not all(type(v) is str for v in (ev.stream_id, ev.idempotency_key,
                                                                        ev.payload_hash, ev.payload)):
        return row_size(ev)
    return 80 + _utf8_len(ev.stream_id) + _utf8_len(ev.idempotency_key) + _utf8_len(ev.payload_hash) \
        + _utf8_len(ev.payload)



def _decode_product(columns: Sequence[Column], data: bytes, what: str, part: str,
                    decoders: Sequence[_Dec] | None = None) -> list[Any]:
    """Decode a product of ``columns`` that must use every byte of ``data``; errors name ``what``
    and the ``part`` (column or parameter) that failed.  ``decoders``: the columns' decoders,
    when the caller has them already (a reducer's or a table's, built once)."""
    r = Reader(data)
    values: list[Any] = []
    if decoders is None:
        decoders = [_decoder(col.type) for col in columns]
    try:
        for dec in decoders:
            values.append(dec(r))
    except BsatnError as exc:
        raise BsatnError(f"{what}, {part} {columns[len(values)].name}: {exc}") from None
    try:
        r.expect_end()
    except BsatnError as exc:
        raise BsatnError(f"{what}: {exc}") from None
    return values


def decode_row(table: str, data: bytes) -> Row:
    """Decode one whole row of ``table``; every byte must be used."""
    t = TABLE_BY_NAME.get(table)
    if t is None:
        raise BsatnError(f"unknown table {table[:80]!r}")
    return t.row_type(*_decode_product(t.columns, data, f"row of {table}", "column", _row_decoders(table)))


@functools.cache
def _row_decoders(table: str) -> tuple[_Dec, ...]:
    return tuple(_decoder(col.type) for col in TABLE_BY_NAME[table].columns)


# --- reducer arguments and return values ------------------------------------------------------

RETURN_TYPES: Mapping[str, SatsType | None] = {r.name: r.returns for r in REDUCERS}
"""Each reducer's return type (``None``: returns nothing, ``ret_value`` is empty)."""


def encode_args(reducer: str, args: tuple[object, ...]) -> bytes:
    """The BSATN product of ``reducer``'s parameters, in order."""
    rdef = REDUCER_BY_NAME.get(reducer)
    if rdef is None:
        raise LocalProtocolError(f"unknown reducer {reducer!r}")
    if len(args) != len(rdef.args):
        raise LocalProtocolError(f"{reducer} takes {len(rdef.args)} arguments, got {len(args)}")
    w = Writer()
    for col, value in zip(rdef.args, args, strict=True):
        if not value_has_type(value, col.type):
            raise LocalProtocolError(f"{reducer}({col.name}): {value!r:.80} is not a {sats_name(col.type)}")
        _encoder(col.type)(w, value)
    return w.getvalue()


@functools.cache
def _args_decoders(reducer: str, max_items: int | None = None) -> tuple[_Dec, ...]:
    return tuple(_decoder(col.type, max_items, col.name) for col in REDUCER_BY_NAME[reducer].args)


def decode_args(reducer: str, data: bytes, max_items: int | None = None) -> tuple[object, ...]:
    """Decode ``reducer``'s argument product; every byte must be used.  ``max_items``: an array
    argument declaring more items raises :class:`TooManyItems` before they are read."""
    rdef = REDUCER_BY_NAME.get(reducer)
    if rdef is None:
        raise BsatnError(f"unknown reducer {reducer[:80]!r}")
    return tuple(_decode_product(rdef.args, data, f"arguments of {reducer}", "parameter",
                                 _args_decoders(reducer, max_items)))


def encode_ret(reducer: str, value: object) -> bytes:
    """A reducer's ``ret_value``: the BSATN of its return value, empty for reducers returning nothing."""
    if reducer not in RETURN_TYPES:
        raise LocalProtocolError(f"unknown reducer {reducer!r}")
    t = RETURN_TYPES[reducer]
    if t is None:
        if value is not None:
            raise LocalProtocolError(f"{reducer} returns nothing, got {value!r:.80}")
        return b""
    w = Writer()
    encode_value(w, t, value)
    return w.getvalue()


def decode_ret(reducer: str, data: bytes) -> object:
    """Inverse of :func:`encode_ret` (``None`` for reducers that return nothing)."""
    if reducer not in RETURN_TYPES:
        raise BsatnError(f"unknown reducer {reducer[:80]!r}")
    t = RETURN_TYPES[reducer]
    r = Reader(data)
    value = None
    try:
        if t is not None:
            value = _decoder(t)(r)
        r.expect_end()
    except BsatnError as exc:
        raise BsatnError(f"return value of {reducer}: {exc}") from None
    return value
