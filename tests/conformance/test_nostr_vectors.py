"""The checked-in NIP-01 event vectors (``vectors/nostr/events.json``): no drift from the code, the
client passes them, and they mean what another implementation would take them to mean.

Independent checks: serializations rebuilt from each case's fields by the hand-written byte table
(:mod:`support.nostr_oracle`), ids re-hashed with :mod:`hashlib`, signatures re-made and verified
by the pure-Python BIP-340 (:mod:`support.bip340_ref`), the ``portable`` flag re-derived by
comparing with Python's JSON encoder, the relay package's own id code (``aionostr``, which
``nostr-relay`` uses) agreeing exactly on the portable cases, and planted wrong serializers (the
usual dialect mistakes) each failing some vector.  ``tests/adapters/test_nostr_relay.py`` also
publishes the portable cases to a real relay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import bip340_ref, nostr_oracle

from adapters.nostr.event import Event, serialize, verify_event
from adapters.nostr.keys import SigningKey
from adapters.nostr.vectors import EVENTS_FORMAT, VECTOR_SECRET_KEY, nostr_vectors

NOSTR_DIR = Path(__file__).resolve().parent / "vectors" / "nostr"
REGENERATE = ".venv/bin/python tests/conformance/generate_vectors.py"
DOC: dict[str, Any] = json.loads((NOSTR_DIR / "events.json").read_text(encoding="ascii"))
CASES: list[dict[str, Any]] = DOC["cases"]


def test_checked_in_vectors_match_the_code() -> None:
    present = {p.name: p.read_text(encoding="utf-8") for p in NOSTR_DIR.glob("*.json")}
    assert present == nostr_vectors(), f"vectors/nostr drifted; run {REGENERATE}"


def test_document_header() -> None:
    assert DOC["format"] == EVENTS_FORMAT
    assert DOC["count"] == len(CASES) >= 60
    assert len({c["name"] for c in CASES}) == len(CASES)
    assert DOC["secret_key"] == VECTOR_SECRET_KEY == hashlib.sha256(b"syncref nostr conformance vectors").hexdigest()
    assert DOC["public_key"] == bip340_ref.public_key(bytes.fromhex(DOC["secret_key"])).hex()
    assert DOC["aux_rand"] == "00" * 32


def _check_hex_fields(case: dict[str, Any]) -> None:
    if "content_utf8_hex" in case:
        assert bytes.fromhex(case["content_utf8_hex"]).decode("utf-8") == case["content"]
    else:
        assert all(0x20 <= ord(ch) <= 0x7E for ch in case["content"])
    if "tags_utf8_hex" in case:
        assert [[bytes.fromhex(h).decode("utf-8") for h in tag] for tag in case["tags_utf8_hex"]] == case["tags"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_vector_independently(case: dict[str, Any]) -> None:
    _check_hex_fields(case)
    pub = DOC["public_key"]
    expected = bytes.fromhex(case["serialized_utf8_hex"])
    assert nostr_oracle.serialize(pub, case["created_at"], case["kind"], case["tags"], case["content"]) == expected
    assert hashlib.sha256(expected).hexdigest() == case["id"]
    secret = bytes.fromhex(DOC["secret_key"])
    assert bip340_ref.sign(secret, bytes.fromhex(case["id"]), bytes(32)).hex() == case["sig"]
    event = {"id": case["id"], "pubkey": pub, "created_at": case["created_at"], "kind": case["kind"],
             "tags": case["tags"], "content": case["content"], "sig": case["sig"]}
    assert nostr_oracle.event_is_valid(event)
    as_json = json.dumps([0, pub, case["created_at"], case["kind"], case["tags"], case["content"]],
                         ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert case["portable"] is (as_json == expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_vector_against_the_client(case: dict[str, Any]) -> None:
    pub = DOC["public_key"]
    assert serialize(pub, case["created_at"], case["kind"], case["tags"], case["content"]).hex() == \
        case["serialized_utf8_hex"]
    event = Event.from_json({"id": case["id"], "pubkey": pub, "created_at": case["created_at"],
                             "kind": case["kind"], "tags": case["tags"], "content": case["content"],
                             "sig": case["sig"]})
    verify_event(event)
    key = SigningKey.from_hex(DOC["secret_key"])
    assert key.sign(bytes.fromhex(case["id"]), bytes(32)).hex() == case["sig"]


def test_the_vectors_cover_every_character_class() -> None:
    text = "".join(c["content"] + "".join(i for t in c["tags"] for i in t) for c in CASES)
    for cp in [*range(0x20), 0x7F, 0x80, 0x9F, 0x2028, 0x2029, 0xFEFF, 0xFFFF, 0x10FFFF, 0x1F600, ord("/")]:
        assert chr(cp) in text, f"U+{cp:04X} is in no vector"
    singles = {c["name"] for c in CASES}
    assert {f"control_{cp:02x}" for cp in range(0x20) if cp not in (8, 9, 10, 12, 13)} <= singles
    assert sum(not c["portable"] for c in CASES) == 27 + 2  # each lone control, all_c0_controls, a tag case
    assert {c["kind"] for c in CASES} >= {0, 1, 30078, 31990, 65535}


def test_the_relay_packages_own_id_code_agrees_on_every_portable_vector() -> None:
    aionostr_event = pytest.importorskip("aionostr.event", reason="aionostr comes with nostr-relay (dev extra)")
    pub = DOC["public_key"]
    for case in CASES:
        theirs = aionostr_event.Event.compute_id(pub, case["created_at"], case["kind"], case["tags"], case["content"])
        assert (theirs == case["id"]) is case["portable"], case["name"]


# ---- planted wrong serializers: each dialect mistake must fail at least one vector


def _table_serializer(escape: Callable[[str], bytes]) -> Callable[..., bytes]:
    def quote(text: str) -> bytes:
        return b'"' + b"".join(escape(ch) for ch in text) + b'"'

    def ser(pub: str, created_at: int, kind: int, tags: list[list[str]], content: str) -> bytes:
        tag_bytes = b",".join(b"[" + b",".join(quote(i) for i in t) + b"]" for t in tags)
        return b"[0," + quote(pub) + b",%d,%d,[" % (created_at, kind) + tag_bytes + b"]," + quote(content) + b"]"
    return ser


def _nip01(ch: str) -> bytes:
    return nostr_oracle.HAND_ESCAPES.get(ord(ch)) or ch.encode("utf-8")


MUTANTS: dict[str, Callable[..., bytes]] = {
    "json_lowercase_u_escapes": lambda *a: json.dumps([0, *a], ensure_ascii=False, separators=(",", ":")).encode(),
    "rapidjson_uppercase_u_escapes": _table_serializer(
        lambda ch: f"\\u{ord(ch):04X}".encode() if ch in "".join(map(chr, range(32))) and ord(ch) not in
        nostr_oracle.HAND_ESCAPES else _nip01(ch)),
    "ensure_ascii": lambda *a: json.dumps([0, *a], ensure_ascii=True, separators=(",", ":")).encode(),
    "escapes_u2028_u2029": _table_serializer(
        lambda ch: f"\\u{ord(ch):04x}".encode() if ch in "\u2028\u2029" else _nip01(ch)),
    "escapes_slash": _table_serializer(lambda ch: b"\\/" if ch == "/" else _nip01(ch)),
    "escapes_del_as_u007f": _table_serializer(lambda ch: b"\\u007f" if ch == "\x7f" else _nip01(ch)),
    "backspace_formfeed_as_u_escapes": _table_serializer(
        lambda ch: {"\b": b"\\u0008", "\f": b"\\u000c"}.get(ch) or _nip01(ch)),
    "spaces_after_commas": lambda *a: json.dumps([0, *a], ensure_ascii=False, separators=(", ", ":")).encode(),
    "content_only_escaping_leaves_tags_raw": lambda pub, c, k, tags, content: (
        _table_serializer(_nip01)(pub, c, k, [], content).replace(
            b",[],", b",[" + b",".join(b"[" + b",".join(b'"' + i.encode() + b'"' for i in t) + b"]" for t in tags)
            + b"],", 1)),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_planted_serializer_mistakes_fail_some_vector(name: str) -> None:
    mutant = MUTANTS[name]
    pub = DOC["public_key"]
    failing = [c["name"] for c in CASES
               if mutant(pub, c["created_at"], c["kind"], c["tags"], c["content"]).hex() != c["serialized_utf8_hex"]]
    assert failing, f"mutant {name} passes every vector"
    control = _table_serializer(_nip01)
    assert all(control(pub, c["created_at"], c["kind"], c["tags"], c["content"]).hex() == c["serialized_utf8_hex"]
               for c in CASES)
