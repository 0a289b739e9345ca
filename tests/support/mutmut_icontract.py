"""mutmut, with the functions whose only decorators are icontract's mutated too (`support.mutate --icontract`).

mutmut 3 leaves every decorated function alone (a decorator runs at definition time and may not survive
being copied; ``@property`` breaks its trampolines).  In ``spec/`` that skips the functions that carry
contracts -- ``spec/delivery.py``'s ``resume_form_error``, ``stale_error``, ``released``,
``advance_durable`` and ``recover``, the harness's ``handle`` and ``call_detached`` -- which are the
ones that matter most.  icontract's decorators are safe to copy: they only wrap the function, and
mutmut already copies a function's decorators onto its trampoline and its mutated copies.  So this
entry point lifts the rule for a function whose every decorator is ``icontract.<something>(...)``
(or a bare ``@icontract.<something>``); the decorators themselves, the contracts' lambdas, are still
never mutated (mutmut skips every ``Decorator`` node).  Everything else is plain mutmut: run it as
``python -m support.mutmut_icontract run ...`` where you would run ``mutmut run ...``.

The contracts run twice per call on a mutated function (once around the trampoline, once around the
active copy); a mutant that breaks a contract is killed by either.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import libcst as cst
from mutmut.mutation import file_mutation


def only_icontract(node: cst.FunctionDef) -> bool:
    """Whether ``node`` is decorated, and only by icontract's decorators."""
    def is_icontract(expr: cst.BaseExpression) -> bool:
        target = expr.func if isinstance(expr, cst.Call) else expr
        return (isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name)
                and target.value.value == "icontract")
    return bool(node.decorators) and all(is_icontract(d.decorator) for d in node.decorators)


_ORIGINAL = file_mutation.MutationVisitor._skip_node_and_children


def _skip_node_and_children(self: file_mutation.MutationVisitor, node: cst.CSTNode) -> bool:
    if isinstance(node, cst.FunctionDef) and only_icontract(node):
        # every other rule still applies (names never mutated, ...); a copy has no position, so
        # `# pragma: no mutate` lines are not honoured on the def line itself (none in spec/)
        return _ORIGINAL(self, node.with_changes(decorators=()))
    return _ORIGINAL(self, node)


def patch() -> None:
    file_mutation.MutationVisitor._skip_node_and_children = _skip_node_and_children  # type: ignore[method-assign]


def unpatch() -> None:
    file_mutation.MutationVisitor._skip_node_and_children = _ORIGINAL  # type: ignore[method-assign]


@contextmanager
def patched() -> Iterator[None]:
    patch()
    try:
        yield
    finally:
        unpatch()


if __name__ == "__main__":
    patch()  # mutmut forks its workers (start method "fork"): they inherit the patch
    from mutmut.__main__ import cli
    sys.argv[0] = "mutmut"
    sys.exit(cli())
