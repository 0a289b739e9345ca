"""The spec-hardening scenarios (issue 9, ADR-0003) on the model: each fails on the rules before it."""

from __future__ import annotations

import pytest
from support.scenarios import SCENARIO_BY_NAME, ModelDriver, run, scenario_names


@pytest.mark.parametrize("name", list(scenario_names()))
def test_scenario_on_the_model(name: str) -> None:
    s = SCENARIO_BY_NAME[name]
    run(s, ModelDriver(s.policy))
