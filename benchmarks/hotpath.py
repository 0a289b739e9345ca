"""Per-call cost of the append hot path's pure pieces, in µs (before/after numbers for
docs/performance.md "Phase 1 changes").

One durable append runs, among others: ``canonicalize`` + ``payload_hash`` of the payload
(spec/canonical.py), ``make_record`` (reference/log.py: the delta's JSON, its hash, the chained
hash), ``record_row`` (reference/durability.py: the row the group-commit writer inserts), and
the BSATN encoding of the event row for subscribers (adapters/bsatn.py ``encode_row``).  Each is
timed on the exact values of a bench append (150-byte payload, first append of a stream and a
later one), best of ``--rounds`` rounds of ``--number`` calls (the minimum is the least
disturbed by the neighbours on a shared machine).

Run: ``.venv/bin/python benchmarks/hotpath.py [--json]``.  Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters import bsatn
from adapters.bench.client import payload
from reference.durability import record_row
from reference.log import RowChange, make_record
from spec.auth import Claims
from spec.canonical import canonicalize, payload_hash
from spec.schema import SCOPES
from spec.values import SyncEvent, SyncStream


def cases() -> dict[str, Any]:
    text = payload(12345, 150)
    canon = canonicalize(text)
    digest = payload_hash(canon)
    claims = Claims("ab" * 32, frozenset(SCOPES), ("*",))
    stream = SyncStream("ap-1234abcd-3", "default", 1, 0, 0, 41, 1, 20000, 1_796_000_000_000_000,
                        1_796_000_000_000_000)
    later = replace(stream, head_seq=42, updated_at=1_796_000_000_001_000)
    event = SyncEvent("ap-1234abcd-3", 1, 42, "k-3-41", digest, canon, "ab" * 32, 1_796_000_000_001_000, 1042)
    changes = (RowChange("sync_event", (), (event,)), RowChange("sync_stream", (stream,), (later,)))
    args = ("ap-1234abcd-3", "k-3-41", text, None, None)
    record = make_record(1042, "reducer", "append_sync_event", claims, args, 1_796_000_000_001_000, changes,
                         "0" * 64)
    return {
        "canonicalize (150 B payload)": lambda: canonicalize(text),
        "payload_hash": lambda: payload_hash(canon),
        "make_record (append delta)": lambda: make_record(1042, "reducer", "append_sync_event", claims, args,
                                                          1_796_000_000_001_000, changes, "0" * 64),
        "record_row (writer serialisation)": lambda: record_row(record),
        "bsatn encode_row (sync_event)": lambda: bsatn.encode_row(event),
    }


def measure(number: int, rounds: int) -> dict[str, float]:
    out = {}
    for name, fn in cases().items():
        best = min(timeit.repeat(fn, number=number, repeat=rounds))
        out[name] = round(best / number * 1e6, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = measure(args.number, args.rounds)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, us in result.items():
            print(f"{us:8.2f} µs  {name}")


if __name__ == "__main__":
    main()
