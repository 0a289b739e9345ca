"""NIP-01 events: the serialization against a hand-written byte table (and JSON encoders where
they agree), ids, signing, verification, field rules, and an event signed by another client."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import nostr_oracle

from adapters.nostr.errors import EventVerificationError, NostrUsageError, RelayProtocolError
from adapters.nostr.event import (
    MAX_CREATED_AT,
    NIP01_ESCAPES,
    NONPORTABLE_CONTROLS,
    Event,
    EventTemplate,
    event_id,
    nonportable_characters,
    serialize,
    sign_event,
    verify_event,
)
from adapters.nostr.keys import SigningKey

KEY = SigningKey(hashlib.sha256(b"test_nostr_event").digest())
PUB = KEY.public_key_hex

# A kind-1 note from the public Nostr network, signed by another client (its escaping: JSON \n
# and raw non-BMP emoji).  Our id recomputation and BIP-340 verification must accept it as is.
WILD_EVENT: dict[str, Any] = json.loads(
    '{"id":"cd720b23163210ebddec88bc4e74d83c9667cdf11b95d376865315c686ed34eb",'
    '"pubkey":"11d0b66747887ba9a6d34b23eb31287374b45b1a1b161eac54cb183c53e00ef7","created_at":1684947090,'
    '"kind":1,"tags":[["e","f9f30e37adffe3afe12fda2f8db4502ece334f261273a9a0be7e8adb29b35145"],'
    '["p","9eefd04d32ab5da8de12d7b83201578ea095a676acf3a692ec1b0b202ae4e16f"]],'
    '"content":"I\'ll take a large lill\\u00f6rdag please.\\n\\n\\ud83d\\ude0e\\ud83e\\udd19\\ud83d\\udc47'
    '\\ud83c\\udf7b\\n\\nnostr:nevent1qqs0nucwx7kllca0uyha5tudk3gzan3nfunpyuaf5zl8azkm9xe4z3gpzamhxue69uhh'
    'yetvv9ujumn0wd68ytnzv9hxgtczyz0wl5zdx244m2x7zttmsvsp2782p9dxw6k08f5jasdskgp2unsk7qcyqqqqqqgncdx20",'
    '"sig":"6c66e42dd481a0769148be33932a643672710f0ed83eeaaf4af5fe0f53e52b810a924ba2498354b8b00a54f065f4de0d'
    '92c42c70fdb39a2da67ac97baf4f9ae0"}')


def test_an_event_signed_by_another_client_verifies() -> None:
    event = Event.from_json(WILD_EVENT)
    verify_event(event)
    assert nostr_oracle.event_is_valid(WILD_EVENT)
    tampered = dict(WILD_EVENT, content=WILD_EVENT["content"].replace("large", "small"))
    with pytest.raises(EventVerificationError, match="the id is not the hash"):
        verify_event(Event.from_json(tampered))


def test_the_escape_table_is_nip01s_list() -> None:
    # NIP-01's list, in its order: line break, double quote, backslash, carriage return, tab,
    # backspace, form feed -- and nothing else.
    assert {ord(k): v for k, v in NIP01_ESCAPES.items()} == {
        0x0A: "\\n", 0x22: '\\"', 0x5C: "\\\\", 0x0D: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}
    assert len(NONPORTABLE_CONTROLS) == 27
    assert {ord(c) for c in NONPORTABLE_CONTROLS} == set(range(32)) - {8, 9, 10, 12, 13}


def test_serialization_examples_written_out_by_hand() -> None:
    pub = "0" * 64
    assert serialize(pub, 1, 2, [], "") == b'[0,"' + pub.encode() + b'",1,2,[],""]'
    assert serialize(pub, 0, 0, [["a"], ["b", "c"]], "x") == b'[0,"' + pub.encode() + b'",0,0,[["a"],["b","c"]],"x"]'
    body = serialize(pub, 5, 7, [["t", 'q"\\']], 'a\nb\x01c\x7f\u2028/\U0001f600')
    tail = b'[["t","q\\"\\\\"]],"a\\nb\x01c\x7f\xe2\x80\xa8/\xf0\x9f\x98\x80"]'
    assert body.endswith(tail), body


text_strategy = st.text(st.characters(codec="utf-8"), max_size=40)
tags_strategy = st.lists(st.lists(text_strategy, max_size=4), max_size=4)


@given(created_at=st.integers(0, MAX_CREATED_AT), kind=st.integers(0, 65535), tags=tags_strategy,
       content=text_strategy)
def test_serialize_matches_the_hand_written_byte_table(created_at: int, kind: int, tags: list[list[str]],
                                                       content: str) -> None:
    ours = serialize(PUB, created_at, kind, tags, content)
    assert ours == nostr_oracle.serialize(PUB, created_at, kind, tags, content)
    assert event_id(PUB, created_at, kind, tags, content) == hashlib.sha256(ours).hexdigest()
    if not nonportable_characters(tags, content):
        # where NIP-01 and JSON encoders agree, Python's json writes the same bytes
        as_json = json.dumps([0, PUB, created_at, kind, tags, content], ensure_ascii=False, separators=(",", ":"))
        assert ours == as_json.encode("utf-8")


@pytest.mark.parametrize("control", sorted(NONPORTABLE_CONTROLS), ids=lambda c: f"U+{ord(c):04X}")
def test_every_nonportable_control_is_verbatim_and_differs_from_json(control: str) -> None:
    ours = serialize(PUB, 1, 1, [], control)
    assert ours.endswith(b',"' + control.encode() + b'"]')
    assert ours != json.dumps([0, PUB, 1, 1, [], control], ensure_ascii=False, separators=(",", ":")).encode()
    assert nonportable_characters([], control) == [control]
    assert nonportable_characters([["t", control]], "") == [control]


def test_sign_event_round_trip_and_deterministic_aux() -> None:
    template = EventTemplate(1_700_000_000, 30078, (("d", "receipt:1"),), '{"a":1}\n')
    event = sign_event(template, KEY, aux_rand=bytes(32))
    verify_event(event)
    assert nostr_oracle.event_is_valid(event.to_json())
    assert event.pubkey == PUB and event.id == event.computed_id()
    assert sign_event(template, KEY, aux_rand=bytes(32)) == event  # same aux: the same signed event
    fresh = sign_event(template, KEY)
    assert fresh.id == event.id and fresh.sig != event.sig
    verify_event(fresh)
    assert Event.from_json(json.loads(json.dumps(event.to_json()))) == event


def test_sign_event_refuses_nonportable_content_unless_allowed() -> None:
    template = EventTemplate(1, 1, (("t", "ok\n"),), "bell\x07")
    with pytest.raises(NostrUsageError, match=r"U\+0007.*another id"):
        sign_event(template, KEY)
    event = sign_event(template, KEY, allow_nonportable=True)
    verify_event(event)
    with pytest.raises(NostrUsageError, match="U\\+001F"):
        sign_event(EventTemplate(1, 1, (("t", "\x1f"),), ""), KEY)


@pytest.mark.parametrize("field", ["id", "sig", "content", "pubkey", "created_at", "kind", "tags"])
def test_verify_event_catches_every_tampered_field(field: str) -> None:
    event = sign_event(EventTemplate(1_700_000_000, 1, (("t", "x"),), "content"), KEY)
    doc = event.to_json()
    other = sign_event(EventTemplate(1_700_000_001, 2, (("t", "y"),), "other"), SigningKey.generate())
    doc[field] = other.to_json()[field]
    tampered = Event.from_json(doc)
    with pytest.raises(EventVerificationError) as info:
        verify_event(tampered)
    assert "\n" not in str(info.value)
    assert not nostr_oracle.event_is_valid(doc)


def test_verify_event_explains_a_nonportable_mismatch() -> None:
    event = sign_event(EventTemplate(1, 1, (), "a\x01b"), KEY, allow_nonportable=True)
    # the id a JSON-encoder dialect would have computed
    json_id = hashlib.sha256(json.dumps([0, PUB, 1, 1, [], "a\x01b"], ensure_ascii=False,
                                        separators=(",", ":")).encode()).hexdigest()
    foreign = Event(json_id, PUB, 1, 1, (), "a\x01b", KEY.sign(bytes.fromhex(json_id)).hex())
    with pytest.raises(EventVerificationError, match="U\\+0001 that NIP-01 writes verbatim"):
        verify_event(foreign)
    verify_event(event)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"created_at": -1}, "created_at must be within"),
    ({"created_at": MAX_CREATED_AT + 1}, "created_at must be within"),
    ({"created_at": 1.5}, "created_at must be an integer"),
    ({"created_at": True}, "created_at must be an integer"),
    ({"kind": 65536}, "kind must be within"),
    ({"kind": -1}, "kind must be within"),
    ({"tags": "t"}, "tags must be a list"),
    ({"tags": [["t", 1]]}, "tags\\[0\\]\\[1\\] must be a string"),
    ({"tags": ["t"]}, "tags\\[0\\] must be a list"),
    ({"content": None}, "content must be a string"),
    ({"content": "a\ud800b"}, "lone surrogate U\\+D800 at index 1"),
    ({"tags": [["t", "\udfff"]]}, "tags\\[0\\]\\[1\\] holds a lone surrogate"),
])
def test_template_field_rules(kwargs: dict[str, Any], match: str) -> None:
    fields: dict[str, Any] = {"created_at": 1, "kind": 1, "tags": (), "content": ""} | kwargs
    with pytest.raises(NostrUsageError, match=match):
        EventTemplate(**fields)


def test_template_freezes_lists() -> None:
    template = EventTemplate(1, 1, [["a", "b"]], "")  # type: ignore[arg-type]
    assert template.tags == (("a", "b"),)
    assert EventTemplate(MAX_CREATED_AT, 65535, (), "").kind == 65535


@pytest.mark.parametrize(("change", "match"), [
    ({"id": "A" * 64}, "id must be 64 lowercase hex"),
    ({"id": "a" * 63}, "id must be 64 lowercase hex"),
    ({"pubkey": 5}, "pubkey must be 64 lowercase hex"),
    ({"sig": "0" * 127}, "sig must be 128 lowercase hex"),
    ({"kind": "1"}, "kind must be an integer"),
    ({"created_at": 1e9}, "created_at must be an integer"),
    ({"tags": [[None]]}, "must be a string"),
    ({"extra": 1}, "unexpected \\['extra'\\]"),
])
def test_from_json_rejects_malformed_events_as_relay_errors(change: dict[str, Any], match: str) -> None:
    doc = sign_event(EventTemplate(1, 1, (), ""), KEY).to_json() | change
    with pytest.raises(RelayProtocolError, match=match):
        Event.from_json(doc)


def test_from_json_rejects_missing_fields_and_non_objects() -> None:
    doc = sign_event(EventTemplate(1, 1, (), ""), KEY).to_json()
    del doc["sig"]
    with pytest.raises(RelayProtocolError, match="missing \\['sig'\\]"):
        Event.from_json(doc)
    with pytest.raises(RelayProtocolError, match="must be a JSON object, got an array"):
        Event.from_json([])


def test_event_constructor_checks_shapes_as_usage_errors() -> None:
    with pytest.raises(NostrUsageError, match="sig must be 128"):
        Event("0" * 64, PUB, 1, 1, (), "", "zz")
    with pytest.raises(NostrUsageError, match="cannot serialize the event: pubkey"):
        serialize("XY", 1, 1, [], "")
    with pytest.raises(NostrUsageError, match="needs an EventTemplate"):
        sign_event("not a template", KEY)  # type: ignore[arg-type]
