"""``adapters.bench.floor`` (the engine's floor, ADR-0034): it drives the real engine and group
commit, so every timed append must be in the data directory afterwards -- counted with SQLite
directly, not through the code measured -- and every step must be charged.  No timing is
asserted (docs/performance.md, "Method")."""

from __future__ import annotations

import sqlite3
import time
import types
from pathlib import Path
from typing import Any

import pytest
from support.edited import edited_module

from adapters.bench import floor
from reference.durability import DB_FILE


def test_every_append_is_committed_and_every_step_is_charged(tmp_path: Path) -> None:
    result = floor.measure(rounds=30, window=2, conns=3, warmup=5, data_dir=str(tmp_path))
    assert result.appends == 25 * 3 * 2
    assert result.records_per_commit == 6  # one transaction per call, one COMMIT per round
    assert set(result.us) == set(floor.STEPS)
    assert all(us > 0 for us in result.us.values()), result.us
    assert result.total_us == pytest.approx(sum(result.us.values()))
    assert result.engine_us == pytest.approx(result.us["engine"] + result.us["commit"] + result.us["release"])
    assert result.wall_us > 0
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        payloads = db.execute("SELECT count(*) FROM commit_log WHERE name = 'append_sync_event'").fetchone()[0]
    assert payloads == 30 * 3 * 2  # the warm-up rounds are committed too, only not timed


def test_rounds_must_exceed_the_warmup() -> None:
    with pytest.raises(ValueError, match="must exceed warmup"):
        floor.measure(rounds=5, warmup=5)


def test_the_command_line_prints_each_window(capsys: pytest.CaptureFixture[str]) -> None:
    assert floor.main(["--rounds", "12", "--window", "1", "3", "--conns", "2", "--warmup", "2"]) == 0
    out = capsys.readouterr().out
    assert "window 1 x 2 connections, " in out and "window 3 x 2 connections, " in out
    assert out.count("engine process (engine + commit + release)") == 2


# --- each step's time goes to its own bucket (a fake clock, no timing) -------------------------------------

# the fake CPU clock moves only inside these calls, by a different power of ten each, so each
# step's per-append figure is known exactly from how often its calls run
TICKS = {  # (object, attribute): µs per call
    ("wire", "decode_client_frame"): 1,
    ("Engine", "handle"): 10,
    ("GroupCommitWriter", "flush"): 100,
    ("Engine", "advance_durable"): 1_000,
    ("wire", "frame_server"): 10_000,
}


def charged(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, tmp_path: Path, conns: int,
            window: int) -> dict[str, float]:
    from adapters import wire
    from reference.durability import GroupCommitWriter
    from reference.engine import Engine

    now = [0.0]
    owners = {"wire": wire, "Engine": Engine, "GroupCommitWriter": GroupCommitWriter}
    for (owner, name), us in TICKS.items():
        real = getattr(owners[owner], name)

        def ticking(*args: Any, _real: Any = real, _us: int = us, **kwargs: Any) -> Any:
            now[0] += _us * 1e-6
            return _real(*args, **kwargs)
        monkeypatch.setattr(owners[owner], name, ticking)
    monkeypatch.setattr(time, "process_time", lambda: now[0])
    result: floor.Floor = module.measure(rounds=6, window=window, conns=conns, warmup=2, data_dir=str(tmp_path))
    return result.us


@pytest.mark.parametrize(("conns", "window"), [(1, 1), (3, 1), (2, 4)])
def test_each_step_is_charged_to_its_own_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, conns: int,
                                                window: int) -> None:
    per_round = conns * window  # appends per round: one decode, handle and frame_server each; one flush and
    expected = {"decode": 1, "engine": 10, "commit": 100 / per_round,  # one advance_durable per round
                "release": 1_000 / per_round, "encode": 10_000}
    got = charged(monkeypatch, floor, tmp_path, conns, window)
    assert got == pytest.approx(expected)


PLANTED = {
    "engine and commit swapped": ("(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4b)",
                                  "(t1 - t0, t3 - t2, t2 - t1, t4 - t3, t5 - t4b)"),
    "encode charged to release": ("(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4b)",
                                  "(t1 - t0, t2 - t1, t3 - t2, t5 - t3, t5 - t4b)"),
    "release read before advance_durable": ("            engine.advance_durable(durable)\n            replies",
                                            "            t3 = clock()\n            engine.advance_durable(durable)\n"
                                            "            t3 = clock()\n            replies"),
    "the warm-up rounds timed too": ("            if r >= warmup:\n", "            if True:\n"),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_misattributions_are_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    planted = edited_module(floor, [PLANTED[name]], name)
    expected = {"decode": 1, "engine": 10, "commit": 100 / 3, "release": 1_000 / 3, "encode": 10_000}
    with pytest.raises(AssertionError):
        assert charged(monkeypatch, planted, tmp_path, 3, 1) == pytest.approx(expected)
