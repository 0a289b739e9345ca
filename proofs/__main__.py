"""``python -m proofs [--json] [--only ID ...] [--jobs N] [--verbose]``: run every proof.

Prints one row per proof -- id, invariants, transitions covered, result, control result,
seconds -- then the counterexample of every failed obligation, and exits 1 if any proof is not
proved or any control is not refuted (``unknown`` counts as a failure).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from proofs.api import ProofResult, run_all


def _transitions(names: tuple[str, ...]) -> str:
    """A short name for a proof's transitions (the JSON output lists them all)."""
    from proofs.encoding import DB_TRANSITIONS
    from proofs.server import SRV_TRANSITIONS

    db = tuple(t.name for t in DB_TRANSITIONS)
    if names == db:
        return f"all {len(db)} database"
    if names == tuple(t.name for t in SRV_TRANSITIONS):
        return f"all {len(names)} server"
    if names == ("subscribe", *(f"deliver[{n}]" for n in db)):
        return f"subscribe + deliver x {len(db)}"
    return ", ".join(names)


def _table(results: list[ProofResult]) -> str:
    rows = [("id", "invariants", "transitions", "result", "control", "seconds")]
    for r in results:
        failed = [o.label for o in r.obligations if o.status != "proved"]
        result = r.result if not failed else f"{r.result} ({', '.join(failed)})"
        control = f"{r.control} ({sum(c.status == 'refuted' for c in r.controls)}/{len(r.controls)})"
        rows.append((r.id, " ".join(r.invariants), _transitions(r.transitions), result, control, f"{r.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proofs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--only", nargs="*", metavar="ID", help="run only these proofs")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--verbose", action="store_true", help="also list every obligation and control")
    args = ap.parse_args(argv)
    started = time.monotonic()
    results = run_all(args.only, jobs=args.jobs)
    ok = bool(results) and all(r.ok for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "seconds": round(time.monotonic() - started, 1),
                          "proofs": [asdict(r) for r in results]}, indent=2))
        return 0 if ok else 1
    print(_table(results))
    for r in results:
        if args.verbose:
            print(f"\n{r.id}: {r.title}\n  bounds: {r.bounds}")
            for o in r.obligations:
                print(f"  {o.status:8} {o.seconds:7.3f}s  {o.label}")
            for c in r.controls:
                print(f"  control {c.bug}: {c.status} ({c.seconds:.3f}s)")
        for o in r.obligations:
            if o.status != "proved":
                print(f"\n== {r.id}: {o.status} {o.label}\n{o.counterexample}")
        for c in r.controls:
            if c.status != "refuted":
                print(f"\n== {r.id}: control {c.bug} {c.status}")
    total = time.monotonic() - started
    verdict = "all proved, all controls refuted" if ok else "FAILED"
    print(f"\n{len(results)} proofs, {sum(len(r.obligations) for r in results)} obligations, "
          f"{sum(len(r.controls) for r in results)} controls, {total:.1f}s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
