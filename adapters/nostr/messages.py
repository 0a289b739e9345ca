"""NIP-01 relay protocol messages: frozen values, an encoder, and a strict parser.

A client sends ``["EVENT", <event>]`` (:class:`PublishEvent`), ``["REQ", <sub>, <filter>...]``
(:class:`Req`) and ``["CLOSE", <sub>]`` (:class:`Close`).  A relay answers with

================================  ======================  ===================================
``["EVENT", <sub>, <event>]``     :class:`RelayEvent`     a stored or live event for a REQ
``["OK", <id>, <bool>, <msg>]``   :class:`Ok`             the verdict on one published event
``["EOSE", <sub>]``               :class:`Eose`           end of stored events for a REQ
``["CLOSED", <sub>, <msg>]``      :class:`Closed`         the relay ended (or refused) a REQ
``["NOTICE", <msg>]``             :class:`Notice`         a human-readable message
``["AUTH", <challenge>]``         :class:`AuthChallenge`  NIP-42; parsed, never answered
================================  ======================  ===================================

:func:`parse_relay_message` takes one WebSocket text frame and returns one of those values or
raises :class:`RelayProtocolError` -- nothing else, whatever it is given (bytes, invalid JSON,
duplicate object keys, ``NaN``, deep nesting, wrong arity or types).  It is strict on purpose:
exact arity (NIP-01 says the ``OK`` message "MUST always be present"), subscription ids 1-64
characters, event ids 64 lowercase hex digits, and events parsed by :meth:`Event.from_json` (shape
only: the connection core verifies ids and signatures).  One tolerance, for the ``nostr-relay``
package: it answers a *rejected* event with an empty event id (``["OK","",false,"invalid: ..."]``),
so :class:`Ok` allows ``""``; the connection core attributes it to the oldest event in flight.

``OK`` and ``CLOSED`` messages carry a machine-readable prefix (``duplicate:``, ``blocked:``,
``rate-limited:``, ``invalid:``, ``pow:``, ``error:``, ...); :func:`reason_prefix` extracts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.nostr.errors import NostrUsageError, RelayProtocolError, one_line
from adapters.nostr.event import MAX_KIND, Event

__all__ = [
    "MAX_SUBSCRIPTION_ID",
    "AuthChallenge",
    "ClientMessage",
    "Close",
    "Closed",
    "Eose",
    "Filter",
    "Notice",
    "Ok",
    "PublishEvent",
    "RelayEvent",
    "RelayMessage",
    "Req",
    "encode_client_message",
    "parse_relay_message",
    "reason_prefix",
]

MAX_SUBSCRIPTION_ID = 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"([a-z][a-z0-9_-]*):")
_TAG_KEY = re.compile(r"#[A-Za-z]")


def reason_prefix(message: str) -> str:
    """The machine-readable prefix of an ``OK``/``CLOSED`` message (``"blocked"``), or ``""``."""
    m = _PREFIX.match(message)
    return m.group(1) if m else ""


def _check_subscription_id(value: object, exc: type[Exception]) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SUBSCRIPTION_ID:
        raise exc(f"a subscription id is a string of 1-{MAX_SUBSCRIPTION_ID} characters, got {repr(value)[:80]}")
    return value


# ---------------------------------------------------------------------------------------- client side


@dataclass(frozen=True, slots=True)
class Filter:
    """A NIP-01 ``REQ`` filter; ``tags`` maps a single letter (``"d"``) to the values of ``#d``."""

    ids: tuple[str, ...] | None = None
    authors: tuple[str, ...] | None = None
    kinds: tuple[int, ...] | None = None
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    since: int | None = None
    until: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("ids", "authors"):
            values = getattr(self, name)
            if values is not None:
                if isinstance(values, str) or not all(isinstance(v, str) and _HEX64.fullmatch(v) for v in values):
                    raise NostrUsageError(f"filter {name} must be 64-lowercase-hex strings")
                object.__setattr__(self, name, tuple(values))
        if self.kinds is not None:
            if not all(type(k) is int and 0 <= k <= MAX_KIND for k in self.kinds):
                raise NostrUsageError(f"filter kinds must be integers within [0, {MAX_KIND}]")
            object.__setattr__(self, "kinds", tuple(self.kinds))
        frozen: dict[str, tuple[str, ...]] = {}
        for letter, values in dict(self.tags).items():
            if not (isinstance(letter, str) and len(letter) == 1 and letter.isascii() and letter.isalpha()):
                raise NostrUsageError(f"filter tag keys are single letters a-z/A-Z, got {letter!r}")
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise NostrUsageError(f"filter #{letter} values must be strings")
            frozen[letter] = tuple(values)
        object.__setattr__(self, "tags", frozen)
        for name in ("since", "until", "limit"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise NostrUsageError(f"filter {name} must be a non-negative integer, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("ids", "authors", "kinds"):
            values = getattr(self, name)
            if values is not None:
                out[name] = list(values)
        for letter, values in self.tags.items():
            out[f"#{letter}"] = list(values)
        for name in ("since", "until", "limit"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class PublishEvent:
    event: Event


@dataclass(frozen=True, slots=True)
class Req:
    subscription_id: str
    filters: tuple[Filter, ...]

    def __post_init__(self) -> None:
        _check_subscription_id(self.subscription_id, NostrUsageError)
        if not self.filters or not all(isinstance(f, Filter) for f in self.filters):
            raise NostrUsageError("a REQ needs at least one Filter")
        object.__setattr__(self, "filters", tuple(self.filters))


@dataclass(frozen=True, slots=True)
class Close:
    subscription_id: str

    def __post_init__(self) -> None:
        _check_subscription_id(self.subscription_id, NostrUsageError)


ClientMessage = PublishEvent | Req | Close


def encode_client_message(message: ClientMessage) -> str:
    """The WebSocket text frame for ``message``."""
    body: list[Any]
    if isinstance(message, PublishEvent):
        body = ["EVENT", message.event.to_json()]
    elif isinstance(message, Req):
        body = ["REQ", message.subscription_id, *(f.to_json() for f in message.filters)]
    elif isinstance(message, Close):
        body = ["CLOSE", message.subscription_id]
    else:
        raise NostrUsageError(f"not a client message: {type(message).__name__}")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------- relay side


@dataclass(frozen=True, slots=True)
class RelayEvent:
    subscription_id: str
    event: Event


@dataclass(frozen=True, slots=True)
class Ok:
    event_id: str  # 64 lowercase hex digits, or "" (nostr-relay's answer to a rejected event)
    accepted: bool
    message: str

    @property
    def prefix(self) -> str:
        return reason_prefix(self.message)


@dataclass(frozen=True, slots=True)
class Eose:
    subscription_id: str


@dataclass(frozen=True, slots=True)
class Closed:
    subscription_id: str
    message: str

    @property
    def prefix(self) -> str:
        return reason_prefix(self.message)


@dataclass(frozen=True, slots=True)
class Notice:
    message: str


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    challenge: str


RelayMessage = RelayEvent | Ok | Eose | Closed | Notice | AuthChallenge


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RelayProtocolError(f"duplicate object key {key[:40]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise RelayProtocolError(f"{name} is not JSON")


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise RelayProtocolError(f"{what} must be a string, got {repr(value)[:60]}")
    return value


def _arity(items: Sequence[Any], n: int, shape: str) -> None:
    if len(items) != n:
        raise RelayProtocolError(f"{items[0]} message must be {shape}, got {len(items)} elements")


def parse_relay_message(frame: str | bytes) -> RelayMessage:
    """Parse one frame from a relay; :class:`RelayProtocolError` (one line) if it is not valid."""
    if not isinstance(frame, str):
        raise RelayProtocolError(f"expected a text frame, got {type(frame).__name__} ({len(frame)} bytes)")
    try:
        data = json.loads(frame, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RelayProtocolError as exc:
        raise RelayProtocolError(f"not a relay message: {exc}") from None
    except RecursionError:
        raise RelayProtocolError("not a relay message: JSON nested too deeply") from None
    except ValueError as exc:
        raise RelayProtocolError(f"not a relay message: invalid JSON ({exc}): {one_line(frame, 80)!r}") from None
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise RelayProtocolError(f"not a relay message: expected a JSON array starting with a type string, "
                                 f"got {one_line(frame, 80)!r}")
    kind = data[0]
    try:
        if kind == "EVENT":
            _arity(data, 3, '["EVENT", <subscription id>, <event>]')
            return RelayEvent(_check_subscription_id(data[1], RelayProtocolError), Event.from_json(data[2]))
        if kind == "OK":
            _arity(data, 4, '["OK", <event id>, <true|false>, <message>]')
            event_id = _string(data[1], "the OK event id")
            if event_id and not _HEX64.fullmatch(event_id):
                raise RelayProtocolError(f"the OK event id must be 64 lowercase hex digits, got {event_id[:80]!r}")
            if not isinstance(data[2], bool):
                raise RelayProtocolError(f"the OK verdict must be true or false, got {repr(data[2])[:40]}")
            return Ok(event_id, data[2], _string(data[3], "the OK message"))
        if kind == "EOSE":
            _arity(data, 2, '["EOSE", <subscription id>]')
            return Eose(_check_subscription_id(data[1], RelayProtocolError))
        if kind == "CLOSED":
            _arity(data, 3, '["CLOSED", <subscription id>, <message>]')
            return Closed(_check_subscription_id(data[1], RelayProtocolError), _string(data[2], "the CLOSED message"))
        if kind == "NOTICE":
            _arity(data, 2, '["NOTICE", <message>]')
            return Notice(_string(data[1], "the NOTICE message"))
        if kind == "AUTH":
            _arity(data, 2, '["AUTH", <challenge>]')
            return AuthChallenge(_string(data[1], "the AUTH challenge"))
    except RelayProtocolError as exc:
        raise RelayProtocolError(f"bad {kind} message: {exc}") from None
    raise RelayProtocolError(f"unknown relay message type {kind[:40]!r}")
