"""NIP-01 events: the canonical serialization, the id, signing and verification.

An event's id is the lowercase hex SHA-256 of the UTF-8 bytes of
``[0,<pubkey>,<created_at>,<kind>,<tags>,<content>]`` written with no whitespace, and its ``sig``
is the BIP-340 signature of those 32 id bytes.  NIP-01 fixes the string escaping, and it is *not*
what a JSON encoder does: exactly seven characters are escaped -- line feed ``\\n``, double quote
``\\"``, backslash ``\\\\``, carriage return ``\\r``, tab ``\\t``, backspace ``\\b``, form feed
``\\f`` -- "and all other characters must be included verbatim".  So U+0000-U+001F other than
those five controls, U+007F, U+2028, U+2029, non-ASCII and non-BMP characters are written as raw
UTF-8, never as ``\\uXXXX``.  (The result is not always valid JSON: a raw U+0001 inside a string is
not; it is only ever hashed.)  :data:`NIP01_ESCAPES` is that table; :func:`serialize` applies it to
every string, the tags' included.

Implementations disagree on the 27 control characters NIP-01 writes verbatim: JSON encoders
escape them (``JSON.stringify`` and Python's ``json`` as ``\\u0001``, rapidjson -- used by the
``nostr-relay`` package -- as ``\\u001F``), and each gets a different id for the same event.  A relay
of another dialect recomputes a different id and rejects such an event.  :func:`sign_event`
therefore refuses them unless ``allow_nonportable=True`` (the conformance vectors use that to pin
the NIP-01 serialization of every control character); :func:`nonportable_characters` lists them.

:class:`EventTemplate` is what the caller chooses (created_at, kind, tags, content);
:func:`sign_event` adds the pubkey, id and sig.  :class:`Event` is a complete event, from us or
read back from a relay; :func:`verify_event` recomputes its id and checks its signature, raising
:class:`EventVerificationError`.  Field rules (both for what we build and what relays send):
``pubkey``/``id`` 64 and ``sig`` 128 lowercase hex digits, ``created_at`` an integer in
``[0, 2^53-1]`` (seconds; every JSON reader holds it exactly), ``kind`` in ``[0, 65535]``, tags a list
of lists of strings, and every string valid Unicode (no lone surrogates, which have no UTF-8).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.nostr.errors import EventVerificationError, NostrUsageError, RelayProtocolError
from adapters.nostr.keys import SigningKey, verify_signature

__all__ = [
    "MAX_CREATED_AT",
    "MAX_KIND",
    "NIP01_ESCAPES",
    "NONPORTABLE_CONTROLS",
    "Event",
    "EventTemplate",
    "event_id",
    "nonportable_characters",
    "serialize",
    "sign_event",
    "verify_event",
]

MAX_KIND = 65535
MAX_CREATED_AT = 2**53 - 1

# NIP-01 "Events and signatures": the only characters escaped, and how.
NIP01_ESCAPES: Mapping[str, str] = {
    "\n": "\\n",
    '"': '\\"',
    "\\": "\\\\",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
# Control characters NIP-01 writes verbatim but JSON encoders escape (see the module essay).
NONPORTABLE_CONTROLS: frozenset[str] = frozenset(chr(c) for c in range(0x20)) - frozenset(NIP01_ESCAPES)

_TRANSLATE = str.maketrans(dict(NIP01_ESCAPES))
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_SURROGATE = re.compile("[\ud800-\udfff]")

Tags = tuple[tuple[str, ...], ...]


def _int_problem(name: str, value: object, high: int) -> str | None:
    if type(value) is not int:
        return f"{name} must be an integer, got {type(value).__name__}"
    if not 0 <= value <= high:
        return f"{name} must be within [0, {high}], got {value}"
    return None


def _string_problem(name: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"{name} must be a string, got {type(value).__name__}"
    m = _SURROGATE.search(value)
    if m:
        return f"{name} holds a lone surrogate U+{ord(m.group()):04X} at index {m.start()} (no UTF-8 encoding)"
    return None


def _tags_problem(tags: object) -> str | None:
    if not isinstance(tags, (list, tuple)):
        return f"tags must be a list of lists of strings, got {type(tags).__name__}"
    for i, tag in enumerate(tags):
        if not isinstance(tag, (list, tuple)):
            return f"tags[{i}] must be a list of strings, got {type(tag).__name__}"
        for j, item in enumerate(tag):
            problem = _string_problem(f"tags[{i}][{j}]", item)
            if problem:
                return problem
    return None


def _hex_problem(name: str, value: object, pattern: re.Pattern[str], digits: int) -> str | None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value)[:80]
        return f"{name} must be {digits} lowercase hex digits, got {shown}"
    return None


def _freeze_tags(tags: Sequence[Sequence[str]]) -> Tags:
    return tuple(tuple(tag) for tag in tags)


def _body_problem(created_at: object, kind: object, tags: object, content: object) -> str | None:
    return (_int_problem("created_at", created_at, MAX_CREATED_AT) or _int_problem("kind", kind, MAX_KIND)
            or _tags_problem(tags) or _string_problem("content", content))


def _quote(text: str) -> str:
    return '"' + text.translate(_TRANSLATE) + '"'


def serialize(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> bytes:
    """The NIP-01 serialization (UTF-8 bytes) that an event id hashes."""
    problem = _hex_problem("pubkey", pubkey, _HEX64, 64) or _body_problem(created_at, kind, tags, content)
    if problem:
        raise NostrUsageError(f"cannot serialize the event: {problem}")
    tag_text = ",".join("[" + ",".join(_quote(item) for item in tag) + "]" for tag in tags)
    text = f"[0,{_quote(pubkey)},{created_at},{kind},[{tag_text}],{_quote(content)}]"
    return text.encode("utf-8")


def event_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> str:
    """The NIP-01 event id: lowercase hex SHA-256 of :func:`serialize`."""
    return hashlib.sha256(serialize(pubkey, created_at, kind, tags, content)).hexdigest()


def nonportable_characters(tags: Sequence[Sequence[str]], content: str) -> list[str]:
    """The distinct control characters in ``tags``/``content`` whose serialization implementations
    disagree on (sorted); empty when every implementation computes the same id."""
    found: set[str] = set()
    for text in [content, *(item for tag in tags for item in tag)]:
        found.update(NONPORTABLE_CONTROLS.intersection(text))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class EventTemplate:
    """The part of an event the author chooses; :func:`sign_event` completes it."""

    created_at: int
    kind: int
    tags: Tags
    content: str

    def __post_init__(self) -> None:
        problem = _body_problem(self.created_at, self.kind, self.tags, self.content)
        if problem:
            raise NostrUsageError(f"invalid event: {problem}")
        object.__setattr__(self, "tags", _freeze_tags(self.tags))


@dataclass(frozen=True, slots=True)
class Event:
    """A complete NIP-01 event.  Constructing one checks the field shapes, not the id or sig."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str
    sig: str

    def __post_init__(self) -> None:
        problem = _event_problem(self.id, self.pubkey, self.created_at, self.kind, self.tags, self.content, self.sig)
        if problem:
            raise NostrUsageError(f"invalid event: {problem}")
        object.__setattr__(self, "tags", _freeze_tags(self.tags))

    def computed_id(self) -> str:
        return event_id(self.pubkey, self.created_at, self.kind, self.tags, self.content)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (``EVENT`` messages carry this)."""
        return {"id": self.id, "pubkey": self.pubkey, "created_at": self.created_at, "kind": self.kind,
                "tags": [list(tag) for tag in self.tags], "content": self.content, "sig": self.sig}

    @classmethod
    def from_json(cls, obj: object) -> Event:
        """Parse a relay's event object; :class:`RelayProtocolError` if it is not a well-formed event.

        Exactly the seven NIP-01 fields; unknown fields are refused (they would not be signed)."""
        if not isinstance(obj, dict):
            raise RelayProtocolError(f"an event must be a JSON object, got {_json_type(obj)}")
        keys = set(obj)
        if keys != _EVENT_FIELDS:
            missing, extra = sorted(_EVENT_FIELDS - keys), sorted(keys - _EVENT_FIELDS)
            raise RelayProtocolError(f"an event has exactly the fields {sorted(_EVENT_FIELDS)}"
                                     + (f"; missing {missing}" if missing else "")
                                     + (f"; unexpected {[k[:40] for k in extra[:5]]}" if extra else ""))
        problem = _event_problem(obj["id"], obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"],
                                 obj["content"], obj["sig"])
        if problem:
            raise RelayProtocolError(f"invalid event: {problem}")
        return cls(obj["id"], obj["pubkey"], obj["created_at"], obj["kind"], _freeze_tags(obj["tags"]),
                   obj["content"], obj["sig"])


_EVENT_FIELDS = frozenset({"id", "pubkey", "created_at", "kind", "tags", "content", "sig"})


def _event_problem(id_: object, pubkey: object, created_at: object, kind: object, tags: object, content: object,
                   sig: object) -> str | None:
    return (_hex_problem("id", id_, _HEX64, 64) or _hex_problem("pubkey", pubkey, _HEX64, 64)
            or _body_problem(created_at, kind, tags, content) or _hex_problem("sig", sig, _HEX128, 128))


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def sign_event(template: EventTemplate, key: SigningKey, *, aux_rand: bytes | None = None,
               allow_nonportable: bool = False) -> Event:
    """Complete ``template`` into a signed event.

    ``aux_rand``: BIP-340 auxiliary randomness, 32 bytes; ``None`` draws fresh random bytes (a new
    signature each call), a fixed value makes the signature deterministic.  Refuses content whose
    id implementations disagree on (:data:`NONPORTABLE_CONTROLS`) unless ``allow_nonportable``."""
    if not isinstance(template, EventTemplate):
        raise NostrUsageError(f"sign_event needs an EventTemplate, got {type(template).__name__}")
    if not allow_nonportable:
        bad = nonportable_characters(template.tags, template.content)
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:8])
            raise NostrUsageError(f"the event holds control characters ({shown}) that NIP-01 writes verbatim but "
                                  "JSON encoders escape, so relays would compute another id; remove them")
    pubkey = key.public_key_hex
    digest = hashlib.sha256(serialize(pubkey, template.created_at, template.kind, template.tags,
                                      template.content)).digest()
    sig = key.sign(digest, aux_rand)
    return Event(digest.hex(), pubkey, template.created_at, template.kind, template.tags, template.content, sig.hex())


def verify_event(event: Event) -> None:
    """Check that ``event.id`` is the hash of its serialization and ``event.sig`` signs it.

    Raises :class:`EventVerificationError` naming the event and what failed."""
    computed = event.computed_id()
    if computed != event.id:
        hint = ""
        bad = nonportable_characters(event.tags, event.content)
        if bad:
            hint = (f" (it holds control characters {', '.join(f'U+{ord(c):04X}' for c in bad[:8])} that NIP-01 "
                    "writes verbatim; the signer probably escaped them)")
        raise EventVerificationError(f"event {event.id}: the id is not the hash of its NIP-01 serialization "
                                     f"(computed {computed}){hint}")
    if not verify_signature(bytes.fromhex(event.pubkey), bytes.fromhex(event.id), bytes.fromhex(event.sig)):
        raise EventVerificationError(f"event {event.id}: the signature does not verify for pubkey {event.pubkey}")
