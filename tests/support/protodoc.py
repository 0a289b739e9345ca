"""The tables of docs/protocol.md that restate spec data, generated from it.

Each table sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` in
docs/protocol.md.  ``tests/spec/test_protocol_doc.py`` fails when a block differs from what this
module renders from ``spec/`` (so the doc cannot drift from the code); rewrite them with::

    PYTHONPATH=tests python -m support.protodoc --write
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"


def statement(reducer: str) -> str:
    """A reducer's statement: the first paragraph of its docstring in spec/reducers.py, on one line."""
    import inspect

    from spec.reducers import REDUCER_FUNCTIONS
    doc = inspect.getdoc(REDUCER_FUNCTIONS[reducer]) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _first_line(fn: Callable[..., object]) -> str:
    import inspect
    return " ".join((inspect.getdoc(fn) or "").split())


def reducer_rules() -> str:
    from spec.rules import REDUCER_RULES
    from spec.schema import REDUCER_BY_NAME
    lines = ["| reducer | scope | rule | accepted no-op when | errors (detail keys) |",
             "|---|---|---|---|---|"]
    for r in REDUCER_RULES:
        scope = REDUCER_BY_NAME[r.reducer].scope or "one of `compute.request`, `compute.assign`, `compute.execute`"
        scope = scope if scope.startswith("one of") else f"`{scope}`"
        errors = "; ".join(f"`{code.value}` {{{', '.join(keys)}}}" for code, keys in r.errors.items())
        lines.append(f"| `{r.reducer}` | {scope} | {statement(r.reducer)} | "
                     f"{r.noop or '-- (every accepted call writes)'} | {errors} |")
    return "\n".join(lines)


def check_order() -> str:
    """Each reducer's steps in the order ``spec.reducers.run`` evaluates them (``spec.reducers.CHECKS``,
    the tuples the reducers run), then its effect (the effect function's docstring)."""
    from spec.reducers import CHECKS, EFFECTS, NoOp
    from spec.rules import REDUCER_RULE_BY_NAME
    out: list[str] = []
    for reducer, steps in CHECKS.items():
        keys = REDUCER_RULE_BY_NAME[reducer].errors
        out += [f"**`{reducer}`**: {statement(reducer)}", "",
                "| # | the call must pass | else |", "|---|---|---|"]
        for i, step in enumerate(steps, 1):
            if isinstance(step, NoOp):
                out.append(f"| {i} | *no-op when* {step.name} | accepted, writes nothing |")
            else:
                out.append(f"| {i} | {step.name} | `{step.code.value}` {{{', '.join(keys[step.code])}}} |")
        out += ["", f"Then: {_first_line(EFFECTS[reducer])}", ""]
    return "\n".join(out).rstrip("\n")


def compute_roles() -> str:
    from spec.transitions import ASSIGNMENT_ROLES, ASSIGNMENT_TERMINAL, ASSIGNMENT_TRANSITIONS
    lines = ["| edge | roles that may take it |", "|---|---|"]
    for (a, b), roles in ASSIGNMENT_TRANSITIONS.items():
        lines.append(f"| {a} -> {b} | {', '.join(sorted(roles))} |")
    lines += ["", "| role | scope | the caller is |", "|---|---|---|"]
    for name, role in ASSIGNMENT_ROLES.items():
        lines.append(f"| {name} | {f'`{role.scope}`' if role.scope else '--'} | "
                     f"{f'the row`s `{role.identity_column}`' if role.identity_column else 'anyone'} |"
                     .replace("row`s", "row's"))
    lines += ["", f"Terminal: {', '.join(sorted(ASSIGNMENT_TERMINAL))}."]
    return "\n".join(lines)


def outbox_edges() -> str:
    from spec.transitions import BRIDGE_TRANSITIONS
    lines = ["| from | to | taken by |", "|---|---|---|"]
    for (a, b), reducer in BRIDGE_TRANSITIONS.items():
        lines.append(f"| {a} | {b} | `{reducer}` |")
    return "\n".join(lines)


def policy_defaults() -> str:
    from spec.policy import Policy, StreamClass
    lines = ["| field | default |", "|---|---|"]

    def show(v: object) -> str:
        if isinstance(v, frozenset):
            return "{" + ", ".join(str(x) for x in sorted(v)) + "}"
        return "none (kept for ever)" if v is None else str(v)

    for f in dataclasses.fields(Policy):
        if f.name in ("classes", "default_class"):
            continue
        lines.append(f"| `{f.name}` | {show(getattr(Policy(), f.name))} |")
    for f in dataclasses.fields(StreamClass):
        if f.name == "name":
            continue
        lines.append(f"| `default_class.{f.name}` | {show(getattr(StreamClass('default'), f.name))} |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "reducer-rules": reducer_rules,
    "check-order": check_order,
    "compute-roles": compute_roles,
    "outbox-edges": outbox_edges,
    "policy-defaults": policy_defaults,
}


def _block_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end generated: {re.escape(name)} -->)",
                      re.S)


def blocks_in(text: str) -> dict[str, str]:
    out = {}
    for name in BLOCKS:
        m = _block_re(name).search(text)
        if m is not None:
            out[name] = m.group(2).removesuffix("\n")
    return out


def rewrite(text: str) -> str:
    for name, fn in BLOCKS.items():
        text = _block_re(name).sub(lambda m, fn=fn: m.group(1) + fn() + "\n" + m.group(3), text)  # type: ignore[misc]
    return text


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(rewrite(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        for name, fn in BLOCKS.items():
            print(f"<!-- generated: {name} -->\n{fn()}\n<!-- end generated: {name} -->\n")
