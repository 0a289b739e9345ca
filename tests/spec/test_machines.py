"""Stateful model checks: the module machine and the system machine, every invariant after
every step (profile `default` in CI; HYPOTHESIS_PROFILE=deep for longer exploration)."""

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from support.machines import ModuleMachine, SystemMachine


def _budget(n: int) -> settings:
    base = settings()
    scale = max(1, base.max_examples // 100)
    return settings(base, max_examples=n * scale, stateful_step_count=60)


def test_module_machine() -> None:
    run_state_machine_as_test(ModuleMachine, settings=_budget(150))


def test_system_machine() -> None:
    run_state_machine_as_test(SystemMachine, settings=_budget(150))
