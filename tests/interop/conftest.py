"""Node side of the interop tests: the official npm ``spacetimedb`` SDK, installed from the lock file.

``node_modules`` is installed with ``npm ci`` (exact pins from ``package-lock.json``) the first time
a session needs it.  Node and npm are required: without them the tests *fail* rather than skip,
because CI must run them.  A file lock keeps parallel workers from installing twice.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).resolve().parent


def _installed_ok() -> bool:
    lock = json.loads((INTEROP_DIR / "package-lock.json").read_text())
    for name in ("spacetimedb", "undici"):
        want = lock["packages"][f"node_modules/{name}"]["version"]
        manifest = INTEROP_DIR / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != want:
            return False
    return True


@pytest.fixture(scope="session")
def node() -> Iterator[str]:
    """Path of the ``node`` executable, with the SDK installed in tests/interop/node_modules."""
    node_exe, npm_exe = shutil.which("node"), shutil.which("npm")
    if node_exe is None or npm_exe is None:
        pytest.fail("node and npm are required for the SDK interop tests (install Node >= 20)")
    lock_path = Path(tempfile.gettempdir()) / "syncref-interop-npm-ci.lock"
    with lock_path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not _installed_ok():
                proc = subprocess.run([npm_exe, "ci", "--no-audit", "--no-fund"], cwd=INTEROP_DIR,
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    pytest.fail(f"npm ci failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
                if not _installed_ok():
                    pytest.fail("npm ci did not install the pinned spacetimedb/undici versions")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    yield node_exe
