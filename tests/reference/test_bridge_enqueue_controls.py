"""The outbox refuses the characters relays serialize differently: a table of code points, written
by hand from NIP-01's text (it escapes exactly \\b \\t \\n \\f \\r among the C0 controls, plus " and \\,
and writes everything else verbatim, which JSON encoders do not do for the other 27 C0 controls),
run on the reference engine with the model beside it (EngineDriver asserts they agree)."""

from __future__ import annotations

import json

import pytest
from support.scenarios import BRIDGE, EngineDriver

from spec.policy import NOSTR_NONPORTABLE_CONTROLS, Policy

# 0x00-0x07, 0x0B (vertical tab), 0x0E-0x1F: 8 + 1 + 18 = 27 code points
DENIED = [*range(0x00, 0x08), 0x0B, *range(0x0E, 0x20)]
ALLOWED = [0x08, 0x09, 0x0A, 0x0C, 0x0D, 0x20, 0x22, 0x2F, 0x5C, 0x7F, 0x85, 0xE9, 0x2028, 0x2029, 0x1F680]


def test_the_hand_table_is_the_policy_constant() -> None:
    assert len(DENIED) == 27
    assert sorted(ord(c) for c in NOSTR_NONPORTABLE_CONTROLS) == DENIED


@pytest.mark.parametrize("where", ["content", "tag"])
def test_enqueue_refuses_exactly_the_ambiguous_controls(where: str) -> None:
    driver = EngineDriver(Policy())
    for i, cp in enumerate(DENIED + ALLOWED):
        text = f"a{chr(cp)}b"
        tags = json.dumps([["d", text]] if where == "tag" else [["d", "x"]])
        content = text if where == "content" else "plain"
        got = driver.call_http(BRIDGE, "enqueue_bridge_event", (f"o{i}", "src", 30078, tags, content))
        assert got == ("policy_denied" if cp in DENIED else "ok"), (hex(cp), got)
