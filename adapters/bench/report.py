"""The bench's outputs: the JSON document, the printed table, and the PNG charts.

The JSON (``--json FILE``) is the record: per workload, per peer, either ``status: ok`` with
every figure as ``{median, min, max, spread, runs}`` plus the per-run diagnostics (CPU of server
and clients, whether a client process was saturated), or ``status: skipped``/``failed`` with the
reason (a figure some runs lack says how many in ``runs_without``, and its cell "(k of n runs:
none)"); then ``ratios``: syncref / peer per figure.  The table prints the same thing, one row
per figure, ``median [min-max]`` per peer and the ratios.  Ratios are always syncref / peer,
so read them with the figure's direction (``better``): for a throughput ``>= 1`` is ahead, for
a latency or a memory figure ``<= 1`` is.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TextIO

from adapters.bench.hist import ratio

PEERS = ("syncref", "redis", "echo")


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a == 0:
        return "0"
    return f"{value:.3g}"


def cell(peer: dict[str, Any] | None, metric: str) -> str:
    if peer is None:
        return ""
    if peer["status"] != "ok":
        return str(peer["status"])
    f = peer["figures"].get(metric)
    if f is None or f["median"] is None:
        return "-"
    text = fmt(f["median"]) if f["min"] == f["max"] else f"{fmt(f['median'])} [{fmt(f['min'])}-{fmt(f['max'])}]"
    if f.get("runs_without"):  # the median is of the other runs: say so in the cell
        text += f" ({f['runs_without']} of {f['runs_without'] + len(f['runs'])} runs: none)"
    return text


def add_ratios(doc: dict[str, Any]) -> None:
    for w in doc["workloads"].values():
        ours = w["peers"].get("syncref")
        w["ratios"] = {}
        for name, peer in w["peers"].items():
            if name == "syncref" or ours is None or ours["status"] != "ok" or peer["status"] != "ok":
                continue
            w["ratios"][name] = {m: ratio(f["median"], (peer["figures"].get(m) or {}).get("median"))
                                 for m, f in ours["figures"].items() if m in peer["figures"]}


def notes_of(doc: dict[str, Any]) -> list[str]:
    """What the table's cells cannot say: a peer skipped or failed and why, and a client process
    saturated (>90 % of a core) in some runs -- whichever peer it drove: a saturated client makes
    that peer's figures a floor, so syncref's ratios understate syncref when it was syncref's
    and flatter syncref when it was a peer's."""
    notes: list[str] = []
    for name, w in doc["workloads"].items():
        for peer_name, peer in w["peers"].items():
            if peer["status"] != "ok":
                notes.append(f"{name}: {peer_name} {peer['status']}: {peer.get('reason', '')}")
                continue
            diags = peer.get("diag", [])
            bound = sum(1 for d in diags if d.get("client_bound"))
            if bound:
                effect = ("syncref's ratios understate it" if peer_name == "syncref"
                          else "the ratios to it flatter syncref")
                notes.append(f"{name}: a {peer_name} client process was saturated (>90% of a core) in {bound} of "
                             f"{len(diags)} runs: its figures are a floor for {peer_name}, {effect}")
    return notes


def print_table(doc: dict[str, Any], out: TextIO = sys.stdout) -> None:
    rows: list[tuple[str, ...]] = [("workload", "figure", "better", *PEERS, "vs redis", "vs echo")]
    for name, w in doc["workloads"].items():
        metrics = w["metrics"]
        for k, (metric, meta) in enumerate(metrics.items()):
            ratios = [w.get("ratios", {}).get(p, {}).get(metric) for p in ("redis", "echo")]
            rows.append((name if k == 0 else "", f"{metric} ({meta['unit']})", meta["better"],
                         *(cell(w["peers"].get(p), metric) for p in PEERS),
                         *("" if r is None else f"{r:.3g}x" for r in ratios)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")
        if k == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    m = doc["machine"]
    out.write(f"\nratios are syncref / peer (medians of {doc['settings']['repeats']} runs, [min-max]); "
              f"load average {m['loadavg_before'][0]:.2f} before, {m['loadavg_after'][0]:.2f} after, "
              f"{m['cpus']} CPUs\n")
    for n in notes_of(doc):
        out.write(f"note: {n}\n")


def cdf_series(name: str, peer: dict[str, Any]) -> tuple[list[float], list[float], str]:
    """One peer's latency CDF as drawn: latencies (ms), fractions at or below (of every expected
    sample: a fanout's undelivered events keep it below 1), and its legend label, which says how
    many never arrived."""
    xs = [p[0] / 1000 for p in peer["cdf"]]
    ys = [p[1] for p in peer["cdf"]]
    missing, expected = peer.get("cdf_missing") or 0, peer.get("cdf_expected")
    if missing and expected:
        name = f"{name} ({missing} of {expected} never arrived: {100 * missing / expected:.1f} %)"
    return xs, ys, name


def plot(doc: dict[str, Any], outdir: Path) -> list[Path]:
    """PNG charts: latency CDFs of the closed-loop appends and of the fanout runs, and fanout
    throughput and p99 against the subscriber count.  Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    colors = {"syncref": "tab:blue", "redis": "tab:red", "echo": "tab:gray"}
    wl = doc["workloads"]

    def cdf_panel(ax: Any, workload: str, title: str) -> None:
        w = wl.get(workload)
        if w is None:
            return
        for name, peer in w["peers"].items():
            if peer["status"] == "ok" and peer.get("cdf"):
                xs, ys, label = cdf_series(name, peer)
                ax.step(xs, ys, where="post", label=label, color=colors.get(name))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of expected deliveries at or below" if workload.startswith("fanout_")
                      else "fraction of calls at or below")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()

    appends = [n for n in ("append_closed", "append_pipelined") if n in wl]
    if appends:
        fig, axes = plt.subplots(1, len(appends), figsize=(6 * len(appends), 4), squeeze=False)
        for ax, n in zip(axes[0], appends, strict=True):
            cdf_panel(ax, n, wl[n]["title"])
        fig.tight_layout()
        path = outdir / "append_latency_cdf.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fans = sorted((n for n in wl if n.startswith("fanout_")), key=lambda n: int(n.split("_")[1]))
    if fans:
        fig, axes = plt.subplots(1, len(fans), figsize=(5 * len(fans), 4), squeeze=False)
        for ax, n in zip(axes[0], fans, strict=True):
            cdf_panel(ax, n, wl[n]["title"])
        fig.tight_layout()
        path = outdir / "fanout_latency_cdf.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        v2 = [n for n in fans if n.count("_") == 1]  # fanout_N: syncref's subscribers on v2
        v3 = [n for n in fans if n.endswith("_v3")]
        series = [(peer, peer, v2) for peer in PEERS] + [("syncref", "syncref (v3)", v3)]
        for peer, label, names in series:
            xs, thr, p99 = [], [], []
            for n in names:
                p = wl[n]["peers"].get(peer)
                if p is None or p["status"] != "ok":
                    continue
                xs.append(int(n.split("_")[1]))
                thr.append(p["figures"]["deliveries_per_s"]["median"])
                p99.append(p["figures"]["p99_ms"]["median"])
            if xs:
                style = "--" if label.endswith("(v3)") else "-"
                a1.plot(xs, thr, marker="o", label=label, color=colors.get(peer), linestyle=style)
                a2.plot(xs, p99, marker="o", label=label, color=colors.get(peer), linestyle=style)
        counts = sorted({int(n.split("_")[1]) for n in fans})
        a1.plot(counts, [c * doc["settings"]["fanout_rate"] for c in counts], linestyle=":", color="black",
                label="offered")
        for ax, label in ((a1, "deliveries/s"), (a2, "p99 latency (ms)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("subscribers")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        a1.set_title("fanout throughput, 1 writer at 500 events/s", fontsize=10)
        a2.set_title("fanout p99, writer's send to receipt", fontsize=10)
        fig.tight_layout()
        path = outdir / "fanout_scaling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def markdown(doc: dict[str, Any]) -> str:
    """The table as Markdown (what docs/performance.md embeds): ``python -m adapters.bench.report FILE``."""
    lines = ["| workload | figure | better | syncref | Redis | echo | syncref / Redis | syncref / echo |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, w in doc["workloads"].items():
        for k, (metric, meta) in enumerate(w["metrics"].items()):
            ratios = [w.get("ratios", {}).get(p, {}).get(metric) for p in ("redis", "echo")]
            cells = [cell(w["peers"].get(p), metric) or "n/a" for p in PEERS]
            lines.append(f"| {name if k == 0 else ''} | {metric} ({meta['unit']}) | {meta['better']} | "
                         + " | ".join(cells) + " | "
                         + " | ".join("" if r is None else f"{r:.3g}x" for r in ratios) + " |")
    notes = notes_of(doc)
    if notes:
        lines += ["", *(f"* {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def main() -> None:
    import json

    doc = json.loads(Path(sys.argv[1]).read_text())
    sys.stdout.write(markdown(doc))


if __name__ == "__main__":
    main()
