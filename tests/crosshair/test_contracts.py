"""The icontract contracts are live at run time (plain pytest, fast).

* preconditions reject inputs outside a function's domain;
* postconditions fire when the code breaks them: bugs planted into fresh copies of ``spec``
  modules (never the modules themselves) make a contract raise ``icontract.ViolationError``
  naming the invariant it states;
* the planted-bug module CrossHair refutes carries exactly the contracts of the originals;
* the pure ``apply_rule`` agrees with the client code path it summarizes;
* with ``ICONTRACT_SLOW=1`` (every contract on, as under CrossHair) the stateful machines pass.

Contract refutations that are real spec defects are kept as strict xfails, so a fix is noticed.
"""

from __future__ import annotations

import importlib
import inspect
import linecache
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import icontract
import planted_bug
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec.auth import Claims
from spec.client import Client, StreamView, apply_rule
from spec.compat import CompatWindow, negotiate
from spec.errors import ErrorCode, SyncError
from spec.messages import TableRows
from spec.query import Comparison, Op, Query, unsatisfiable
from spec.reducers import unclean_restart
from spec.state import DbState
from spec.values import StreamSignal, SyncEvent

ROOT = Path(__file__).resolve().parents[2]
ME = Claims("a" * 64, frozenset({"sync.append", "sync.checkpoint.write"}), ("s*",))


# --- preconditions ----------------------------------------------------------------------------


def test_preconditions_reject_inputs_outside_the_domain() -> None:
    with pytest.raises(icontract.ViolationError):
        apply_rule(-1, 0)
    with pytest.raises(icontract.ViolationError, match="well typed"):
        unsatisfiable(Query("sync_event", (Comparison("seq", Op.GT, "x"),), ""))
    with pytest.raises(icontract.ViolationError, match="window is well formed"):
        negotiate(CompatWindow(min_schema_version=3, max_schema_version=2), None, None, None)
    with pytest.raises(icontract.ViolationError):
        unclean_restart(DbState(), 0, -1)


def test_contracted_functions_answer_normally_inside_their_domain() -> None:
    assert [apply_rule(5, s) for s in (4, 5, 6, 7)] == ["duplicate", "duplicate", "apply", "gap"]
    assert negotiate(CompatWindow(), None, None, None) is None
    assert unclean_restart(DbState(), 0, 3).epoch_floor == 5


# --- postconditions fire on planted bugs --------------------------------------------------------


@contextmanager
def planted(module: str, *edits: tuple[str, str]) -> Iterator[types.ModuleType]:
    """A fresh copy of ``module`` with each ``old`` replaced by its ``new`` (the real module is untouched)."""
    src = inspect.getsource(importlib.import_module(module))
    for old, new in edits:
        assert src.count(old) == 1, f"planted edit {old!r} not found once in {module}"
        src = src.replace(old, new)
    name, filename = f"_planted_{module.replace('.', '_')}", f"<planted {module}>"
    mod = types.ModuleType(name)
    sys.modules[name] = mod  # dataclasses resolve string annotations through sys.modules
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)  # icontract quotes it
    try:
        exec(compile(src, filename, "exec"), mod.__dict__)
        yield mod
    finally:
        del sys.modules[name]
        linecache.cache.pop(filename, None)


def _violation(fn: Callable[[], Any]) -> str:
    with pytest.raises(icontract.ViolationError) as info:
        fn()
    return str(info.value)


def test_append_contract_catches_a_wrong_seq() -> None:
    with planted("spec.reducers", ("    seq = a.head + 1\n", "    seq = a.head + 2\n")) as red:
        ctx = red.CallContext(ME, 10, 1)
        text = _violation(lambda: red.call(DbState(), ctx, "append_sync_event", ("s", "k", "{}", None, None)))
    assert "SEQ-4" in text


def test_append_contract_catches_dedupe_that_ignores_the_payload() -> None:
    from spec.reducers import CallContext, Ok, call
    first = call(DbState(), CallContext(ME, 10, 1), "append_sync_event", ("s", "k", '{"a":1}', None, None))
    assert isinstance(first, Ok)
    with planted("spec.reducers", ("lambda a: a.existing is not None and a.existing.payload_hash == a.digest,",
                                   "lambda a: a.existing is not None,")) as red:
        text = _violation(lambda: red.call(first.state, red.CallContext(ME, 11, 2), "append_sync_event",
                                           ("s", "k", '{"a":2}', None, None)))
    assert "IDEM-2" in text and "IDEM-3" in text


def test_ack_contract_catches_a_checkpoint_past_the_head() -> None:
    from spec.reducers import CallContext, Ok, call
    db = call(DbState(), CallContext(ME, 10, 1), "append_sync_event", ("s", "k", "{}", None, None))
    assert isinstance(db, Ok)
    with planted("spec.reducers", ("lambda a: None if a.seq <= a.head\n",
                                   "lambda a: None if a.seq <= a.head + 1\n")) as red:
        text = _violation(lambda: red.call(db.state, red.CallContext(ME, 11, 2), "ack_checkpoint",
                                           ("c", "s", 1, 2)))
    assert "CKPT-1" in text


def test_stale_contract_catches_an_off_by_one_floor() -> None:
    with planted("spec.resume", ('("retention_floor_breach", watermark < floor - 1)',
                                 '("retention_floor_breach", watermark < floor - 2)')) as dlv:
        text = _violation(lambda: dlv.stale_reasons(1, 10, 5, 100, None, 3))
    assert "STALE-1" in text


def test_state_contract_catches_event_rows_in_the_state() -> None:
    with planted("spec.state", ("    return {t.name: () for t in PERSISTENT_TABLES}",
                                "    return {t.name: () for t in TABLES}"),
                 ("        if t.event:\n            self._inserts.setdefault(t.name, []).append(row)\n"
                  "            return\n", "")) as st_mod:
        tx = st_mod.Tx(st_mod.DbState())
        tx.insert(StreamSignal("s", "typing", "{}", "a" * 64, 0))
        text = _violation(tx.finish)
    assert "EVT-1" in text


def test_client_contract_catches_applying_across_a_gap() -> None:
    with planted("spec.client", ('            if rule == "gap":', "            if False:")) as cl:
        client = cl.Client("c", ME, False, lambda s: (1, 0, ()))
        client.streams["s"] = cl.StreamView(epoch=1, last=0)
        rows = (TableRows("sync_event", (_event(1), _event(3))),)
        text = _violation(lambda: client._on_rows("s", rows))
    assert "REPLAY-1" in text


def test_planted_bug_module_contracts_fire_at_run_time() -> None:
    assert "STALE-1" in _violation(lambda: planted_bug.stale_reasons(0, 0, 2, 0, None, 0))
    assert "REPLAY-1" in _violation(lambda: planted_bug.apply_rule(3, 3))
    assert "ASSIGN-1" in _violation(lambda: planted_bug.assignment_edge_allowed("failed", "open"))


def _contract_text(fn: Callable[..., Any]) -> str:
    """The decorator lines above ``def``, without layout and without the cost switches (the planted
    module always checks its contracts; CrossHair runs the spec with every switch on)."""
    source = inspect.getsource(inspect.unwrap(fn))
    decorators = re.sub(r",\s*enabled=[\w.]+", "", source[:source.index("\ndef ")])
    return re.sub(r"\s+", "", decorators)


@pytest.mark.parametrize("name", sorted(planted_bug.PLANTED))
def test_planted_copies_carry_the_contracts_of_the_originals(name: str) -> None:
    module, _, fn = planted_bug.PLANTED[name].rpartition(".")
    original = getattr(importlib.import_module(module), fn)
    assert "@icontract.ensure" in _contract_text(original)
    assert _contract_text(getattr(planted_bug, name)) == _contract_text(original)


# --- apply_rule is the client's rule -------------------------------------------------------------


def _event(seq: int, epoch: int = 1) -> SyncEvent:
    return SyncEvent("s", epoch, seq, f"k{seq}", "sha256:" + "0" * 64, "{}", "a" * 64, 0, seq)


@given(st.integers(0, 6), st.lists(st.integers(1, 10), max_size=6))
def test_apply_rule_is_what_the_client_does(last: int, seqs: list[int]) -> None:
    client = Client("c", ME, False, lambda s: (1, last, ()))
    client.streams["s"] = StreamView(epoch=1, last=last)
    client._on_rows("s", (TableRows("sync_event", tuple(_event(s) for s in seqs)),))
    expected, mark, gap = [], last, False
    for s in sorted(seqs):
        rule = apply_rule(mark, s)
        if rule == "gap":
            gap = True
            break
        if rule == "apply":
            expected.append(s)
            mark = s
    assert [s for s, _ in client.streams["s"].applied] == expected
    assert client.streams["s"].last == mark
    assert client.gaps_detected == (1 if gap else 0)


# --- the slow contracts hold on realistic runs ----------------------------------------------------

_SLOW_RUN = """
import icontract
assert icontract.SLOW, "ICONTRACT_SLOW did not reach icontract"
import spec.contracts
assert spec.contracts.WHOLE_STATE and spec.contracts.PER_ROW
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from support.machines import ModuleMachine, SystemMachine
for machine in (ModuleMachine, SystemMachine):
    run_state_machine_as_test(machine, settings=settings(
        max_examples=20, stateful_step_count=50, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
print("ok")
"""


def test_slow_contracts_hold_under_the_machines() -> None:
    """Every contract on, including the whole-state checks around each reducer call."""
    env = dict(os.environ, ICONTRACT_SLOW="1", SYNCREF_WHOLE_STATE_CONTRACTS="1", SYNCREF_PER_ROW_CONTRACTS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _SLOW_RUN], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


# --- regressions for the spec defects the contracts exposed (both fixed) ---------------------------


def test_sync_error_survives_a_generator_context_manager() -> None:
    """It was a frozen+slots dataclass: setting __traceback__ raised TypeError inside @contextmanager."""
    @contextmanager
    def scope() -> Iterator[None]:
        yield

    with pytest.raises(SyncError), scope():
        raise SyncError(ErrorCode.INVALID_QUERY, {})


def test_a_build_id_with_non_ascii_digits_is_invalid() -> None:
    """BUILD_RE used \\d, which matches non-ASCII digits; build ids compare as ASCII strings."""
    err = negotiate(CompatWindow(), "2026\u0660\u0661\u0660\u0661T000000Z", "oa.sync.v1", 1)
    assert err is not None and err.code is ErrorCode.INVALID_CLIENT_BUILD
