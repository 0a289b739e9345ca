"""The bench's fanout subscriber, in-process: CPU per event for v2 frames and for v3 frames of k updates.

Method (results in ``docs/performance.md``, "Phase 7"): 4,096 ``TransactionUpdate`` messages of one
``sync_event`` row each (150-byte bench payloads), framed by the server's encoder
(``wire.server_frames``: one frame per message at v2; at v3 the messages of each group of k
coalesced into one frame), handed to ``adapters.bench.client.Subscriber.on_syncref`` (v2) or
``on_syncref_v3`` frame by frame; the WebSocket framing and the socket read are not included.
Best of 7 runs, the garbage collector off while timed.  Nothing asserts on timings.

Run: ``.venv/bin/python -m benchmarks.fanout_client [--events 4096] [--per-frame 1 4 16 64 256]``.
"""

from __future__ import annotations

import argparse
import gc
import time

from adapters import wire
from adapters.bench import client
from spec import messages as m
from spec.values import SyncEvent

T0 = 1_796_000_000_000_000


def update(k: int) -> wire.ServerMessage:
    row = SyncEvent("fan", 1, k + 1, f"f-{k}", "sha256:" + "0" * 64, client.payload(k, 150, T0 + 1000 * k),
                    "ab" * 32, T0 + 1000 * k + 700, 9 + k)
    return wire.to_wire(m.TransactionUpdate(9 + k, (m.QuerySetUpdate(1, (m.TableRows("sync_event", (row,)),)),)))


def per_event_us(messages: list[wire.ServerMessage], per_frame: int, v3: bool, rounds: int = 7) -> float:
    frames: list[bytes] = []
    for j in range(0, len(messages), per_frame):
        frames += wire.server_frames(messages[j:j + per_frame], 3 if v3 else 2, wire.Compression.NONE)
    best = float("inf")
    for _ in range(rounds):
        run = client.FanoutSubs({"target": "syncref", "stream": "fan", "subs": 1, "protocol": "v3" if v3 else "v2"})
        run.t0_us, run.slice_us = float(T0), 1e12
        sub = run.subs[0]
        handle = sub.on_syncref_v3 if v3 else sub.on_syncref
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            for frame in frames:
                handle(frame)
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
        if sub.count != len(messages) or sub.out_of_order:
            raise RuntimeError(f"the subscriber counted {sub.count} events, {sub.out_of_order} out of order")
    return best / len(messages) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4096)
    ap.add_argument("--per-frame", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    args = ap.parse_args()
    messages = [update(k) for k in range(args.events)]
    print("updates per v3 frame | v2 (one frame each), µs/event | v3, µs/event")
    for k in args.per_frame:
        print(f"{k:>20} | {per_event_us(messages, k, False):>29.2f} | {per_event_us(messages, k, True):>12.2f}")


if __name__ == "__main__":
    main()
