"""Values of the sync module: SATS types, identifiers and the row types of every table.

Rows are frozen, slotted dataclasses whose field order *is* the normative column order, which
is also the BSATN row layout a client decodes (DESIGN §2); :mod:`spec.schema` checks that
the two agree.  Values stay plain Python:

* ``Identity`` -- 64 lowercase hex characters (32 bytes; SpacetimeDB prints identities as hex);
* ``Timestamp`` -- microseconds since the Unix epoch, an int (SATS ``Timestamp``);
* ``u32``/``u64`` -- ints within range; ``Option<T>`` -- ``T | None``; ``Vec<T>`` -- a tuple.

Ids (stream, session, request, ...) are 1-128 characters of ``[A-Za-z0-9._:-]``, so ``|`` can
join them unambiguously (checkpoint ids are ``client_id|stream_id``).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

Identity = str
Timestamp = int

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
IDENTITY_RE = re.compile(r"[0-9a-f]{64}")
HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
ZERO_IDENTITY: Identity = "0" * 64


def is_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def is_identity(value: object) -> bool:
    return isinstance(value, str) and IDENTITY_RE.fullmatch(value) is not None


def is_hash(value: object) -> bool:
    return isinstance(value, str) and HASH_RE.fullmatch(value) is not None


def is_u32(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32_MAX


def is_u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


# --- SATS types (enough of them for this module) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Prim:
    """A primitive SATS type: String, Bool, U32, U64, I64, Identity, Timestamp."""

    name: str


@dataclass(frozen=True, slots=True)
class OptionT:
    inner: SatsType


@dataclass(frozen=True, slots=True)
class ArrayT:
    inner: SatsType


SatsType = Prim | OptionT | ArrayT

STRING = Prim("String")
BOOL = Prim("Bool")
U32 = Prim("U32")
U64 = Prim("U64")
I64 = Prim("I64")
IDENTITY = Prim("Identity")
TIMESTAMP = Prim("Timestamp")


def sats_name(t: SatsType) -> str:
    if isinstance(t, Prim):
        return t.name
    if isinstance(t, OptionT):
        return f"Option<{sats_name(t.inner)}>"
    return f"Vec<{sats_name(t.inner)}>"


def value_has_type(value: object, t: SatsType) -> bool:
    """True when ``value`` is a well-formed Python value of SATS type ``t``."""
    if isinstance(t, OptionT):
        return value is None or value_has_type(value, t.inner)
    if isinstance(t, ArrayT):
        return isinstance(value, tuple) and all(value_has_type(v, t.inner) for v in value)
    if t == STRING:
        return isinstance(value, str)
    if t == BOOL:
        return isinstance(value, bool)
    if t == U32:
        return is_u32(value)
    if t in (U64,):
        return is_u64(value)
    if t in (I64, TIMESTAMP):
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if t == IDENTITY:
        return is_identity(value)
    return False


# --- Rows, in normative column order ----------------------------------------------------------

# A frozen dataclass's generated ``__init__`` writes each field through ``object.__setattr__(self,
# name, value)`` (its own ``__setattr__`` refuses), which looks the field's slot up by name every
# time: ~0.15 us a field, ~5 % of the CPU of verify-log (docs/performance.md).  Rows are
# built on every append, restart and replay, so ``fast_init`` gives each row class an ``__init__``
# with the same parameters (names, order, defaults) that writes each field through its slot's own
# descriptor (``cls.field.__set__``, bound once): the same slots written with the same values, the
# class still frozen afterwards.  It takes only what the rows use -- fields in ``__init__``,
# positional, plain defaults, no ``__post_init__`` -- and refuses any other dataclass at import.
# ``reference`` uses it for the two values it builds per record replayed (``TxRecord``, the reducers' ``Ctx``).

_C = TypeVar("_C", bound=type)


def fast_init(cls: _C) -> _C:
    params: list[str] = []
    lines: list[str] = []
    env: dict[str, Any] = {}
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init: {cls.__name__} has a __post_init__, which the fast __init__ would skip")
    for i, f in enumerate(fields(cls)):
        if not f.init or f.kw_only is True or f.default_factory is not MISSING:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} is not a plain positional field")
        env[f"_set{i}"] = cls.__dict__[f.name].__set__
        lines.append(f"    _set{i}(self, {f.name})\n")
        if f.default is MISSING:
            params.append(f.name)
        else:
            env[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "".join(lines), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__dict__["__init__"].__annotations__)
    cls.__init__ = init  # type: ignore[misc]
    return cls


@fast_init
@dataclass(frozen=True, slots=True)
class SyncStream:
    stream_id: str
    stream_class: str
    epoch: int
    continues_epoch: int  # 0: the epoch started fresh; else the epoch this one continues (ADR-0003)
    continues_seq: int  # the last seq this epoch shares with continues_epoch
    head_seq: int
    floor_seq: int
    replay_budget: int
    created_at: Timestamp
    updated_at: Timestamp
    # the earlier hops of the continuation chain (ADR-0010), newest first: this epoch also continues
    # earlier_epochs[i] up to earlier_seqs[i] (already the minimum over every hop in between)
    earlier_epochs: tuple[int, ...] = ()
    earlier_seqs: tuple[int, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class SyncEvent:
    stream_id: str
    epoch: int
    seq: int
    idempotency_key: str
    payload_hash: str
    payload: str
    producer: Identity
    committed_at: Timestamp
    tx_offset: int


@fast_init
@dataclass(frozen=True, slots=True)
class SyncCheckpoint:
    checkpoint_id: str
    client_id: str
    stream_id: str
    owner: Identity
    epoch: int
    last_applied_seq: int
    updated_at: Timestamp


@fast_init
@dataclass(frozen=True, slots=True)
class SessionPresence:
    session_id: str
    identity: Identity
    device_id: str
    node_id: str
    status: str
    region: str
    last_seen: Timestamp
    expires_at: Timestamp
    offline_reason: str | None


@fast_init
@dataclass(frozen=True, slots=True)
class ProviderCapability:
    provider_id: str
    owner: Identity
    capability: str
    capability_hash: str
    nip90_kinds: tuple[int, ...]
    price_hint_sats: int
    status: str
    version: int
    updated_at: Timestamp


@fast_init
@dataclass(frozen=True, slots=True)
class ComputeAssignment:
    request_id: str
    requester: Identity
    job_kind: int
    request: str
    request_hash: str
    provider_id: str | None
    provider_owner: Identity | None
    status: str
    result: str | None
    version: int
    opened_at: Timestamp
    updated_at: Timestamp


@fast_init
@dataclass(frozen=True, slots=True)
class BridgeOutbox:
    outbox_id: str
    source: str
    nostr_kind: int
    tags: str
    content: str
    content_hash: str
    status: str
    attempts: int
    next_attempt_at: Timestamp
    last_error: str | None
    nostr_event_id: str | None
    relays_acked: tuple[str, ...]
    created_at: Timestamp
    updated_at: Timestamp


@fast_init
@dataclass(frozen=True, slots=True)
class PresenceSignal:
    session_id: str
    identity: Identity
    status: str
    reason: str
    at: Timestamp


@fast_init
@dataclass(frozen=True, slots=True)
class StreamSignal:
    stream_id: str
    kind: str
    payload: str
    sender: Identity
    at: Timestamp


Row = (SyncStream | SyncEvent | SyncCheckpoint | SessionPresence | ProviderCapability
       | ComputeAssignment | BridgeOutbox | PresenceSignal | StreamSignal)


def row_values(row: Row) -> tuple[Any, ...]:
    """The row as a tuple in column order (the BSATN layout)."""
    return tuple(getattr(row, f.name) for f in fields(row))


def column(row: Row, name: str) -> Any:
    return getattr(row, name)
