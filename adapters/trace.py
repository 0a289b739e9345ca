"""Readable decoding of captured WebSocket frames, for reviewers (sans-I/O).

:func:`decode_trace` takes ``(direction, frame)`` pairs, where ``direction`` is ``"c2s"`` or
``"s2c"`` and ``frame`` is the raw binary WebSocket payload, and returns one JSON-able dict per
*message*.  A v3 frame may hold several messages; they share a ``frame`` index.  Each dict has
``frame``, ``direction`` and ``type`` (the wire message name), then the message's fields:

* rows are decoded with the table schema into ``{column: value}`` dicts (``Vec`` becomes a
  list, ``Identity`` its hex, ``Option`` none ``null``);
* reducer arguments become ``{parameter: value}``; a ``ReducerResult`` names its reducer and
  decodes its return value when the capture holds the ``CallReducer`` with the same request id;
* error strings of the form ``<code>: {json}`` (:meth:`spec.errors.SyncError.render`) gain
  ``error_code`` and ``error_details``;
* ``InitialConnection`` tokens are shown only as their length unless ``show_tokens`` is set;
* ``connection_id`` is 32 hex digits (big-endian, as upstream prints it).

Nothing raises on bad input: a frame that does not decode becomes
``{"frame", "direction", "error", "hex"}`` (the hex cut to 256 bytes), and a part that does not
decode (one row, a reducer's arguments) carries its own ``error`` while the rest is shown.

Capture files (:func:`parse_capture`) are UTF-8 text, one frame per line::

    # a comment; blank lines are ignored too
    c2s 00010000000200000001000000...     client -> server
    s2c 0000...                           server -> client (including the compression tag)
    0000...                               a bare hex line is server -> client

Hex may contain spaces (``00 01 02``); hex and direction are case-insensitive.  A malformed line raises
:class:`CaptureError` (a ``ValueError``) naming its line number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapters import wire
from adapters.bsatn import decode_args, decode_ret, decode_row
from spec.errors import ProtocolError, SyncError
from spec.schema import REDUCER_BY_NAME, TABLE_BY_NAME
from spec.values import row_values

__all__ = ["DIRECTIONS", "CaptureError", "decode_trace", "parse_capture"]

DIRECTIONS = ("c2s", "s2c")
HEX_PREVIEW = 256


class CaptureError(ValueError):
    """A capture file line that is neither a comment nor ``[c2s|s2c] <hex>``."""


def parse_capture(text: str) -> list[tuple[str, bytes]]:
    """The frames of a capture file (see the module docstring for the format)."""
    frames: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        head, *rest = stripped.split(None, 1)
        direction = "s2c"
        if head.lower() in DIRECTIONS:
            direction, stripped = head.lower(), "".join(rest)
        elif not rest and not _is_hex(head):
            raise CaptureError(f"line {number}: expected 'c2s <hex>', 's2c <hex>' or bare hex, got {line[:60]!r}")
        try:
            frame = bytes.fromhex(stripped)
        except ValueError as exc:
            raise CaptureError(f"line {number}: invalid hex: {exc}") from None
        frames.append((direction, frame))
    return frames


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


# --- values -----------------------------------------------------------------------------------


def _json(value: object) -> Any:
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    return value


def _rows(table: str, rows: wire.RowList) -> list[Any]:
    t = TABLE_BY_NAME.get(table)
    out: list[Any] = []
    for data in rows.rows():
        if t is None:
            out.append({"error": f"unknown table {table!r}", "hex": data.hex()})
            continue
        try:
            row = decode_row(table, data)
        except ProtocolError as exc:
            out.append({"error": str(exc), "hex": data.hex()})
            continue
        out.append({c.name: _json(v) for c, v in zip(t.columns, row_values(row), strict=True)})
    return out


def _query_rows(qr: wire.QueryRows) -> list[dict[str, Any]]:
    return [{"table": t.table, "rows": _rows(t.table, t.rows)} for t in qr.tables]


def _query_sets(tu: wire.TransactionUpdate) -> list[dict[str, Any]]:
    out = []
    for qs in tu.query_sets:
        tables = []
        for t in qs.tables:
            updates: list[dict[str, Any]] = []
            for part in t.rows:
                if isinstance(part, wire.PersistentTableRows):
                    updates.append({"kind": "persistent", "inserts": _rows(t.table_name, part.inserts),
                                    "deletes": _rows(t.table_name, part.deletes)})
                else:
                    updates.append({"kind": "event", "events": _rows(t.table_name, part.events)})
            tables.append({"table": t.table_name, "updates": updates})
        out.append({"query_set_id": qs.query_set_id, "tables": tables})
    return out


def _error_text(text: str, out: dict[str, Any], key: str = "error") -> None:
    out[key] = text
    try:
        parsed = SyncError.parse(text)
    except ProtocolError:
        return
    out["error_code"] = parsed.code.value
    out["error_details"] = dict(parsed.details)


# --- messages ---------------------------------------------------------------------------------


def _client(msg: wire.ClientMessage, reducers: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(msg).__name__, "request_id": msg.request_id}
    if isinstance(msg, wire.Subscribe):
        out.update(query_set_id=msg.query_set_id, query_strings=list(msg.query_strings))
    elif isinstance(msg, wire.Unsubscribe):
        out.update(query_set_id=msg.query_set_id, send_dropped_rows=msg.send_dropped_rows)
    elif isinstance(msg, wire.OneOffQuery):
        out.update(query_string=msg.query_string)
    elif isinstance(msg, wire.CallReducer):
        reducers[msg.request_id] = msg.reducer
        out.update(flags=msg.flags, reducer=msg.reducer)
        rdef = REDUCER_BY_NAME.get(msg.reducer)
        if rdef is None:
            out.update(args_hex=msg.args.hex(), args_error=f"unknown reducer {msg.reducer!r}")
        else:
            try:
                values = decode_args(msg.reducer, msg.args)
                out["args"] = {c.name: _json(v) for c, v in zip(rdef.args, values, strict=True)}
            except ProtocolError as exc:
                out.update(args_hex=msg.args.hex(), args_error=str(exc))
    else:
        out.update(flags=msg.flags, procedure=msg.procedure, args_hex=msg.args.hex())
    return out


def _outcome(o: wire.ReducerOutcome, reducer: str | None) -> dict[str, Any]:
    if isinstance(o, wire.ReducerOk):
        out: dict[str, Any] = {"status": "ok", "ret_hex": o.ret_value.hex()}
        if reducer is not None:
            try:
                out["ret"] = _json(decode_ret(reducer, o.ret_value))
            except ProtocolError as exc:
                out["ret_error"] = str(exc)
        out["query_sets"] = _query_sets(o.transaction_update)
        return out
    if isinstance(o, wire.ReducerOkEmpty):
        return {"status": "ok_empty"}
    if isinstance(o, wire.ReducerErr):
        out = {"status": "err"}
        try:
            _error_text(wire.decode_string(o.error), out)
        except ProtocolError as exc:
            out.update(error_hex=o.error.hex(), error_decode_error=str(exc))
        return out
    return {"status": "internal_error", "message": o.message}


def _server(msg: wire.ServerMessage, reducers: Mapping[int, str], show_tokens: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(msg).__name__}
    if isinstance(msg, wire.InitialConnection):
        out.update(identity=msg.identity, connection_id=f"{msg.connection_id:032x}",
                   token=msg.token if show_tokens else f"<{len(msg.token)} chars>")
    elif isinstance(msg, wire.SubscribeApplied):
        out.update(request_id=msg.request_id, query_set_id=msg.query_set_id, tables=_query_rows(msg.rows))
    elif isinstance(msg, wire.UnsubscribeApplied):
        out.update(request_id=msg.request_id, query_set_id=msg.query_set_id,
                   tables=None if msg.rows is None else _query_rows(msg.rows))
    elif isinstance(msg, wire.SubscriptionError):
        out.update(request_id=msg.request_id, query_set_id=msg.query_set_id)
        _error_text(msg.error, out)
    elif isinstance(msg, wire.TransactionUpdate):
        out["query_sets"] = _query_sets(msg)
    elif isinstance(msg, wire.OneOffQueryResult):
        out["request_id"] = msg.request_id
        if isinstance(msg.result, str):
            _error_text(msg.result, out)
        else:
            out["tables"] = _query_rows(msg.result)
    elif isinstance(msg, wire.ReducerResult):
        reducer = reducers.get(msg.request_id)
        out.update(request_id=msg.request_id, timestamp=msg.timestamp, reducer=reducer,
                   outcome=_outcome(msg.outcome, reducer))
    else:
        status: dict[str, Any] = ({"status": "returned", "value_hex": msg.status.value.hex()}
                                  if isinstance(msg.status, wire.ProcedureReturned)
                                  else {"status": "internal_error", "message": msg.status.message})
        out.update(request_id=msg.request_id, timestamp=msg.timestamp,
                   total_host_execution_duration=msg.total_host_execution_duration, status=status)
    return out


_COMPRESSION_NAMES = {0: "None", 1: "Brotli", 2: "Gzip"}


def decode_trace(frames: Iterable[tuple[str, bytes]], version: int, *,
                 show_tokens: bool = False) -> list[dict[str, Any]]:
    """One readable dict per message of the captured frames (see the module docstring)."""
    if version not in (2, 3):
        raise ValueError(f"unsupported wire version {version!r} (2 or 3)")
    reducers: dict[int, str] = {}
    out: list[dict[str, Any]] = []
    for index, (direction, frame) in enumerate(frames):
        base: dict[str, Any] = {"frame": index, "direction": direction}
        try:
            if direction == "c2s":
                items = [_client(m, reducers) for m in wire.decode_client_frame(frame, version)]
            elif direction == "s2c":
                messages = wire.decode_server_frame(frame, version)
                base["compression"] = _COMPRESSION_NAMES[frame[0]]
                items = [_server(m, reducers, show_tokens) for m in messages]
            else:
                raise ValueError(f"unknown direction {direction!r} (c2s or s2c)")
        except (ProtocolError, ValueError) as exc:
            out.append({**base, "error": str(exc), "hex": bytes(frame[:HEX_PREVIEW]).hex()})
            continue
        out.extend({**base, **item} for item in items)
    return out
