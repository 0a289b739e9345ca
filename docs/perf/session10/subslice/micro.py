"""CPU per small Subscribe (a resume of the last 100 events, replay_gap's query) and per small keyed
Subscribe of 100 rows, each with its Unsubscribe, through Engine.handle with the server's
slice_rows (1,000, where the engine has it), hot-path contracts off as in `syncref serve`.

Run: ``PYTHONPATH=<tree> .venv/bin/python docs/perf/session10/subslice/micro.py`` (ADR-0041)."""

from __future__ import annotations

import time

from reference.engine import Engine
from spec import contracts
from spec.auth import Claims
from spec.messages import Subscribe, Unsubscribe
from spec.schema import SCOPES
from spec.values import SyncStream

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
N = 20_000


def main() -> None:
    contracts.enable_hot(False)
    eng = Engine()
    if hasattr(eng, "slice_rows"):
        eng.slice_rows = 1000
    for sid, n in (("s", 1000), ("t", 100)):
        for i in range(n):
            eng.call_detached(ALL, "append_sync_event", (sid, f"k{i}", f'{{"i":{i}}}', None, None))
            eng.advance_durable(eng.committed)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream)
    conn = eng.connect(ALL, confirmed=False)
    texts = {"resume": (f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {row.epoch} AND seq > 900",),
             "keyed": ("SELECT * FROM sync_event WHERE stream_id = 't' AND idempotency_key > ''",)}
    for name, t in texts.items():
        t0 = time.process_time_ns()
        for i in range(N):
            eng.handle(conn, Subscribe(i, 1, t))
            eng.handle(conn, Unsubscribe(i, 1))
            eng.take(conn, 100, 1 << 40)
        print(name, round((time.process_time_ns() - t0) / N / 1000, 2), "us per subscribe+unsubscribe")


if __name__ == "__main__":
    main()
