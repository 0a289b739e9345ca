"""``adapters.bench.floor`` (the engine's floor, ADR-0034): it drives the real engine and group
commit, so every timed append must be in the data directory afterwards -- counted with SQLite
directly, not through the code measured -- and every step must be charged.  No timing is
asserted (docs/performance.md, "Method")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
