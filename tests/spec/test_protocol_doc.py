"""The tables of docs/protocol.md that restate spec data are generated from it and must not drift
(support/protodoc.py): per-reducer rules with error detail keys, each reducer's check order (from the
check tuples the reducers run), the compute role table, the outbox edges, the policy defaults."""

from __future__ import annotations

import pytest
from support import protodoc


@pytest.mark.parametrize("name", list(protodoc.BLOCKS))
def test_generated_block_is_in_step_with_the_spec(name: str) -> None:
    blocks = protodoc.blocks_in(protodoc.DOC.read_text(encoding="utf-8"))
    assert name in blocks, f"docs/protocol.md has no '<!-- generated: {name} -->' block"
    assert blocks[name] == protodoc.BLOCKS[name](), (
        f"docs/protocol.md block {name} drifted from spec/: run `PYTHONPATH=tests python -m support.protodoc --write`")


def test_a_drifted_block_is_detected() -> None:
    text = protodoc.DOC.read_text(encoding="utf-8")
    drifted = text.replace("| `bridge_max_attempts` | 5 |", "| `bridge_max_attempts` | 6 |")
    assert drifted != text
    assert protodoc.blocks_in(drifted)["policy-defaults"] != protodoc.policy_defaults()
    assert protodoc.blocks_in(protodoc.rewrite(drifted)) == protodoc.blocks_in(text)


def test_the_tables_name_every_rule() -> None:
    from spec.rules import REDUCER_RULES
    from spec.transitions import ASSIGNMENT_TRANSITIONS, BRIDGE_TRANSITIONS
    rules, roles, edges = protodoc.reducer_rules(), protodoc.compute_roles(), protodoc.outbox_edges()
    assert all(f"`{r.reducer}`" in rules for r in REDUCER_RULES)
    assert all(f"| {a} -> {b} |" in roles for a, b in ASSIGNMENT_TRANSITIONS)
    assert all(f"| {a} | {b} |" in edges for a, b in BRIDGE_TRANSITIONS)


def test_the_check_order_is_the_order_the_reducers_run() -> None:
    """Every step of every reducer appears in its reducer's section, in the tuple's order, with its code."""
    from spec.reducers import CHECKS, NoOp
    text = protodoc.check_order()
    sections = text.split("**`")[1:]
    assert [sec.split("`", 1)[0] for sec in sections] == list(CHECKS)
    for sec, (reducer, steps) in zip(sections, CHECKS.items(), strict=True):
        rows = [ln for ln in sec.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
        assert len(rows) == len(steps), reducer
        for i, (row, step) in enumerate(zip(rows, steps, strict=True), 1):
            assert row.startswith(f"| {i} | ") and step.name in row, (reducer, row)
            assert ("accepted, writes nothing" in row) if isinstance(step, NoOp) else f"`{step.code.value}`" in row
        assert "Then: " in sec


def test_a_reordered_check_is_a_drifted_doc(monkeypatch: pytest.MonkeyPatch) -> None:
    import spec.reducers as red
    steps = red.CHECKS["ack_checkpoint"]
    monkeypatch.setitem(red.CHECKS, "ack_checkpoint", (steps[1], steps[0], *steps[2:]))
    blocks = protodoc.blocks_in(protodoc.DOC.read_text(encoding="utf-8"))
    assert blocks["check-order"] != protodoc.check_order()
