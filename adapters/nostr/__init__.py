"""A Nostr client for the bridge: NIP-01 events, BIP-340 keys, the relay protocol, a relay pool.

Layers, bottom up:

* :mod:`.event` -- the NIP-01 serialization (its own escaping table, not a JSON encoder's), ids,
  signing and verification of events;
* :mod:`.keys` -- BIP-340 Schnorr over secp256k1 (``coincurve``) and the 0600 signing-key file;
* :mod:`.messages` -- the relay messages as frozen values, their encoder and a strict parser that
  raises only :class:`RelayProtocolError`;
* :mod:`.connection` -- one connection's protocol state, sans I/O (OK verdicts, subscription
  states as data);
* :mod:`.client` -- the thin asyncio/``websockets`` adapter for one connection;
* :mod:`.pool` -- publishing to many relays, each with its own queue, connection and backoff.

The bridge worker that feeds the pool from the server's ``bridge_outbox`` is described in
``docs/bridge.md``.
"""

from adapters.nostr.client import QueryResult, RelaySession
from adapters.nostr.connection import Acknowledged, Rejected, RelayConnection, check_relay_url
from adapters.nostr.errors import (
    EventVerificationError,
    KeyFileError,
    NostrUsageError,
    RelayProtocolError,
    RelayUnavailable,
)
from adapters.nostr.event import Event, EventTemplate, event_id, serialize, sign_event, verify_event
from adapters.nostr.keys import SigningKey, create_key_file, load_key_file, load_or_create_key_file, verify_signature
from adapters.nostr.messages import Filter, parse_relay_message
from adapters.nostr.pool import OutcomeStatus, PoolConfig, PublishResult, PublishTicket, RelayOutcome, RelayPool

__all__ = [
    "Acknowledged",
    "Event",
    "EventTemplate",
    "EventVerificationError",
    "Filter",
    "KeyFileError",
    "NostrUsageError",
    "OutcomeStatus",
    "PoolConfig",
    "PublishResult",
    "PublishTicket",
    "QueryResult",
    "Rejected",
    "RelayConnection",
    "RelayOutcome",
    "RelayPool",
    "RelayProtocolError",
    "RelaySession",
    "RelayUnavailable",
    "SigningKey",
    "check_relay_url",
    "create_key_file",
    "event_id",
    "load_key_file",
    "load_or_create_key_file",
    "parse_relay_message",
    "serialize",
    "sign_event",
    "verify_event",
    "verify_signature",
]
