"""The bench's workloads: how each one is run on each peer, and which figures it yields.

Every workload runs ``repeats`` times; within a repeat the peers take turns (the order rotates
from one repeat to the next), so a noisy minute on the shared machine hits all of them.  Each
run yields a dict of figures for one peer; :mod:`adapters.bench.report` takes the median and
spread per figure and the ratio syncref / peer.  What exactly each side does is written down
in :mod:`adapters.bench` (its module essay) -- keep the two in step.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.bench import peers
from adapters.bench.hist import Hist
from adapters.bench.peers import (
    ROOT,
    EchoPeer,
    PeerUnavailable,
    RedisPeer,
    SyncrefPeer,
    _Lines,
    child_env,
    cpu_seconds,
    die_with_parent,
    find_redis,
    rss_bytes,
)

HIGHER, LOWER = "higher", "lower"
SLICES_NOTE = "median latency per fifth of the run, by send time"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    better: str
    doc: str


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    repeats: int
    warmup: float  # s before an append run starts counting
    duration: float  # s counted per append run
    fanout_duration: float  # s the writer writes
    fanout_grace: float  # s the subscribers get afterwards to receive everything
    replay_full: int  # events in the full replay (the default stream class's replay budget: 20,000)
    replay_repeats: int  # full-budget replays timed per run
    storm_clients: int
    memory_events: int
    fanout_rate: float = 500.0
    payload_size: int = 150
    clients: int = 8
    window: int = 32
    replay_gap: int = 100
    # gap replays timed per run (ADR-0006 amendment): a gap replay is ~0.1-0.3 ms, and a handful of
    # them gave the median of the peers' warm-up (Redis's first five fell 0.4 -> 0.07 ms)
    gap_repeats: int = 200
    client_procs: int = 2


FULL = Settings(quick=False, repeats=3, warmup=1.0, duration=5.0, fanout_duration=8.0, fanout_grace=20.0,
                replay_full=20_000, replay_repeats=5, storm_clients=200, memory_events=100_000)
QUICK = Settings(quick=True, repeats=1, warmup=0.2, duration=0.6, fanout_duration=0.4, fanout_grace=1.5,
                 replay_full=1_000, replay_repeats=2, storm_clients=30, memory_events=1_500, gap_repeats=5)


class ClientFailed(Exception):
    """A bench client process reported an error or died."""


class ClientProc:
    """One ``python -m adapters.bench.client`` process running one task."""

    def __init__(self, workdir: Path, task: dict[str, Any]) -> None:
        log = (workdir / "clients.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "adapters.bench.client"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(), cwd=ROOT,
                                     preexec_fn=die_with_parent)
        log.close()
        self.lines = _Lines(self.proc)
        self.send(task)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.q.get(timeout=0.05)
            except Exception:
                if self.lines.drained():
                    raise ClientFailed(f"client exited with {self.proc.returncode} (see clients.log)") from None
                continue
            msg = json.loads(line)
            if "error" in msg:
                raise ClientFailed(msg["error"])
            if key in msg:
                return msg[key]
        raise ClientFailed(f"client gave no {key!r} within {timeout:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def client_utilisations(results: list[dict[str, Any]]) -> list[float]:
    """Each client process's CPU over its wall time (a fraction of a core), from its result's
    ``cpu_s`` and ``wall_s``.  CPU times tick in 10 ms: a utilisation over less than half a
    second says nothing, and is left out."""
    return [r["cpu_s"] / r["wall_s"] for r in results if r.get("wall_s", 0) >= 0.5]


def split(n: int, parts: int) -> list[int]:
    """``n`` items over ``parts`` processes as evenly as possible (no empty part)."""
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


@dataclass
class Run:
    """What one run of one workload on one peer measured."""

    figures: dict[str, float | None]
    diag: dict[str, Any] = field(default_factory=dict)
    hist: Hist | None = None
    why: dict[str, str] = field(default_factory=dict)  # why a figure is None
    missing: int = 0  # samples ``hist`` should hold and does not (fanout: deliveries that never arrived)


@dataclass
class Workload:
    name: str
    title: str
    peers: tuple[str, ...]
    metrics: tuple[Metric, ...]
    run: Callable[[Bench, str, int], Run]
    doc: str
    group: str | None = ""  # workloads of one group share fresh servers ("": its own name); None: it starts its own
    repeats: Callable[[Settings], int] = lambda s: s.repeats


class Bench:
    """Shared state of one ``syncref bench`` invocation: settings, peers, where logs go."""

    def __init__(self, settings: Settings, workdir: Path, redis_binary: str | None = None,
                 profile_dir: Path | None = None, progress: Callable[[str], None] = lambda _m: None) -> None:
        self.s = settings
        self.workdir = workdir
        self.redis_binary = redis_binary
        self.profile_dir = profile_dir
        self.progress = progress
        self.echo: EchoPeer | None = None
        self.syncref: SyncrefPeer | None = None
        self.redis: RedisPeer | None = None
        self.redis_missing: str | None = None
        self.kept: dict[str, Any] = {}
        self.incidents: list[str] = []  # things that went wrong in setup and were retried
        self.group: str | None = None
        try:
            find_redis(redis_binary)
        except PeerUnavailable as exc:
            self.redis_missing = str(exc)

    def begin(self, workload: Workload) -> None:
        """Fresh servers for each group of workloads (replay_full and replay_gap share a stream);
        a workload without a group starts its own."""
        group = workload.group if workload.group != "" else workload.name
        if group is not None and group == self.group:
            return
        self.group = group
        self.kept = {k: v for k, v in self.kept.items() if k.startswith("restart:")}
        for p in (self.syncref, self.redis):
            if p is not None:
                p.remove()
        self.syncref = self.redis = None
        if workload.group is None:
            return
        if "syncref" in workload.peers:
            self.fresh_syncref()
        if "redis" in workload.peers and self.redis_missing is None:
            self.fresh_redis()

    # --- peers ---

    def echo_peer(self) -> EchoPeer:
        if self.echo is None:
            self.echo = EchoPeer(self.workdir).start()
        return self.echo

    def fresh_syncref(self) -> SyncrefPeer:
        if self.syncref is not None:
            self.syncref.remove()
        self.syncref = SyncrefPeer(self.workdir).start()
        return self.syncref

    def fresh_redis(self) -> RedisPeer:
        if self.redis_missing is not None:
            raise PeerUnavailable(self.redis_missing)
        if self.redis is not None:
            self.redis.remove()
        self.redis = RedisPeer(self.workdir, self.redis_binary)
        self.redis.start()
        return self.redis

    def teardown(self) -> None:
        for kept, _records in [v for k, v in self.kept.items() if k.startswith("restart:")]:
            kept.remove()
        self.kept = {}
        for p in (self.syncref, self.redis):
            if p is not None:
                p.remove()
        self.syncref = self.redis = None
        if self.echo is not None:
            self.echo.stop()
            self.echo = None

    def endpoint(self, peer: str) -> tuple[dict[str, Any], int]:
        """Connection fields for a client task, and the pid of the peer's server process."""
        if peer == "syncref":
            assert self.syncref is not None
            return {"target": "syncref", "host": "127.0.0.1", "port": self.syncref.port,
                    "token": self.syncref.token()}, self.syncref.pid
        if peer == "redis":
            assert self.redis is not None
            return {"target": "redis", "host": "127.0.0.1", "port": self.redis.port}, self.redis.pid
        echo = self.echo_peer()
        return {"target": "echo", "host": "127.0.0.1", "port": echo.port}, echo.pid

    # --- running clients ---

    def clients(self, tasks: list[dict[str, Any]], server_pid: int, profile_as: str | None = None,
                between: Callable[[list[ClientProc], list[Any]], None] | None = None,
                timeout: float = 120) -> tuple[list[Any], dict[str, Any]]:
        """Start one client process per task, wait until all are ready, start them together and
        collect their results.  ``between`` gets the first process's ``sent`` message (the fanout
        writer's count) and may message the others.  Returns the results and the CPU diagnostics of the run."""
        if self.syncref is not None:  # one identity per simulated client (max_connections_per_identity)
            first, given = 0, []
            for t in tasks:
                if t.get("target") == "syncref":
                    n = int(t.get("subs") or t.get("clients") or 1)
                    tokens = [self.syncref.token(first + k) for k in range(n)]
                    first += n
                    t = {**t, "token": tokens[0], "tokens": tokens}
                given.append(t)
            tasks = given
        procs = [ClientProc(self.workdir, t) for t in tasks]
        spies: list[subprocess.Popen[bytes]] = []
        try:
            return self._clients(procs, spies, server_pid, profile_as, between, timeout)
        except ClientFailed as exc:
            raise ClientFailed(f"{exc} [{self.server_state(tasks[0])}]") from None
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    spy.wait(60)
                except subprocess.TimeoutExpired:
                    spy.kill()
            for p in procs:
                p.close()

    def server_state(self, task: dict[str, Any]) -> str:
        """For an error message: the syncref server's committed and durable offsets, which tell a
        call the server never answered from one it holds back for durability."""
        if task.get("target") != "syncref":
            return ""
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{task['port']}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except OSError as exc:
            return f"server /metrics unreachable: {exc}"
        wanted = ("syncref_committed_offset ", "syncref_durable_offset ", "syncref_connections ",
                  "syncref_closes_total{")
        return "server: " + ", ".join(line for line in text.splitlines() if line.startswith(wanted))

    def counters(self) -> dict[str, float]:
        """The syncref server's counters the diagnostics read (``/metrics``): group COMMITs and
        their records, data frames sent, the transport writes that carried them, and the messages
        in those frames (all kinds together)."""
        import urllib.request
        assert self.syncref is not None
        got = {"syncref_group_commit_batch_records_count": 0.0, "syncref_group_commit_batch_records_sum": 0.0,
               "syncref_frames_sent_total": 0.0, "syncref_socket_writes_total": 0.0,
               "syncref_server_messages_total": 0.0}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.syncref.port}/metrics", timeout=30) as resp:
            for line in resp.read().decode().splitlines():
                name, _, value = line.partition(" ")
                if name.startswith("syncref_server_messages_total{"):  # summed over the message kinds
                    got["syncref_server_messages_total"] += float(value)
                elif name in got:
                    got[name] = float(value)
        return got

    def committed(self) -> int:
        """The syncref server's committed offset (its ``/metrics``)."""
        import urllib.request
        assert self.syncref is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.syncref.port}/metrics", timeout=30) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("syncref_committed_offset "):
                    return int(float(line.split()[1]))
        raise RuntimeError("syncref /metrics has no syncref_committed_offset")

    def _clients(self, procs: list[ClientProc], spies: list[subprocess.Popen[bytes]], server_pid: int,
                 profile_as: str | None, between: Callable[[list[ClientProc], list[Any]], None] | None,
                 timeout: float) -> tuple[list[Any], dict[str, Any]]:
        for p in procs:
            p.expect("ready", timeout)
        go = time.time() + 0.2
        if profile_as is not None and self.profile_dir is not None:
            spies += self._spy(server_pid, profile_as)
        cpu0 = cpu_seconds(server_pid)
        for p in procs:
            p.send({"go": go})
        results: list[Any] = []
        if between is not None:
            between(procs, [procs[0].expect("sent", timeout)])
            results = [p.expect("result", timeout) for p in procs]
        else:
            results = [p.expect("result", timeout) for p in procs]
        wall = max(time.time() - go, 1e-9)
        server_cpu = cpu_seconds(server_pid) - cpu0
        utils = client_utilisations(results)
        diag = {"server_cpu_s": round(server_cpu, 3), "wall_s": round(wall, 3),
                "server_util": round(server_cpu / wall, 3) if wall >= 0.5 else None,
                "client_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
                "client_util_max": round(max(utils), 3) if utils else None,
                "client_procs": len(procs)}
        diag["client_bound"] = bool(utils and max(utils) > 0.9)
        return results, diag

    def _spy(self, pid: int, name: str) -> list[subprocess.Popen[bytes]]:
        """py-spy on the server: a flame graph (SVG) and the folded stacks (for the cost budget)."""
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        common = [str(spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--threads"]
        out = []
        # the SVG shows every busy thread (the writer in fsync too); the folded stacks count only
        # samples holding the GIL -- Python at work -- for the CPU budget (adapters.bench.profile)
        for fmt, ext, extra in (("flamegraph", "svg", []), ("raw", "folded.txt", ["--gil"])):
            out.append(subprocess.Popen([*common, *extra, "--format", fmt, "-o",
                                         str(self.profile_dir / f"{name}.{ext}")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent))
        time.sleep(1.0)  # let py-spy attach before the measured phase starts
        return out

    def preload(self, peer: str, streams: list[str], per_stream: int, explicit_id: bool = False) -> None:
        """Append ``per_stream`` events to each stream as fast as the peer takes them (windows of
        64), unmeasured."""
        ep, pid = self.endpoint(peer)
        tasks = []
        start = 0
        for n in split(len(streams), self.s.client_procs):
            tasks.append({**ep, "kind": "append", "clients": n, "first_client": 0, "window": 64,
                          "total": per_stream, "payload_size": self.s.payload_size, "explicit_id": explicit_id,
                          "stream_prefix": "", "streams": streams[start:start + n], "key_prefix": _uid()})
            start += n
        try:
            results, _ = self.clients(tasks, pid, timeout=3600)
        except ClientFailed as exc:
            # setup, not a measurement: one retry (fresh keys), and the failure is kept for the report
            self.incidents.append(f"preload on {peer} retried after: {exc}")
            for t in tasks:
                t["key_prefix"] = _uid()
            results, _ = self.clients(tasks, pid, timeout=3600)
        bad = sum(r["errors"] for r in results)
        if bad:
            raise RuntimeError(f"preload on {peer}: {bad} appends failed: {results[0]['first_error']}")


def _ms(v: float | None) -> float | None:
    return None if v is None else v / 1000.0


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# --- append -----------------------------------------------------------------------------------------


APPEND_METRICS = (
    Metric("throughput", "calls/s", HIGHER, "acknowledged appends (or echo round trips) per second"),
    Metric("p50_ms", "ms", LOWER, "median call latency, send to answer"),
    Metric("p99_ms", "ms", LOWER, "99th percentile call latency"),
)


def run_append(bench: Bench, peer: str, window: int, profile: str | None) -> Run:
    s = bench.s
    ep, pid = bench.endpoint(peer)
    prefix = f"ap-{_uid()}-"
    tasks = []
    first = 0
    for n in split(s.clients, s.client_procs):
        tasks.append({**ep, "kind": "append", "clients": n, "first_client": first, "window": window,
                      "warmup": s.warmup, "duration": s.duration, "payload_size": s.payload_size,
                      "stream_prefix": prefix})
        first += n
    before = bench.counters() if peer == "syncref" else None
    results, diag = bench.clients(tasks, pid, profile_as=profile)
    if before is not None:  # records per group COMMIT, replies per transport write (warm-up included)
        after = bench.counters()
        diff = {k: after[k] - before[k] for k in after}
        commits = diff["syncref_group_commit_batch_records_count"]
        diag["commits"] = int(commits)
        diag["records_per_commit"] = round(diff["syncref_group_commit_batch_records_sum"] / max(1.0, commits), 2)
        diag["frames_per_write"] = round(diff["syncref_frames_sent_total"]
                                         / max(1.0, diff["syncref_socket_writes_total"]), 2)
    ops = sum(r["ops"] for r in results)
    errors = sum(r["errors"] for r in results)
    if errors:
        raise RuntimeError(f"{errors} appends failed on {peer}: {next(r['first_error'] for r in results)}")
    hist = Hist.merged(Hist.from_json(r["hist"]) for r in results)
    wall = max(r["wall_s"] for r in results)
    diag["ops"] = ops
    diag["server_cpu_us_per_op"] = round(diag["server_cpu_s"] / max(1, ops) * 1e6 * (wall / diag["wall_s"]), 1)
    why = {} if hist.n else {"p50_ms": "no call completed within the measured phase",
                             "p99_ms": "no call completed within the measured phase"}
    return Run({"throughput": ops / wall, "p50_ms": _ms(hist.quantile(0.5)), "p99_ms": _ms(hist.quantile(0.99))},
               diag, hist, why)


def append_closed(bench: Bench, peer: str, repeat: int) -> Run:
    return run_append(bench, peer, 1, "append_closed" if repeat == 0 and peer == "syncref" else None)


def append_pipelined(bench: Bench, peer: str, repeat: int) -> Run:
    return run_append(bench, peer, bench.s.window, "append_pipelined" if repeat == 0 and peer == "syncref" else None)


# --- fanout -----------------------------------------------------------------------------------------


FANOUT_METRICS = (
    Metric("deliveries_per_s", "events/s", HIGHER, "distinct events received by all subscribers together, per "
                                                   "second (a duplicate is not counted; the diagnostics count them)"),
    Metric("p50_ms", "ms", LOWER, "median latency, writer's send to a subscriber's receipt, over every expected "
                                  "delivery (one that never arrived counts as slowest; none if over half did)"),
    Metric("p99_ms", "ms", LOWER, "99th percentile of the same (none if over 1 % never arrived)"),
    Metric("delivered", "fraction", HIGHER, "distinct events received / (events sent x subscribers), within the "
                                            "grace (a duplicate is not counted again)"),
    Metric("growth", "x", LOWER, "median latency of the last fifth of the run / of the first fifth"),
    Metric("kept_up", "0/1", HIGHER, "1 when every event was delivered exactly once and latency did not grow "
                                     "(growth < 2)"),
)
SYNCREF_FANOUT_EXTRA = (
    Metric("commit_p50_ms", "ms", LOWER, "median commit->delivery (committed_at column to receipt; 1 event in 8), "
                                         "over every expected sampled delivery (one that never arrived counts "
                                         "as slowest; none if over half did)"),
    Metric("commit_p99_ms", "ms", LOWER, "99th percentile commit->delivery (none if over 1 % never arrived)"),
)


def fanout_verdict(subs: list[dict[str, Any]], expected: int, early: float | None,
                   late: float | None) -> tuple[float | None, float | None, float]:
    """(delivered, growth, kept_up) of a fanout run from its subscriber processes' results:
    ``expected`` = events sent x subscribers; ``early``/``late`` the median latency of the first
    and the last fifth of the run.  ``delivered`` counts each subscriber's *distinct* events, and
    kept up needs every event exactly once: a duplicate neither stands in for a missing event
    nor passes as keeping up (the sums of deliveries alone let one subscriber's missing event
    and another's duplicate cancel out)."""
    received = sum(r["received"] for r in subs)
    distinct = sum(r["distinct"] for r in subs)
    # the late fifth's median of a run that lost deliveries is of the survivors: no growth then
    growth = late / early if early and late and distinct >= expected else None
    delivered = distinct / expected if expected else None
    once = distinct == received == expected
    return delivered, growth, 1.0 if once and growth is not None and growth < 2.0 else 0.0


def fanout_figures(peer: str, w: dict[str, Any], subs_r: list[dict[str, Any]],
                   subscribers: int) -> tuple[dict[str, float | None], dict[str, str]]:
    """A fanout run's figures (and why one is none) from the writer's result ``w`` and the
    subscriber processes' results."""
    hist = Hist.merged(Hist.from_json(r["hist"]) for r in subs_r)
    slices = [Hist.merged(Hist.from_json(r["slices"][k]) for r in subs_r) for k in range(len(subs_r[0]["slices"]))]
    distinct = sum(r["distinct"] for r in subs_r)
    expected = w["sent"] * subscribers
    never = max(0, expected - distinct)  # deliveries that never arrived in the grace
    wall = max(r["wall_s"] for r in subs_r)
    delivered, growth, kept_up = fanout_verdict(subs_r, expected, slices[0].quantile(0.5), slices[-1].quantile(0.5))
    figures: dict[str, float | None] = {
        # distinct deliveries (a duplicate is not a delivery; the diagnostics count them)
        "deliveries_per_s": distinct / wall if wall > 0 else None,
        # over every expected delivery: one that never arrived counts as slower than all (a p99 of the
        # survivors of a run that lost 5 % would flatter it); none once the quantile falls among them
        "p50_ms": _ms(hist.quantile(0.5, missing=never)), "p99_ms": _ms(hist.quantile(0.99, missing=never)),
        "delivered": delivered, "growth": growth, "kept_up": kept_up}
    why = {}
    if growth is None:
        why["growth"] = ("no event sent in the first or the last fifth of the run was delivered in time" if not never
                         else f"{never} of {expected} deliveries never arrived: a fifth's median would be of "
                              "the survivors")
    if not hist.n:
        why["p50_ms"] = why["p99_ms"] = why["deliveries_per_s"] = "no event was delivered"
    else:
        for key, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            if figures[key] is None:
                why[key] = (f"{never} of {expected} deliveries never arrived within the grace: more than "
                            f"{1 - q:.0%} of them")
    if peer == "syncref":
        # 1 event in 8 is sampled (i % 8 == 0); a sampled delivery that never arrived counts as
        # never, as in p50/p99 (none once the quantile falls among them)
        commit = Hist.merged(Hist.from_json(r["commit_hist"]) for r in subs_r)
        sampled = -(-w["sent"] // 8) * subscribers
        unsampled = max(0, sampled - sum(r["sampled"] for r in subs_r))
        for key, q in (("commit_p50_ms", 0.5), ("commit_p99_ms", 0.99)):
            figures[key] = _ms(commit.quantile(q, missing=unsampled))
            if not commit.n:
                why[key] = "no sampled event was delivered"
            elif figures[key] is None:
                why[key] = (f"{unsampled} of {sampled} sampled deliveries never arrived within the grace: "
                            f"more than {1 - q:.0%} of them")
    return figures, why


def run_fanout(bench: Bench, peer: str, subscribers: int, profile: str | None, protocol: str = "v2") -> Run:
    """``protocol``: what syncref's subscribers negotiate (``v2`` or ``v3``; the writer is always
    v2, and the other peers' clients are the same whatever it says)."""
    s = bench.s
    ep, pid = bench.endpoint(peer)
    stream = f"fan-{_uid()}"
    procs = 1 if subscribers <= 10 else s.client_procs
    writer = {**ep, "kind": "writer", "stream": stream, "rate": s.fanout_rate, "duration": s.fanout_duration,
              "payload_size": s.payload_size, "ack_grace": s.fanout_grace}
    subs = [{**ep, "kind": "subscribe", "stream": stream, "subs": n, "duration": s.fanout_duration,
             "protocol": protocol} for n in split(subscribers, procs)]

    def between(ps: list[ClientProc], sent: list[Any]) -> None:
        for p in ps[1:]:
            p.send({"expect": sent[0], "grace": s.fanout_grace})

    before = bench.counters() if peer == "syncref" else None
    results, diag = bench.clients([writer, *subs], pid, profile_as=profile, between=between,
                                  timeout=s.fanout_duration + s.fanout_grace + 120)
    if before is not None:  # how much the group COMMITs and the transport writes carried each
        after = bench.counters()
        diff = {k: after[k] - before[k] for k in after}
        diag["records_per_commit"] = round(diff["syncref_group_commit_batch_records_sum"]
                                           / max(1.0, diff["syncref_group_commit_batch_records_count"]), 2)
        diag["frames_per_write"] = round(diff["syncref_frames_sent_total"]
                                         / max(1.0, diff["syncref_socket_writes_total"]), 2)
        diag["messages_per_frame"] = round(diff["syncref_server_messages_total"]
                                           / max(1.0, diff["syncref_frames_sent_total"]), 2)
    w, subs_r = results[0], results[1:]
    if w["errors"]:
        raise RuntimeError(f"fanout writer on {peer}: {w['errors']} appends failed: {w['first_error']}")
    sub_errors = [r for r in subs_r if r.get("errors")]
    if sub_errors:
        raise RuntimeError(f"fanout subscribers on {peer}: {sum(r['errors'] for r in sub_errors)} error replies: "
                           f"{sub_errors[0]['first_error']}")
    figures, why = fanout_figures(peer, w, subs_r, subscribers)
    hist = Hist.merged(Hist.from_json(r["hist"]) for r in subs_r)
    slices = [Hist.merged(Hist.from_json(r["slices"][k]) for r in subs_r) for k in range(len(subs_r[0]["slices"]))]
    received = sum(r["received"] for r in subs_r)
    expected = w["sent"] * subscribers
    never = max(0, expected - sum(r["distinct"] for r in subs_r))
    ack = Hist.from_json(w["ack_hist"])
    sub_cpu = sum(r["cpu_s"] for r in subs_r)
    # CPU per delivery, over the whole run (the grace included): what each delivery cost the
    # server and the subscribers' processes; events per frame as the subscribers counted them
    diag.update({"server_cpu_us_per_delivery": round(diag["server_cpu_s"] / max(1, received) * 1e6, 2),
                 "subscriber_cpu_us_per_delivery": round(sub_cpu / max(1, received) * 1e6, 2),
                 "events_per_frame": round(received / max(1, sum(r["frames"] for r in subs_r)), 2),
                 "protocol": protocol if peer == "syncref" else None})
    diag.update({"sent": w["sent"], "acked": w["ok"], "received": received, "expected": expected,
                 "duplicates": received - sum(r["distinct"] for r in subs_r),
                 "subscribers_closed": sum(r["closed"] for r in subs_r),
                 "out_of_order": sum(r["out_of_order"] for r in subs_r),
                 "writer_ack_p50_ms": _ms(ack.quantile(0.5)), "writer_ack_p99_ms": _ms(ack.quantile(0.99)),
                 "writer_max_schedule_lag_ms": round(w["max_schedule_lag_s"] * 1000, 2),
                 "slice_p50_ms": [_ms(h.quantile(0.5)) for h in slices], "slices": SLICES_NOTE})
    return Run(figures, diag, hist, why, missing=never)


def fanout(n: int, protocol: str = "v2") -> Callable[[Bench, str, int], Run]:
    name = f"fanout_{n}" if protocol == "v2" else f"fanout_{n}_{protocol}"

    def run(bench: Bench, peer: str, repeat: int) -> Run:
        # every fanout run starts on an idle server: a run that fell behind leaves a backlog that
        # would otherwise be the next run's (the first baseline lost runs to exactly that)
        if repeat > 0 and peer == "syncref":
            bench.fresh_syncref()
        elif repeat > 0 and peer == "redis":
            bench.fresh_redis()
        return run_fanout(bench, peer, n, name if repeat == 0 and peer == "syncref" else None, protocol)
    return run


# --- replay -----------------------------------------------------------------------------------------

REPLAY_METRICS = (
    Metric("events_per_s", "events/s", HIGHER, "events replayed per second (median replay)"),
    Metric("latency_ms", "ms", LOWER, "median time of one replay, request to the last row"),
)


def _replay_stream(bench: Bench, peer: str) -> str:
    """The replay stream for this peer, preloaded once per bench with ``replay_full`` events."""
    key = f"replay:{peer}"
    if key not in bench.kept:
        stream = f"rp-{_uid()}-0"
        bench.preload(peer, [stream], bench.s.replay_full, explicit_id=(peer == "redis"))
        bench.kept[key] = stream
    stream_name: str = bench.kept[key]
    return stream_name


def run_replay(bench: Bench, peer: str, watermark: int, expect: int, repeats: int,
               profile: str | None = None) -> Run:
    ep, pid = bench.endpoint(peer)
    stream = _replay_stream(bench, peer)
    task = {**ep, "kind": "replay", "stream": stream, "watermark": watermark, "repeats": repeats}
    results, diag = bench.clients([task], pid, profile_as=profile)
    r = results[0]
    if any(c != expect for c in r["counts"]):
        raise RuntimeError(f"replay on {peer} returned {r['counts']} events, expected {expect} each")
    times = sorted(r["times_s"])
    median = times[len(times) // 2]
    diag["replays"] = len(times)
    diag["times_ms"] = [round(t * 1000, 3) for t in r["times_s"]]  # in order: a cache's first (cold) replay shows
    diag["events"] = expect
    return Run({"events_per_s": expect / median, "latency_ms": median * 1000}, diag)


def replay_full(bench: Bench, peer: str, repeat: int) -> Run:
    return run_replay(bench, peer, 0, bench.s.replay_full, bench.s.replay_repeats,
                      "replay_full" if repeat == 0 and peer == "syncref" else None)


def replay_gap(bench: Bench, peer: str, repeat: int) -> Run:
    return run_replay(bench, peer, bench.s.replay_full - bench.s.replay_gap, bench.s.replay_gap, bench.s.gap_repeats,
                      "replay_gap" if repeat == 0 and peer == "syncref" else None)


# --- reconnect storm ------------------------------------------------------------------------------------

STORM_METRICS = (
    Metric("all_live_ms", "ms", LOWER, "from the common start until the last client is live (none when a "
                                       "client never got live)"),
    Metric("p50_live_ms", "ms", LOWER, "median time until a client is live (over every client, one that never "
                                       "got live counted last)"),
    Metric("failures", "clients", LOWER, "clients that could not connect or resume"),
)


def reconnect_storm(bench: Bench, peer: str, repeat: int) -> Run:
    s = bench.s
    ep, pid = bench.endpoint(peer)
    key = f"storm:{peer}"
    if key not in bench.kept and peer != "echo":
        stream = f"st-{_uid()}-0"
        bench.preload(peer, [stream], 200, explicit_id=(peer == "redis"))
        bench.kept[key] = stream
    stream = bench.kept.get(key, "none")
    tasks = [{**ep, "kind": "storm", "stream": stream, "watermark": 150, "clients": n}
             for n in split(s.storm_clients, s.client_procs)]
    results, diag = bench.clients(tasks, pid)
    failures = [f for r in results for f in r["failures"]]
    diag["first_failure"] = failures[0] if failures else ""
    diag["clients"] = s.storm_clients
    figures, why = storm_figures(results)
    return Run(figures, diag, why=why)


def storm_figures(results: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, str]]:
    """The storm's figures from its client processes' results (``live_s``: each live client's
    time, ``failures``: one line per client that never got live).  A client that never got live
    counts as never: with one, there is no time until all are live (not the last live client's
    time), and the median is over every client, the failed ones last (none if half failed)."""
    live = sorted(t for r in results for t in r["live_s"])
    failed = sum(len(r["failures"]) for r in results)
    times = live + [math.inf] * failed
    median = times[len(times) // 2] if times else math.inf
    figures: dict[str, float | None] = {"all_live_ms": live[-1] * 1000 if live and not failed else None,
                                        "p50_live_ms": median * 1000 if median < math.inf else None,
                                        "failures": float(failed)}
    never = f"{failed} of {len(times)} clients never got live"
    why = {k: never for k in ("all_live_ms", "p50_live_ms") if figures[k] is None}
    return figures, why


# --- memory and restart -----------------------------------------------------------------------------------

MEMORY_METRICS = (
    Metric("bytes_per_event", "B", LOWER, "server memory growth per retained 150 B event (syncref: RSS; "
                                          "Redis: INFO used_memory)"),
    Metric("rss_per_event", "B", LOWER, "the same measured alike on both: growth of the process's RSS "
                                        "(/proc/<pid>/statm, after the same settle) per retained event"),
)
RESTART_METRICS = (
    Metric("restart_us_per_record", "µs", LOWER, "start-up time per log record (syncref: serve until listening; "
                                                 "Redis: AOF load until PING answers), minus an empty start"),
)
SYNCREF_RESTART_EXTRA = (
    Metric("verify_us_per_record", "µs", LOWER, "syncref verify-log time per record, minus an empty log's"),
)
MEMORY_STREAMS = 10


def memory(bench: Bench, peer: str, repeat: int) -> Run:
    s = bench.s
    per_stream = s.memory_events // MEMORY_STREAMS
    streams = [f"mem-{_uid()}-{i}" for i in range(MEMORY_STREAMS)]
    if peer == "syncref":
        server = bench.fresh_syncref()
        bench.preload(peer, streams, 1)  # the streams exist; only events are counted
        time.sleep(0.2 if s.quick else 1.0)
        before, first = rss_bytes(server.pid), bench.committed()
        bench.preload(peer, streams, per_stream)
        time.sleep(0.2 if s.quick else 1.0)
        after, events = rss_bytes(server.pid), bench.committed() - first  # one event per commit
        bench.kept["restart:syncref"] = (server, events + first)
        bench.syncref = None  # kept for the restart workload
        figures, diag = memory_figures(peer, events, (before, after))
        return Run(figures, diag)
    redis = bench.fresh_redis()
    bench.preload(peer, streams, 1)
    time.sleep(0.2 if s.quick else 1.0)  # settled as syncref's is, before either RSS is read
    before_info, before = redis.info(), rss_bytes(redis.pid)
    bench.preload(peer, streams, per_stream)
    time.sleep(0.2 if s.quick else 1.0)
    after_info, after = redis.info(), rss_bytes(redis.pid)
    events = per_stream * MEMORY_STREAMS
    bench.kept["restart:redis"] = (redis, events + MEMORY_STREAMS)
    bench.redis = None
    figures, diag = memory_figures(peer, events, (before, after),
                                   used=(int(before_info["used_memory"]), int(after_info["used_memory"])),
                                   info_rss=(int(before_info["used_memory_rss"]), int(after_info["used_memory_rss"])))
    return Run(figures, diag)


def memory_figures(peer: str, events: int, rss: tuple[int, int], used: tuple[int, int] | None = None,
                   info_rss: tuple[int, int] | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The memory figures from what was read before and after the events went in: ``rss`` from
    ``/proc/<pid>/statm`` (both peers, after the same settle), ``used``/``info_rss`` Redis's
    ``INFO memory`` ``used_memory``/``used_memory_rss``.  ``bytes_per_event`` is the headline
    (syncref: RSS; Redis: used_memory, its allocator's count, as issue 10 set it); ``rss_per_event``
    is the same measure of both, the process's RSS.  INFO's RSS is only a diagnostic: Redis
    samples it in its cron (every 100 ms), so read right after a burst it lags the burst."""
    rss_delta = rss[1] - rss[0]
    figures: dict[str, float | None] = {"bytes_per_event": rss_delta / events, "rss_per_event": rss_delta / events}
    diag: dict[str, Any] = {"events": events, "rss_before": rss[0], "rss_after": rss[1]}
    if used is not None:
        figures["bytes_per_event"] = (used[1] - used[0]) / events
        diag["used_memory_delta"] = used[1] - used[0]
    if info_rss is not None:
        diag["info_rss_delta"] = info_rss[1] - info_rss[0]
    if peer == "redis" and used is None:
        raise ValueError("Redis's headline memory figure is its used_memory")
    return figures, diag


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=peers.server_env(),
                   cwd=peers.SERVER_CODE)
    return time.perf_counter() - started


def restart(bench: Bench, peer: str, repeat: int) -> Run:
    key = f"restart:{peer}"
    if key not in bench.kept:
        memory(bench, peer, repeat)
    if peer == "syncref":
        server, records = bench.kept[key]
        server.stop()
        empty = SyncrefPeer(bench.workdir)
        empty.start()
        empty.stop()
        server.start()
        server.stop()
        verify = peers.server_command("verify-log", "--data", str(server.data), "--json")
        verify_empty = peers.server_command("verify-log", "--data", str(empty.data), "--json")
        t_verify = _timed(verify) - _timed(verify_empty)
        empty.remove()
        return Run({"restart_us_per_record": (server.startup_s - empty.startup_s) / records * 1e6,
                    "verify_us_per_record": t_verify / records * 1e6},
                   {"records": records, "restart_s": server.startup_s, "empty_start_s": empty.startup_s})
    redis, records = bench.kept[key]
    redis.stop()
    t_full = redis.start()
    redis.stop()
    blank = RedisPeer(bench.workdir, bench.redis_binary)
    t_empty = blank.start()
    blank.remove()
    return Run({"restart_us_per_record": (t_full - t_empty) / records * 1e6},
               {"records": records, "restart_s": t_full, "empty_start_s": t_empty, "version": redis.version})


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("append_closed", "durable confirmed append, 1 in flight x 8 clients", ("syncref", "redis", "echo"),
             APPEND_METRICS, append_closed,
             "8 clients, each on its own stream, one call in flight; 150 B payloads"),
    Workload("append_pipelined", "durable confirmed append, windows of 32 x 8 clients", ("syncref", "redis", "echo"),
             APPEND_METRICS, append_pipelined,
             "8 clients, each on its own stream, windows of 32 calls sent together and awaited together"),
    *(Workload(f"fanout_{n}", f"fanout, 1 writer at 500/s, {n} subscribers", ("syncref", "redis", "echo"),
               FANOUT_METRICS, fanout(n), f"1 writer appending at 500 events/s (open loop), {n} subscribers")
      for n in (10, 100, 500)),
    *(Workload(f"fanout_{n}_v3", f"fanout, 1 writer at 500/s, {n} subscribers (syncref's on v3)",
               ("syncref", "redis", "echo"), FANOUT_METRICS, fanout(n, "v3"),
               f"as fanout_{n}, syncref's subscribers negotiating v3.bsatn.spacetimedb (a lagging one gets "
               "several updates per frame); the peers' clients unchanged")
      for n in (100, 500)),
    Workload("replay_full", "replay of a full budget (20,000 events)", ("syncref", "redis"), REPLAY_METRICS,
             replay_full, "resume from watermark 0 of a stream holding the replay budget", group="replay"),
    Workload("replay_gap", "replay of a small gap (100 events)", ("syncref", "redis"), REPLAY_METRICS,
             replay_gap, "resume 100 events behind the head", group="replay"),
    Workload("reconnect_storm", "reconnect storm (N clients resuming at once)", ("syncref", "redis", "echo"),
             STORM_METRICS, reconnect_storm, "N clients connect and resume a 50-event gap at the same instant"),
    Workload("memory", "memory per retained 150 B event", ("syncref", "redis"), MEMORY_METRICS, memory,
             "100,000 events over 10 streams", group=None, repeats=lambda s: 1),
    Workload("restart", "restart and verify-log per record", ("syncref", "redis"), RESTART_METRICS, restart,
             "the memory workload's log, restarted", group=None),
)}


def metrics_for(workload: Workload, peer: str) -> tuple[Metric, ...]:
    extra: tuple[Metric, ...] = ()
    if peer == "syncref" and workload.name.startswith("fanout_"):
        extra = SYNCREF_FANOUT_EXTRA
    if peer == "syncref" and workload.name == "restart":
        extra = SYNCREF_RESTART_EXTRA
    return workload.metrics + extra


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="syncref-bench-"))


__all__ = ["FULL", "QUICK", "WORKLOADS", "Bench", "ClientFailed", "Metric", "Run", "Settings", "Workload",
           "metrics_for", "workdir"]
