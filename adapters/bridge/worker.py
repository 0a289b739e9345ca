"""The bridge worker's I/O shell: the server connection, the relay pool, metrics, the CLI.

:class:`BridgeWorker` is a thin asyncio loop around :class:`adapters.bridge.core.BridgeCore`.  It
is an ordinary client of the server (the Python SDK's :class:`~adapters.sdk.Connection`, which
reconnects by itself): it subscribes to ``SELECT * FROM bridge_outbox`` and hands the cached rows
to the core on every change; it runs the core's actions -- a :class:`~adapters.bridge.core.Publish`
goes to the :class:`~adapters.nostr.pool.RelayPool` (which never blocks: each relay has its own
queue and backoff), a :class:`~adapters.bridge.core.Mark` or
:class:`~adapters.bridge.core.RecordFailure` becomes a reducer call -- and reports every result
back.  It sleeps until the core's next due time or the next change, at most ``TICK_S``.

With ``[mappings]`` switched on it also enqueues (``enqueue_bridge_event``) the mapped rows of
``provider_capability`` and ``compute_assignment`` (:mod:`adapters.bridge.mappings`).

Metrics (Prometheus text on ``--metrics-port``; its own registry):

* ``syncref_bridge_backlog`` -- outbox rows still to deliver somewhere (pending, or sent with a
  configured relay missing);
* ``syncref_bridge_oldest_due_seconds`` -- how long the oldest due row has been due (0 if none);
* ``syncref_bridge_dead_letters`` -- ``failed`` rows (dead letters) in the outbox;
* ``syncref_bridge_publish_latency_seconds{relay}`` -- from publish to the relay's ``OK`` (acks);
* ``syncref_bridge_relay_acks_total{relay}``, ``syncref_bridge_relay_failures_total{relay,outcome}``
  (outcome ``failed`` or ``rejected``);
* ``syncref_bridge_calls_total{reducer,result}`` -- mark/failure/enqueue calls and their results;
* ``syncref_bridge_relay_connected{relay}`` -- 1 while the relay's connection is open.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import prometheus_client as prom

from adapters.bridge.config import BridgeConfig, BridgeConfigError, load_bridge_config
from adapters.bridge.core import Action, BridgeCore, Mark, Publish, RecordFailure
from adapters.bridge.mappings import OutboxRequest, capability_request, receipt_request
from adapters.nostr.errors import KeyFileError
from adapters.nostr.keys import SigningKey, load_key_file
from adapters.nostr.pool import OutcomeStatus, RelayPool
from adapters.sdk.connection import Connection
from adapters.sdk.errors import ReducerError, SdkError, SubscriptionFailed
from adapters.sdk.rows import TableChange
from adapters.sdk.session import Subscription
from spec.values import BridgeOutbox, ComputeAssignment, ProviderCapability

__all__ = ["BridgeMetrics", "BridgeWorker", "add_parser", "main"]

log = logging.getLogger("syncref.bridge")

TICK_S = 1.0
PUBLISH_WAIT_S = 600.0  # every relay's outcome settles long before (the pool's timeouts); a safety net
TOKEN_ENV = "SYNCREF_BRIDGE_TOKEN"


class BridgeMetrics:
    def __init__(self, relays: tuple[str, ...]) -> None:
        self.registry = r = prom.CollectorRegistry()
        self.backlog = prom.Gauge("syncref_bridge_backlog", "Outbox rows still to deliver to some relay", registry=r)
        self.oldest_due = prom.Gauge("syncref_bridge_oldest_due_seconds", "Age of the oldest due pending row",
                                     registry=r)
        self.dead_letters = prom.Gauge("syncref_bridge_dead_letters", "Dead-lettered (failed) outbox rows",
                                       registry=r)
        self.latency = prom.Histogram("syncref_bridge_publish_latency_seconds", "Publish to OK, per relay",
                                      ["relay"], registry=r,
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.acks = prom.Counter("syncref_bridge_relay_acks", "Events a relay acknowledged", ["relay"], registry=r)
        self.failures = prom.Counter("syncref_bridge_relay_failures", "Publishes a relay failed or rejected",
                                     ["relay", "outcome"], registry=r)
        self.calls = prom.Counter("syncref_bridge_calls", "Reducer calls by result", ["reducer", "result"],
                                  registry=r)
        self.connected = prom.Gauge("syncref_bridge_relay_connected", "1 while connected to the relay", ["relay"],
                                    registry=r)
        for relay in relays:  # every series exists from the start (a scrape sees 0, not nothing)
            self.latency.labels(relay)
            self.acks.labels(relay)
            for outcome in ("failed", "rejected"):
                self.failures.labels(relay, outcome)
            self.connected.labels(relay).set(0)


class BridgeWorker:
    def __init__(self, config: BridgeConfig, key: SigningKey, token: str | None = None,
                 metrics: BridgeMetrics | None = None) -> None:
        self.config = config
        self.key = key
        self.token = token
        self.core = BridgeCore(config.relays, key, config.policy)
        self.metrics = metrics or BridgeMetrics(config.relays)
        self.pool = RelayPool(config.relays, config.pool)
        self.conn = Connection(config.url, config.database, token, on_disconnect=self._on_disconnect)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._enqueued: set[str] = set()

    # --- the loop ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.pool.start()
        try:
            self.conn.subscribe(["SELECT * FROM bridge_outbox"], on_applied=self._outbox_changed,
                                on_update=self._outbox_changed, on_error=self._subscription_failed)
            if self.config.mappings.provider_capability:
                self.conn.subscribe(["SELECT * FROM provider_capability"], on_applied=self._sources_changed,
                                    on_update=self._sources_changed, on_error=self._subscription_failed)
            if self.config.mappings.receipts:
                self.conn.subscribe(["SELECT * FROM compute_assignment"], on_applied=self._sources_changed,
                                    on_update=self._sources_changed, on_error=self._subscription_failed)
            await self.conn.connect()
            while not stop.is_set():
                now = _now_us()
                for action in self.core.poll(now):
                    self._spawn(self._run_action(action))
                self._refresh_gauges(now)
                due = self.core.next_due()
                timeout = TICK_S if due is None else min(TICK_S, max(0.0, (due - now) / 1e6))
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait([waiter, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.pool.close()
            await self.conn.close()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refresh_gauges(self, now: int) -> None:
        self.metrics.backlog.set(self.core.backlog())
        self.metrics.dead_letters.set(self.core.dead_letters())
        due = [now - r.next_attempt_at for r in self.core.rows.values()
               if r.status == "pending" and r.next_attempt_at <= now]
        self.metrics.oldest_due.set(max(due, default=0) / 1e6)
        for status in self.pool.status():
            self.metrics.connected.labels(status.relay).set(1 if status.connected else 0)

    # --- subscriptions -----------------------------------------------------------------------------

    def _outbox_changed(self, sub: Subscription, changes: tuple[TableChange, ...]) -> None:
        rows = [r for r in self.conn.cache["bridge_outbox"].rows() if isinstance(r, BridgeOutbox)]
        self.core.sync_rows(rows)
        self._wake.set()

    def _subscription_failed(self, sub: Subscription, error: SubscriptionFailed) -> None:
        """A refused subscription (e.g. a token without ``sync.subscribe``) would leave the worker idle
        with nothing said: one error line names it."""
        log.error("subscription refused, nothing will be mirrored until it is fixed: %s", error)

    def _sources_changed(self, sub: Subscription, changes: tuple[TableChange, ...]) -> None:
        requests: list[OutboxRequest] = []
        if self.config.mappings.provider_capability:
            requests += [capability_request(r) for r in self.conn.cache["provider_capability"].rows()
                         if isinstance(r, ProviderCapability)]
        if self.config.mappings.receipts:
            for r in self.conn.cache["compute_assignment"].rows():
                if isinstance(r, ComputeAssignment):
                    req = receipt_request(r, self.config.mappings)
                    if req is not None:
                        requests.append(req)
        for req in requests:
            if req.outbox_id not in self._enqueued and req.outbox_id not in self.core.rows:
                self._enqueued.add(req.outbox_id)
                self._spawn(self._enqueue(req))

    async def _enqueue(self, req: OutboxRequest) -> None:
        try:
            await self.conn.call("enqueue_bridge_event", *req.args())
            self.metrics.calls.labels("enqueue_bridge_event", "ok").inc()
        except ReducerError as exc:
            self.metrics.calls.labels("enqueue_bridge_event", exc.code or "error").inc()
            log.error("cannot enqueue %s: %s", req.outbox_id, exc)
        except SdkError as exc:
            self.metrics.calls.labels("enqueue_bridge_event", "call_failed").inc()
            log.warning("enqueue of %s did not complete (%s); will retry", req.outbox_id, exc)
            await asyncio.sleep(self.config.policy.call_retry_ms / 1000)
            self._enqueued.discard(req.outbox_id)
            self._wake.set()

    def _on_disconnect(self, info: Any) -> None:
        log.warning("server connection lost (%s); the SDK reconnects", info.reason or info.error or info.code)

    # --- actions -----------------------------------------------------------------------------------

    async def _run_action(self, action: Action) -> None:
        if isinstance(action, Publish):
            ticket = self.pool.publish(action.event, action.relays)
            result = await ticket.wait(PUBLISH_WAIT_S)
            for o in result.outcomes:
                if o.status is OutcomeStatus.ACKED:
                    self.metrics.acks.labels(o.relay).inc()
                    if o.latency is not None:
                        self.metrics.latency.labels(o.relay).observe(o.latency)
                elif o.status in (OutcomeStatus.FAILED, OutcomeStatus.REJECTED):
                    self.metrics.failures.labels(o.relay, o.status.value).inc()
            for follow in self.core.published(action.outbox_id, result.outcomes, _now_us()):
                await self._run_action(follow)
        elif isinstance(action, Mark):
            pause = self.config.pause_before_mark_while
            while pause is not None and pause.exists():  # testing only: hold between publish and mark
                await asyncio.sleep(0.05)
            await self._call(action.outbox_id, "mark_bridge_event_sent", action.outbox_id, action.event_id,
                             action.relays)
        elif isinstance(action, RecordFailure):
            log.warning("%s not delivered, retry in %.1fs: %s", action.outbox_id, action.retry_after_ms / 1000,
                        action.error)
            await self._call(action.outbox_id, "record_bridge_failure", action.outbox_id, action.error,
                             action.retry_after_ms)
        self._wake.set()

    async def _call(self, outbox_id: str, reducer: str, *args: object) -> None:
        code: str | None = None
        try:
            await self.conn.call(reducer, *args)
        except ReducerError as exc:
            code = exc.code or "reducer_error"
            log.error("%s(%s) refused: %s", reducer, outbox_id, exc)
        except SdkError as exc:
            code = "call_failed"
            log.warning("%s(%s) did not complete: %s", reducer, outbox_id, exc)
        self.metrics.calls.labels(reducer, code or "ok").inc()
        self.core.call_done(outbox_id, _now_us(), code)


def _now_us() -> int:
    return time.time_ns() // 1000


# --- the command line -------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    b = sub.add_parser("bridge", help="mirror the server's bridge_outbox to Nostr relays (docs/bridge.md)")
    b.add_argument("--url", default=None, help="the server's base URL (http://host:port)")
    b.add_argument("--database", default=None, help="database name (default autopilot-sync)")
    b.add_argument("--relay", action="append", default=None, metavar="WS_URL",
                   help="a relay (ws:// or wss://); repeat for several")
    b.add_argument("--key-file", default=None, metavar="FILE", help="the signing key (syncref nostr-key --create)")
    b.add_argument("--token-file", default=None, metavar="FILE",
                   help=f"a JWT with bridge.mark_sent (default: ${TOKEN_ENV}, else anonymous)")
    b.add_argument("--config", default=None, metavar="FILE", help="TOML config (see docs/bridge.md)")
    b.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics here (0: a free port)")


def _fail(message: str) -> int:
    print(f"syncref bridge: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """``syncref bridge``: one-line errors with exit status 2 for anything the operator can fix."""
    logging.basicConfig(level=logging.INFO, format="syncref bridge: %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        config = load_bridge_config(Path(args.config) if args.config else None, url=args.url,
                                    database=args.database, relays=args.relay, key_file=args.key_file,
                                    token_file=args.token_file, metrics_port=args.metrics_port)
    except BridgeConfigError as exc:
        return _fail(str(exc))
    try:
        key = load_key_file(config.key_file)
    except KeyFileError as exc:
        return _fail(str(exc))
    token = os.environ.get(TOKEN_ENV) or None
    if config.token_file is not None:
        try:
            token = config.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"token file {config.token_file}: cannot read it ({exc})")
    for reason in config.bad_relays:
        print(f"syncref bridge: {reason}", file=sys.stderr)
    return asyncio.run(_serve(config, key, token))


async def _serve(config: BridgeConfig, key: SigningKey, token: str | None) -> int:
    worker = BridgeWorker(config, key, token)
    httpd = None
    if config.metrics_port is not None:
        try:
            httpd, _thread = prom.start_http_server(config.metrics_port, config.metrics_host,
                                                    registry=worker.metrics.registry)
        except OSError as exc:
            return _fail(f"metrics port {config.metrics_port}: {exc.strerror}")
        print(f"syncref bridge metrics on http://{config.metrics_host}:{httpd.server_port}/metrics", flush=True)
    print(f"syncref bridge signing as {key.public_key_hex}, publishing to {', '.join(config.relays)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    except SdkError as exc:
        return _fail(f"server {config.url}: {exc}")
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
    return 0

