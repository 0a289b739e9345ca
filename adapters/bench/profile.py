"""Turn py-spy's folded stacks of the syncref server into a cost budget per operation.

``syncref bench --profile DIR`` records, for the first syncref run of each append and fanout
workload, ``DIR/<workload>.folded.txt``: py-spy's raw output (one line per distinct stack,
``frame;frame;...;frame count``, root first), sampled at 200 Hz with ``--gil`` -- only samples in
which a thread held the interpreter lock, i.e. Python doing work, not threads waiting in
``select`` or ``fsync``.  Each sample is charged to one budget line: walking from the leaf
towards the root, the first frame that matches a rule of :data:`RULES` names the line (so the
innermost phase wins: JSON encoding inside ``canonicalize`` is "canonical JSON + hash", the
same encoder inside the record builder is "record + hash chain").  Contract checking is its own
line: a sample whose innermost icontract frame is the leaf (the wrapper) or calls a condition
``<lambda>``.  Samples that match nothing are "event loop + aiohttp (rest)".

The budget in µs per operation is the line's share of the samples times the server's CPU time
per operation measured in the same run (``server_cpu_us_per_op`` in the bench JSON).  Run:
``python -m adapters.bench.profile DIR/append_closed.folded.txt --us-per-op 900``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable


def _fn(names: str) -> str:
    """A frame's function, qualified or not (py-spy writes ``Class.method`` and ``f.<locals>.g``)."""
    return rf"(?:^|\.)(?:{names})"


# (budget line, regex on a frame "function (path:line)"), tried for each frame from the leaf up
RULES: tuple[tuple[str, str], ...] = (
    ("canonical JSON + payload hash", r"\(spec/canonical\.py"),
    ("record + hash chain", r"\(reference/log\.py"),
    ("group commit: serialise + SQLite", r"\(reference/durability\.py"),
    ("auth checks (scopes, grants, row filter)", r"\(spec/auth\.py"),
    ("connect: JWT verify", r"\(adapters/auth\.py|\(.*jwt/"),
    ("metrics (prometheus_client)", r"\(.*prometheus_client/"),
    ("fanout encode (BSATN, framing)", _fn("_encode|frame_server|batch_v3|to_wire|encode_server") +
     r" \(adapters/(server|wire)\.py"),
    ("socket writes (aiohttp writer, transport)", _fn("send_bytes|send_frame|_send_frame|write|writelines") +
     r" \(.*(aiohttp/|asyncio/)|\(.*aiohttp/_websocket/writer"),
    ("frame read (aiohttp reader, transport)", r"\(.*aiohttp/_websocket/reader|" + _fn("receive|_read_ready"
     r"|_read_ready__data_received|data_received|feed_data") + r" \(.*(aiohttp/|asyncio/)"),
    ("fanout match + outbound queues (engine)", _fn("_fanout|_send|releasable|pop|take_records") +
     r" \(reference/engine\.py"),
    ("transaction: reducer + tables", r"\(reference/(reducers|db)\.py|" + _fn("handle|_call|_commit|_signature_error")
     + r" \(reference/engine\.py"),
    ("frame decode (BSATN)", _fn("decode_client_frame|decode_client|from_wire|_r_client|decode_args|_dispatch")
     + r" \(adapters/(wire|server|bsatn)\.py"),
    ("durability hand-back + wakeups", _fn("_durable_advanced|_pump|_wait_room|_wait_durable|_durable_from_thread")
     + r" \(adapters/server\.py"),
    ("per-connection tasks (sender, processor, reader loops)", _fn("_sender|_processor|_reader") +
     r" \(adapters/server\.py"),
)
CONTRACTS = "contracts (icontract: wrappers and conditions)"
REST = "event loop + aiohttp (rest)"
_COMPILED = [(name, re.compile(rx)) for name, rx in RULES]
_ICONTRACT = re.compile(r"\(.*icontract/")


def parse_folded(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """(frames root-first, sample count) per line of py-spy's raw output."""
    out = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        out.append((stack.split(";"), int(count)))
    return out


def classify(frames: list[str]) -> str:
    """The budget line of one sample (frames root first).  Contract work first: a sample whose
    innermost icontract frame is the leaf (the wrapper itself) or calls a condition ``<lambda>``
    is contract checking; otherwise the first rule matching a frame, from the leaf up."""
    for i in range(len(frames) - 1, -1, -1):
        if _ICONTRACT.search(frames[i]):
            if i == len(frames) - 1 or "<lambda>" in frames[i + 1]:
                return CONTRACTS
            break
    for frame in reversed(frames):
        if _ICONTRACT.search(frame):
            continue
        for name, rx in _COMPILED:
            if rx.search(frame):
                return name
    return REST


def budget(stacks: list[tuple[list[str], int]]) -> dict[str, float]:
    """Share of the samples per budget line (adds up to 1), largest first."""
    totals: dict[str, int] = {}
    for frames, count in stacks:
        line = classify(frames)
        totals[line] = totals.get(line, 0) + count
    n = sum(totals.values())
    if n == 0:
        return {}
    return dict(sorted(((k, v / n) for k, v in totals.items()), key=lambda kv: -kv[1]))


def threads(stacks: list[tuple[list[str], int]]) -> dict[str, float]:
    """Share of the samples per thread (py-spy ``--threads`` puts the thread first)."""
    totals: dict[str, int] = {}
    for frames, count in stacks:
        head = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        head = re.sub(r"\s*\(0x[0-9a-fA-F]+\)", "", head)
        totals[head] = totals.get(head, 0) + count
    n = sum(totals.values()) or 1
    return {k: v / n for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> None:
    p = argparse.ArgumentParser(description="cost budget from py-spy folded stacks")
    p.add_argument("folded", nargs="+")
    p.add_argument("--us-per-op", type=float, default=None, help="server CPU µs per operation (bench JSON)")
    args = p.parse_args()
    for path in args.folded:
        with open(path, encoding="utf-8") as f:
            stacks = parse_folded(f)
        total = sum(c for _, c in stacks)
        print(f"{path}: {total} samples")
        for line, share in budget(stacks).items():
            us = f"{share * args.us_per_op:8.1f} µs" if args.us_per_op else ""
            print(f"  {share * 100:5.1f} %  {us}  {line}")
        for t, share in threads(stacks).items():
            print(f"  thread {t}: {share * 100:.1f} %")


if __name__ == "__main__":
    main()
