"""``syncref verify --html FILE``: the verify report as one self-contained page for a reviewer.

A pure function of the report ``syncref verify --json`` prints (no I/O, no scripts, no external
assets): a summary of every check that ran (stateful machines, Z3 proofs with their negative
controls, CrossHair targets, recorded mutant runs), then the invariants x checks matrix -- one
row per invariant of ``spec.invariants.CATALOG`` with its statement, a verdict per check, the Z3
proofs and planted mutants that name it and the tests that name it -- and, when the report
carries one, any further table under ``tables`` (e.g. a reach table: ``{"title", "columns",
"rows"}``) rendered as it is.  Every value is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d232b; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #dde1e6; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef0f3; position: sticky; top: 0; }
td.pass { background: #e6f4ea; color: #1f7a3f; } td.FAIL { background: #fce8e6; color: #b3261e; font-weight: 600; }
td.none { color: #9aa5b1; } .ok { color: #1f7a3f; } .bad { color: #b3261e; font-weight: 600; }
.stmt { min-width: 26em; max-width: 46em; }
code, .mono { font-family: ui-monospace, Menlo, monospace; font-size: 12px; }
ul { margin: 0; padding-left: 18px; }
"""

CHECKS = (("module_machine", "module machine"), ("system_machine", "system machine"),
          ("engine_vs_model_calls", "engine = model (calls)"), ("engine_vs_model_system", "engine = model (system)"),
          ("z3", "Z3"), ("crosshair", "CrossHair"), ("conformance", "conformance (wire)"))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _verdict(value: object) -> str:
    text = "-" if value is None else str(value)
    cls = text if text in ("pass", "FAIL") else "none"
    return f'<td class="{cls}">{_e(text)}</td>'


def _items(values: Iterable[object], mono: bool = True) -> str:
    vals = list(values)
    if not vals:
        return '<td class="none">-</td>'
    cls = ' class="mono"' if mono else ""
    return f"<td><ul{cls}>" + "".join(f"<li>{_e(v)}</li>" for v in vals) + "</ul></td>"


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for name, m in report.get("machines", {}).items():
        state = '<span class="ok">pass</span>' if m.get("ok") else '<span class="bad">FAIL</span>'
        extra = "" if m.get("ok") else f": <code>{_e(m.get('error', ''))}</code>"
        lines.append(f"<li>{_e(name)}: {state} ({_e(m.get('examples', '?'))} examples, "
                     f"{_e(m.get('seconds', '?'))} s){extra}</li>")
    proofs = report.get("proofs", {})
    if proofs.get("skipped"):
        lines.append("<li>Z3: skipped</li>")
    else:
        ps = proofs.get("proofs", [])
        good = sum(1 for p in ps if p.get("result") == "proved" and p.get("control") == "refuted")
        lines.append(f"<li>Z3: {good}/{len(ps)} proofs proved with their negative controls refuted</li>")
    crosshair = report.get("crosshair", [])
    if crosshair:
        lines.append(f"<li>CrossHair: {sum(1 for c in crosshair if c.get('ok'))}/{len(crosshair)} targets without "
                     "counterexample (none found within the budget, not a proof)</li>")
    else:
        lines.append("<li>CrossHair: skipped</li>")
    conformance = report.get("conformance")
    if conformance is None:
        lines.append("<li>conformance: skipped</li>")
    else:
        n = {k: sum(1 for o in conformance if o.get("status") == k) for k in ("pass", "fail", "skip")}
        cls = "ok" if n["fail"] == 0 else "bad"
        lines.append(f'<li>conformance: <span class="{cls}">{n["pass"]} scenarios passed, {n["fail"]} failed'
                     f'</span>, {n["skip"]} skipped</li>')
    for label, key in (("model mutants", "mutants"), ("engine mutants", "engine_mutants")):
        data = report.get(key, [])
        if data:
            killed = sum(1 for m in data if m.get("killed"))
            cls = "ok" if killed == len(data) else "bad"
            lines.append(f'<li>{label}: <span class="{cls}">{killed}/{len(data)} killed</span> (recorded run)</li>')
        else:
            lines.append(f"<li>{label}: no recorded run (<code>syncref verify --mutants</code>)</li>")
    return "<ul>" + "".join(lines) + "</ul>"


def _matrix(rows: list[dict[str, Any]]) -> str:
    head = ["invariant", "kind", "statement", *(label for _, label in CHECKS), "Z3 proofs", "scenarios",
            "mutants caught", "tests naming it"]
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        c = r.get("checks", {})
        out.append(f'<tr id="{_e(r["id"])}"><td class="mono">{_e(r["id"])}</td><td>{_e(r.get("kind", ""))}</td>'
                   f'<td class="stmt">{_e(r.get("statement", ""))}</td>')
        out.extend(_verdict(c.get(key)) for key, _ in CHECKS)
        out.append(_items(c.get("z3_proofs", [])))
        out.append(_items(c.get("conformance_scenarios", [])))
        out.append(_items(c.get("mutants_caught", [])))
        out.append(_items(c.get("tests", [])))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _table(spec: dict[str, Any]) -> str:
    cols = list(spec.get("columns", []))
    out = [f"<h2>{_e(spec.get('title', ''))}</h2><table><thead><tr>", *(f"<th>{_e(c)}</th>" for c in cols),
           "</tr></thead><tbody>"]
    for row in spec.get("rows", []):
        cells = row if isinstance(row, list) else [row.get(c) for c in cols]
        out.append("<tr>" + "".join(_verdict(v) if v in ("pass", "FAIL") else f"<td>{_e(v)}</td>"
                                    for v in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render(report: dict[str, Any]) -> str:
    """The page for ``report`` (the dict ``syncref verify --json`` prints)."""
    ok = bool(report.get("ok"))
    rows = report.get("invariants", [])
    verdict = '<span class="ok">OK</span>' if ok else '<span class="bad">FAILED</span>'
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>syncref verify</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>syncref verify: {verdict}</h1>",
        f"<p>{len(rows)} invariants (<code>spec/invariants.py</code>; statements as in "
        "<code>docs/invariants.md</code>). Kinds: <em>state</em> holds in every committed state; "
        "<em>transition</em> between consecutive committed states; <em>call</em> for every reducer call; "
        "<em>trace</em> over everything clients observe; <em>convergence</em> once faults heal.</p>",
        "<h2>Checks run</h2>", _summary(report),
        "<h2>Invariants x checks</h2>", _matrix(rows),
        *(_table(t) for t in report.get("tables", [])),
        "</body></html>\n",
    ]
    return "".join(parts)
