"""The event loop's CPU for one large update fanned out to many compressing subscribers.

Method: the real server runs in-process on its own loop thread (``tests/support/server.py``).
``--subscribers`` v2 clients asking for ``--compression`` each subscribe five query sets to one
stream, so one append of a ~250 KB event is one ~1.25 MB ``TransactionUpdate`` shared by all of
them (over ``BODY_CACHE_ITEM_BYTES``: not kept in the encode-once LRU).  Per round: the loop
thread's CPU time (``time.thread_time`` read *on the loop*) before the append and after every
subscriber has decoded the update, and how many bodies over 1 MiB the compressor was given
(``wire._compress`` counted).  CPU time, not wall time: a neighbour's load on the shared machine is
not charged.  Compare builds by alternating runs of this file with ``PYTHONPATH=SRC`` (the other
tree first on the path).  Nothing asserts (docs/performance.md, "Loop holds per request at the
limits").  Run: ``.venv/bin/python benchmarks/large_fanout.py [--subscribers 20] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
if os.environ.get("PYTHONPATH") is None:
    sys.path.insert(0, str(ROOT))

from support.server import WireClient, call_http, running_server  # type: ignore[import-not-found]  # noqa: E402

from adapters import wire  # noqa: E402

QUERY = "SELECT * FROM sync_event WHERE stream_id = 'big'"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compression", default="Gzip", choices=["Gzip", "Brotli"])
    args = ap.parse_args()
    count = [0]
    real = wire._compress

    def counted(body: bytes, how: wire.Compression) -> bytes:
        if len(body) > 1 << 20:
            count[0] += 1
        return real(body, how)

    wire._compress = counted  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as d, running_server(Path(d)) as st:
        tok = st.token()
        subs = []
        for _ in range(args.subscribers):
            c = WireClient(st, tok, compression=args.compression)
            for qs in range(1, 6):
                c.subscribe(qs, QUERY)
            subs.append(c)
        cpu, made = [], set()
        for r in range(args.rounds):
            payload = json.dumps(os.urandom(125_000).hex())
            count[0] = 0
            before = st.call(time.thread_time)
            res = call_http(st, tok, "append_sync_event", ["big", f"k{r}", payload, {"none": []}, {"none": []}])
            assert res.status == 200, res.text
            for c in subs:
                c.recv_until(wire.TransactionUpdate)
            cpu.append((st.call(time.thread_time) - before) * 1000)
            made.add(count[0])
        for c in subs:
            c.close()
    print(f"{wire.__file__}: {args.compression}, {args.subscribers} subscribers: loop CPU ms per fanout "
          f"{' '.join(f'{x:.0f}' for x in cpu)}; compressions of the update per fanout {sorted(made)}")


if __name__ == "__main__":
    main()
