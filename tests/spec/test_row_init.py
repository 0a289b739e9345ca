"""The rows' ``__init__`` (``spec.values.fast_init``) against the one ``dataclasses`` generates.

(Also ``reference.log.TxRecord``, ``reference.log.RowChange`` and ``reference.reducers.Ctx``, built per record
replayed or restarted and per append sealed.)

Each row class gets an ``__init__`` that writes its slots through their descriptors instead of
``object.__setattr__`` by name (docs/performance.md, "verify-log, halved (fourth session)").  The
oracle is a twin of each row class made by ``dataclasses.make_dataclass`` from the same fields,
frozen and slotted, whose ``__init__`` is the standard library's: the same signature, the same
values in the same fields from positional, keyword and default arguments, the same refusals with
the same messages, and the class still frozen.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from typing import Any

import pytest

from reference.log import RowChange, TxRecord
from reference.reducers import Ctx
from spec import values
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    PresenceSignal,
    ProviderCapability,
    SessionPresence,
    StreamSignal,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)

ROWS = (SyncStream, SyncEvent, SyncCheckpoint, SessionPresence, ProviderCapability, ComputeAssignment,
        BridgeOutbox, PresenceSignal, StreamSignal)
ALL = (*ROWS, TxRecord, RowChange, Ctx)  # and the per-record values of reference/ that use it


def _twin(cls: type) -> type:
    specs: list[Any] = []
    for f in dataclasses.fields(cls):
        specs.append((f.name, f.type) if f.default is dataclasses.MISSING
                     else (f.name, f.type, dataclasses.field(default=f.default, compare=f.compare, repr=f.repr)))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


def _fields(row: Any) -> list[tuple[str, Any]]:
    return [(f.name, getattr(row, f.name)) for f in dataclasses.fields(row)]


def test_every_row_class_of_the_schema_has_thefast_init() -> None:
    rows = set(values.Row.__args__)  # type: ignore[attr-defined]
    assert rows == set(ROWS)
    for cls in ALL:
        assert cls.__init__.__code__.co_filename == "<string>" and "_set0" in cls.__init__.__code__.co_names
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert cls.__init__.__module__ == cls.__module__


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_the_signature_is_the_dataclass_one(cls: type) -> None:
    twin = _twin(cls)
    assert str(inspect.signature(cls.__init__)) == str(inspect.signature(twin.__init__))
    assert cls.__init__.__annotations__ == twin.__init__.__annotations__
    assert cls.__init__.__defaults__ == twin.__init__.__defaults__


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_positional_keyword_and_default_arguments_fill_the_same_fields(cls: type) -> None:
    twin = _twin(cls)
    fs = dataclasses.fields(cls)
    rng = random.Random(cls.__name__)
    for _ in range(20):
        args = [rng.choice([rng.randrange(-5, 10**6), f"v{rng.randrange(100)}", None, (1, 2)]) for _ in fs]
        required = sum(1 for f in fs if f.default is dataclasses.MISSING)
        n = rng.randrange(required, len(fs) + 1)  # the defaults of the last fields may be left out
        cut = rng.randrange(0, n + 1)  # the first `cut` positionally, the rest by keyword
        kwargs = {f.name: a for f, a in zip(fs[cut:n], args[cut:n], strict=True)}
        mine, theirs = cls(*args[:cut], **kwargs), twin(*args[:cut], **kwargs)
        assert _fields(mine) == _fields(theirs)
        assert dataclasses.astuple(mine) == dataclasses.astuple(theirs)
        assert mine == cls(*[getattr(mine, f.name) for f in fs]) and hash(mine) == hash(dataclasses.replace(mine))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_bad_calls_are_refused_with_the_dataclass_messages(cls: type) -> None:
    twin = _twin(cls)
    fs = dataclasses.fields(cls)
    full = list(range(len(fs)))
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}), (tuple(full[:1]), {}), ((*full, 99), {}), (tuple(full), {"nope": 1}),
        (tuple(full), {fs[0].name: 1}), ((), {f.name: 0 for f in fs[1:]}),
    ]
    for args, kwargs in calls:
        with pytest.raises(TypeError) as want:
            twin(*args, **kwargs)
        with pytest.raises(TypeError) as got:
            cls(*args, **kwargs)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_the_rows_stay_frozen_and_slotted(cls: type) -> None:
    row = cls(*range(len(dataclasses.fields(cls))))
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(row, first, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(row, first)
    assert not hasattr(row, "__dict__")
    assert dataclasses.replace(row, **{first: "x"}) == cls("x", *range(1, len(dataclasses.fields(cls))))


def test_a_stream_row_left_without_its_chain_gets_fresh_empty_tuples() -> None:
    s = SyncStream("s", "c", 1, 0, 0, 5, 0, 100, 1, 2)
    assert s.earlier_epochs == () and s.earlier_seqs == ()
    assert SyncStream("s", "c", 1, 0, 0, 5, 0, 100, 1, 2, (3,)).earlier_seqs == ()
    assert SyncStream("s", "c", 1, 0, 0, 5, 0, 100, 1, 2, earlier_seqs=(4,)).earlier_epochs == ()


@pytest.mark.parametrize(("fld", "why"), [
    (dataclasses.field(default_factory=list), "default_factory"),
    (dataclasses.field(default=0, init=False), "init=False"),
    (dataclasses.field(default=0, kw_only=True), "kw_only"),
])
def test_other_dataclasses_are_refused_at_decoration(fld: Any, why: str) -> None:
    cls = dataclasses.make_dataclass("Odd", [("a", int), ("b", int, fld)], frozen=True, slots=True)
    with pytest.raises(TypeError, match=r"^fast_init: Odd\.b is not a plain positional field$"):
        values.fast_init(cls)


def test_a_plain_dataclass_is_taken_whole() -> None:
    """Called here, not at import (where mutmut's trampolines cannot reach the decoration)."""
    plain = dataclasses.make_dataclass(
        "Plain", [("a", int), ("b", int, dataclasses.field(default=7)), ("c", str, dataclasses.field(default="z"))],
        frozen=True, slots=True)
    plain.__module__ = "some.module"
    generated = plain.__init__
    cls = values.fast_init(plain)
    assert cls is plain and cls.__init__ is not generated
    assert cls.__init__.__module__ == "some.module" and cls.__init__.__qualname__ == "Plain.__init__"
    assert cls.__init__.__annotations__ == generated.__annotations__ == {"a": int, "b": int, "c": str, "return": None}
    assert cls.__init__.__defaults__ == generated.__defaults__ == (7, "z")
    assert _fields(cls(1)) == [("a", 1), ("b", 7), ("c", "z")]
    assert _fields(cls(1, c="y")) == [("a", 1), ("b", 7), ("c", "y")]


def test_a_dataclass_with_a_post_init_is_refused_at_decoration() -> None:
    # the fast __init__ writes the slots and nothing else: a __post_init__ check would be skipped
    cls = dataclasses.make_dataclass("Checked", [("a", int)], frozen=True, slots=True,
                                     namespace={"__post_init__": lambda self: None})
    with pytest.raises(TypeError, match=r"^fast_init: Checked has a __post_init__, which the fast "
                                        r"__init__ would skip$"):
        values.fast_init(cls)
