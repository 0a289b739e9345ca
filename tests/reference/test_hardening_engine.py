"""The spec-hardening scenarios (issue 9, ADR-0003) on the reference engine, message by message
against the model (support.scenarios.EngineDriver)."""

from __future__ import annotations

import pytest
from support.scenarios import SCENARIO_BY_NAME, EngineDriver, run, scenario_names


@pytest.mark.parametrize("name", list(scenario_names()))
def test_scenario_on_the_engine(name: str) -> None:
    s = SCENARIO_BY_NAME[name]
    run(s, EngineDriver(s.policy))
