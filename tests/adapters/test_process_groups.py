"""``adapters.chaos.relays.kill_group`` / ``signal_group``: the one place that stops a relay.

A relay is ``nostr-relay`` plus uvicorn's workers in their own session, so the chaos run and the
bridge tests stop, freeze and thaw it as a process *group*.  These tests use a shell with a
child in the background as a stand-in and look at the kernel's view (``/proc``), not at our
bookkeeping.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from adapters.chaos.relays import kill_group, signal_group


def _group(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    pidfile = tmp_path / "child.pid"
    process = subprocess.Popen(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"],
                               start_new_session=True)
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the stand-in did not start its child"
        time.sleep(0.01)
    return process, int(pidfile.read_text())


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (None once it is gone or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] in ("Z", "X") else fields[0]


def _wait_state(pid: int, wanted: set[str | None]) -> str | None:
    deadline = time.monotonic() + 10
    state = _state(pid)
    while state not in wanted and time.monotonic() < deadline:
        time.sleep(0.01)
        state = _state(pid)
    return state


def test_kill_group_kills_the_child_too_and_reaps_the_leader(tmp_path: Path) -> None:
    process, child = _group(tmp_path)
    assert _state(child) in {"S", "R"}
    kill_group(process)
    assert process.returncode == -signal.SIGKILL          # reaped: no zombie left behind
    assert _wait_state(child, {None}) is None             # the background child died with the group


def test_freeze_and_thaw_reach_every_member(tmp_path: Path) -> None:
    process, child = _group(tmp_path)
    try:
        signal_group(process, signal.SIGSTOP)
        assert _wait_state(process.pid, {"T"}) == "T"
        assert _wait_state(child, {"T"}) == "T"
        signal_group(process, signal.SIGCONT)
        assert _wait_state(child, {"S", "R"}) in {"S", "R"}
        assert _wait_state(process.pid, {"S", "R"}) in {"S", "R"}
    finally:
        kill_group(process)


def test_a_group_that_is_gone_is_not_an_error(tmp_path: Path) -> None:
    process, _ = _group(tmp_path)
    kill_group(process)
    signal_group(process, signal.SIGCONT)                 # no ProcessLookupError
    kill_group(process)
    assert process.returncode == -signal.SIGKILL
