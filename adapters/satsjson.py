"""SATS-JSON: the JSON form of the module's values on the HTTP routes.

Two forms, as SpacetimeDB's sats serde has them (docs/protocol.md "SATS-JSON").  The ``sql``
route writes rows *untyped* (:func:`untyped_json`: a product an array, a sum ``[tag, v]``).  The
``call`` route reads arguments with the parameter types (:func:`from_json`, :func:`args_from_json`):
that form, or the *named* one :func:`to_json` writes (the conformance vectors' form) -- an
``Option`` ``{"some": v}`` / ``{"none": []}``, an ``Identity`` the string ``"0x"`` + 64 hex digits
(big-endian; syncref's own, upstream reads ``["0x.."]`` or ``{"__identity__": ..}``), a
``Timestamp`` ``{"__timestamp_micros_since_unix_epoch__": n}`` (a bare integer of microseconds is
accepted on input); integers are JSON numbers, arrays are arrays.

Parsing is peer input: anything malformed raises :class:`SatsJsonError` (a
:class:`~spec.errors.RemoteProtocolError`) naming the argument and what was wrong; the server
turns it into HTTP 400.  That includes a string holding a lone surrogate (JSON allows the escape
``"\ud800"``; UTF-8, the wire and the commit log cannot carry it): it is refused here, where it
enters, and never reaches a reducer.  Type schemas (``algebraic_type``) follow SpacetimeDB's ``AlgebraicType``
JSON: ``{"String": []}``, ``{"U64": []}``, ``{"Array": T}``, option as a ``Sum`` of ``some``/``none``,
Identity and Timestamp as their special one-field products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import Column, Table
from spec.values import BOOL, I64, IDENTITY, STRING, TIMESTAMP, U32, U64, ArrayT, OptionT, Prim, SatsType

TIMESTAMP_FIELD = "__timestamp_micros_since_unix_epoch__"
IDENTITY_FIELD = "__identity__"
_UNIT: dict[str, Any] = {"Product": {"elements": []}}
_HEX = frozenset("0123456789abcdefABCDEF")


class SatsJsonError(RemoteProtocolError):
    """A JSON value does not have the SATS type it should have."""


def _int_in(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def from_json(t: SatsType, v: object, where: str) -> object:
    """The Python value (as ``spec.values`` holds it) of the SATS-JSON value ``v`` of type ``t``."""
    if isinstance(t, OptionT):
        if v is None:  # SpacetimeDB's typed seed: a unit where an option is due is none
            return None
        if isinstance(v, dict) and len(v) == 1:  # {variant: payload}
            ((key, payload),) = v.items()
            tag = _option_tag(key)
            if tag == 0:
                return from_json(t.inner, payload, where)
            if tag == 1 and payload in ([], None, {}):
                return None
        if isinstance(v, list) and len(v) == 2:  # [variant, payload], as the untyped form writes it
            tag = _option_tag(v[0])
            if tag == 0:
                return from_json(t.inner, v[1], where)
            if tag == 1 and v[1] in ([], {}):
                return None
        raise SatsJsonError(f"{where}: expected an option ({{\"some\": v}}, {{\"none\": []}}, [0, v], [1, []] "
                            f"or null), got {_show(v)}")
    if isinstance(t, ArrayT):
        if not isinstance(v, list):
            raise SatsJsonError(f"{where}: expected an array, got {_show(v)}")
        return tuple(from_json(t.inner, item, f"{where}[{i}]") for i, item in enumerate(v))
    if t == STRING:
        if isinstance(v, str):
            bad = unencodable_at(v)
            if bad is not None:
                raise SatsJsonError(f"{where}: not valid Unicode text (a lone surrogate U+{ord(v[bad]):04X} at "
                                    f"character {bad}; JSON \\u escapes must pair)")
            return v
    elif t == BOOL:
        if isinstance(v, bool):
            return v
    elif t == U32:
        if _int_in(v, 0, 2**32 - 1):
            return v
    elif t == U64:
        if _int_in(v, 0, 2**64 - 1):
            return v
    elif t == I64:
        if _int_in(v, -(2**63), 2**63 - 1):
            return v
    elif t == TIMESTAMP:
        if isinstance(v, dict) and set(v) == {TIMESTAMP_FIELD}:
            v = v[TIMESTAMP_FIELD]
        elif isinstance(v, list) and len(v) == 1:  # the product as an array of its one field
            v = v[0]
        if _int_in(v, -(2**63), 2**63 - 1):
            return v
    elif t == IDENTITY:
        if isinstance(v, dict) and set(v) == {IDENTITY_FIELD}:
            v = v[IDENTITY_FIELD]
        elif isinstance(v, list) and len(v) == 1:
            v = v[0]
        if isinstance(v, str):
            if v.startswith(("0x", "0X")):  # a u256 as ethnum reads it: "0x" and hex digits of a value < 2^256
                h = v[2:]
                if h and all(c in _HEX for c in h) and int(h, 16) < 1 << 256:  # (base 16: linear)
                    return f"{int(h, 16):064x}"
            elif len(v) == 64 and all(c in _HEX for c in v):  # ours: the bare 64-digit display form
                return v.lower()
    raise SatsJsonError(f"{where}: expected {_type_name(t)}, got {_show(v)}")


def _option_tag(variant: object) -> int | None:
    """An ``Option``'s variant (0 some, 1 none) as SpacetimeDB's serde ``VariantVisitor`` reads it,
    or None: a number is the tag; a string is the tag when Rust's ``str::parse::<u8>`` reads it (an
    optional ``+``, then ASCII digits), else the variant's name."""
    if _int_in(variant, 0, 1):
        return cast(int, variant)
    if isinstance(variant, str):
        digits = variant.removeprefix("+")
        if digits.isascii() and digits.isdigit():
            tag = int(digits) if len(digits.lstrip("0")) <= 3 else 256  # (a long one is no u8: not converted)
            return tag if tag in (0, 1) else None
        return {"some": 0, "none": 1}.get(variant)
    return None


def unencodable_at(text: str) -> int | None:
    """The index of the first character UTF-8 cannot carry (a lone surrogate), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def to_json(t: SatsType, v: object) -> Any:
    """The SATS-JSON form of a Python value of type ``t`` (a caller bug if it does not have it)."""
    if isinstance(t, OptionT):
        return {"none": []} if v is None else {"some": to_json(t.inner, v)}
    if isinstance(t, ArrayT):
        if not isinstance(v, tuple | list):
            raise LocalProtocolError(f"not an array: {v!r}")
        return [to_json(t.inner, item) for item in v]
    if t == TIMESTAMP:
        return {TIMESTAMP_FIELD: v}
    if t == IDENTITY:
        return f"0x{v}"
    return v


def args_from_json(params: Sequence[Column], body: object) -> tuple[object, ...]:
    """A reducer's arguments from the call route's JSON body: an array in parameter order, or (as
    SpacetimeDB's ``ArgsSeed`` reads a named product) an object with exactly the parameters' names."""
    if isinstance(body, dict):
        names = [c.name for c in params]
        if set(body) != set(names):
            missing = [n for n in names if n not in body]
            extra = sorted(k for k in body if k not in names)
            raise SatsJsonError(f"the arguments by name must be exactly {', '.join(names)} "
                                f"(missing: {', '.join(missing) or '-'}; unknown: {_show(', '.join(extra)) or '-'})")
        return tuple(from_json(c.type, body[c.name], c.name) for c in params)
    if not isinstance(body, list):
        raise SatsJsonError(f"the body must be a JSON array of {len(params)} arguments (or an object of them "
                            f"by name), got {_show(body)}")
    if len(body) != len(params):
        raise SatsJsonError(f"expected {len(params)} arguments ({', '.join(c.name for c in params)}), got {len(body)}")
    return tuple(from_json(c.type, v, c.name) for c, v in zip(params, body, strict=True))


def row_to_json(table: Table, values: Sequence[object]) -> list[Any]:
    return [to_json(c.type, v) for c, v in zip(table.columns, values, strict=True)]


def untyped_json(t: SatsType, v: object) -> Any:
    """The JSON SpacetimeDB's ``/sql`` route writes for a value of type ``t``: its serde form
    without the type (a ``ProductValue`` serialized untyped).  A product is an array of its
    fields, a sum ``[tag, payload]``, a unit ``[]``, a u256 ``"0x"`` + lowercase hex without
    leading zeros (ethnum): an ``Identity`` is ``["0x<hex>"]``, a ``Timestamp`` ``[micros]``, an
    ``Option`` ``[0, v]`` (some) or ``[1, []]`` (none).  ``spacetime sql`` reads it back with the
    schema."""
    if isinstance(t, OptionT):
        return [1, []] if v is None else [0, untyped_json(t.inner, v)]
    if isinstance(t, ArrayT):
        if not isinstance(v, tuple | list):
            raise LocalProtocolError(f"not an array: {v!r}")
        return [untyped_json(t.inner, item) for item in v]
    if t == TIMESTAMP:
        return [v]
    if t == IDENTITY:
        return [f"0x{int(str(v), 16):x}"]
    return v


def row_to_sql_json(table: Table, values: Sequence[object]) -> list[Any]:
    """A row as the ``/sql`` route writes it (:func:`untyped_json` of each column)."""
    return [untyped_json(c.type, v) for c, v in zip(table.columns, values, strict=True)]


def algebraic_type(t: SatsType) -> dict[str, Any]:
    """SpacetimeDB's ``AlgebraicType`` JSON for ``t``."""
    if isinstance(t, OptionT):
        return {"Sum": {"variants": [{"name": {"some": "some"}, "algebraic_type": algebraic_type(t.inner)},
                                     {"name": {"some": "none"}, "algebraic_type": _UNIT}]}}
    if isinstance(t, ArrayT):
        return {"Array": algebraic_type(t.inner)}
    if t == IDENTITY:
        return {"Product": {"elements": [{"name": {"some": IDENTITY_FIELD}, "algebraic_type": {"U256": []}}]}}
    if t == TIMESTAMP:
        return {"Product": {"elements": [{"name": {"some": TIMESTAMP_FIELD}, "algebraic_type": {"I64": []}}]}}
    return {_PRIM_JSON[t.name]: []}


def product_type(columns: Sequence[Column]) -> dict[str, Any]:
    return {"elements": [{"name": {"some": c.name}, "algebraic_type": algebraic_type(c.type)} for c in columns]}


_PRIM_JSON = {"String": "String", "Bool": "Bool", "U32": "U32", "U64": "U64", "I64": "I64"}


def _type_name(t: SatsType) -> str:
    if isinstance(t, Prim):
        return {"U32": "u32", "U64": "u64", "I64": "i64", "Bool": "bool"}.get(t.name, t.name)
    if isinstance(t, OptionT):
        return f"Option<{_type_name(t.inner)}>"
    return f"Vec<{_type_name(t.inner)}>"


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
