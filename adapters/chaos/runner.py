"""The chaos run: real ``syncref serve`` processes, SDK clients, nemeses, a heal, the checks.

Layout of a run (all under ``workdir``): ``data/`` the server's data directory, ``server.log``
its stderr across restarts, ``stall`` the file whose existence stalls the disk (``[faults]
stall_commits_while``), ``sub<i>.sqlite`` each subscriber's application database (its view, its
checkpoints and the persisted log of what it applied, all in one transaction per batch).

The workload, while :func:`.schedule.plan`'s nemeses act:

* writers (one identity each) loop over appends to the shared streams (idempotency key
  ``w<i>.<n>``, distinct content per write), assignment opens, outbox enqueues and presence
  upserts.  A call that gets no answer (connection lost, timeout, server restarting) is retried
  with the *same* key until it is answered; the history records the outcome (``ok`` with the
  acknowledged seq, ``failed`` with the error, or ``unknown``).  Writers use confirmed reads (the
  server's default): an acknowledgement means durable.
* subscribers follow every stream with :class:`~adapters.sdk.StreamConsumer` into SQLite and are
  restarted by the ``client_restart`` nemesis (store closed and reopened: they resume from the
  persisted checkpoints).
* an admin, connected directly to the server (not through the proxy), watches ``sync_stream`` and
  calls ``reset_stream_epoch`` for the ``epoch_reset`` nemesis; the ``compaction`` nemesis reads the
  small-retention stream's floor from it.  The data directory is created with
  :func:`chaos_policy` (the last stream keeps :data:`RETAIN` events) and the server compacts every
  :data:`COMPACT_EVERY_S`.
* with the ``nostr-relay`` executable, two relays and a ``syncref bridge`` worker (through the proxy)
  mirror the outbox (:mod:`.relays`); without it the ``relay_outage`` nemeses are skipped and the
  report says why.

The heal: the nemeses stop, the disk and the proxy recover, the server runs; the writers finish
their pending retries, then each makes one more write (progress); every subscriber must reach
every stream's head.  The final state is read by a fresh client connected directly to the server,
the server is stopped cleanly and ``verify-log`` re-executes its log.  :func:`.history.check`
judges.  ``plant`` (comma-separated) deliberately breaks a client (``skip-apply``: subscriber 0 drops
every fifth event from its view while its checkpoint advances; ``fresh-key-retry``: writers retry with
a new idempotency key), the server or the bridge (:mod:`.planted`) so tests can show the checker
catches it and the report names the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.auth import AuthConfig, Authenticator, KeyStore
from adapters.chaos import planted
from adapters.chaos.history import (
    FINDINGS,
    REBOOTSTRAP,
    Anomaly,
    Applied,
    BridgeFinal,
    FinalState,
    History,
    OutboxRow,
    Overtaken,
    Rebootstrap,
    Reset,
    Write,
    check,
    explained,
)
from adapters.chaos.proxy import ChaosProxy
from adapters.chaos.relays import BridgeProcess, Relay, read_relay, relay_executable
from adapters.chaos.schedule import PROFILES, Nemesis, Profile, plan
from adapters.netutil import free_port
from adapters.progress import Progress
from adapters.sdk import (
    Backoff,
    CheckpointStore,
    ConnectError,
    Connection,
    ReducerError,
    SdkError,
    Stale,
    StreamConsumer,
)
from spec.policy import DEFAULT_POLICY, Policy, StreamClass
from spec.schema import SCOPES
from spec.values import BridgeOutbox, ComputeAssignment, SessionPresence, SyncEvent, SyncStream

PLANTS = ("skip-apply", "fresh-key-retry", *planted.SERVER, *planted.BRIDGE)
FAST = Backoff(base=0.05, cap=0.5, jitter=0.5)
WRITER_SCOPES = ("sync.subscribe", "sync.append", "presence.write", "compute.request", "bridge.enqueue")
SUB_SCOPES = ("sync.subscribe", "sync.checkpoint.write")
RETRY_FOR_S = 90.0  # a write keeps being retried this long before it is recorded as unknown
HEAL_FOR_S = 90.0  # how long the heal waits for subscribers to reach the heads
RETAIN = 30  # retain_count of the small-retention stream (the last one): compaction overtakes slow readers
COMPACT_EVERY_S = 0.25  # the server's compaction interval in a chaos run
OVERTAKE_FOR_S = 15.0  # a compaction nemesis waits at most this long (past for_s) for the floor to pass
BRIDGE_HEAL_S = 60.0  # how long the heal waits for the outbox backlog to drain to every relay
BRIDGE_SCOPES = ("sync.subscribe", "bridge.mark_sent", "bridge.enqueue")


def chaos_policy(streams: list[str]) -> Policy:
    """The run's policy: the default, with the last stream in a small-retention class."""
    return dataclasses.replace(DEFAULT_POLICY, classes=((streams[-1], StreamClass("chaos-small",
                                                                                    retain_count=RETAIN)),))


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ServerProcess:
    """``syncref serve`` in a subprocess on a fixed port, killed and restarted at will."""

    def __init__(self, data: Path, port: int, config: Path, log: Path, plants: tuple[str, ...] = ()) -> None:
        self.data, self.port, self.config, self.log = data, port, config, log
        self.plants = plants
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = self.kills = 0
        self.start_seconds: list[float] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 90.0) -> None:
        started = time.monotonic()
        with self.log.open("a") as log:
            prefix = ["-m", "adapters.chaos.planted", ",".join(self.plants)] if self.plants else ["-m", "adapters.cli"]
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *prefix, "serve", "--data", str(self.data), "--host", "127.0.0.1",
                "--port", str(self.port), "--config", str(self.config),
                stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True)
        assert self.proc.stdout is not None
        while True:
            try:
                left = max(0.1, timeout - (time.monotonic() - started))
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                line = b""
            if line.startswith(b"syncref listening on"):
                break
            if not line:
                code = self.proc.returncode if self.proc.returncode is not None else "still running"
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
                raise RuntimeError(f"syncref serve did not come up (exit {code}); see {self.log}")
        self._drain = asyncio.create_task(self._pump(self.proc.stdout))
        self.starts += 1
        self.start_seconds.append(time.monotonic() - started)

    @staticmethod
    async def _pump(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
            self.kills += 1

    async def stop(self) -> int:
        """SIGTERM and wait: the exit status (0 = clean shutdown)."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


@dataclass
class Counters:
    nemeses: Counter[str] = field(default_factory=Counter)
    calls: int = 0  # reducer call attempts by the writers
    retries: int = 0
    client_restarts: int = 0
    overtaken: int = 0  # compaction nemeses whose floor passed the paused subscriber's watermark
    not_overtaken: int = 0


class Writer:
    def __init__(self, run: ChaosRun, index: int, token: str) -> None:
        self.run, self.index, self.token = run, index, token
        self.name = f"w{index}"
        self.rng = random.Random(f"{run.seed}:{self.name}")
        self.conn = self._connection()
        self.n = 0
        self.presence_status = ""

    def _connection(self) -> Connection:
        return Connection(self.run.proxy_url, token=self.token, backoff=FAST, call_timeout=8, open_timeout=5)

    async def call(self, reducer: str, key_arg: int, *args: Any) -> tuple[str, object, int]:
        """Call with retries under the same key until answered: (status, value or error code, attempts)."""
        deadline = time.monotonic() + RETRY_FOR_S
        attempts = 0
        args_l = list(args)
        while True:
            attempts += 1
            self.run.counters.calls += 1
            if attempts > 1 and "fresh-key-retry" in self.run.plants:
                args_l[key_arg] = f"{args[key_arg]}-r{attempts}"
            try:
                out = await self.conn.call(reducer, *args_l)
                return "ok", out.value, attempts
            except ReducerError as exc:
                return "failed", exc.code, attempts
            except ConnectError as exc:
                if exc.permanent:  # the connection gave up: a new one (e.g. refused while restarting)
                    await self.conn.close()
                    self.conn = self._connection()
            except (SdkError, OSError):
                pass
            self.run.counters.retries += 1
            if time.monotonic() > deadline:
                return "unknown", None, attempts
            await asyncio.sleep(0.05)

    async def step(self) -> None:
        self.n += 1
        n, run = self.n, self.run
        pick = self.rng.random()
        if pick < 0.7:
            await self.append(run.streams[self.rng.randrange(len(run.streams))])
        elif pick < 0.8:
            rid = f"req-{self.name}-{n}"
            request = canonical({"op": rid, "seed": run.seed})
            status, value, attempts = await self.call("open_compute_assignment", 0, rid, 5000, request)
            run.history.writes.append(Write(self.name, "open", rid, sha(request), status, attempts=attempts))
            if status == "failed":
                run.history.client_errors.append(f"{self.name}: open {rid} refused: {value}")
        elif pick < 0.9:
            oid = f"ob-{self.name}-{n}"
            content = f"chaos {run.seed} {oid}"
            tags = canonical([["d", oid]])  # kind 30078 is addressable: one d tag per row, or relays replace them
            status, value, attempts = await self.call("enqueue_bridge_event", 0, oid, "chaos", 30078, tags, content)
            run.history.writes.append(Write(self.name, "enqueue", oid, sha(content), status, attempts=attempts))
            if status == "failed":
                run.history.client_errors.append(f"{self.name}: enqueue {oid} refused: {value}")
        else:
            await self.presence(self.rng.choice(("online", "away")))

    async def append(self, stream: str) -> Write:
        run = self.run
        key = f"{self.name}.{self.n}"
        payload = canonical({"op": key, "seed": run.seed, "w": self.index, "pad": "x" * self.rng.randrange(64)})
        status, value, attempts = await self.call("append_sync_event", 1, stream, key, payload, sha(payload), None)
        seq = value if isinstance(value, int) and status == "ok" else None
        write = Write(self.name, "append", key, sha(payload), status, stream, seq, attempts)
        run.history.writes.append(write)
        if status == "failed":
            run.history.client_errors.append(f"{self.name}: append {key} refused: {value}")
        return write

    async def step_append_only(self) -> Write:
        self.n += 1
        return await self.append(self.run.streams[self.n % len(self.run.streams)])

    async def presence(self, status: str) -> bool:
        session = f"sess-{self.name}"
        outcome, value, _ = await self.call("upsert_presence", 0, session, f"dev-{self.name}", "chaos", status,
                                            "local", 300_000)
        if outcome == "ok":
            self.run.history.presence_acked.setdefault(session, set()).add(status)
        elif outcome == "failed":
            self.run.history.client_errors.append(f"{self.name}: presence refused: {value}")
        return outcome == "ok"

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            await asyncio.sleep(self.run.profile.write_pause_s)


class Subscriber:
    """Follows every stream into ``sub<i>.sqlite``: a view table and the log of what it applied."""

    def __init__(self, run: ChaosRun, index: int, token: str) -> None:
        self.run, self.index, self.token = run, index, token
        self.name = f"sub{index}"
        self.path = run.workdir / f"{self.name}.sqlite"
        self.conn: Connection | None = None
        self.store: CheckpointStore | None = None
        self.consumers: list[StreamConsumer] = []

    async def start(self) -> None:
        store = CheckpointStore(self.path)
        store.db.execute("CREATE TABLE IF NOT EXISTS chaos_view (stream TEXT, seq INTEGER, key TEXT, hash TEXT, "
                         "PRIMARY KEY (stream, seq))")
        store.db.execute("CREATE TABLE IF NOT EXISTS chaos_applied (n INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "stream TEXT, seq INTEGER, key TEXT, hash TEXT)")
        self.store = store
        self.conn = Connection(self.run.proxy_url, token=self.token, backoff=FAST, call_timeout=10, open_timeout=5)
        self.consumers = [StreamConsumer(self.conn, store, s, apply=self.apply, on_rebootstrap=self.rebootstrap,
                                         client_id=self.name, on_error=self.on_error, ack_delay=0.05)
                          for s in self.run.streams]
        await self.conn.connect()
        for c in self.consumers:
            await c.start()

    def apply(self, tx: sqlite3.Connection, e: SyncEvent) -> None:
        if "skip-apply" in self.run.plants and self.index == 0 and e.seq % 5 == 0:
            return  # the planted bug: the application forgets the event, the checkpoint still advances
        digest = sha(e.payload)
        tx.execute("INSERT INTO chaos_applied (stream, seq, key, hash) VALUES (?, ?, ?, ?)",
                   (e.stream_id, e.seq, e.idempotency_key, digest))
        tx.execute("INSERT OR REPLACE INTO chaos_view VALUES (?, ?, ?, ?)",
                   (e.stream_id, e.seq, e.idempotency_key, digest))

    def rebootstrap(self, tx: sqlite3.Connection, stale: Stale) -> None:
        self.run.history.rebootstraps.append(Rebootstrap(
            self.name, stale.stream_id, stale.reasons, stale.epoch, stale.floor_seq, stale.head_seq, stale.local_epoch,
            stale.local_watermark, stale.from_server))
        tx.execute("DELETE FROM chaos_view WHERE stream = ?", (stale.stream_id,))
        # a boundary in the applied log: what follows is a rehydration from the floor, not a re-apply
        tx.execute("INSERT INTO chaos_applied (stream, seq, key, hash) VALUES (?, ?, '', '')",
                   (stale.stream_id, REBOOTSTRAP))

    def on_error(self, exc: BaseException) -> None:
        self.run.history.client_errors.append(f"{self.name}: consumer failed: {exc!r}"[:300])

    async def stop(self) -> None:
        for c in self.consumers:
            await c.stop()
        if self.conn is not None:
            await self.conn.close()
        if self.store is not None:
            self.store.close()
        self.consumers, self.conn, self.store = [], None, None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def watermarks(self) -> dict[str, int]:
        return {c.stream_id: c.watermark for c in self.consumers}

    def persisted(self, stream: str) -> int:
        """The watermark in the store (while stopped: where the next start resumes)."""
        db = sqlite3.connect(self.path)
        try:
            row = db.execute("SELECT watermark FROM syncref_checkpoint WHERE stream_id = ?", (stream,)).fetchone()
            return int(row[0]) if row else 0
        finally:
            db.close()

    def read(self) -> tuple[list[Applied], dict[str, tuple[int, dict[int, tuple[str, str]]]]]:
        db = sqlite3.connect(self.path)
        try:
            applied = [Applied(self.name, s, q, k, h) for s, q, k, h in
                       db.execute("SELECT stream, seq, key, hash FROM chaos_applied ORDER BY n")]
            marks = dict(db.execute("SELECT stream_id, watermark FROM syncref_checkpoint").fetchall())
            views: dict[str, tuple[int, dict[int, tuple[str, str]]]] = {}
            for stream in self.run.streams:
                rows = db.execute("SELECT seq, key, hash FROM chaos_view WHERE stream = ?", (stream,)).fetchall()
                views[stream] = (int(marks.get(stream, 0)), {q: (k, h) for q, k, h in rows})
            return applied, views
        finally:
            db.close()


class ChaosRun:
    def __init__(self, seed: int, profile: Profile, workdir: Path, *, plant: str | None = None,
                 log: Any = None, progress: Progress | None = None) -> None:
        self.plants = tuple(filter(None, (plant or "").split(",")))
        for p in self.plants:
            if p not in PLANTS:
                raise ValueError(f"unknown plant {p!r}; known: {', '.join(PLANTS)}")
        self.seed, self.profile, self.workdir, self.plant = seed, profile, workdir, plant
        self.schedule = plan(seed, profile)
        self.streams = [f"chaos.s{i}" for i in range(profile.streams)]
        self.policy = chaos_policy(self.streams)
        self.history = History(retention={self.streams[-1]: RETAIN})
        self.admin: Connection | None = None
        self.resetting: tuple[str, list[tuple[SyncStream, SyncStream]]] | None = None
        self.relays: list[Relay] = []
        self.bridge: BridgeProcess | None = None
        self.bridge_pubkey = ""
        self.skipped: dict[str, str] = {}  # nemesis kind -> why it did not run
        self.catch_ups: set[asyncio.Task[None]] = set()
        self.relay_catch_ups: list[dict[str, object]] = []  # per relay outage: its backlog and how long it took
        self.counters = Counters()
        self.log = log
        self.data = workdir / "data"
        self.stall = workdir / "stall"
        self.server: ServerProcess | None = None
        self.proxy: ChaosProxy | None = None
        self.proxy_url = ""
        self.bar = progress

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.step(label)

    def say(self, text: str) -> None:
        if self.log is None:
            return
        if self.bar is not None:
            self.bar.note(text, self.log)
        else:
            print(text, file=self.log, flush=True)

    async def execute(self) -> dict[str, Any]:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "syncref.toml"
        config.write_text(f'[faults]\nstall_commits_while = "{self.stall}"\n'
                          f"[server]\ncompact_interval_s = {COMPACT_EVERY_S}\n", encoding="utf-8")
        auth = Authenticator(AuthConfig(), KeyStore.load_or_create(self.data))
        from reference.durability import LogStore

        store = LogStore.open(self.data)  # the data directory pins the run's policy (small retention)
        store.save_policy(self.policy)
        store.close_clean(store.last()[0])
        past = Authenticator(AuthConfig(), KeyStore.load_or_create(self.data), clock=lambda: time.time() - 7200)
        p = self.profile
        w_tokens = [auth.mint(subject=f"chaos-w{i}", scopes=WRITER_SCOPES, streams=("chaos.*",), ttl_s=None)
                    for i in range(p.writers)]
        s_tokens = [auth.mint(subject=f"chaos-sub{i}", scopes=SUB_SCOPES, streams=("chaos.*",), ttl_s=None)
                    for i in range(p.subscribers)]
        admin_token = auth.mint(subject="chaos-admin", scopes=SCOPES, streams=("*",), ttl_s=None)
        expired = past.mint(subject="chaos-expired", scopes=WRITER_SCOPES, streams=("chaos.*",), ttl_s=60)
        server = self.server = ServerProcess(self.data, free_port(), config, self.workdir / "server.log",
                                             tuple(p for p in self.plants if p in planted.SERVER))
        self.step("starting the server, the proxy and the subscribers")
        relays = asyncio.create_task(self.start_relays())  # they start while the server does
        await server.start()
        proxy = self.proxy = ChaosProxy(server.port, seed=self.seed)
        await proxy.start()
        self.proxy_url = f"http://127.0.0.1:{proxy.port}"
        await self.start_admin(server.url, admin_token)
        await relays
        bridge = asyncio.create_task(self.start_bridge(auth.mint(subject="chaos-bridge", scopes=BRIDGE_SCOPES,
                                                                 streams=("*",), ttl_s=None)))
        writers = [Writer(self, i, t) for i, t in enumerate(w_tokens)]
        subs = [Subscriber(self, i, t) for i, t in enumerate(s_tokens)]
        for s in subs:
            await s.start()
        await bridge
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.loop(stop)) for w in writers]
        self.say(f"chaos: seed {self.seed}, profile {p.name}, {len(self.schedule)} nemeses over {p.duration_s:.0f} s")
        t0 = time.monotonic()
        try:
            for i, nem in enumerate(self.schedule, 1):
                self.step(f"nemesis {i}/{len(self.schedule)} at {nem.at_s:.0f} s: {nem.kind} "
                          f"({server.kills} kills so far)")
                wait = nem.at_s - (time.monotonic() - t0)
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.nemesis(nem, subs, expired)
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
        finally:
            # --- heal ---
            with contextlib.suppress(FileNotFoundError):
                self.stall.unlink()
            proxy.clear()
            if not server.running:
                await server.start()
            for relay in self.relays:
                relay.thaw()
                if relay.process is None:
                    await relay.start()
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                self.history.client_errors.append(f"writer crashed: {r!r}"[:300])
        self.say(f"chaos: healing ({server.kills} kills so far)")
        self.step("healing: one more write per writer, every subscriber to every head")
        for w in writers:
            await self.progress(w)
        await self.drain_bridge()
        heads = await self.read_final(server.url, admin_token)
        await self.catch_up(subs, heads.heads)
        if self.bridge is not None:
            await self.bridge.stop()
        for relay in self.relays:
            relay.kill()
        if self.admin is not None:
            await self.admin.close()
        for s in subs:
            await s.stop()
        for w in writers:
            await w.conn.close()
        await proxy.stop()
        for s in subs:
            applied, views = s.read()
            self.history.applied.extend(applied)
            self.history.views[s.name] = views
        self.step("stopping the server, checking the histories and the commit log")
        code = await server.stop()
        anomalies = check(self.history, heads)
        findings = [a for a in anomalies if a.code in FINDINGS]
        anomalies = [a for a in anomalies if a.code not in FINDINGS]
        if code != 0:
            anomalies.append(Anomaly("client_error", f"the server did not stop cleanly (exit {code})"))
        from reference.replay import verify_log

        report = verify_log(self.data)
        if not report.ok:
            anomalies.append(Anomaly("verify_log", f"verify-log failed: {report.mismatch}"))
        return self.report(anomalies, findings, heads, report.records, time.monotonic() - started)

    async def nemesis(self, nem: Nemesis, subs: list[Subscriber], expired: str) -> None:
        server, proxy = self.server, self.proxy
        assert server is not None and proxy is not None
        self.counters.nemeses[nem.kind] += 1
        kind, prm = nem.kind, nem.params
        self.say(f"  {nem.at_s:7.2f} s  {kind} {prm if prm else ''}")
        if kind == "kill":
            await server.kill()
            await asyncio.sleep(prm["down_s"])
            await server.start()
        elif kind == "stall_kill":
            self.stall.write_text("stalled by the chaos run")
            await asyncio.sleep(prm["stall_s"])
            await server.kill()
            self.stall.unlink()
            await asyncio.sleep(prm["down_s"])
            await server.start()
        elif kind == "stall":
            self.stall.write_text("stalled by the chaos run")
            await asyncio.sleep(prm["stall_s"])
            self.stall.unlink()
        elif kind == "storm":
            proxy.cut()
        elif kind == "delay":
            proxy.delay(prm["delay_ms"] / 1000)
            await asyncio.sleep(prm["for_s"])
            proxy.clear()
        elif kind == "duplicate":
            proxy.duplicate()
            await asyncio.sleep(prm["for_s"] / 2)
            proxy.cut()  # the reconnects carry replayed frames
            await asyncio.sleep(prm["for_s"] / 2)
            proxy.clear()
        elif kind == "client_restart":
            self.counters.client_restarts += 1
            await subs[int(prm["client"])].restart()
        elif kind == "epoch_reset":
            await self.reset(self.streams[int(prm["stream"])])
        elif kind == "compaction":
            await self.overtake(subs[int(prm["client"])], prm["for_s"])
        elif kind == "relay_outage":
            if not self.relays:
                self.counters.nemeses[kind] -= 1
                self.say(f"           skipped: {self.skipped.get(kind, 'no relays')}")
                return
            relay = self.relays[int(prm["relay"])]
            healed = asyncio.Event()
            task = asyncio.create_task(self.catch_up_relay(relay.url, nem.at_s, healed))
            self.catch_ups.add(task)
            task.add_done_callback(self.catch_ups.discard)
            if prm["how"] == 0:
                relay.kill()
                relay.kills += 1
                await asyncio.sleep(prm["for_s"])
                await relay.start()
            else:
                relay.freeze()
                await asyncio.sleep(prm["for_s"])
                relay.thaw()
            healed.set()
        elif kind == "token_expiry":
            conn = Connection(self.proxy_url, token=expired, backoff=FAST, open_timeout=5)
            try:
                await asyncio.wait_for(conn.connect(), 20)
                refused = False
            except ConnectError as exc:
                refused = exc.status == 401
            except TimeoutError:
                refused = True  # never admitted (the server was unreachable through the whole window)
            finally:
                await conn.close()
            self.history.expired_tokens.append(refused)

    # --- the admin, the epoch resets and compaction -------------------------------------------------

    async def start_admin(self, url: str, token: str) -> None:
        """A direct connection (not through the proxy) that watches ``sync_stream`` and calls resets."""
        admin = self.admin = Connection(url, token=token, backoff=FAST, call_timeout=30, open_timeout=10)
        admin.cache["sync_stream"].on_update(self._stream_changed)
        await asyncio.wait_for(admin.connect(), 60)
        sub = admin.subscribe(["SELECT * FROM sync_stream", "SELECT * FROM bridge_outbox"])
        await asyncio.wait_for(admin.applied(sub, timeout=60), 90)

    def _stream_changed(self, old: object, new: object) -> None:
        if self.resetting is not None and isinstance(old, SyncStream) and isinstance(new, SyncStream):
            stream, seen = self.resetting
            if new.stream_id == stream:
                seen.append((old, new))

    def stream_row(self, stream: str) -> SyncStream | None:
        assert self.admin is not None
        for r in self.admin.cache.table("sync_stream"):
            if isinstance(r, SyncStream) and r.stream_id == stream:
                return r
        return None

    async def reset(self, stream: str) -> None:
        """``epoch_reset``: the admin resets ``stream``; the history records what its answer showed: the
        caller's own update of the stream row (old epoch and head, new epoch)."""
        assert self.admin is not None
        seen: list[tuple[SyncStream, SyncStream]] = []
        before = self.stream_row(stream)
        self.resetting = (stream, seen)
        try:
            await self.admin.call("reset_stream_epoch", stream)
        except ReducerError as exc:
            if before is None and exc.code == "invalid_argument":  # nothing appended to it yet: nothing to reset
                self.say(f"           {stream} does not exist yet: not reset")
                self.counters.nemeses["epoch_reset"] -= 1
                return
            self.history.client_errors.append(f"admin: reset of {stream} refused: {exc}"[:300])
            return
        except SdkError as exc:
            self.history.client_errors.append(f"admin: reset of {stream} not answered: {exc!r}"[:300])
            return
        finally:
            self.resetting = None
        found = reset_update(seen)
        if found is not None:
            old, new = found
            self.history.resets.append(Reset(stream, old.epoch, old.head_seq, new.epoch))
        elif before is not None:  # the answer changed nothing the admin can see
            self.history.resets.append(Reset(stream, before.epoch, before.head_seq, before.epoch))
        self.say(f"           {self.history.resets[-1] if self.history.resets else 'no answer'}")

    async def overtake(self, sub: Subscriber, for_s: float) -> None:
        """``compaction``: pause ``sub`` for at least ``for_s`` and until compaction of the small-retention
        stream has passed its watermark, then start it again; the history records what it must be told."""
        stream = self.streams[-1]
        await sub.stop()
        watermark = sub.persisted(stream)
        start = time.monotonic()
        floor = 0
        while True:
            row = self.stream_row(stream)
            floor = row.floor_seq if row is not None else 0
            waited = time.monotonic() - start
            if (waited >= for_s and floor - 1 > watermark) or waited > for_s + OVERTAKE_FOR_S:
                break
            await asyncio.sleep(0.05)
        if floor - 1 > watermark:
            self.counters.overtaken += 1
            self.history.overtaken.append(Overtaken(sub.name, stream, watermark, floor))
            self.say(f"           {sub.name} paused at {stream} watermark {watermark}, floor now {floor}")
        else:
            self.counters.not_overtaken += 1
            self.say(f"           {sub.name} paused at {stream} watermark {watermark}: the floor ({floor}) did not "
                     f"pass it within {for_s + OVERTAKE_FOR_S:g} s")
        await sub.start()

    # --- the bridge ------------------------------------------------------------------------------------

    async def start_relays(self) -> None:
        exe = relay_executable()
        if exe is None:
            self.skipped["relay_outage"] = ("the nostr-relay executable is not installed (pip install -e '.[dev]'): "
                                            "no bridge, relay_outage nemeses skipped")
            self.say(f"chaos: {self.skipped['relay_outage']}")
            return
        directory = self.workdir / "relays"
        self.relays = [Relay(directory, name, exe) for name in ("relay0", "relay1")]
        await asyncio.gather(*(relay.start() for relay in self.relays))

    async def start_bridge(self, token: str) -> None:
        if not self.relays:
            return
        from adapters.nostr.keys import create_key_file

        key_file = self.workdir / "bridge.key"
        self.bridge_pubkey = create_key_file(key_file).public_key_hex
        token_file = self.workdir / "bridge.token"
        token_file.write_text(token, encoding="utf-8")
        self.bridge = BridgeProcess(self.workdir, self.proxy_url, [r.url for r in self.relays], key_file, token_file,
                                    tuple(p for p in self.plants if p in planted.BRIDGE))
        await self.bridge.start()

    def missed(self, relay: str) -> set[str]:
        """The outbox rows already ``sent`` that ``relay`` does not have."""
        assert self.admin is not None
        return {r.outbox_id for r in self.admin.cache.table("bridge_outbox")
                if isinstance(r, BridgeOutbox) and r.status == "sent" and relay not in r.relays_acked}

    async def catch_up_relay(self, relay: str, at_s: float, healed: asyncio.Event) -> None:
        """A relay outage's backlog -- the rows marked ``sent`` without that relay from the outage's start
        until 3 s after its heal (a publish that timed out at the end is marked a little later) -- and how
        long after the heal the bridge had caught the relay up on all of them.  A figure for the report,
        never a pass/fail: the heal's drain check is the check."""
        backlog: set[str] = set()
        while not healed.is_set():
            backlog |= self.missed(relay)
            await asyncio.sleep(0.1)
        start, healed_at = time.monotonic(), time.time()
        left = backlog
        while time.monotonic() - start < BRIDGE_HEAL_S:
            if time.monotonic() - start < 3.0:
                backlog |= self.missed(relay)
            left = backlog & self.missed(relay)
            if not left and time.monotonic() - start >= 3.0:
                break
            await asyncio.sleep(0.1)
        caught = [r.updated_at for r in self.admin.cache.table("bridge_outbox")  # type: ignore[union-attr]
                  if isinstance(r, BridgeOutbox) and r.outbox_id in backlog and relay in r.relays_acked]
        last = max(caught, default=None)
        self.relay_catch_ups.append({"at_s": at_s, "relay": relay, "backlog": len(backlog), "caught_up": not left,
                                     "seconds_after_heal": None if last is None else round(last / 1e6 - healed_at, 2)})

    async def drain_bridge(self) -> None:
        """After the heal: wait until every acknowledged enqueue is ``sent`` to every relay (or give up)."""
        if self.bridge is None or self.admin is None:
            return
        for task in list(self.catch_ups):
            await task
        want = {w.key for w in self.history.writes if w.kind == "enqueue" and w.status == "ok"}
        relays = {r.url for r in self.relays}
        deadline = time.monotonic() + BRIDGE_HEAL_S
        pending = want
        while time.monotonic() < deadline:
            done = {r.outbox_id for r in self.admin.cache.table("bridge_outbox")
                    if isinstance(r, BridgeOutbox) and r.status == "sent" and set(r.relays_acked) >= relays}
            pending = want - done
            if not pending:
                break
            await asyncio.sleep(0.1)
        self.history.progress.append((f"bridge: backlog drained to every relay after the heal ({len(pending)} of "
                                      f"{len(want)} not: {sorted(pending)[:5]})", not pending))

    async def read_bridge(self, rows: list[BridgeOutbox]) -> BridgeFinal | None:
        if self.bridge is None:
            return None
        held: dict[str, list[tuple[str, str]]] = {}
        for relay in self.relays:
            events = await read_relay(relay.url, self.bridge_pubkey)
            held[relay.url] = [(str(e["id"]), str(e["content"])) for e in events]
        out = {r.outbox_id: OutboxRow(r.status, r.attempts, r.nostr_event_id, tuple(r.relays_acked), r.content,
                                      r.last_error) for r in rows}
        return BridgeFinal(tuple(r.url for r in self.relays), out, held, self.policy.bridge_max_attempts)

    async def progress(self, w: Writer) -> None:
        """After the heal: one more append and a presence upsert must be acknowledged."""
        ok = (await w.step_append_only()).status == "ok"
        self.history.progress.append((f"{w.name}: append after the heal {'acknowledged' if ok else 'not acknowledged'}",
                                      ok))
        ok = await w.presence("online")
        self.history.progress.append((f"{w.name}: presence after the heal", ok))

    async def read_final(self, url: str, token: str) -> FinalState:
        conn = Connection(url, token=token, backoff=FAST, call_timeout=30)
        try:
            await asyncio.wait_for(conn.connect(), 60)
            sub = conn.subscribe(["SELECT * FROM sync_stream", "SELECT * FROM sync_event",
                                  "SELECT * FROM compute_assignment", "SELECT * FROM bridge_outbox",
                                  "SELECT * FROM session_presence"])
            await asyncio.wait_for(conn.applied(sub, timeout=60), 90)
            cache = conn.cache
            events: dict[str, list[tuple[int, str, str]]] = {s: [] for s in self.streams}
            for r in cache.table("sync_event"):
                if isinstance(r, SyncEvent) and r.stream_id in events:
                    events[r.stream_id].append((r.seq, r.idempotency_key, sha(r.payload)))
            floors, heads = {}, {}
            for r in cache.table("sync_stream"):
                if isinstance(r, SyncStream) and r.stream_id in events:
                    floors[r.stream_id], heads[r.stream_id] = r.floor_seq, r.head_seq
            for s in self.streams:
                heads.setdefault(s, 0)
                floors.setdefault(s, 1)
            assignments = {r.request_id: sha(r.request) for r in cache.table("compute_assignment")
                           if isinstance(r, ComputeAssignment)}
            outbox = {r.outbox_id: sha(r.content) for r in cache.table("bridge_outbox") if isinstance(r, BridgeOutbox)}
            presence = {r.session_id: r.status for r in cache.table("session_presence")
                        if isinstance(r, SessionPresence)}
            bridge = await self.read_bridge([r for r in cache.table("bridge_outbox") if isinstance(r, BridgeOutbox)])
            return FinalState(events, floors, heads, assignments, outbox, presence, bridge)
        finally:
            await conn.close()

    async def catch_up(self, subs: list[Subscriber], heads: dict[str, int]) -> None:
        deadline = time.monotonic() + HEAL_FOR_S
        for s in subs:
            while any(s.watermarks().get(st, 0) < h for st, h in heads.items()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            reached = all(s.watermarks().get(st, 0) >= h for st, h in heads.items())
            self.history.progress.append((f"{s.name}: reached every head after the heal (watermarks "
                                          f"{s.watermarks()}, heads {heads})", reached))
            for c in s.consumers:
                await c.flush_acks()

    def report(self, anomalies: list[Anomaly], findings: list[Anomaly], final: FinalState, records: int,
               seconds: float) -> dict[str, Any]:
        server = self.server
        assert server is not None and self.proxy is not None
        writes = Counter(w.status for w in self.history.writes)
        kinds = Counter(w.kind for w in self.history.writes if w.status == "ok")
        return {
            "ok": not anomalies,
            "seed": self.seed,
            "profile": self.profile.name,
            "duration_s": self.profile.duration_s,
            "plant": self.plant,
            "replay": replay(self.seed, self.profile, self.plants),
            "seconds": round(seconds, 1),
            "schedule": [n.as_json() for n in self.schedule],
            "faults": dict(self.counters.nemeses),
            "sigkill_restarts": server.kills,
            "server_starts": server.starts,
            "restart_seconds_max": round(max(server.start_seconds), 2),
            "proxy": {"connections": self.proxy.accepted, "cut": self.proxy.cuts, "refused": self.proxy.refused,
                      "frames_duplicated": self.proxy.duplicated, "frames_replayed": self.proxy.replayed},
            "writes": {"ok": writes["ok"], "failed": writes["failed"], "unknown": writes["unknown"],
                       "ok_by_kind": dict(kinds), "call_attempts": self.counters.calls,
                       "retries": self.counters.retries},
            "events_final": sum(len(v) for v in final.events.values()),
            "events_applied": sum(1 for a in self.history.applied if a.seq != REBOOTSTRAP),
            "rebootstraps": len(self.history.rebootstraps),
            "rebootstraps_expected": dict(Counter(explained(self.history, r) or "unexpected"
                                                  for r in self.history.rebootstraps)),
            "resets": [dataclasses.asdict(r) for r in self.history.resets],
            "compaction": {"overtaken": self.counters.overtaken, "not_overtaken": self.counters.not_overtaken,
                           "retain_count": RETAIN, "stream": self.streams[-1]},
            "relays": {r.url: {"kills": r.kills, "freezes": r.freezes} for r in self.relays},
            "relay_catch_ups": self.relay_catch_ups,
            "bridge_events": (sum(1 for w in self.history.writes if w.kind == "enqueue" and w.status == "ok")
                              if self.bridge is not None else None),
            "skipped": dict(self.skipped),
            "log_records": records,
            "client_restarts": self.counters.client_restarts,
            "expired_tokens_refused": sum(self.history.expired_tokens),
            "anomalies": [a.as_json() for a in anomalies],
            "anomaly_counts": dict(Counter(a.code for a in anomalies)),
            "findings": [a.as_json() for a in findings],
        }


def run_chaos(seed: int, profile: Profile, workdir: Path, *, plant: str | None = None,
              log: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run one chaos run to the end; the report (``ok``, figures, anomalies).  ``progress`` (if given)
    gets one step per phase and per nemesis."""
    run = ChaosRun(seed, profile, workdir, plant=plant, log=log, progress=progress)
    try:
        return asyncio.run(run.execute())
    finally:
        if progress is not None:
            progress.finish()


def reset_update(seen: list[tuple[SyncStream, SyncStream]]) -> tuple[SyncStream, SyncStream] | None:
    """Among the updates of a stream row the admin saw while its ``reset_stream_epoch`` was in flight, the
    reset's own: the floor moves past the head, the head stays, the continuation chain is cleared.  Not
    just any epoch change: an admin that reconnects after a kill sees the unclean restart's bump as an
    update too (``continues_epoch`` set, floor kept), and compaction moves the floor to head - N + 1."""
    hits = [(o, n) for o, n in seen if n.floor_seq == o.head_seq + 1 and n.head_seq == o.head_seq
            and n.continues_epoch == 0]
    return hits[-1] if hits else None


def replay(seed: int, profile: Profile, plants: tuple[str, ...] = ()) -> str:
    """The command that replays ``seed``'s schedule under ``profile`` (with its plants)."""
    named = PROFILES.get(profile.name)
    out = f"syncref chaos --seed {seed}" + (" --quick" if profile.name == "quick" else "")
    if profile.name != "quick" or named is None or named.duration_s != profile.duration_s:
        out += f" --duration {profile.duration_s:g}"
    return out + "".join(f" --plant {p}" for p in plants)


def phases(seed: int, profile: Profile) -> int:
    """How many progress steps a run of ``seed`` under ``profile`` reports: start, each nemesis, heal, check."""
    return len(plan(seed, profile)) + 3


def default_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")
