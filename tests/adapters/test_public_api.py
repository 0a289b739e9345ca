"""``import syncref``: the app developer's import path (ADR-0007) is pinned name by name, and every
name is the very object of its home module."""

from __future__ import annotations

import subprocess
import sys

import syncref
from adapters import sdk
from spec import errors, schema, values

PUBLIC = {
    "CLIENT_ACTIONS": errors, "DEFAULT_DATABASE": schema, "PROTOCOL_VERSION": schema, "SCHEMA_VERSION": schema,
    "V2": sdk, "V3": sdk, "ApplyResult": sdk, "Backoff": sdk, "BacklogTooLarge": sdk, "CallTimeout": sdk,
    "Checkpoint": sdk,
    "CheckpointStore": sdk, "ClientCache": sdk, "ConnectError": sdk, "ConnectInfo": sdk, "Connection": sdk,
    "ConnectionClosed": sdk, "ConnectionLost": sdk, "DecodedRow": sdk, "DisconnectInfo": sdk,
    "ErrorCode": errors, "LocalProtocolError": errors, "QuerySetChange": sdk, "ReducerError": sdk,
    "ReducerInternalError": sdk, "ReducerOutcome": sdk, "SdkError": sdk, "Stale": sdk, "StreamConsumer": sdk,
    "SubState": sdk, "Subscription": sdk, "SubscriptionFailed": sdk, "SyncError": errors,
    "SyncEvent": values, "SyncStream": values, "TableCache": sdk, "TableChange": sdk,
    "TokenUnavailable": sdk,
}


def test_the_public_names_are_pinned_and_are_the_originals() -> None:
    assert sorted(syncref.__all__) == sorted(PUBLIC)
    for name, home in PUBLIC.items():
        assert getattr(syncref, name) is getattr(home, name), name


def test_importing_syncref_does_not_load_the_server() -> None:
    code = ("import sys, syncref; "
            "print(sorted(m for m in sys.modules if m.startswith(('reference', 'adapters.server'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_documented_sdk_defaults_are_pinned() -> None:
    conn = syncref.Connection("http://127.0.0.1:1")
    assert conn.close_flush_timeout == 2.0  # docs/clients.md: close flushes acks within 2 s
    assert syncref.StreamConsumer.__init__.__kwdefaults__["page_events"] == 256  # docs/clients.md: pages of 256
    assert conn.closing is False
