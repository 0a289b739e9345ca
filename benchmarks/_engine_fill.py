"""An engine filled for the read-path benchmarks (``scan_bound.py``, ``grants_per_row.py``):
``per`` events in each of ``streams`` streams named ``u<s % 100>.s<s>``, appended round-robin by
one all-granted connection and made durable every 1,000 appends -- the same table for both."""

from __future__ import annotations

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import CallReducer
from spec.schema import SCOPES


def filled_engine(streams: int, per: int) -> Engine:
    every = Claims("a" * 64, frozenset(SCOPES), ("*",))
    eng = Engine(max_undurable=10**9, max_queue=10**9)
    conn = eng.connect(every, confirmed=False)
    n = 0
    for _ in range(per):
        for s in range(streams):
            n += 1
            eng.handle(conn, CallReducer(n, "append_sync_event", (f"u{s % 100}.s{s}", f"k{n}", '{"n":1}', None, None)))
            if n % 1000 == 0:
                eng.advance_durable(eng.committed)
    eng.advance_durable(eng.committed)
    return eng
