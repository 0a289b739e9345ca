"""The hot-path contract switch (``spec.contracts.hot``; docs/contracts.md).

Pinned here: the test suite runs with the engine's hot-path contracts on; a default
``syncref serve`` runs with them off; ``--contracts``, ``SYNCREF_CONTRACTS=1`` and ``[server]
contracts = true`` turn them on; and the switch decides at each call, so a violated contract
raises ``ViolationError`` only while it is on (otherwise the bare function runs and fails its
own way).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import icontract
import pytest
from support.server import http, serve_process

from reference.engine import Engine
from spec import contracts


@pytest.fixture
def restore_switch() -> Iterator[None]:
    before = contracts.hot_enabled()
    yield
    contracts.enable_hot(before)


def test_the_suite_runs_with_hot_contracts_on() -> None:
    assert os.environ.get("SYNCREF_CONTRACTS") == "1"
    assert contracts.hot_enabled()
    with pytest.raises(icontract.ViolationError, match="only a released message may be delivered"):
        Engine().pop(42)  # no such connection: the precondition refuses it


def test_the_switch_decides_at_each_call(restore_switch: None) -> None:
    engine = Engine()
    contracts.enable_hot(False)
    with pytest.raises(KeyError):  # the bare function: no contract frame in the way
        engine.pop(42)
    contracts.enable_hot(True)
    with pytest.raises(icontract.ViolationError):
        engine.pop(42)


def test_a_postcondition_too_and_the_bare_function_is_underneath(restore_switch: None) -> None:
    """``advance_durable`` past the last commit: refused with the switch on, let through off."""
    contracts.enable_hot(True)
    with pytest.raises(icontract.ViolationError, match="nothing past the last commit is durable"):
        Engine().advance_durable(5)
    contracts.enable_hot(False)
    engine = Engine()
    engine.advance_durable(5)
    assert engine.durable == 5
    assert Engine.advance_durable.__wrapped__ is not None  # the checked function is kept beside it


def test_hot_leaves_an_undecorated_function_alone() -> None:
    def plain(x: int) -> int:
        return x + 1

    assert contracts.hot(plain) is plain


_PROBE = "import spec.contracts as c, reference.engine; print(c.hot_enabled())"


@pytest.mark.parametrize(("value", "expected"), [(None, "False"), ("0", "False"), ("1", "True"), ("on", "True")])
def test_the_environment_sets_the_default(value: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SYNCREF_CONTRACTS"}
    if value is not None:
        env["SYNCREF_CONTRACTS"] = value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == expected


def _enabled_metric(url: str) -> float:
    text = http("GET", f"{url}/metrics").text
    lines = [ln for ln in text.splitlines() if ln.startswith("syncref_contracts_enabled ")]
    assert len(lines) == 1, text[:2000]
    return float(lines[0].split()[1])


def _env_without_switch() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SYNCREF_CONTRACTS"}


def test_serve_defaults_off_and_the_flag_the_env_and_the_config_turn_them_on(tmp_path: Path) -> None:
    with serve_process(tmp_path / "default", env=_env_without_switch()) as served:
        assert _enabled_metric(served.url) == 0.0
    with serve_process(tmp_path / "flag", "--contracts", env=_env_without_switch()) as served:
        assert _enabled_metric(served.url) == 1.0
    with serve_process(tmp_path / "env", env=dict(_env_without_switch(), SYNCREF_CONTRACTS="1")) as served:
        assert _enabled_metric(served.url) == 1.0
    config = tmp_path / "syncref.toml"
    config.write_text("[server]\ncontracts = true\n")
    with serve_process(tmp_path / "config", "--config", str(config), env=_env_without_switch()) as served:
        assert _enabled_metric(served.url) == 1.0


def test_the_stale_rule_checks_its_contracts_in_a_subscribe_only_with_the_switch_on(
        restore_switch: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``spec.resume.stale_reasons`` (STALE-1: its oracle, the second opinion and the reason order)
    is called by the engine's subscribe through the switch (ADR-0024): with a second opinion that
    disagrees planted, a resume raises ``ViolationError`` while the switch is on, and with it off
    the bare rule answers (a stale cursor refused as before: the rule itself is the same)."""
    from spec import invariants
    from spec.auth import Claims
    from spec.messages import Subscribe, SubscriptionError
    from spec.schema import SCOPES

    claims = Claims("a" * 64, frozenset(SCOPES), ("*",))
    resume = ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 5",)
    monkeypatch.setattr(invariants, "stale_reasons", lambda *args: ("not the rule",))
    contracts.enable_hot(True)
    engine = Engine()
    conn = engine.connect(claims, confirmed=False)
    with pytest.raises(icontract.ViolationError, match="STALE-1"):
        engine.handle(conn, Subscribe(1, 1, resume))
    contracts.enable_hot(False)
    engine = Engine()
    conn = engine.connect(claims, confirmed=False)
    engine.handle(conn, Subscribe(1, 1, resume))
    out = engine.pop(conn).message
    assert isinstance(out, SubscriptionError) and "cursor_ahead_of_head" in out.error, out
