"""The ``syncref`` command line.

``syncref verify [--json] [--examples N] [--mutants] [--skip-proofs] [--skip-crosshair]`` runs the
model checks and prints the matrix of invariants x checks: for each invariant of
:data:`spec.invariants.CATALOG`, the checks that enforce it and whether they passed --

* the stateful machines over the model (module, system) and the differential machines (model
  vs reference engine), run now;
* the Z3 proofs naming it (``python -m proofs --json``, run now) and whether each proof's
  negative control was refuted;
* the CrossHair targets whose contracts state it (``tests/crosshair/targets.py``, run now);
* the planted mutants it caught (from the last recorded run in ``build/``, or ``--mutants``);
* the tests that name it.

It exits non-zero if any check fails, any mutant survived, or an invariant has no check at all.
The proofs and CrossHair run in subprocesses: the CLI imports neither (layering).
``syncref verify-log --data DIR`` re-executes a data directory's commit log and checks every snapshot
against the re-executed state at its offset (ADR-0011).  ``serve``, ``token
mint`` and ``trace`` live in :mod:`adapters.commands`; ``bench`` in :mod:`adapters.bench`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from adapters import commands
from adapters.progress import Progress
from spec.invariants import CATALOG

MODULE_KINDS = {"state", "transition", "call"}
SYSTEM_KINDS = {"state", "transition", "trace", "convergence"}


def _root() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / "tests" / "support" / "machines.py").exists():
            return base
    raise SystemExit("syncref verify needs a source checkout (tests/support/machines.py not found)")


MACHINES = ("ModuleMachine", "SystemMachine", "DiffModuleMachine", "DiffMachine")


def _run_machines(root: Path, examples: int, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(root / "tests"))
    os.environ.setdefault("ICONTRACT_SLOW", "1")
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test
    from support import machines  # type: ignore[import-not-found]

    results: dict[str, dict[str, Any]] = {}
    for name in MACHINES:
        if progress is not None:
            progress.step(f"machine {name} ({examples} examples)")
        started = time.monotonic()
        try:
            with _reach_observer(name):
                run_state_machine_as_test(getattr(machines, name), settings=settings(
                    max_examples=examples, stateful_step_count=60, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck)))
            results[name] = {"ok": True, "seconds": round(time.monotonic() - started, 1), "examples": examples}
        except Exception as exc:  # a failing machine is reported, not raised
            results[name] = {"ok": False, "seconds": round(time.monotonic() - started, 1),
                             "error": str(exc)[:500]}
    return results


def _reach_observer(machine: str) -> Any:
    """Count the rule cells a machine reaches (tests/support/reach.py) while it runs."""
    from support import reach
    return reach.observe(machine)


def _reach_report(root: Path, show: bool) -> dict[str, Any]:
    """The reach table over the machines run so far and the scenario tables (run now): every reducer x
    outcome and role, check step that decides a call, transition edge, stale reason, close reason and client
    rule, with how often each machine reached it.  A cell nobody reached that is not listed unreachable (with
    its reason) fails."""
    from support import reach
    try:
        reach.run_scenarios()
        error = None
    except AssertionError as exc:  # a scenario expectation failed: reported, and verify fails
        error = f"scenario tables: {exc}"[:500]
    report = reach.evaluate(reach.RECORDER.counts)
    if show:
        print(reach.render(report))
    failures = [" ".join(r.cell) + f" ({r.verdict})" for r in report.failures]
    return {"ok": report.ok and error is None, "error": error, "cells": len(report.rows),
            "reached": sum(r.verdict == "reached" for r in report.rows),
            "unreachable": {" ".join(r.cell): r.unreachable for r in report.rows if r.verdict == "unreachable"},
            "failures": failures, "stale_entries": list(report.stale_entries),
            "counts": {" ".join(r.cell): dict(r.counts) for r in report.rows}}


def _run_proofs(root: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "proofs", "--json"], cwd=root, capture_output=True, text=True,
                          check=False)
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "proofs": [], "error": (proc.stdout + proc.stderr)[-500:]}
    return data


def _crosshair_module(root: Path) -> ModuleType:
    path = root / "tests" / "crosshair" / "targets.py"
    spec = importlib.util.spec_from_file_location("crosshair_targets", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["crosshair_targets"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run_crosshair(root: Path, progress: Progress | None = None) -> list[dict[str, Any]]:
    mod = _crosshair_module(root)
    out = []
    targets = list(mod.crosshair_targets())
    for i, t in enumerate(targets):
        if progress is not None:
            progress.count(i, len(targets))
        r: dict[str, Any] = mod.run(t)
        r["invariants"] = list(t.invariants)
        out.append(r)
    return out


def _recorded(root: Path, name: str, run: bool, test: str) -> list[dict[str, Any]]:
    path = root / "build" / name
    if run:
        subprocess.run([sys.executable, "-m", "pytest", "-q", test], cwd=root, env=dict(os.environ), check=False)
    if not path.exists():
        return []
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


def _tests_naming(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {inv.id: [] for inv in CATALOG}
    for f in sorted((root / "tests").rglob("test_*.py")):
        text = f.read_text(encoding="utf-8", errors="replace")
        for inv_id in found:
            if inv_id in text or inv_id.replace("-", "_") in text:
                found[inv_id].append(str(f.relative_to(root)))
    return found


def _verdict(results: list[bool]) -> str:
    if not results:
        return "-"
    return "pass" if all(results) else "FAIL"


def _read_conformance(path: Path) -> list[dict[str, Any]]:
    """The outcomes of a ``syncref conformance --json`` run, checked for shape."""
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = {"area", "scenario", "invariants", "status", "message"}
    if not isinstance(data, list) or not all(isinstance(o, dict) and keys <= o.keys() for o in data):
        raise ValueError("not the JSON that `syncref conformance --json` writes (a list of scenario outcomes)")
    if any(o["status"] not in ("pass", "fail", "skip") for o in data):
        raise ValueError("a scenario status is not pass, fail or skip")
    return data


def verify(args: argparse.Namespace) -> int:
    root = _root()
    steps = (len(MACHINES) + (not args.skip_proofs) + (not args.skip_crosshair) + 2 * args.mutants + 1
             + (not args.skip_conformance and args.conformance is None))
    try:
        conformance = _read_conformance(args.conformance) if args.conformance is not None else None
    except (OSError, ValueError) as exc:
        print(f"verify: cannot read --conformance {args.conformance}: {exc}", file=sys.stderr)
        return 2
    progress = Progress(steps)
    try:
        machines = _run_machines(root, args.examples, progress)
        if args.skip_proofs:
            proofs: dict[str, Any] = {"ok": True, "proofs": [], "skipped": True}
        else:
            progress.step("z3 proofs (python -m proofs)")
            proofs = _run_proofs(root)
        crosshair: list[dict[str, Any]] = []
        if not args.skip_crosshair:
            progress.step("crosshair contracts")
            crosshair = _run_crosshair(root, progress)
        if args.mutants:
            progress.step("model mutants (tests/spec/test_mutants.py)")
        mutants = _recorded(root, "mutants.json", args.mutants, "tests/spec/test_mutants.py")
        if args.mutants:
            progress.step("engine mutants (tests/reference/test_engine_mutants.py)")
        engine_mutants = _recorded(root, "engine_mutants.json", args.mutants,
                                   "tests/reference/test_engine_mutants.py")
        if conformance is None and not args.skip_conformance:
            from adapters.conformance.wire_runner import run_local

            progress.step("conformance scenarios against a throwaway syncref serve")
            conformance = [o.__dict__ for o in run_local(tick=lambda i, n, _label: progress.count(i, n))]
        progress.step("tests naming each invariant")
        naming = _tests_naming(root)
    finally:
        progress.finish()
    reach = _reach_report(root, show=not args.json)
    rows: list[dict[str, Any]] = []
    failed = not proofs.get("ok", False) or not all(m["ok"] for m in machines.values())
    for inv in CATALOG:
        checks: dict[str, Any] = {}
        if inv.kind in MODULE_KINDS:
            checks["module_machine"] = "pass" if machines["ModuleMachine"]["ok"] else "FAIL"
            checks["engine_vs_model_calls"] = "pass" if machines["DiffModuleMachine"]["ok"] else "FAIL"
        if inv.kind in SYSTEM_KINDS:
            checks["system_machine"] = "pass" if machines["SystemMachine"]["ok"] else "FAIL"
            checks["engine_vs_model_system"] = "pass" if machines["DiffMachine"]["ok"] else "FAIL"
        z3 = [p for p in proofs.get("proofs", []) if inv.id in p.get("invariants", ())]
        checks["z3"] = _verdict([p["result"] == "proved" and p["control"] == "refuted" for p in z3])
        checks["z3_proofs"] = [p["id"] for p in z3]
        ch = [c for c in crosshair if inv.id in c["invariants"]]
        checks["crosshair"] = _verdict([c["ok"] for c in ch])
        checks["mutants_caught"] = [m["mutant"] for m in mutants
                                    if m.get("killed") and inv.id in m.get("invariants", [])]
        scenarios = [o for o in conformance or [] if inv.id in o["invariants"] and o["status"] != "skip"]
        checks["conformance"] = _verdict([o["status"] == "pass" for o in scenarios])
        checks["conformance_scenarios"] = [o["scenario"] for o in scenarios]
        checks["tests"] = naming[inv.id]
        verdicts = [v for v in checks.values() if isinstance(v, str)]
        if "FAIL" in verdicts or not ("pass" in verdicts or naming[inv.id]):
            failed = True
        rows.append({"id": inv.id, "kind": inv.kind, "statement": inv.statement, "checks": checks})
    survivors = [m["mutant"] for m in mutants + engine_mutants if not m.get("killed")]
    failed = (failed or bool(survivors) or any(not c["ok"] for c in crosshair) or not reach["ok"]
              or any(o["status"] == "fail" for o in conformance or []))
    report = {"ok": not failed, "machines": machines, "proofs": proofs, "crosshair": crosshair, "reach": reach,
              "mutants": mutants, "engine_mutants": engine_mutants, "conformance": conformance,
              "invariants": rows}
    if args.html:
        from adapters.verify_html import render

        try:
            Path(args.html).write_text(render(report), encoding="utf-8")
        except OSError as exc:
            print(f"verify: cannot write {args.html}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_matrix(rows, machines, proofs, crosshair, mutants, engine_mutants, survivors, conformance)
        if args.html:
            print(f"wrote {args.html}")
        print("verify:", "OK" if not failed else "FAILED")
    return 1 if failed else 0


def _print_matrix(rows: list[dict[str, Any]], machines: dict[str, dict[str, Any]], proofs: dict[str, Any],
                  crosshair: list[dict[str, Any]], mutants: list[dict[str, Any]],
                  engine_mutants: list[dict[str, Any]], survivors: list[str],
                  conformance: list[dict[str, Any]] | None) -> None:
    head = ("invariant", "kind", "module", "system", "engine=", "z3", "crosshair", "conform", "mutants", "tests")
    print(f"{head[0]:<10}{head[1]:<12}{head[2]:<8}{head[3]:<8}{head[4]:<9}{head[5]:<6}{head[6]:<10}{head[7]:<8}"
          f"{head[8]:<8}{head[9]}")
    for r in rows:
        c = r["checks"]
        engine = c.get("engine_vs_model_system", c.get("engine_vs_model_calls", "-"))
        print(f"{r['id']:<10}{r['kind']:<12}{c.get('module_machine', '-'):<8}{c.get('system_machine', '-'):<8}"
              f"{engine:<9}{c['z3']:<6}{c['crosshair']:<10}{c['conformance']:<8}{len(c['mutants_caught']):<8}"
              f"{len(c['tests'])}")
    for name, m in machines.items():
        print(f"{name}: {'pass' if m['ok'] else 'FAIL'} ({m.get('examples', '?')} examples, {m['seconds']} s)"
              + ("" if m["ok"] else f"\n  {m.get('error', '')}"))
    if proofs.get("skipped"):
        print("z3: skipped")
    else:
        n = len(proofs.get("proofs", []))
        good = sum(1 for p in proofs.get("proofs", []) if p["result"] == "proved" and p["control"] == "refuted")
        print(f"z3: {good}/{n} proofs proved with their controls refuted ({proofs.get('seconds', '?')} s)"
              + ("" if proofs.get("ok") else f" -- FAILED {proofs.get('error', '')}"))
    if crosshair:
        print(f"crosshair: {sum(c['ok'] for c in crosshair)}/{len(crosshair)} targets without counterexample "
              f"({sum(c['seconds'] for c in crosshair):.0f} s; exit 0 = none found within budget, not a proof)")
    for label, data in (("model mutants", mutants), ("engine mutants", engine_mutants)):
        if data:
            print(f"{label}: {sum(1 for m in data if m.get('killed'))}/{len(data)} killed (recorded run)")
        else:
            print(f"{label}: no recorded run (use --mutants)")
    if conformance is None:
        print("conformance: skipped")
    else:
        counts = {k: sum(o["status"] == k for o in conformance) for k in ("pass", "fail", "skip")}
        print(f"conformance: {counts['pass']} scenarios passed, {counts['fail']} failed, {counts['skip']} skipped")
        for o in conformance:
            if o["status"] == "fail":
                print(f"  FAIL {o['area']}/{o['scenario']}: {o['message'][:300]}")
    if survivors:
        print(f"surviving mutants: {survivors}")


def verify_log(args: argparse.Namespace) -> int:
    import sqlite3

    from reference.durability import DB_FILE, DamagedLog, storage_fault
    from reference.replay import UnreadableLog
    from reference.replay import verify_log as replay_log

    progress = Progress(1)
    progress.step(f"replaying the commit log of {args.data}")
    try:
        report = replay_log(args.data, progress.count)
    except FileNotFoundError as exc:
        progress.finish()
        print(f"verify-log: {exc}", file=sys.stderr)
        return 2
    except DamagedLog as exc:  # syncref's log, with one of its tables gone: read, and found damaged
        progress.finish()
        print(f"verify-log: {exc}: the log does not verify; restore the data directory from a backup",
              file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error, UnreadableLog) as exc:
        progress.finish()
        db = Path(args.data) / DB_FILE
        fault = storage_fault(exc)
        if str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_CORRUPT"):  # read, and found damaged
            print(f"verify-log: {db} is damaged ({exc}): the log does not verify; check the disk and restore the "
                  f"data directory from a backup (sqlite3 {db} 'PRAGMA integrity_check' names the damage)",
                  file=sys.stderr)
            return 1
        if fault is not None:
            why = f"the disk holding {args.data} failed: {fault.what}; nothing was checked; {fault.action}"
        elif "locked" in str(exc) or str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY"):
            why = f"{db} is locked by another process ({exc}); nothing was checked; try again once it lets go"
        else:
            why = f"{db} is not a commit log this build can read ({exc}); nothing was checked"
        print(f"verify-log: {why}", file=sys.stderr)
        return 2
    progress.finish()
    mismatch = report.mismatch
    if args.json:
        print(json.dumps({"ok": report.ok, "records": report.records, "digest": report.digest,
                          "stored_records": report.stored_records, "stored_digest": report.stored_digest,
                          "policy": report.policy, "clean_shutdown": report.clean_shutdown, "log_id": report.log_id,
                          "mismatch": None if mismatch is None else {"offset": mismatch.offset,
                                                                     "reason": mismatch.reason},
                          "snapshots": [{"file": c.file, "offset": c.offset, "status": c.status, "reason": c.reason}
                                        for c in report.snapshots],
                          "head_mark": None if report.head_mark is None else {
                              "file": report.head_mark.file, "offset": report.head_mark.offset,
                              "status": report.head_mark.status, "reason": report.head_mark.reason}}, indent=1))
    else:
        print(f"records: {report.records} re-executed of {report.stored_records} stored")
        print(f"digest:  {report.digest}")
        if report.digest != report.stored_digest:
            print(f"stored:  {report.stored_digest}")
        print(f"policy:  {report.policy}; last shutdown {'clean' if report.clean_shutdown else 'unclean'}")
        print(f"log id:  {report.log_id or 'none yet (a log made before log ids gets one when next served)'}")
        if mismatch is not None:
            print(f"MISMATCH at offset {mismatch.offset}: {mismatch.reason}")
        for check in report.snapshots:
            print(f"snapshot {check.file} (offset {check.offset}): {check.status}"
                  + (f": {check.reason}" if check.reason else ""))
        if report.head_mark is not None:
            mark = report.head_mark
            print(f"head mark {mark.file} (offset {mark.offset}): {mark.status}"
                  + (f": {mark.reason}" if mark.reason else ""))
        print("verify-log:", "OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


PATH_ARGUMENTS = frozenset({"data", "config", "file", "html"})  # file names: any bytes the OS allows


def non_text_argument(args: argparse.Namespace) -> str | None:
    """The first argument (other than a file name) that is not valid UTF-8: on POSIX, Python
    hands such bytes over as lone surrogates (``surrogateescape``), which no token, frame or
    log record can carry.  None when all are text."""
    for name, value in sorted(vars(args).items()):
        if name in PATH_ARGUMENTS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return name
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncref", description="syncref: the OpenAgents sync substrate reference")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="run the model checks and print the invariants x checks matrix")
    v.add_argument("--json", action="store_true", help="machine-readable report")
    v.add_argument("--html", metavar="FILE", help="also write the report as a page (the invariants x checks matrix)")
    v.add_argument("--mutants", action="store_true", help="also run the planted-mutant kill tests (minutes)")
    v.add_argument("--examples", type=int, default=100, help="examples per stateful machine")
    v.add_argument("--skip-proofs", action="store_true", help="leave the Z3 column empty")
    v.add_argument("--skip-crosshair", action="store_true", help="leave the CrossHair column empty")
    conf = v.add_mutually_exclusive_group()
    conf.add_argument("--conformance", type=Path, metavar="FILE",
                      help="fill the conformance column from a `syncref conformance --json FILE` run (for "
                           "example against another server) instead of running the scenarios locally")
    conf.add_argument("--skip-conformance", action="store_true", help="leave the conformance column empty")
    vl = sub.add_parser("verify-log", help="re-execute a data directory's commit log from empty state",
                        epilog="exit status: 0 the log verifies; 1 the log was read and does not verify (a "
                               "mismatch, a bad snapshot, a damaged database or a dropped table); 2 nothing was "
                               "checked (no database at DIR, not a commit log this build reads, locked, a failing "
                               "disk)")
    vl.add_argument("--data", required=True, metavar="DIR", help="the data directory (holds syncref.sqlite3)")
    vl.add_argument("--json", action="store_true", help="machine-readable report")
    commands.add_parsers(sub)
    from adapters.conformance.wire_runner import add_parser as add_conformance_parser
    add_conformance_parser(sub)
    from adapters.bench.main import add_parser as add_bench_parser

    add_bench_parser(sub)
    from adapters.chaos.cli import add_parser as add_chaos_parser

    add_chaos_parser(sub)
    args = parser.parse_args(argv)
    bad = non_text_argument(args)
    if bad is not None:
        parser.error(f"argument --{bad.replace('_', '-')} is not valid UTF-8 text")
    handled = commands.dispatch(args)
    if handled is not None:
        return handled
    if args.command == "verify":
        return verify(args)
    if args.command == "verify-log":
        return verify_log(args)
    if args.command == "conformance":
        from adapters.conformance.wire_runner import main as run_conformance

        return run_conformance(args)
    if args.command == "bench":
        from adapters.bench.main import run as run_bench

        return run_bench(args)
    if args.command == "fuzz":
        from adapters.chaos.fuzz import run as run_fuzz

        return run_fuzz(args)
    if args.command == "chaos":
        from adapters.chaos.cli import run as run_chaos

        return run_chaos(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
