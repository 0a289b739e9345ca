"""One relay connection's protocol state, sans I/O.

:class:`RelayConnection` turns what the caller wants (publish an event, open or close a
subscription) into text frames to send, and the frames the relay sends back into
:data:`ConnectionEvent` values.  It never touches a socket or a clock; the asyncio adapter
(:mod:`adapters.nostr.client`) moves the frames and keeps the time.

Publishing.  Each published event is *in flight* until its ``OK`` arrives.  The verdict follows
:data:`OK_VERDICTS`, keyed by (accepted, is the reason ``duplicate:``): ``OK true`` and any
``duplicate:`` answer mean the relay has the event (:class:`Acknowledged`); any other ``OK false``
is a :class:`Rejected` with the relay's reason.  An ``OK`` naming an event not in flight is a
protocol error; an ``OK`` with an empty id (``nostr-relay`` answers rejections that way) is
attributed to the oldest event in flight, because relays answer one connection's messages in order.

Subscriptions.  Each subscription id moves through :data:`SUBSCRIPTION_TRANSITIONS`: ``QUERYING``
(stored events arriving) --EOSE--> ``LIVE`` (new events) --our CLOSE--> ``CLOSING``, and a relay's
``CLOSED`` ends it from any state.  Events for a subscription we are closing are dropped (they
raced our ``CLOSE``); events or EOSE for a subscription we never opened, and a second EOSE, are
protocol errors.  Every received event is verified (id and signature): a valid one is an
:class:`EventReceived`, an invalid one an :class:`InvalidEventReceived` with the reason -- a relay
serving one forged event is reported, not disconnected.

Errors.  Garbage from the relay makes :meth:`RelayConnection.receive` raise
:class:`RelayProtocolError`; the connection is then *failed*: the caller must drop the transport
and call :meth:`RelayConnection.connection_lost`, which fails every event in flight
(:class:`PublishFailed`) and ends every subscription.  Using a failed or lost connection, or
publishing an event that is already in flight, is a :class:`NostrUsageError`.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.nostr.errors import EventVerificationError, NostrUsageError, RelayProtocolError, one_line
from adapters.nostr.event import Event, verify_event
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

__all__ = [
    "OK_VERDICTS",
    "SUBSCRIPTION_TRANSITIONS",
    "Acknowledged",
    "AuthRequested",
    "ConnectionEvent",
    "EventReceived",
    "InvalidEventReceived",
    "NoticeReceived",
    "PublishFailed",
    "Rejected",
    "RelayConnection",
    "StoredEventsEnd",
    "SubState",
    "SubscriptionEnded",
    "check_relay_url",
]


def check_relay_url(url: object) -> str:
    """``url`` if it is a ``ws://`` or ``wss://`` URL with a host; else a one-line :class:`NostrUsageError`."""
    if not isinstance(url, str):
        raise NostrUsageError(f"relay URL must be a string, got {type(url).__name__}")
    shown = one_line(url, 120)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise NostrUsageError(f"relay URL {shown!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("ws", "wss"):
        raise NostrUsageError(f"relay URL {shown!r} must start with ws:// or wss://")
    if not parts.hostname:
        raise NostrUsageError(f"relay URL {shown!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise NostrUsageError(f"relay URL {shown!r} must not carry credentials")
    if parts.fragment or any(ch.isspace() for ch in url):
        raise NostrUsageError(f"relay URL {shown!r} must not contain a fragment or whitespace")
    return url


# ------------------------------------------------------------------------------------------ events out


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The relay has the event: ``OK true``, or a ``duplicate:`` answer (``duplicate`` is then True)."""

    event_id: str
    duplicate: bool
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """``OK false`` with a reason other than ``duplicate:``."""

    event_id: str
    prefix: str
    message: str


@dataclass(frozen=True, slots=True)
class PublishFailed:
    """The connection ended before the event's ``OK`` arrived."""

    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class EventReceived:
    subscription_id: str
    event: Event


@dataclass(frozen=True, slots=True)
class InvalidEventReceived:
    subscription_id: str
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoredEventsEnd:
    subscription_id: str


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """The relay sent ``CLOSED`` (``by_relay``), or the connection ended."""

    subscription_id: str
    reason: str
    by_relay: bool


@dataclass(frozen=True, slots=True)
class NoticeReceived:
    message: str


@dataclass(frozen=True, slots=True)
class AuthRequested:
    challenge: str


ConnectionEvent = (Acknowledged | Rejected | PublishFailed | EventReceived | InvalidEventReceived | StoredEventsEnd
                   | SubscriptionEnded | NoticeReceived | AuthRequested)

# (accepted, reason starts with "duplicate:") -> verdict
OK_VERDICTS: Mapping[tuple[bool, bool], type[Acknowledged] | type[Rejected]] = {
    (True, False): Acknowledged,
    (True, True): Acknowledged,
    (False, True): Acknowledged,
    (False, False): Rejected,
}


class SubState(enum.Enum):
    QUERYING = "querying"  # REQ sent, stored events arriving
    LIVE = "live"  # EOSE seen, live events arriving
    CLOSING = "closing"  # we sent CLOSE


# (state, relay message type) -> next state, None = subscription ended, or the protocol error's text.
# Every (state, type) pair is listed; CLOSING drops the events and EOSE that raced our CLOSE.
SUBSCRIPTION_TRANSITIONS: Mapping[tuple[SubState, str], SubState | str | None] = {
    (SubState.QUERYING, "EVENT"): SubState.QUERYING,
    (SubState.QUERYING, "EOSE"): SubState.LIVE,
    (SubState.QUERYING, "CLOSED"): None,
    (SubState.LIVE, "EVENT"): SubState.LIVE,
    (SubState.LIVE, "EOSE"): "a second EOSE for the subscription",
    (SubState.LIVE, "CLOSED"): None,
    (SubState.CLOSING, "EVENT"): SubState.CLOSING,
    (SubState.CLOSING, "EOSE"): SubState.CLOSING,
    (SubState.CLOSING, "CLOSED"): None,
}

_MAX_CLOSING = 256  # closed subscriptions remembered, to drop their late events


class RelayConnection:
    """The protocol state of one connection to the relay at ``url`` (see the module essay)."""

    def __init__(self, url: str) -> None:
        self.url = check_relay_url(url)
        self._in_flight: OrderedDict[str, Event] = OrderedDict()
        self._subs: OrderedDict[str, SubState] = OrderedDict()
        self._failed: str | None = None

    @property
    def in_flight(self) -> tuple[str, ...]:
        """Ids of the published events awaiting their ``OK``, oldest first."""
        return tuple(self._in_flight)

    @property
    def subscriptions(self) -> Mapping[str, SubState]:
        return dict(self._subs)

    @property
    def failed(self) -> str | None:
        """Why the connection can no longer be used, or ``None``."""
        return self._failed

    def _usable(self) -> None:
        if self._failed is not None:
            raise NostrUsageError(f"relay connection {self.url} is no longer usable: {self._failed}")

    # -- caller -> relay

    def publish(self, event: Event) -> str:
        """The frame publishing ``event``; its verdict arrives later as a connection event."""
        self._usable()
        if event.id in self._in_flight:
            raise NostrUsageError(f"event {event.id} is already in flight on {self.url}")
        self._in_flight[event.id] = event
        return encode_client_message(PublishEvent(event))

    def subscribe(self, subscription_id: str, filters: Sequence[Filter]) -> str:
        self._usable()
        state = self._subs.get(subscription_id)
        if state is not None and state is not SubState.CLOSING:
            raise NostrUsageError(f"subscription {subscription_id!r} is already open on {self.url}")
        frame = encode_client_message(Req(subscription_id, tuple(filters)))
        self._subs.pop(subscription_id, None)
        self._subs[subscription_id] = SubState.QUERYING
        return frame

    def unsubscribe(self, subscription_id: str) -> str:
        self._usable()
        state = self._subs.get(subscription_id)
        if state is None or state is SubState.CLOSING:
            raise NostrUsageError(f"subscription {subscription_id!r} is not open on {self.url}")
        self._subs[subscription_id] = SubState.CLOSING
        self._forget_closing()
        return encode_client_message(Close(subscription_id))

    def _forget_closing(self) -> None:
        closing = [s for s, st in self._subs.items() if st is SubState.CLOSING]
        for sub in closing[: max(0, len(closing) - _MAX_CLOSING)]:
            del self._subs[sub]

    # -- relay -> caller

    def receive(self, frame: str | bytes) -> list[ConnectionEvent]:
        """The connection events one relay frame produces; :class:`RelayProtocolError` for garbage."""
        self._usable()
        try:
            return self._receive(frame)
        except RelayProtocolError as exc:
            self._failed = f"protocol error: {exc}"
            raise

    def _receive(self, frame: str | bytes) -> list[ConnectionEvent]:
        message = parse_relay_message(frame)
        if isinstance(message, Ok):
            return [self._verdict(message)]
        if isinstance(message, RelayEvent):
            return self._sub_message(message.subscription_id, "EVENT", message)
        if isinstance(message, Eose):
            return self._sub_message(message.subscription_id, "EOSE", message)
        if isinstance(message, Closed):
            return self._sub_message(message.subscription_id, "CLOSED", message)
        if isinstance(message, Notice):
            return [NoticeReceived(message.message)]
        if isinstance(message, AuthChallenge):
            return [AuthRequested(message.challenge)]
        raise AssertionError(f"unhandled relay message {message!r}")  # pragma: no cover

    def _verdict(self, ok: Ok) -> Acknowledged | Rejected:
        event_id = ok.event_id
        if not event_id:
            if not self._in_flight:
                raise RelayProtocolError(f"an OK with an empty event id while no event is in flight: {ok.message!r}")
            event_id = next(iter(self._in_flight))
        elif event_id not in self._in_flight:
            raise RelayProtocolError(f"an OK for event {event_id}, which is not in flight")
        del self._in_flight[event_id]
        prefix = reason_prefix(ok.message)
        verdict = OK_VERDICTS[(ok.accepted, prefix == "duplicate")]
        if verdict is Acknowledged:
            return Acknowledged(event_id, prefix == "duplicate", ok.message)
        return Rejected(event_id, prefix, ok.message)

    def _sub_message(self, sub: str, kind: str, message: RelayEvent | Eose | Closed) -> list[ConnectionEvent]:
        state = self._subs.get(sub)
        if state is None:
            raise RelayProtocolError(f"{kind} for subscription {sub!r}, which is not open")
        step = SUBSCRIPTION_TRANSITIONS[(state, kind)]
        if isinstance(step, str):
            raise RelayProtocolError(f"{step} {sub!r}")
        if step is None:
            del self._subs[sub]
            assert isinstance(message, Closed)
            return [SubscriptionEnded(sub, message.message, by_relay=True)]
        self._subs[sub] = step
        if state is SubState.CLOSING:
            return []  # raced our CLOSE
        if isinstance(message, Eose):
            return [StoredEventsEnd(sub)]
        assert isinstance(message, RelayEvent)
        try:
            verify_event(message.event)
        except EventVerificationError as exc:
            return [InvalidEventReceived(sub, message.event.id, str(exc))]
        return [EventReceived(sub, message.event)]

    def connection_lost(self, reason: str) -> list[ConnectionEvent]:
        """The transport ended: fail every event in flight and end every subscription."""
        reason = one_line(reason)
        events: list[ConnectionEvent] = [PublishFailed(event_id, reason) for event_id in self._in_flight]
        events.extend(SubscriptionEnded(sub, reason, by_relay=False)
                      for sub, state in self._subs.items() if state is not SubState.CLOSING)
        self._in_flight.clear()
        self._subs.clear()
        if self._failed is None:
            self._failed = f"connection lost: {reason}"
        return events
