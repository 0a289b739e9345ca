"""The bridge's config loading, its mappings, the worked events of docs/bridge.md, and the relay
pool's per-publish relay subset the worker relies on (catch-up of one relay)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import nostr_oracle
from support.nostr_relays import FakeRelay

from adapters.bridge.config import BridgeConfigError, load_bridge_config
from adapters.bridge.core import BridgePolicy, build_event
from adapters.bridge.mappings import MappingConfig, capability_request, receipt_request
from adapters.nostr.errors import NostrUsageError
from adapters.nostr.event import EventTemplate, sign_event
from adapters.nostr.keys import SigningKey
from adapters.nostr.pool import OutcomeStatus, PoolConfig, RelayPool
from spec.canonical import payload_hash
from spec.values import BridgeOutbox, ComputeAssignment, ProviderCapability

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bridge.md"
DOC_KEY = SigningKey(hashlib.sha256(b"syncref docs/bridge.md worked examples").digest())


# --- config --------------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str | None = None, **flags: Any) -> Any:
    path = None
    if text is not None:
        path = tmp_path / "bridge.toml"
        path.write_text(text)
    kw: dict[str, Any] = {"url": "http://127.0.0.1:3000", "key_file": "k", "relays": ["ws://a.test"]}
    kw.update(flags)
    return load_bridge_config(path, **kw)


def test_defaults_are_pinned(tmp_path: Path) -> None:
    c = load(tmp_path)
    assert c.database == "autopilot-sync" and c.relays == ("ws://a.test",) and c.bad_relays == ()
    assert c.policy == BridgePolicy() and c.pool == PoolConfig() and c.mappings == MappingConfig()
    assert c.metrics_port is None and c.metrics_host == "127.0.0.1" and c.pause_before_mark_while is None
    assert MappingConfig() == MappingConfig(False, False, frozenset({"completed", "failed"}), "syncref:receipt:")


def test_the_file_sets_everything_and_flags_win(tmp_path: Path) -> None:
    text = """
[bridge]
url = "http://file:1"
database = "db2"
relays = ["ws://f1.test", "wss://f2.test"]
key_file = "file.key"
metrics_port = 9999
[policy]
kinds = [31990]
reject_retry_ms = 5000
[pool]
open_timeout = 2
backoff_cap = 3.5
[mappings]
provider_capability = true
receipt_statuses = ["completed"]
[faults]
pause_before_mark_while = "/tmp/x"
"""
    c = load(tmp_path, text, url=None, key_file=None, relays=None)
    assert (c.url, c.database, c.relays, c.key_file, c.metrics_port) == (
        "http://file:1", "db2", ("ws://f1.test", "wss://f2.test"), Path("file.key"), 9999)
    assert c.policy.kinds == frozenset({31990}) and c.policy.reject_retry_ms == 5000
    assert c.pool.open_timeout == 2.0 and c.pool.backoff.cap == 3.5 and c.pool.ack_timeout == 10.0
    assert c.mappings.provider_capability and c.mappings.receipt_statuses == frozenset({"completed"})
    assert c.pause_before_mark_while == Path("/tmp/x")
    flags = load(tmp_path, text, relays=["ws://flag.test"], metrics_port=0)
    assert flags.relays == ("ws://flag.test",) and flags.metrics_port == 0 and flags.url == "http://127.0.0.1:3000"


def test_bad_relay_urls_are_left_out_with_a_reason_and_the_rest_served(tmp_path: Path) -> None:
    c = load(tmp_path, relays=["http://x.test", "ws://a.test", "ws://a.test", "wss://b.test", "ws://"])
    assert c.relays == ("ws://a.test", "wss://b.test")
    assert c.bad_relays == ("relay left out: relay URL 'http://x.test' must start with ws:// or wss://",
                            "relay 'ws://a.test' left out: listed twice",
                            "relay left out: relay URL 'ws://' has no host")
    assert all("\n" not in r for r in c.bad_relays)


@pytest.mark.parametrize(("text", "flags", "message"), [
    (None, {"relays": ["ftp://x"]}, "no usable relay"),
    (None, {"relays": None}, "no relay"),
    (None, {"url": None}, "no server URL"),
    (None, {"key_file": None}, "no signing key"),
    ("[bridge\n", {}, "not TOML"),
    ("[nope]\n", {}, "unknown table [nope]"),
    ("[policy]\nkind = [1]\n", {}, "unknown key kind"),
    ("[policy]\nkinds = 31990\n", {}, "kinds: wrong type"),
    ("[mappings]\nreceipts = 1\n", {}, "receipts: wrong type"),
    ("[policy]\nmax_in_flight = true\n", {}, "max_in_flight: wrong type"),
    ("[policy]\nkinds = []\n", {}, "non-empty"),
    ("[pool]\nopen_timeout = 0\n", {}, "positive"),
    ("[pool]\nbackoff_base = 10.0\nbackoff_cap = 1.0\n", {}, "base <= cap"),
])
def test_config_errors_are_one_line(tmp_path: Path, text: str | None, flags: dict[str, Any], message: str) -> None:
    with pytest.raises(BridgeConfigError) as err:
        load(tmp_path, text, **flags)
    assert message in str(err.value) and "\n" not in str(err.value)


# --- mappings ------------------------------------------------------------------------------------------


def cap(**kw: Any) -> ProviderCapability:
    base = ProviderCapability("provider-gpu-1", "00" * 32, '{"models":["llama-3-8b"],"name":"gpu-1"}',
                              "sha256:" + "0" * 64, (5100, 5050), 10, "active", 3, 0)
    return ProviderCapability(**{**{f: getattr(base, f) for f in base.__slots__}, **kw})


def test_capability_mapping_cases() -> None:
    req = capability_request(cap())
    assert req.args() == ("cap:provider-gpu-1:3", "provider_capability:provider-gpu-1", 31990,
                          '[["d","provider-gpu-1"],["k","5050"],["k","5100"]]',
                          '{"models":["llama-3-8b"],"name":"gpu-1","price_hint_sats":10,"status":"active","version":3}')
    withdrawn = capability_request(cap(status="withdrawn", version=4))
    assert withdrawn.outbox_id == "cap:provider-gpu-1:4" and json.loads(withdrawn.content)["status"] == "withdrawn"
    # the row's fields win over same-named keys; a non-object capability is nested; kinds deduplicated
    odd = capability_request(cap(capability='{"status":"fake","version":99}', nip90_kinds=(5050, 5050)))
    assert json.loads(odd.content) == {"price_hint_sats": 10, "status": "active", "version": 3}
    assert json.loads(odd.tags_json) == [["d", "provider-gpu-1"], ["k", "5050"]]
    assert json.loads(capability_request(cap(capability="[1,2]")).content)["capability"] == [1, 2]


def assignment(status: str, result: str | None) -> ComputeAssignment:
    return ComputeAssignment("req-42", "00" * 32, 5050, '{"prompt":"hi"}', payload_hash('{"prompt":"hi"}'),
                             "provider-gpu-1", "00" * 32, status, result, 5, 0, 0)


@pytest.mark.parametrize(("status", "mirrored"), [("open", False), ("assigned", False), ("running", False),
                                                  ("completed", True), ("failed", True), ("cancelled", False)])
def test_receipt_mapping_by_status(status: str, mirrored: bool) -> None:
    req = receipt_request(assignment(status, '{"text":"hello"}' if status == "completed" else None))
    assert (req is not None) is mirrored
    if req is not None:
        body = json.loads(req.content)
        assert req.outbox_id == "receipt:req-42" and req.source == "compute_assignment:req-42"
        assert json.loads(req.tags_json) == [["d", "syncref:receipt:req-42"], ["t", "receipt"]]
        assert body["status"] == status and "hello" not in req.content and "prompt" not in req.content
        expected = hashlib.sha256(b'{"text":"hello"}').hexdigest() if status == "completed" else None
        assert body["result_hash"] == (None if expected is None else "sha256:" + expected)


def test_receipt_mapping_follows_its_config() -> None:
    config = MappingConfig(receipts=True, receipt_statuses=frozenset({"cancelled"}), d_prefix="x:")
    req = receipt_request(assignment("cancelled", None), config)
    assert req is not None and json.loads(req.tags_json)[0] == ["d", "x:req-42"]
    assert receipt_request(assignment("completed", "{}"), config) is None


# --- the worked events of docs/bridge.md ---------------------------------------------------------------


def documented_events() -> list[dict[str, Any]]:
    section = DOCS.read_text().split("#### Worked events", 1)[1]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.S)]


def test_the_worked_events_in_the_docs_are_exact() -> None:
    documented = documented_events()
    assert len(documented) == 2
    c = capability_request(cap())
    r = receipt_request(assignment("completed", '{"text":"hello"}'))
    assert r is not None
    rows = [BridgeOutbox(c.outbox_id, c.source, c.nostr_kind, c.tags_json, c.content, "", "pending", 0,
                         1767225600_000000, None, None, (), 1767225600_000000, 0),
            BridgeOutbox(r.outbox_id, r.source, r.nostr_kind, r.tags_json, r.content, "", "pending", 0,
                         1767225601_500000, None, None, (), 1767225601_500000, 0)]
    for row, doc in zip(rows, documented, strict=True):
        assert build_event(row, DOC_KEY).to_json() == doc
        assert nostr_oracle.event_is_valid(doc)  # the hand-written NIP-01 table and pure-Python BIP-340
    assert DOC_KEY.secret_hex().startswith("083e2644") and DOC_KEY.secret_hex().endswith("04f0")


# --- the pool's relay subset -----------------------------------------------------------------------------


def test_publish_to_a_subset_of_the_pool() -> None:
    event = sign_event(EventTemplate(1767225600, 30078, (("d", "x"),), "{}"), DOC_KEY)

    async def scenario() -> None:
        a, b = await FakeRelay("accept").start(), await FakeRelay("accept").start()
        try:
            async with RelayPool([a.url, b.url]) as pool:
                result = await pool.publish(event, [b.url]).wait(10)
                assert [o.relay for o in result.outcomes] == [b.url] and result.acked == (b.url,)
                assert a.events == [] and [e["id"] for e in b.events] == [event.id]
                assert result.outcome(b.url).status is OutcomeStatus.ACKED
                with pytest.raises(NostrUsageError, match="not in this pool"):
                    pool.publish(event, ["ws://elsewhere.test"])
                with pytest.raises(NostrUsageError):
                    pool.publish(event, a.url)  # a string, not a list of relays
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(asyncio.wait_for(scenario(), 30))
