"""Progress on long commands: a live line on a terminal, plain lines otherwise (``adapters.progress``),
and ``syncref verify`` / ``verify-log`` run both ways (a pseudo-terminal on stderr, then a pipe)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from support.server import call_http, running_server

from adapters.progress import BAR_WIDTH, CLEAR, Progress
from spec.invariants import CATALOG

SYNCREF = [sys.executable, "-m", "adapters.cli"]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_plain_off_a_terminal_one_line_per_step_and_no_counters() -> None:
    out = io.StringIO()
    clock = Clock()
    p = Progress(2, out, clock=clock)
    assert p.tty is False  # StringIO is not a terminal
    p.step("first")
    p.count(5, 10)
    clock.t += 3
    p.step("second")
    p.finish()
    assert out.getvalue() == "[1/2    0s] first\n[2/2    3s] second\n"


def test_live_line_on_a_terminal_with_bar_and_throttled_counter() -> None:
    out = io.StringIO()
    clock = Clock()
    p = Progress(3, out, tty=True, clock=clock, min_interval=0.5)
    p.step("replaying")
    assert out.getvalue() == CLEAR + "[1/3    0s] replaying"
    out.truncate(0)
    out.seek(0)
    p.count(1, 8)  # within min_interval of the step's draw: skipped
    assert out.getvalue() == ""
    clock.t += 1
    p.count(2, 8)
    bar = "#" * (BAR_WIDTH // 4) + "." * (BAR_WIDTH - BAR_WIDTH // 4)
    assert out.getvalue() == CLEAR + f"[1/3    1s] replaying [{bar}] 2/8"
    out.truncate(0)
    out.seek(0)
    p.count(8, 8)  # the last one is always drawn
    assert out.getvalue().endswith(f"[{'#' * BAR_WIDTH}] 8/8")
    clock.t += 1
    p.count(12_345)  # no total: a counter
    assert out.getvalue().endswith("replaying 12,345")
    p.finish()
    assert out.getvalue().endswith(CLEAR)


def run_on_terminal(cmd: list[str]) -> tuple[int, str, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return proc.wait(60), out, seen.decode()


def log_with_records(tmp_path: Path, n: int) -> Path:
    data = tmp_path / "data"
    with running_server(data) as st:
        token = st.token()
        for i in range(n):
            assert call_http(st, token, "append_sync_event", ["p.s", f"k{i}", "1", {"none": []}, {"none": []}]).status \
                == 200
    return data


def test_verify_log_both_ways(tmp_path: Path) -> None:
    data = log_with_records(tmp_path, 5)
    cmd = [*SYNCREF, "verify-log", "--data", str(data)]
    code, out, term = run_on_terminal(cmd)
    assert code == 0 and "verify-log: OK" in out and CLEAR not in out
    assert "\x1b[K" in term and f"replaying the commit log of {data}" in term
    assert "5/5" in term and term.endswith(CLEAR)  # drawn, then cleared
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode == 0 and piped.stdout == out
    assert piped.stderr == f"[1/1    0s] replaying the commit log of {data}\n"
    as_json = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(as_json.stdout)["records"] == 5


def test_verify_both_ways(tmp_path: Path) -> None:
    cmd = [*SYNCREF, "verify", "--examples", "1", "--skip-proofs", "--skip-crosshair", "--skip-conformance"]
    code, out, term = run_on_terminal(cmd)
    # one example per machine leaves reach-table cells unreached, so the verdict may be FAILED (exit 1);
    # what is checked here is the progress display and the page, not the verdict
    assert code in (0, 1) and re.search(r"^verify: (OK|FAILED)$", out, re.M) and "\x1b" not in out
    for name in ("ModuleMachine", "SystemMachine", "DiffModuleMachine", "DiffMachine"):
        assert f"machine {name} (1 examples)" in term
    assert "[5/5" in term and "tests naming each invariant" in term and term.endswith(CLEAR)
    page = tmp_path / "verify.html"
    piped = subprocess.run([*cmd, "--html", str(page)], capture_output=True, text=True, timeout=120, check=False)
    assert piped.returncode == code and f"wrote {page}" in piped.stdout
    text = page.read_text()  # the same run as a page: one row per invariant (syncref verify --html)
    assert re.search(r'syncref verify: <span class="(ok|bad)">(OK|FAILED)</span>', text), text[:500]
    assert all(f'<tr id="{inv.id}">' in text for inv in CATALOG)
    lines = piped.stderr.splitlines()
    assert len(lines) == 5 and not CONTROL.search(piped.stderr)
    assert re.fullmatch(r"\[1/5 +\d+s\] machine ModuleMachine \(1 examples\)", lines[0])


def test_a_note_does_not_tear_the_live_line() -> None:
    err, out = io.StringIO(), io.StringIO()
    p = Progress(3, err, tty=True, clock=Clock())
    p.note("before any step", out)  # nothing drawn yet: nothing to redraw
    assert err.getvalue() == CLEAR and out.getvalue() == "before any step\n"
    p.step("nemesis 1/3")
    p.note("  1.50 s  kill", out)
    assert out.getvalue().endswith("  1.50 s  kill\n")
    assert err.getvalue().endswith(CLEAR + "[1/3    0s] nemesis 1/3")  # cleared, then drawn again
    plain_err, plain_out = io.StringIO(), io.StringIO()
    q = Progress(3, plain_err, tty=False)
    q.step("nemesis 1/3")
    q.note("  1.50 s  kill", plain_out)
    assert plain_out.getvalue() == "  1.50 s  kill\n" and CLEAR not in plain_err.getvalue()


def test_conformance_both_ways(tmp_path: Path) -> None:
    from adapters.conformance.wire_runner import SCENARIOS

    data = tmp_path / "data"
    with running_server(data) as st:
        cmd = [*SYNCREF, "conformance", "--url", st.base, "--mint-with", str(data), "--only", "delivery"]
        names = [s.name for s in SCENARIOS if s.area == "delivery"]
        code, out, term = run_on_terminal(cmd)
        assert code == 0 and "\x1b" not in out and "failed" in out  # the results table, on stdout
        assert all(f"delivery: {n}" in term for n in names) and term.endswith(CLEAR)
        piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert piped.returncode == 0 and not CONTROL.search(piped.stderr)
    lines = piped.stderr.splitlines()
    assert len(lines) == len(names) >= 1
    for i, (line, name) in enumerate(zip(lines, names, strict=True), 1):
        assert re.fullmatch(rf"\[{i}/{len(names)} +\d+s\] delivery: {re.escape(name)}", line), line
