"""NIP-01 event conformance vectors (``tests/conformance/vectors/nostr/events.json``), generated.

Each case is an event body (created_at, kind, tags, content) signed by one fixed key with a
fixed BIP-340 ``aux_rand`` of 32 zero bytes, so the serialization, the id *and* the signature are
all reproducible.  The cases cover every character class NIP-01's escaping rule distinguishes:
the seven escaped characters, each of the 27 other C0 controls (written verbatim, and flagged
``portable: false`` because JSON encoders escape them), U+007F, C1 controls, U+2028/U+2029,
``/``, non-ASCII and non-BMP text, combining sequences, and the same in tags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from adapters.nostr.event import NIP01_ESCAPES, NONPORTABLE_CONTROLS, EventTemplate, serialize, sign_event
from adapters.nostr.keys import SigningKey

__all__ = ["EVENTS_FORMAT", "VECTOR_AUX_RAND", "VECTOR_SECRET_KEY", "events_document", "nostr_vectors"]

EVENTS_FORMAT: Final = "syncref.nostr.nip01_event.v1"
# Any valid key would do; this one is sha256("syncref nostr conformance vectors").
VECTOR_SECRET_KEY: Final = "8ab23381c3906bf3c6c52b1eec799acc930990408a588397101d42cc37029037"
VECTOR_AUX_RAND: Final = bytes(32)
_CREATED_AT: Final = 1_700_000_000


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    content: str
    tags: tuple[tuple[str, ...], ...] = ()
    kind: int = 1
    created_at: int = _CREATED_AT


_ESCAPE_NAMES: Final = {"\n": "lf", '"': "double_quote", "\\": "backslash", "\r": "cr", "\t": "tab",
                        "\b": "backspace", "\f": "form_feed"}


def _cases() -> list[_Case]:
    cases = [
        _Case("ascii_plain", "hello nostr"),
        _Case("empty_content", ""),
        _Case("all_nip01_escapes", "a\nb\"c\\d\re\tf\bg\fh"),
    ]
    cases += [_Case(f"escape_{_ESCAPE_NAMES[ch]}", f"<{ch}>") for ch in NIP01_ESCAPES]
    cases += [_Case(f"control_{ord(ch):02x}", f"<{ch}>") for ch in sorted(NONPORTABLE_CONTROLS)]
    cases += [
        _Case("all_c0_controls", "".join(chr(c) for c in range(0x20))),
        _Case("delete_7f", "<\x7f>"),
        _Case("c1_controls", "<\x80\x85\x9f>"),
        _Case("line_separator_u2028", "<\u2028>"),
        _Case("paragraph_separator_u2029", "<\u2029>"),
        _Case("slash_verbatim", "a/b</script>"),
        _Case("literal_backslash_u", "\\u0041 is not an escape here"),
        _Case("quotes_and_backslashes", '""\\\\"\\"\\'),
        _Case("latin1_accents", "caf\u00e9 na\u00efve \u00fc\u00f1"),
        _Case("cjk", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8"),
        _Case("rtl_hebrew_arabic", "\u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629"),
        _Case("emoji_non_bmp", "\U0001f600\U0001f680"),
        _Case("emoji_zwj_sequence", "\U0001f469\u200d\U0001f4bb \U0001f44d\U0001f3fd \U0001f1e9\U0001f1ea"),
        _Case("combining_e_acute", "e\u0301"),
        _Case("precomposed_e_acute", "\u00e9"),
        _Case("byte_order_mark", "\ufeffbom"),
        _Case("noncharacters", "\ufffe\uffff\U0010ffff"),
        _Case("tags_empty_list", "no tags", tags=()),
        _Case("tags_single_element", "one-element tag", tags=(("t",),)),
        _Case("tags_with_escapes", "tags", tags=(("t", "line\nbreak"), ("x", 'quote"', "back\\slash", "tab\t"))),
        _Case("tags_non_ascii", "tags", tags=(("t", "\u00e9t\u00e9"), ("emoji", "\U0001f600"))),
        _Case("tags_with_control_01", "tags", tags=(("t", "a\x01b"),)),
        _Case("kind_0", "{\"name\":\"syncref\"}", kind=0),
        _Case("kind_max_65535", "max kind", kind=65535),
        _Case("kind_30078_app_data", "{\"receipt\":\"r1\"}", tags=(("d", "syncref:receipt:r1"),), kind=30078),
        _Case("kind_31990_handler", "{\"name\":\"provider\"}", tags=(("d", "p1"), ("k", "5050")), kind=31990),
        _Case("created_at_zero", "epoch", created_at=0),
        _Case("created_at_max_safe_integer", "far future", created_at=2**53 - 1),
        _Case("mixed_long", "".join(chr(c) for c in range(0x20, 0x7f)) * 3 + "\n\u00e9\U0001f600\u2028\"\\" * 20),
    ]
    return cases


def _hexed(entry: dict[str, Any], key: str, text: str) -> None:
    entry[key] = text
    if not all(0x20 <= ord(ch) <= 0x7E for ch in text):
        entry[f"{key}_utf8_hex"] = text.encode("utf-8").hex()


_DESCRIPTION: Final = (
    "NIP-01 event ids and signatures. id = lowercase hex sha256 of the UTF-8 serialization of "
    "[0,<pubkey>,<created_at>,<kind>,<tags>,<content>] with no whitespace, where every string escapes "
    "exactly these characters: LF as \\n, '\"' as \\\", '\\' as \\\\, CR as \\r, TAB as \\t, BS as \\b, "
    "FF as \\f; every other character (the other C0 controls, U+007F, U+2028/U+2029, '/', non-ASCII) "
    "is written verbatim as UTF-8, never as a \\u escape.",
    "Every case is signed by secret_key (public_key is its BIP-340 x-only key) with BIP-340 aux_rand = "
    "32 zero bytes, so sig is reproducible: sign(secret_key, id bytes, aux_rand) must equal sig, and "
    "sig must verify for public_key over the 32 id bytes.",
    "portable = false marks cases holding a C0 control other than the seven escaped ones: NIP-01 writes "
    "it verbatim, but JSON encoders escape it (JSON.stringify and Python json as \\u0001, rapidjson as "
    "\\u001F), so such an event's id differs between implementations and relays of another dialect "
    "reject it. The ids here follow NIP-01.",
    "This file is ASCII (written with ensure_ascii): read strings with any JSON reader. Each string "
    "outside printable ASCII also comes as *_utf8_hex (its exact UTF-8 bytes); serialized_utf8_hex is "
    "the exact hashed byte string (it is not always valid JSON, as raw controls may appear in it).",
)


def events_document() -> dict[str, Any]:
    key = SigningKey.from_hex(VECTOR_SECRET_KEY)
    cases: list[dict[str, Any]] = []
    names: set[str] = set()
    for case in _cases():
        if case.name in names:
            raise ValueError(f"duplicate case name {case.name!r}")
        names.add(case.name)
        event = sign_event(EventTemplate(case.created_at, case.kind, case.tags, case.content), key,
                           aux_rand=VECTOR_AUX_RAND, allow_nonportable=True)
        serialized = serialize(event.pubkey, event.created_at, event.kind, event.tags, event.content)
        entry: dict[str, Any] = {"name": case.name, "created_at": case.created_at, "kind": case.kind,
                                 "tags": [list(t) for t in case.tags]}
        if any(not all(0x20 <= ord(ch) <= 0x7E for ch in item) for tag in case.tags for item in tag):
            entry["tags_utf8_hex"] = [[item.encode("utf-8").hex() for item in tag] for tag in case.tags]
        _hexed(entry, "content", case.content)
        entry["serialized_utf8_hex"] = serialized.hex()
        entry["id"] = event.id
        entry["sig"] = event.sig
        entry["portable"] = not any(ch in NONPORTABLE_CONTROLS for ch in serialized.decode("utf-8"))
        cases.append(entry)
    return {"description": list(_DESCRIPTION), "format": EVENTS_FORMAT, "secret_key": VECTOR_SECRET_KEY,
            "public_key": key.public_key_hex, "aux_rand": VECTOR_AUX_RAND.hex(), "count": len(cases),
            "cases": cases}


def nostr_vectors() -> dict[str, str]:
    """``{file name: file text}`` of the Nostr vectors (``vectors/nostr/``)."""
    return {"events.json": json.dumps(events_document(), indent=2, ensure_ascii=True, allow_nan=False) + "\n"}
