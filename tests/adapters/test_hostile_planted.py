"""The hostile slowloris check (``support.slowloris``, run by ``test_hostile.py``), shown able to
fail: a ``syncref serve`` whose connection cap carries a planted bug (``support.gate_mutants``,
applied in the server process by ``support.serve_with_gate_bug``) must fail it, at the assertion
that names the bug -- above all the equality of the refusals the server counts
(``syncref_refused_total{limit="max_connections"}``) and the 503s its clients read, which no run
of a correct server can show failing.  The same wrapper with no bug passes (the control).

A smaller cap than the hostile suite's (30, and 10 over it) keeps each server's run to a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gate_mutants import GATE_MUTANTS
from support.server import serve_process
from support.slowloris import stall_request_heads

ROOT = Path(__file__).resolve().parents[2]
CAP = 30
LIMITS = {"max_connections": CAP, "header_timeout_s": 1.0, "body_timeout_s": 1.0}
NEVER_503 = "the connection cap never answered 503"
MISCOUNTED = r"the server counted \d+ refusals at the connection cap, its clients read \d+ 503s"
# the assertion each bug must fail at
EXPECTED = {
    "refusal_not_counted": MISCOUNTED,
    "refusal_counted_twice": MISCOUNTED,
    "refusal_dropped_unanswered": NEVER_503,
    "every_other_refusal_unanswered": MISCOUNTED,
}


@contextlib.contextmanager
def served(tmp: Path, mutant: str) -> Iterator[tuple[str, int]]:
    """``syncref serve`` with the planted gate bug ``mutant`` (or none), as (base URL, port)."""
    config = tmp / "gate.toml"
    config.write_text("[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in LIMITS.items()))
    env = {k: v for k, v in os.environ.items() if k != "ICONTRACT_SLOW"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    prefix = (sys.executable, "-m", "support.serve_with_gate_bug", mutant)
    with serve_process(tmp / "data", "--config", str(config), env=env, prefix=prefix) as proc:
        yield proc.url, int(proc.url.rsplit(":", 1)[1])


def test_every_planted_gate_bug_is_listed() -> None:
    assert sorted(EXPECTED) == sorted(m.name for m in GATE_MUTANTS)


def test_the_unmutated_gate_passes_through_the_wrapper(tmp_path: Path) -> None:
    with served(tmp_path, "none") as (base, port):
        assert stall_request_heads(base, port, CAP, extra=10) >= 1


@pytest.mark.parametrize("mutant", sorted(EXPECTED))
def test_a_planted_gate_bug_fails_the_slowloris_check(tmp_path: Path, mutant: str) -> None:
    with served(tmp_path, mutant) as (base, port):
        with pytest.raises(AssertionError, match=EXPECTED[mutant]) as failed:
            stall_request_heads(base, port, CAP, extra=10)
        print(f"[{mutant}] {str(failed.value).splitlines()[0]}")
