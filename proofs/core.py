"""Z3 plumbing shared by every encoding: records of Z3 constants, bounded lists, error codes.

A *record* is a frozen dataclass whose fields are annotated ``ZInt`` or ``ZBool``.  The same
class serves two purposes: :func:`fresh` fills it with Z3 constants (a symbolic row or state),
and a plain constructor call fills it with Python ints and bools (a concrete row, used by the
correspondence tests).  Z3 coerces Python values on contact, so every formula builder accepts
either.

Rows of keyed tables carry a ``used`` flag; optional columns a ``has_*`` flag.  Equality of two
rows is *semantic* (:func:`same`): an unused row equals any other unused row whatever its other
fields hold, and an absent option ignores its value.  Records list the fields that are only
meaningful under a flag in ``GUARDS`` (field -> guard field).

z3 ships no type information, so Z3 values are typed ``Any`` (aliases :data:`ZInt`,
:data:`ZBool`, :data:`ZExpr`); the encodings are typed everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields, replace
from typing import Any, ClassVar, TypeVar

import z3

from spec.errors import ErrorCode

ZInt = Any  # a z3 ArithRef, or a Python int in a concrete record
ZBool = Any  # a z3 BoolRef, or a Python bool in a concrete record
ZExpr = Any  # any z3 expression

R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")

# --- error codes ----------------------------------------------------------------------------------

OK_CODE = 0
"""The ``code`` of a successful outcome; every :class:`~spec.errors.ErrorCode` gets 1, 2, ..."""

CODE: dict[ErrorCode, int] = {c: i + 1 for i, c in enumerate(ErrorCode)}
CODE_NAME: dict[int, str] = {0: "ok", **{v: k.value for k, v in CODE.items()}}


def code(c: ErrorCode) -> int:
    return CODE[c]


# --- records --------------------------------------------------------------------------------------


class Record:
    """Mixin for record dataclasses: ``GUARDS`` maps a field to the flag that makes it meaningful."""

    GUARDS: ClassVar[dict[str, str]] = {}


def fresh(cls: type[R], prefix: str) -> R:
    """A record of fresh Z3 constants named ``prefix.field``."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        name = f"{prefix}.{f.name}"
        if f.type == "ZBool":
            values[f.name] = z3.Bool(name)
        elif f.type == "ZInt":
            values[f.name] = z3.Int(name)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: records hold only ZInt and ZBool fields")
    return cls(**values)


def fresh_rows(cls: type[R], prefix: str, n: int) -> tuple[R, ...]:
    return tuple(fresh(cls, f"{prefix}{i}") for i in range(n))


def field_names(rec: object) -> tuple[str, ...]:
    return tuple(f.name for f in fields(rec))  # type: ignore[arg-type]


def same(a: Record, b: Record, used: str | None = "used") -> ZBool:
    """Semantic equality of two rows of one record type (see the module essay)."""
    guards = type(a).GUARDS
    parts: list[ZBool] = []
    for name in field_names(a):
        if name == used:
            continue
        eq = getattr(a, name) == getattr(b, name)
        g = guards.get(name)
        if g is not None:
            eq = z3.Implies(getattr(a, g), eq)
        parts.append(eq)
    body = z3.And(parts)
    if used is None or used not in field_names(a):
        return body
    return z3.And(getattr(a, used) == getattr(b, used), z3.Implies(getattr(a, used), body))


def same_rows(a: Sequence[Record], b: Sequence[Record]) -> ZBool:
    return z3.And([same(x, y) for x, y in zip(a, b, strict=True)])


def ite(c: ZBool, a: R, b: R) -> R:
    """Field-wise if-then-else of two records of one type."""
    values = {name: z3.If(c, getattr(a, name), getattr(b, name)) for name in field_names(a)}
    return replace(a, **values)  # type: ignore[type-var]


def select(rows: Sequence[R], i: ZInt) -> R:
    """``rows[i]`` for a symbolic index (the last row when ``i`` is out of range)."""
    out = rows[-1]
    for j in range(len(rows) - 2, -1, -1):
        out = ite(i == j, rows[j], out)
    return out


def zmax(xs: Iterable[ZInt]) -> ZInt:
    items = list(xs)
    out = items[0]
    for x in items[1:]:
        out = z3.If(x > out, x, out)
    return out


def one_of(x: ZInt, values: Iterable[int]) -> ZBool:
    return z3.Or([x == v for v in values])


def in_range(x: ZInt, lo: int, hi: int) -> ZBool:
    """``lo <= x < hi``."""
    return z3.And(lo <= x, x < hi)


def first_error(checks: Sequence[tuple[ZBool, ZInt]]) -> ZInt:
    """The code of the first failing check, in order, or :data:`OK_CODE`."""
    out: ZInt = z3.IntVal(OK_CODE)
    for failed, err in reversed(checks):
        out = z3.If(failed, err, out)
    return out


# --- bounded lists -----------------------------------------------------------------------------------


def filtered(n: ZInt, items: Sequence[A], keep: Callable[[A], ZBool], out_n: ZInt, out: Sequence[B],
             eq: Callable[[B, A], ZBool]) -> ZBool:
    """``out[:out_n]`` is ``[x for x in items[:n] if keep(x)]``, order kept.  When more than
    ``len(out)`` items are kept the result does not fit and the formula is false."""
    parts: list[ZBool] = []
    count: ZInt = z3.IntVal(0)
    for j, x in enumerate(items):
        take = z3.And(j < n, keep(x))
        parts.append(z3.Implies(take, count < len(out)))
        for i in range(min(j + 1, len(out))):
            parts.append(z3.Implies(z3.And(take, count == i), eq(out[i], x)))
        count = count + z3.If(take, 1, 0)
    parts.append(out_n == count)
    return z3.And(parts)
