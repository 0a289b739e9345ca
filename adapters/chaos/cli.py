"""``syncref chaos [--seed N] [--quick | --duration S] [--json FILE] [--workdir DIR] [--plant BUG ...]``.

Prints the schedule as it runs and a summary; exits 0 when the checks found no anomaly, 1 when
they did (the summary names the seed and the command that replays the schedule), 2 on misuse.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from adapters.chaos.runner import PLANTS, default_seed, phases, run_chaos
from adapters.chaos.schedule import PROFILES
from adapters.progress import Progress


def add_parser(sub: Any) -> None:
    from adapters.chaos import fuzz

    fuzz.add_parser(sub)
    c = sub.add_parser("chaos", help="seeded chaos run against real server processes (docs/reliability.md)")
    c.add_argument("--seed", type=int, default=None, help="the seed (default: random, printed); one seed, one schedule")
    c.add_argument("--quick", action="store_true", help="the CI profile (about 20 s of nemeses)")
    c.add_argument("--duration", type=float, default=None, metavar="S",
                   help="seconds of nemeses (default: the long profile's 1200)")
    c.add_argument("--json", default=None, metavar="FILE", help="write the full report (schedule, figures, anomalies)")
    c.add_argument("--workdir", default=None, metavar="DIR", help="keep the run's files here (default: a temp dir)")
    c.add_argument("--plant", choices=PLANTS, action="append", default=None, metavar="BUG",
                   help=f"testing the checker: plant a bug on purpose (repeatable; {', '.join(PLANTS)})")


def run(args: argparse.Namespace) -> int:
    profile = PROFILES["quick" if args.quick else "long"]
    if args.duration is not None:
        if args.duration <= 0:
            print("syncref chaos: --duration must be positive", file=sys.stderr)
            return 2
        profile = dataclasses.replace(profile, duration_s=args.duration)
    if args.json and not Path(args.json).parent.is_dir():  # found now, not after the run
        print(f"syncref chaos: --json: no directory {Path(args.json).parent} to write the report in", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else default_seed()
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix=f"syncref-chaos-{seed}-"))
    if keep and workdir.exists() and any(workdir.iterdir()):
        print(f"syncref chaos: --workdir {workdir} is not empty", file=sys.stderr)
        return 2
    try:
        report = run_chaos(seed, profile, workdir, plant=",".join(args.plant) if args.plant else None, log=sys.stdout,
                           progress=Progress(phases(seed, profile)))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    w = report["writes"]
    print(f"chaos: seed {seed}: {report['sigkill_restarts']} SIGKILL restarts, faults {report['faults']}, "
          f"{w['ok']} writes acknowledged ({w['unknown']} unanswered, {w['retries']} retries), "
          f"{report['events_applied']} events applied by subscribers, {report['seconds']} s")
    print(f"chaos: {len(report['resets'])} epoch resets, {report['compaction']['overtaken']} subscribers overtaken by "
          f"compaction ({report['compaction']['not_overtaken']} not), rebootstraps {report['rebootstraps_expected']}"
          + (f", {report['bridge_events']} bridge events checked on {len(report['relays'])} relays"
             if report["bridge_events"] is not None else "")
          + "".join(f"; {kind} skipped: {why}" for kind, why in report["skipped"].items()))
    for a in report["findings"][:20]:
        print(f"  finding {a['code']}: {a['detail']}")
    for a in report["anomalies"][:50]:
        print(f"  ANOMALY {a['code']}: {a['detail']}")
    if report["ok"]:
        print(f"chaos: OK (seed {seed})")
        return 0
    print(f"chaos: FAILED with {len(report['anomalies'])} anomalies {report['anomaly_counts']}; seed {seed}; "
          f"replay the schedule: {report['replay']}")
    return 1
