"""What ``pip install syncref`` gives an implementer with no checkout of this repository.

The wheel is built from the working tree (``pip wheel --no-build-isolation``: setuptools and wheel
come from the dev extra, so no index is needed) and unpacked into a directory that is put first on
``PYTHONPATH``; every command then runs from an unrelated directory, and the test checks that the
code it ran came from the wheel, not from the checkout.  Checked: the ``syncref`` console script,
every conformance vector file, the operator page's assets, ``py.typed`` markers; the vectors runner
reading every vector from the installed package; ``syncref conformance --local`` passing against a
``syncref serve`` started from the installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "adapters" / "conformance" / "vectors"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out)], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = out.glob("syncref-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def _run(site: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_the_wheel_carries_the_script_the_vectors_and_the_assets(installed: Path) -> None:
    (dist,) = installed.glob("syncref-*.dist-info")
    scripts = (dist / "entry_points.txt").read_text()
    assert "[console_scripts]" in scripts and "syncref = adapters.cli:main" in scripts
    shipped = {p.relative_to(installed / "adapters/conformance/vectors")
               for p in (installed / "adapters/conformance/vectors").rglob("*") if p.is_file()}
    in_repo = {p.relative_to(VECTORS) for p in VECTORS.rglob("*") if p.is_file()}
    assert len(in_repo) > 1000 and shipped == in_repo
    for asset in ("index.html", "app.js", "style.css"):
        assert (installed / "adapters/ops_page" / asset).is_file()
    for pkg in ("spec", "reference", "adapters", "proofs", "syncref"):
        assert (installed / pkg / "py.typed").is_file()
    assert not (installed / "tests").exists()


def test_the_installed_package_runs_the_kit_without_a_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, tmp_path, "-c", "import adapters.conformance.vectors_runner as v; print(v.VECTORS_DIR)")
    assert where.returncode == 0 and where.stdout.strip() == str(installed / "adapters/conformance/vectors"), where
    vectors = _run(installed, tmp_path, "-m", "adapters.conformance.vectors_runner", "--only", "stale")
    assert vectors.returncode == 0, vectors.stdout[-2000:] + vectors.stderr[-2000:]
    assert "0 failed" in vectors.stdout
    wire = _run(installed, tmp_path, "-m", "adapters.cli", "conformance", "--local", "--only", "replay")
    assert wire.returncode == 0, wire.stdout[-2000:] + wire.stderr[-2000:]
    assert "PASS  replay_parity_across_restart" in wire.stdout and "1 passed, 0 failed, 0 skipped" in wire.stdout
    # the local target's compact command runs the installed package's module (no checkout to cd into)
    kept = _run(installed, tmp_path, "-m", "adapters.cli", "conformance", "--local", "--only", "retention")
    assert kept.returncode == 0, kept.stdout[-2000:] + kept.stderr[-2000:]
    assert "PASS  retention_floor" in kept.stdout and "2 passed, 0 failed, 0 skipped" in kept.stdout
