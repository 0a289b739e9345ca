"""Differential: the same random action sequences, faults included, through the model and the
reference engine give the same outcomes, tables, deliveries (in order) and decisions."""

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from support.machines import DiffMachine


def test_engine_equals_model() -> None:
    base = settings()
    run_state_machine_as_test(DiffMachine, settings=settings(base, max_examples=max(100, base.max_examples),
                                                             stateful_step_count=60))


def test_engine_reducers_equal_model_reducers() -> None:
    from support.machines import DiffModuleMachine
    base = settings()
    run_state_machine_as_test(DiffModuleMachine, settings=settings(base, max_examples=max(150, base.max_examples),
                                                                   stateful_step_count=60))
