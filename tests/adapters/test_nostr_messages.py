"""Relay messages: every valid shape parses to its value, every malformed frame is a one-line
RelayProtocolError (and nothing else, whatever the input), client messages encode as NIP-01 says."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.nostr.errors import NostrUsageError, RelayProtocolError
from adapters.nostr.event import EventTemplate, sign_event
from adapters.nostr.keys import SigningKey
from adapters.nostr.messages import (
    AuthChallenge,
    Close,
    Closed,
    Eose,
    Filter,
    Notice,
    Ok,
    PublishEvent,
    RelayEvent,
    Req,
    encode_client_message,
    parse_relay_message,
    reason_prefix,
)

KEY = SigningKey(hashlib.sha256(b"test_nostr_messages").digest())
EVENT = sign_event(EventTemplate(1_700_000_000, 1, (("t", "x"),), "hi"), KEY)
EID = EVENT.id
EVENT_JSON = json.dumps(EVENT.to_json())


@pytest.mark.parametrize(("frame", "expected"), [
    (f'["EVENT","s1",{EVENT_JSON}]', RelayEvent("s1", EVENT)),
    (f'["OK","{EID}",true,""]', Ok(EID, True, "")),
    (f'["OK","{EID}",false,"blocked: no"]', Ok(EID, False, "blocked: no")),
    (f'["OK","{EID}",false,"duplicate: have it"]', Ok(EID, False, "duplicate: have it")),
    ('["OK","",false,"invalid: Bad signature"]', Ok("", False, "invalid: Bad signature")),
    ('["EOSE","s1"]', Eose("s1")),
    ('["CLOSED","s1","error: shutting down"]', Closed("s1", "error: shutting down")),
    ('["NOTICE","hello"]', Notice("hello")),
    ('["AUTH","challenge-1"]', AuthChallenge("challenge-1")),
    (' [ "EOSE" , "' + "x" * 64 + '" ] ', Eose("x" * 64)),
])
def test_valid_relay_messages(frame: str, expected: object) -> None:
    assert parse_relay_message(frame) == expected


def _event_with(**change: Any) -> str:
    return json.dumps(EVENT.to_json() | change)


@pytest.mark.parametrize(("frame", "match"), [
    (b'["EOSE","s"]', "expected a text frame, got bytes"),
    ("", "invalid JSON"),
    ("not json", "invalid JSON"),
    ("garbage\n\nwith lines", "invalid JSON"),
    ("{}", "expected a JSON array"),
    ("[]", "expected a JSON array"),
    ("[1,2]", "expected a JSON array"),
    ('"OK"', "expected a JSON array"),
    ('["PING"]', "unknown relay message type 'PING'"),
    ('["ok","' + "a" * 64 + '",true,""]', "unknown relay message type 'ok'"),
    ('["EOSE"]', "EOSE message must be"),
    ('["EOSE","s","extra"]', "EOSE message must be"),
    ('["EOSE",""]', "subscription id is a string of 1-64"),
    ('["EOSE","' + "x" * 65 + '"]', "subscription id is a string of 1-64"),
    ('["EOSE",1]', "subscription id"),
    (f'["OK","{EID}",true]', "OK message must be"),
    (f'["OK","{EID}",1,""]', "verdict must be true or false"),
    (f'["OK","{EID}","true",""]', "verdict must be true or false"),
    (f'["OK","{EID.upper()}",true,""]', "64 lowercase hex"),
    ('["OK","abc",true,""]', "64 lowercase hex"),
    (f'["OK","{EID}",true,null]', "OK message must be a string"),
    ('["NOTICE"]', "NOTICE message must be"),
    ('["NOTICE",5]', "NOTICE message must be a string"),
    ('["CLOSED","s"]', "CLOSED message must be"),
    ('["EVENT","s"]', "EVENT message must be"),
    ('["EVENT","s",[]]', "must be a JSON object"),
    (f'["EVENT","s",{_event_with(kind=70000)}]', "kind must be within"),
    (f'["EVENT","s",{_event_with(sig="00")}]', "sig must be 128"),
    ('["EVENT","s",' + EVENT_JSON[:-1] + ',"id":"x"}]', "duplicate object key 'id'"),
    ('["NOTICE",NaN]', "NaN is not JSON"),
    ('["NOTICE",Infinity]', "Infinity is not JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('["NOTICE","x"] trailing', "invalid JSON"),
])
def test_malformed_relay_messages(frame: str | bytes, match: str) -> None:
    with pytest.raises(RelayProtocolError, match=match) as info:
        parse_relay_message(frame)
    text = str(info.value)
    assert "\n" not in text and len(text) <= 300


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=50),
                 st.lists(json_values, max_size=5).map(json.dumps),
                 st.tuples(st.sampled_from(["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "AUTH"]),
                           st.lists(json_values, max_size=4)).map(lambda t: json.dumps([t[0], *t[1]]))))
def test_the_parser_raises_only_relay_protocol_errors(frame: str | bytes) -> None:
    try:
        parse_relay_message(frame)
    except RelayProtocolError as exc:
        assert "\n" not in str(exc)


def test_reason_prefix() -> None:
    assert reason_prefix("duplicate: already have this event") == "duplicate"
    assert reason_prefix("rate-limited: slow down") == "rate-limited"
    assert reason_prefix("blocked:") == "blocked"
    assert reason_prefix("") == ""
    assert reason_prefix("no prefix here") == ""
    assert reason_prefix(": empty") == ""
    assert Ok(EID, False, "pow: 26 < 30").prefix == "pow" and Closed("s", "error: x").prefix == "error"


def test_client_messages_encode_as_nip01_arrays() -> None:
    assert json.loads(encode_client_message(PublishEvent(EVENT))) == ["EVENT", EVENT.to_json()]
    f1 = Filter(ids=(EID,), kinds=(30078, 31990), tags={"d": ("a", "b")}, since=1, until=2, limit=10)
    f2 = Filter(authors=(KEY.public_key_hex,))
    assert json.loads(encode_client_message(Req("sub", (f1, f2)))) == [
        "REQ", "sub", {"ids": [EID], "kinds": [30078, 31990], "#d": ["a", "b"], "since": 1, "until": 2, "limit": 10},
        {"authors": [KEY.public_key_hex]}]
    assert encode_client_message(Close("sub")) == '["CLOSE","sub"]'
    assert json.loads(encode_client_message(PublishEvent(sign_event(EventTemplate(1, 1, (), "\u2028é"), KEY))))[1][
        "content"] == "\u2028é"


@pytest.mark.parametrize(("build", "match"), [
    (lambda: Filter(ids=("abc",)), "ids must be 64"),
    (lambda: Filter(ids="a" * 64), "ids must be 64"),  # a bare string, not a list of them
    (lambda: Filter(authors=("A" * 64,)), "authors must be 64"),
    (lambda: Filter(kinds=(70000,)), "kinds must be integers"),
    (lambda: Filter(kinds=(True,)), "kinds must be integers"),
    (lambda: Filter(tags={"dd": ("x",)}), "single letters"),
    (lambda: Filter(tags={"1": ("x",)}), "single letters"),
    (lambda: Filter(tags={"d": "x"}), "#d values must be strings"),
    (lambda: Filter(limit=-1), "limit must be a non-negative integer"),
    (lambda: Filter(since=1.5), "since must be a non-negative integer"),
    (lambda: Req("", (Filter(),)), "subscription id"),
    (lambda: Req("s", ()), "at least one Filter"),
    (lambda: Close("x" * 65), "subscription id"),
    (lambda: encode_client_message("EVENT"), "not a client message"),
])
def test_client_message_misuse(build: Any, match: str) -> None:
    with pytest.raises(NostrUsageError, match=match):
        build()
