"""The sans-I/O relay connection core: OK verdicts and subscription transitions driven from their
tables, the nostr-relay empty-id tolerance, protocol errors failing the connection, relay URLs."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.nostr.connection import (
    OK_VERDICTS,
    SUBSCRIPTION_TRANSITIONS,
    Acknowledged,
    AuthRequested,
    EventReceived,
    InvalidEventReceived,
    NoticeReceived,
    PublishFailed,
    Rejected,
    RelayConnection,
    StoredEventsEnd,
    SubscriptionEnded,
    SubState,
    check_relay_url,
)
from adapters.nostr.errors import NostrUsageError, RelayProtocolError
from adapters.nostr.event import Event, EventTemplate, sign_event
from adapters.nostr.keys import SigningKey
from adapters.nostr.messages import Filter

KEY = SigningKey(hashlib.sha256(b"test_nostr_connection").digest())
URL = "ws://relay.test"


def _event(n: int) -> Event:
    return sign_event(EventTemplate(1_700_000_000 + n, 1, (), f"event {n}"), KEY, aux_rand=bytes(32))


def _ok(event_id: str, accepted: bool, message: str = "") -> str:
    return json.dumps(["OK", event_id, accepted, message])


def test_relay_urls() -> None:
    for good in ["ws://127.0.0.1:7000", "wss://relay.example.com", "wss://relay.example.com/path?x=1",
                 "ws://[::1]:8080/"]:
        assert check_relay_url(good) == good
    for bad, match in [("http://relay.example.com", "must start with ws:// or wss://"),
                       ("relay.example.com", "must start with ws:// or wss://"),
                       ("wss://", "has no host"), ("ws://:80", "has no host"),
                       ("wss://user:pw@relay.example.com", "must not carry credentials"),
                       ("wss://relay.example.com/#frag", "fragment"), ("wss://relay example.com", "whitespace"),
                       ("ws://relay.example.com:99999", "not a valid URL"), ("", "must start with"),
                       ("ftp://x\nwss://y", "must start with")]:
        with pytest.raises(NostrUsageError, match=match) as info:
            check_relay_url(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(NostrUsageError, match="must be a string"):
        check_relay_url(None)
    with pytest.raises(NostrUsageError, match="must start with"):
        RelayConnection("https://relay.example.com")


def test_publish_frame_and_in_flight() -> None:
    conn = RelayConnection(URL)
    event = _event(1)
    assert json.loads(conn.publish(event)) == ["EVENT", event.to_json()]
    assert conn.in_flight == (event.id,)
    with pytest.raises(NostrUsageError, match="already in flight"):
        conn.publish(event)


@pytest.mark.parametrize(("accepted", "message"), [
    (True, ""), (True, "pow: difficulty 25>=24"), (True, "duplicate: already have this event"),
    (False, "duplicate: exists"), (False, "blocked: you are banned"), (False, "rate-limited: slow down"),
    (False, "invalid: Bad signature"), (False, "no prefix at all"), (False, ""),
])
def test_ok_verdicts_follow_the_table(accepted: bool, message: str) -> None:
    conn = RelayConnection(URL)
    event = _event(2)
    conn.publish(event)
    [verdict] = conn.receive(_ok(event.id, accepted, message))
    is_duplicate = message.startswith("duplicate:")
    assert type(verdict) is OK_VERDICTS[(accepted, is_duplicate)]
    if accepted or is_duplicate:
        assert verdict == Acknowledged(event.id, is_duplicate, message)
    else:
        assert verdict == Rejected(event.id, message.split(":")[0] if ":" in message else "", message)
    assert conn.in_flight == ()


def test_the_verdict_table_is_complete_and_says_what_the_issue_says() -> None:
    assert set(OK_VERDICTS) == {(a, d) for a in (True, False) for d in (True, False)}
    assert [k for k, v in OK_VERDICTS.items() if v is Rejected] == [(False, False)]


def test_an_empty_id_ok_goes_to_the_oldest_event_in_flight() -> None:
    conn = RelayConnection(URL)
    e1, e2 = _event(1), _event(2)
    conn.publish(e1)
    conn.publish(e2)
    assert conn.receive(_ok("", False, "invalid: kind=1 not allowed")) == [
        Rejected(e1.id, "invalid", "invalid: kind=1 not allowed")]
    assert conn.receive(_ok(e2.id, True)) == [Acknowledged(e2.id, False, "")]
    with pytest.raises(RelayProtocolError, match="empty event id while no event is in flight"):
        conn.receive(_ok("", False, "x"))


def test_an_ok_for_an_event_not_in_flight_fails_the_connection() -> None:
    conn = RelayConnection(URL)
    e1, e2 = _event(1), _event(2)
    conn.publish(e1)
    with pytest.raises(RelayProtocolError, match="not in flight"):
        conn.receive(_ok(e2.id, True))
    assert conn.failed is not None and conn.failed.startswith("protocol error")
    with pytest.raises(NostrUsageError, match="no longer usable"):
        conn.publish(e2)
    with pytest.raises(NostrUsageError, match="no longer usable"):
        conn.receive(_ok(e1.id, True))
    assert conn.connection_lost("closed after a protocol error") == [
        PublishFailed(e1.id, "closed after a protocol error")]


def test_garbage_fails_the_connection_and_lost_fails_everything() -> None:
    conn = RelayConnection(URL)
    e1 = _event(1)
    conn.publish(e1)
    conn.subscribe("q", [Filter(kinds=(1,))])
    with pytest.raises(RelayProtocolError, match="invalid JSON"):
        conn.receive("this is not nostr")
    assert conn.connection_lost("gone\nwith a newline") == [
        PublishFailed(e1.id, "gone with a newline"), SubscriptionEnded("q", "gone with a newline", by_relay=False)]
    assert conn.in_flight == () and conn.subscriptions == {}


def _in_state(state: SubState) -> RelayConnection:
    conn = RelayConnection(URL)
    conn.subscribe("s", [Filter(kinds=(1,))])
    if state is SubState.LIVE:
        conn.receive('["EOSE","s"]')
    elif state is SubState.CLOSING:
        assert conn.unsubscribe("s") == '["CLOSE","s"]'
    assert conn.subscriptions == {"s": state}
    return conn


FRAMES = {
    "EVENT": lambda: json.dumps(["EVENT", "s", _event(9).to_json()]),
    "EOSE": lambda: '["EOSE","s"]',
    "CLOSED": lambda: '["CLOSED","s","error: bye"]',
}


@pytest.mark.parametrize(("state", "kind"), sorted(SUBSCRIPTION_TRANSITIONS, key=str))
def test_subscription_transitions_follow_the_table(state: SubState, kind: str) -> None:
    conn = _in_state(state)
    step = SUBSCRIPTION_TRANSITIONS[(state, kind)]
    if isinstance(step, str):
        with pytest.raises(RelayProtocolError, match=step):
            conn.receive(FRAMES[kind]())
        return
    events = conn.receive(FRAMES[kind]())
    if step is None:
        assert events == [SubscriptionEnded("s", "error: bye", by_relay=True)]
        assert conn.subscriptions == {}
        return
    assert conn.subscriptions == {"s": step}
    if state is SubState.CLOSING:
        assert events == []
    elif kind == "EOSE":
        assert events == [StoredEventsEnd("s")]
    else:
        assert events == [EventReceived("s", _event(9))]


def test_the_transition_table_covers_every_state_and_message() -> None:
    assert set(SUBSCRIPTION_TRANSITIONS) == {(s, k) for s in SubState for k in FRAMES}
    q, live, closing = SubState.QUERYING, SubState.LIVE, SubState.CLOSING
    # the table, written out again by hand: a change to it must be deliberate
    assert {k: (v if not isinstance(v, str) else "error") for k, v in SUBSCRIPTION_TRANSITIONS.items()} == {
        (q, "EVENT"): q, (q, "EOSE"): live, (q, "CLOSED"): None,
        (live, "EVENT"): live, (live, "EOSE"): "error", (live, "CLOSED"): None,
        (closing, "EVENT"): closing, (closing, "EOSE"): closing, (closing, "CLOSED"): None,
    }


def test_messages_for_unknown_subscriptions_are_protocol_errors() -> None:
    for frame in (FRAMES["EVENT"](), FRAMES["EOSE"](), FRAMES["CLOSED"]()):
        conn = RelayConnection(URL)
        with pytest.raises(RelayProtocolError, match="'s', which is not open"):
            conn.receive(frame)


def test_subscription_misuse() -> None:
    conn = RelayConnection(URL)
    conn.subscribe("s", [Filter()])
    with pytest.raises(NostrUsageError, match="already open"):
        conn.subscribe("s", [Filter()])
    conn.unsubscribe("s")
    with pytest.raises(NostrUsageError, match="not open"):
        conn.unsubscribe("s")
    conn.subscribe("s", [Filter()])  # reusing a closing id reopens it
    assert conn.subscriptions == {"s": SubState.QUERYING}
    with pytest.raises(NostrUsageError, match="not open"):
        conn.unsubscribe("never")


def test_received_events_are_verified() -> None:
    conn = _in_state(SubState.QUERYING)
    good = _event(3)
    forged = good.to_json() | {"content": "forged"}
    bad_sig = good.to_json() | {"sig": _event(4).sig}
    assert conn.receive(json.dumps(["EVENT", "s", good.to_json()])) == [EventReceived("s", good)]
    [forged_event] = conn.receive(json.dumps(["EVENT", "s", forged]))
    assert isinstance(forged_event, InvalidEventReceived) and "id is not the hash" in forged_event.reason
    [bad_event] = conn.receive(json.dumps(["EVENT", "s", bad_sig]))
    assert isinstance(bad_event, InvalidEventReceived) and "signature does not verify" in bad_event.reason
    assert conn.failed is None


def test_notice_and_auth() -> None:
    conn = RelayConnection(URL)
    assert conn.receive('["NOTICE","hello"]') == [NoticeReceived("hello")]
    assert conn.receive('["AUTH","c"]') == [AuthRequested("c")]


def test_closing_remembers_a_bounded_number_of_subscriptions() -> None:
    conn = RelayConnection(URL)
    for i in range(300):
        conn.subscribe(f"s{i}", [Filter()])
        conn.unsubscribe(f"s{i}")
    assert len(conn.subscriptions) == 256
    assert "s299" in conn.subscriptions and "s0" not in conn.subscriptions


@given(st.lists(st.one_of(st.tuples(st.just("publish"), st.integers(0, 7)),
                          st.tuples(st.just("ok"), st.integers(0, 7), st.booleans()),
                          st.tuples(st.just("ok_empty"), st.booleans())), max_size=30))
def test_verdicts_against_a_fifo_model(ops: list[tuple[object, ...]]) -> None:
    """Random publishes and OKs: each verdict names the right event, exactly once."""
    conn = RelayConnection(URL)
    model: list[str] = []  # in-flight ids, oldest first
    for op in ops:
        if op[0] == "publish":
            event = _event(int(op[1]))  # type: ignore[call-overload]
            if event.id in model:
                with pytest.raises(NostrUsageError):
                    conn.publish(event)
            else:
                conn.publish(event)
                model.append(event.id)
        else:
            if op[0] == "ok":
                target = _event(int(op[1])).id  # type: ignore[call-overload]
                accepted = bool(op[2])
                frame = _ok(target, accepted, "" if accepted else "blocked: x")
            else:
                target = model[0] if model else ""
                accepted = bool(op[1])
                frame = _ok("", accepted, "" if accepted else "blocked: x")
            if target not in model:
                with pytest.raises(RelayProtocolError):
                    conn.receive(frame)
                return
            [verdict] = conn.receive(frame)
            assert verdict.event_id == target
            assert isinstance(verdict, Acknowledged if accepted else Rejected)
            model.remove(target)
        assert list(conn.in_flight) == model
