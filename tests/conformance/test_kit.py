"""The conformance kit's vectors: no drift from the model, every vector passes on the model, the
reference engine and the BSATN codec, every file is read, broken trees are noticed, and planted
bugs of the rules make vectors fail.

* drift: the checked-in tree under ``adapters/conformance/vectors/`` equals what
  :func:`adapters.conformance.generate.generate` builds now (CI fails on drift);
* consumer: :func:`adapters.conformance.vectors_runner.run` passes with every target, ran the engine
  on every reducer-call vector, and read every file;
* the consumer notices an unread file, a missing case and a tampered expectation;
* mutants (``support.conformance_mutants``): each planted bug, applied in its own subprocess,
  fails at least one vector of its area.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support.conformance_mutants import KIT_MUTANT_BY_ID

from adapters.conformance.generate import VECTORS_DIR, generate, sync
from adapters.conformance.vectors_runner import CALL_AREAS, run

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_vectors_match_the_model() -> None:
    problems = sync(VECTORS_DIR, generate(), check=True)
    if problems:
        pytest.fail("adapters/conformance/vectors/ drifted from the model; run "
                    "`.venv/bin/python -m adapters.conformance.generate` and review the diff:\n"
                    + "\n".join(problems[:40]), pytrace=False)


def test_layout_and_manifests() -> None:
    index = json.loads((VECTORS_DIR / "index.json").read_text("ascii"))
    expected_areas = {"canonical", "bsatn", "sql", "reducers", "checkpoint", "stale", "compat", "client",
                      "compute", "outbox", "delivery"}
    assert set(index["areas"]) == expected_areas
    count = 0
    for area, handlers in index["areas"].items():
        for handler, cases in handlers.items():
            for case in cases:
                count += 1
                base = VECTORS_DIR / area / handler / case
                manifest = json.loads((base / "manifest.json").read_text("ascii"))
                assert (manifest["area"], manifest["handler"], manifest["case"]) == (area, handler, case)
                parts = set(manifest["parts"])
                assert "ops" in parts and len(parts & {"post", "error"}) == 1, base
                assert {p.stem for p in base.glob("*.json")} == parts | {"manifest"}
    assert count == index["count"]
    # every reducer has vectors (update_compute_assignment's are the compute area's transition table)
    from spec.schema import REDUCERS
    assert {r.name for r in REDUCERS} - {"update_compute_assignment"} <= set(index["areas"]["reducers"])
    assert index["areas"]["compute"]["update"]


def test_every_vector_passes_on_model_engine_and_codec() -> None:
    report = run()
    assert report.ok, report.table()
    passed = Counter((r.area, r.target) for r in report.results if r.status == "pass")
    index = json.loads((VECTORS_DIR / "index.json").read_text("ascii"))
    for area in CALL_AREAS:  # the second implementation ran every reducer-call vector
        n = sum(len(c) for c in index["areas"][area].values())
        assert passed[(area, "engine")] == passed[(area, "model")] == n
    assert passed[("stale", "engine")] == len(index["areas"]["stale"]["reasons"])
    scenarios = len(index["areas"]["delivery"]["scenario"])
    assert passed[("delivery", "engine")] == passed[("delivery", "model")] == scenarios
    assert passed[("bsatn", "codec")] == sum(len(c) for c in index["areas"]["bsatn"].values())
    assert not report.unread


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    dst = tmp_path / "vectors"
    shutil.copytree(VECTORS_DIR / "stale", dst / "stale")
    index = json.loads((VECTORS_DIR / "index.json").read_text("ascii"))
    (dst / "index.json").write_text(json.dumps({**index, "areas": {"stale": index["areas"]["stale"]}}))
    assert run(dst).ok
    return dst


def test_an_unread_file_fails_the_run(copy: Path) -> None:
    (copy / "stale" / "reasons" / "epoch_3_w_8" / "extra.json").write_text("{}")
    report = run(copy)
    assert not report.ok and report.unread == ["stale/reasons/epoch_3_w_8/extra.json"]
    assert "UNREAD stale/reasons/epoch_3_w_8/extra.json" in report.table()


def test_a_missing_case_fails_the_run(copy: Path) -> None:
    shutil.rmtree(copy / "stale" / "reasons" / "epoch_3_w_8")
    report = run(copy)
    assert not report.ok and report.missing == ["stale/reasons/epoch_3_w_8/manifest.json"]


def test_a_tampered_expectation_fails_on_every_target(copy: Path) -> None:
    post = copy / "stale" / "reasons" / "epoch_3_w_8" / "post.json"
    assert json.loads(post.read_text()) == {"reasons": ["replay_budget_exceeded"]}
    post.write_text(json.dumps({"reasons": []}))
    report = run(copy)
    assert {(r.case, r.target) for r in report.failures} == {("epoch_3_w_8", "model"), ("epoch_3_w_8", "engine")}
    assert 'got ["replay_budget_exceeded"], the vector says []' in report.failures[0].message


@pytest.mark.parametrize("ident", sorted(KIT_MUTANT_BY_ID))
def test_planted_bug_fails_a_vector(ident: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run([sys.executable, "-m", "support.conformance_mutants", ident], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result)[:300])
    assert result["failed"] > 0, f"{ident} survived: no vector of {result['area']} failed"
