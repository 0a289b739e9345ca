"""Second opinions for the Nostr client's tests: a NIP-01 serializer written from the NIP's text
as a byte table (no ``str.translate``, no shared constants), and event verification through it and
the pure-Python BIP-340 reference (:mod:`support.bip340_ref`) instead of libsecp256k1."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from support import bip340_ref

# NIP-01: "The following characters in the content field must be escaped as shown, and all other
# characters must be included verbatim" -- transcribed by code point.
HAND_ESCAPES: dict[int, bytes] = {
    0x0A: b"\\n",
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x0D: b"\\r",
    0x09: b"\\t",
    0x08: b"\\b",
    0x0C: b"\\f",
}


def quote(text: str) -> bytes:
    out = bytearray(b'"')
    for ch in text:
        escaped = HAND_ESCAPES.get(ord(ch))
        out += escaped if escaped is not None else ch.encode("utf-8")
    out += b'"'
    return bytes(out)


def serialize(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> bytes:
    tag_parts = [b"[" + b",".join(quote(item) for item in tag) + b"]" for tag in tags]
    return b"".join([b"[0,", quote(pubkey), b",", b"%d" % created_at, b",", b"%d" % kind, b",[",
                     b",".join(tag_parts), b"],", quote(content), b"]"])


def event_id(event: dict[str, Any]) -> str:
    return hashlib.sha256(serialize(event["pubkey"], event["created_at"], event["kind"], event["tags"],
                                    event["content"])).hexdigest()


def event_is_valid(event: dict[str, Any]) -> bool:
    """id recomputed by :func:`serialize`, signature checked by the pure-Python BIP-340."""
    if event_id(event) != event["id"]:
        return False
    return bip340_ref.verify(bytes.fromhex(event["pubkey"]), bytes.fromhex(event["id"]), bytes.fromhex(event["sig"]))
