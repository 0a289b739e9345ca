"""``syncref bench``: the command (argument parsing, the run loop, progress, exit status).

Exit status: 0 when every selected workload ran on every peer that is installed (peers that are
not installed are reported as skipped, with the reason); 1 when a run failed (a peer crashed, a
call was refused, a replay came back short) -- the JSON still records everything else; 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adapters.bench import peers
from adapters.bench.hist import Hist, summary
from adapters.bench.peers import PeerUnavailable
from adapters.bench.report import add_ratios, plot, print_table
from adapters.bench.workloads import FULL, QUICK, WORKLOADS, Bench, Metric, Run, metrics_for, workdir
from adapters.progress import Progress

ALIASES = {"fanout": [n for n in WORKLOADS if n.startswith("fanout_")],
           "append": ["append_closed", "append_pipelined"], "replay": ["replay_full", "replay_gap"]}


def add_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="measure syncref against Redis and a bare websockets echo server",
                       description="Start syncref, Redis (if installed) and an echo server on loopback, drive them "
                                   "from separate client processes and print each figure with its ratio to "
                                   "each peer (see docs/performance.md).")
    b.add_argument("--quick", action="store_true", help="tiny runs, one repeat (a smoke test, not a measurement)")
    b.add_argument("--json", metavar="FILE", help="write the full results as JSON")
    b.add_argument("--plot", metavar="DIR", help="write PNG charts (needs matplotlib)")
    b.add_argument("--workloads", nargs="+", metavar="NAME",
                   help=f"which workloads (default all): {', '.join(WORKLOADS)}; or {', '.join(ALIASES)}")
    b.add_argument("--repeats", type=int, help="runs per workload and peer (default 3; --quick 1)")
    b.add_argument("--profile", metavar="DIR",
                   help="record py-spy flame graphs (SVG + folded stacks) of the syncref server, first run of "
                        "each append/fanout/replay workload")
    b.add_argument("--redis-server", metavar="PATH", help="the redis-server binary (default: found on PATH)")
    b.add_argument("--keep", action="store_true", help="keep the temporary directory (data, logs)")
    b.add_argument("--server-code", metavar="DIR",
                   help="measure the syncref server (and verify-log) of the source tree DIR, e.g. a `git archive` "
                        "of another commit; the clients, peers and harness stay this tree's (an A/B of two servers)")


def selected(names: list[str] | None) -> list[str]:
    if not names or names == ["all"]:
        return list(WORKLOADS)
    out: list[str] = []
    for n in names:
        for m in ALIASES.get(n, [n]):
            if m not in WORKLOADS:
                raise ValueError(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}, {', '.join(ALIASES)}")
            if m not in out:
                out.append(m)
    order = list(WORKLOADS)
    return sorted(out, key=order.index)


def figures_of(runs: list[Run], metrics: tuple[Metric, ...]) -> dict[str, Any]:
    """Each figure over a peer's runs: the median and spread (:func:`summary`) of the runs that
    have it, or why it is missing.  A run without the figure (nothing delivered, a client never
    live) is counted in ``runs_without`` with its reason, and the table says so: left out in
    silence, a median of the other runs would pass for all of them."""
    figs: dict[str, Any] = {}
    for m in metrics:
        values = [v for v in (run_.figures.get(m.name) for run_ in runs) if v is not None]
        lacking = [run_ for run_ in runs if run_.figures.get(m.name) is None]
        fig: dict[str, Any] = summary(values).to_json() if values else {"median": None}
        if lacking:
            fig["runs_without"] = len(lacking)
            fig["missing"] = "; ".join(sorted({run_.why.get(m.name, "not measured") for run_ in lacking}))
        figs[m.name] = fig
    return figs


def run(args: argparse.Namespace) -> int:
    try:
        import hiredis  # noqa: F401 -- the Redis clients parse with it
    except ImportError:
        print("syncref bench needs its extra: pip install 'syncref[bench]' (hiredis, matplotlib, py-spy)",
              file=sys.stderr)
        return 2
    try:
        names = selected(args.workloads)
    except ValueError as exc:
        print(f"syncref bench: {exc}", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            print("syncref bench: --repeats must be at least 1", file=sys.stderr)
            return 2
        settings = type(settings)(**{**asdict(settings), "repeats": args.repeats})
    if args.server_code:
        code = Path(args.server_code).resolve()
        if not (code / "adapters" / "cli.py").is_file():
            print(f"syncref bench: --server-code {code} is not a syncref source tree (no adapters/cli.py)",
                  file=sys.stderr)
            return 2
        peers.SERVER_CODE = code
    tmp = workdir()
    bench = Bench(settings, tmp, redis_binary=args.redis_server,
                  profile_dir=Path(args.profile) if args.profile else None)
    total = sum(WORKLOADS[n].repeats(settings) * len(WORKLOADS[n].peers) for n in names)
    progress = Progress(total)
    doc: dict[str, Any] = {
        "version": 1, "command": "syncref bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "syncref bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": asdict(settings),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": list(os.getloadavg()),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "server_code": peers.code_origin(peers.SERVER_CODE), "harness_code": peers.code_origin(peers.ROOT)},
        "workloads": {}}
    origin = doc["machine"]["server_code"]
    print(f"syncref bench: server under test {origin['dir']}"
          + (f" (commit {origin['commit'][:12]}{', modified' if origin['modified'] == 'true' else ''})"
             if origin["commit"] else " (not a git checkout)"), file=sys.stderr, flush=True)
    failed = False
    started = time.monotonic()
    try:
        for name in names:
            wl = WORKLOADS[name]
            entry: dict[str, Any] = {"title": wl.title, "doc": wl.doc,
                                     "metrics": {m.name: {"unit": m.unit, "better": m.better, "doc": m.doc}
                                                 for m in metrics_for(wl, "syncref")},
                                     "peers": {}}
            doc["workloads"][name] = entry
            runs: dict[str, list[Run]] = {p: [] for p in wl.peers}
            status: dict[str, dict[str, str]] = {}
            if "redis" in wl.peers and bench.redis_missing is not None:
                status["redis"] = {"status": "skipped", "reason": bench.redis_missing}
            try:
                bench.begin(wl)
            except (RuntimeError, OSError) as exc:
                for p in wl.peers:
                    status.setdefault(p, {"status": "failed", "reason": f"could not start the servers: {exc}"})
            repeats = wl.repeats(settings)
            for r in range(repeats):
                order = list(wl.peers[r % len(wl.peers):] + wl.peers[:r % len(wl.peers)])
                for peer in order:
                    progress.step(f"{name}: {peer} run {r + 1}/{repeats}")
                    if peer in status:
                        continue
                    try:
                        runs[peer].append(wl.run(bench, peer, r))
                    except PeerUnavailable as exc:
                        status[peer] = {"status": "skipped", "reason": str(exc)}
                    except Exception as exc:  # any error is this peer's failure, reported; the rest goes on
                        status[peer] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                        (tmp / "errors.log").open("a").write(traceback.format_exc())
            for peer in wl.peers:
                if peer in status:
                    entry["peers"][peer] = status[peer]
                    failed = failed or status[peer]["status"] == "failed"
                    continue
                figs = figures_of(runs[peer], metrics_for(wl, peer))
                hists = [run_.hist for run_ in runs[peer] if run_.hist is not None]
                # the CDF's denominator is every expected sample, as p50/p99's is: a fanout run's
                # deliveries that never arrived keep its curve below 1 (by their share)
                missing = sum(run_.missing for run_ in runs[peer] if run_.hist is not None)
                merged = Hist.merged(hists) if hists else None
                entry["peers"][peer] = {"status": "ok", "figures": figs, "diag": [run_.diag for run_ in runs[peer]],
                                        "cdf": None if merged is None else merged.cdf(missing=missing),
                                        "cdf_missing": missing,
                                        "cdf_expected": None if merged is None else merged.n + missing}
    finally:
        bench.teardown()
        progress.finish()
    doc["machine"]["loadavg_after"] = list(os.getloadavg())
    doc["machine"]["redis"] = None if bench.redis_missing else _redis_version(args.redis_server)
    doc["seconds"] = round(time.monotonic() - started, 1)
    doc["incidents"] = bench.incidents
    add_ratios(doc)
    print_table(doc)
    for incident in bench.incidents:
        print(f"incident: {incident}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if args.plot:
        try:
            for path in plot(doc, Path(args.plot)):
                print(f"wrote {path}")
        except ImportError:
            print("syncref bench: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            failed = True
    if args.keep:
        print(f"kept {tmp}")
    else:
        if (tmp / "errors.log").exists():
            print((tmp / "errors.log").read_text()[-3000:], file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def _redis_version(binary: str | None) -> str | None:
    import subprocess

    from adapters.bench.peers import find_redis
    try:
        out = subprocess.run([find_redis(binary), "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (PeerUnavailable, OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip()
