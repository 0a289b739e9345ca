"""The spec-hardening scenarios (issue 9, ADR-0003) against the real server over WebSockets (all but
the crash scenarios: a real SIGKILL of ``syncref serve`` is in test_sdk_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.scenarios import SCENARIO_BY_NAME, run_wire, scenario_names


@pytest.mark.parametrize("name", list(scenario_names(wire=True)))
def test_scenario_over_the_wire(name: str, tmp_path: Path) -> None:
    run_wire(SCENARIO_BY_NAME[name], tmp_path)
