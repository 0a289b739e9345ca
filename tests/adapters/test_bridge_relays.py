"""``syncref bridge`` end to end: a real ``syncref serve``, real ``nostr-relay`` processes, the worker
as its own process.

* Delivery: a provider capability published through its reducer (mirrored by the worker's
  ``[mappings]``) and a receipt pointer enqueued through ``enqueue_bridge_event`` arrive on both
  relays; read back with a raw REQ and checked by the hand-written NIP-01 table and the pure-Python
  BIP-340 (:mod:`support.nostr_oracle`), the outbox rows end ``sent`` naming both relays and the
  same event ids; the metrics move (acks, latency, backlog back to 0).
* Isolation: the same append workload (reducer call latency, and a second client's subscription
  latency) while the worker publishes, with both relays healthy, with one SIGKILLed, and with a
  hanging relay in the worker's list: ratios of medians are printed (``-s``), never asserted; the
  healthy relay gets every event during the outage, the backlog drains when the relay returns,
  and each relay holds each event once, under the id the outbox recorded.
* Bad input: a relay URL that is not ws://, a relay that answers garbage -- one line each on
  stderr, the healthy relay still gets everything; a missing / malformed / world-readable key is
  one line and exit status 2.
* Dead letters: a worker whose only relay rejects everything dead-letters the rows after the
  server's ``bridge_max_attempts`` (5), and ``syncref_bridge_dead_letters`` counts them.
* Crash: SIGKILL the worker after the relays acknowledged and before ``mark_bridge_event_sent``
  (a testing-only fault hook holds the mark), restart it: the rows end ``sent``, each relay holds
  exactly one copy of each event, with the id and signature of the first publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import nostr_oracle
from support.nostr_relays import FakeRelay, RealRelay, raw_req, start_relays
from support.server import SYNCREF, ServedProcess, http, mint_cli, serve_process

from adapters.bridge.mappings import OutboxRequest, receipt_request
from adapters.cli import main as cli_main
from adapters.nostr.keys import create_key_file
from adapters.sdk.connection import Connection
from spec.values import ComputeAssignment

DB = "autopilot-sync"
SCOPES = ("bridge.enqueue,bridge.mark_sent,sync.append,sync.subscribe,provider.publish,compute.request,"
          "compute.assign,compute.execute")
FAST_CONFIG = """
[pool]
open_timeout = 1.0
ack_timeout = 10.0
backoff_base = 0.2
backoff_cap = 1.0
[policy]
min_retry_ms = 200
reject_retry_ms = {reject_retry_ms}
"""


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RealRelay]]:
    with start_relays(tmp_path_factory.mktemp("bridge-relays"), ("alpha", {}), ("beta", {})) as started:
        yield {r.name: r for r in started}


# --- helpers -----------------------------------------------------------------------------------------


def until(what: str, predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(step)


@dataclass
class Site:
    """A served database, a bridge token and a signing key."""

    served: ServedProcess
    token: str
    token_file: Path
    key_file: Path
    pubkey: str
    tmp: Path

    @property
    def url(self) -> str:
        return self.served.url

    def call(self, reducer: str, *args: Any) -> None:
        r = http("POST", f"{self.url}/v1/database/{DB}/call/{reducer}", json.dumps(list(args)),
                 {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        assert r.status == 200, (reducer, r.status, r.text)

    def outbox(self) -> dict[str, dict[str, Any]]:
        r = http("POST", f"{self.url}/v1/database/{DB}/sql", "SELECT * FROM bridge_outbox",
                 {"Authorization": f"Bearer {self.token}"})
        assert r.status == 200, r.text
        (answer,) = r.json()
        names = [e["name"]["some"] for e in answer["schema"]["elements"]]
        rows = {}
        for values in answer["rows"]:
            row = dict(zip(names, values, strict=True))
            rows[row["outbox_id"]] = row
        return rows

    def receipts(self, prefix: str, n: int) -> list[OutboxRequest]:
        out = []
        for i in range(n):
            a = ComputeAssignment(f"{prefix}-{i}", "00" * 32, 5050, "{}", "sha256:" + "ab" * 32, "gpu-1", None,
                                  "completed", f'{{"ok":true,"i":{i}}}', 4, 0, 0)
            req = receipt_request(a)
            assert req is not None
            out.append(req)
        return out

    def enqueue_receipts(self, prefix: str, n: int) -> list[str]:
        reqs = self.receipts(prefix, n)
        for req in reqs:
            self.call("enqueue_bridge_event", *req.args())
        return [r.outbox_id for r in reqs]


def _opt(value: Any) -> Any:
    """SATS JSON option ({"some": x} / {"none": []}) to a Python value."""
    if isinstance(value, dict) and "some" in value:
        return value["some"]
    if isinstance(value, dict) and "none" in value:
        return None
    return value


@contextlib.contextmanager
def site(tmp: Path, name: str) -> Iterator[Site]:
    data = tmp / f"{name}-data"
    with serve_process(data) as served:
        token = mint_cli(data, SCOPES, "*")["token"]
        token_file = tmp / f"{name}.token"
        token_file.write_text(token)
        key_file = tmp / f"{name}.key"
        key = create_key_file(key_file)
        yield Site(served, token, token_file, key_file, key.public_key_hex, tmp)


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[str]
    metrics_url: str
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        text = http("GET", self.metrics_url).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
            if m is None or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def bridge(s: Site, relay_urls: list[str], name: str, extra_config: str = "",
           reject_retry_ms: int = 1000) -> Iterator[BridgeProcess]:
    config = s.tmp / f"{name}.toml"
    config.write_text(FAST_CONFIG.format(reject_retry_ms=reject_retry_ms) + extra_config)
    log = s.tmp / f"{name}.log"
    args = [str(SYNCREF), "bridge", "--url", s.url, "--key-file", str(s.key_file), "--token-file", str(s.token_file),
            "--config", str(config), "--metrics-port", "0"]
    for url in relay_urls:
        args += ["--relay", url]
    with log.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    metrics_url = None
    deadline = time.monotonic() + 30
    while metrics_url is None and time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(queue.Empty):
            m = re.match(r"syncref bridge metrics on (http://\S+)", lines.get(timeout=0.2))
            metrics_url = m.group(1) if m else None
    if metrics_url is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"syncref bridge did not start: {log.read_text()}")
    b = BridgeProcess(proc, metrics_url, log)
    try:
        yield b
    finally:
        b.stop()


def on_relay(url: str, pubkey: str) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in raw_req(url, {"authors": [pubkey]})}


def all_sent(s: Site, ids: list[str], relays: list[str]) -> bool:
    rows = s.outbox()
    return all(rows.get(i, {}).get("status") == "sent" and set(relays) <= set(rows[i]["relays_acked"]) for i in ids)


def check_relay_copies(s: Site, relay: RealRelay, ids: list[str]) -> None:
    """The relay holds exactly one event per outbox row, under the recorded id, valid by the oracle."""
    rows = s.outbox()
    events = raw_req(relay.url, {"authors": [s.pubkey]})
    by_id: dict[str, int] = {}
    for e in events:
        by_id[e["id"]] = by_id.get(e["id"], 0) + 1
        assert nostr_oracle.event_is_valid(e), e
    for i in ids:
        eid = _opt(rows[i]["nostr_event_id"])
        assert by_id.get(eid) == 1, (relay.name, i, eid)


# --- delivery ----------------------------------------------------------------------------------------


def test_enqueued_events_reach_both_relays_verify_and_move_the_metrics(relays: dict[str, RealRelay],
                                                                       tmp_path: Path) -> None:
    alpha, beta = relays["alpha"], relays["beta"]
    with site(tmp_path, "deliver") as s, bridge(s, [alpha.url, beta.url], "deliver",
                                                "[mappings]\nprovider_capability = true\n") as b:
        assert b.metric("syncref_bridge_relay_acks_total") == 0
        s.call("publish_provider_capability", "gpu-1", '{"models":["llama-3-8b"],"name":"gpu-1"}', [5100, 5050],
               10, "active")
        receipts = s.enqueue_receipts("req", 2)
        ids = ["cap:gpu-1:1", *receipts]
        until("rows sent to both relays", lambda: all_sent(s, ids, [alpha.url, beta.url]))
        rows = s.outbox()
        for relay in (alpha, beta):
            check_relay_copies(s, relay, ids)
        cap = on_relay(alpha.url, s.pubkey)[_opt(rows["cap:gpu-1:1"]["nostr_event_id"])]
        assert cap["kind"] == 31990 and cap["tags"] == [["d", "gpu-1"], ["k", "5050"], ["k", "5100"]]
        assert json.loads(cap["content"]) == {"models": ["llama-3-8b"], "name": "gpu-1", "price_hint_sats": 10,
                                              "status": "active", "version": 1}
        receipt = on_relay(beta.url, s.pubkey)[_opt(rows[receipts[0]]["nostr_event_id"])]
        assert receipt["kind"] == 30078 and receipt["tags"] == [["d", "syncref:receipt:req-0"], ["t", "receipt"]]
        assert json.loads(receipt["content"])["result_hash"].startswith("sha256:")
        # the metrics moved: acks and latency per relay, backlog back to 0
        until("backlog 0", lambda: b.metric("syncref_bridge_backlog") == 0)
        for relay in (alpha, beta):
            # 3 events; more only if a slow OK timed out and the relay was caught up (duplicate:)
            assert b.metric("syncref_bridge_relay_acks_total", relay=relay.url) >= 3
            assert b.metric("syncref_bridge_publish_latency_seconds_count", relay=relay.url) >= 3
            assert b.metric("syncref_bridge_relay_connected", relay=relay.url) == 1
        assert b.metric("syncref_bridge_calls_total", reducer="mark_bridge_event_sent", result="ok") >= 3
        assert b.metric("syncref_bridge_calls_total", reducer="enqueue_bridge_event", result="ok") == 1
        assert b.metric("syncref_bridge_dead_letters") == 0
        assert b.stop() == 0


# --- isolation ---------------------------------------------------------------------------------------


class Workload:
    """Appends through the SDK; a second connection's subscription sees each one.  Latencies in s."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def run(self, stream: str, n: int, enqueue: list[OutboxRequest]) -> tuple[float, float]:
        """``n`` timed appends; the ``enqueue`` rows are enqueued (untimed) spread between them, so the
        worker publishes and marks while the appends run."""
        every = max(1, n // max(1, len(enqueue)))
        async def main() -> tuple[float, float]:
            seen: dict[int, float] = {}
            async with Connection(self.url, DB, self.token) as writer, Connection(self.url, DB, self.token) as reader:
                def on_update(sub: Any, changes: Any) -> None:
                    now = time.monotonic()
                    for change in changes:
                        for r in change.inserts:
                            seen.setdefault(r.row.seq, now)
                sub = reader.subscribe([f"SELECT * FROM sync_event WHERE stream_id = '{stream}'"],
                                       on_update=on_update)
                await reader.applied(sub, 10)
                calls, deliveries = [], []
                pending = list(enqueue)
                for i in range(n):
                    if pending and i % every == 0:
                        await writer.call("enqueue_bridge_event", *pending.pop(0).args())
                    t0 = time.monotonic()
                    seq = (await writer.call("append_sync_event", stream, f"k{i}", f'{{"i":{i}}}', None, None)).value
                    calls.append(time.monotonic() - t0)
                    async with asyncio.timeout(10):
                        while seq not in seen:
                            await asyncio.sleep(0.001)
                    deliveries.append(seen[seq] - t0)  # type: ignore[index]
                for req in pending:
                    await writer.call("enqueue_bridge_event", *req.args())
                return statistics.median(calls), statistics.median(deliveries)
        return asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HangingRelay:
    """A TCP server that accepts and never says a word (a WebSocket handshake can only time out)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        self.url = f"ws://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_dead_or_hanging_relay_costs_neither_reducers_nor_the_healthy_relay(relays: dict[str, RealRelay],
                                                                           tmp_path: Path) -> None:
    alpha, beta = relays["alpha"], relays["beta"]
    n_events, n_appends = 15, 40
    figures: dict[str, tuple[float, ...]] = {}

    def measure(phase: str, b: BridgeProcess, stream: str) -> list[str]:
        reqs = s.receipts(stream, n_events)
        cpu0 = cpu_seconds(b.proc.pid), cpu_seconds(s.served.proc.pid)
        call, sub = work.run(stream, n_appends, reqs)
        figures[phase] = (call, sub, cpu_seconds(b.proc.pid) - cpu0[0], cpu_seconds(s.served.proc.pid) - cpu0[1])
        return [r.outbox_id for r in reqs]

    with site(tmp_path, "iso") as s:
        work = Workload(s.url, s.token)
        with bridge(s, [alpha.url, beta.url], "iso") as b:
            healthy_ids = measure("both relays healthy", b, "bench.healthy")
            until("healthy phase delivered", lambda: all_sent(s, healthy_ids, [alpha.url, beta.url]))
            beta.kill()
            try:
                outage_ids = measure("beta SIGKILLed", b, "bench.outage")
                until("alpha has every event of the outage", lambda: all_sent(s, outage_ids, [alpha.url]))
                rows = s.outbox()
                assert all(beta.url not in rows[i]["relays_acked"] for i in outage_ids)
                assert b.metric("syncref_bridge_backlog") >= 1
                until("beta failures counted", lambda: b.metric("syncref_bridge_relay_failures_total",
                                                                relay=beta.url, outcome="failed") >= 1)
                assert b.metric("syncref_bridge_relay_failures_total", relay=alpha.url) == 0
            finally:
                beta.restart()
            until("the backlog drains when beta returns",
                  lambda: all_sent(s, outage_ids + healthy_ids, [alpha.url, beta.url]), timeout=60)
            until("backlog metric 0", lambda: b.metric("syncref_bridge_backlog") == 0)
            again_ids = measure("healthy again (beta back)", b, "bench.again")  # a 2nd baseline: drift, not outage
            until("delivered again", lambda: all_sent(s, again_ids, [alpha.url, beta.url]))
        for relay in (alpha, beta):
            check_relay_copies(s, relay, healthy_ids + outage_ids + again_ids)
        hanging = HangingRelay()
        try:
            with bridge(s, [alpha.url, hanging.url], "hang") as b:
                hang_ids = measure("a hanging relay in the list", b, "bench.hanging")
                until("alpha has every event despite the hanging relay", lambda: all_sent(s, hang_ids, [alpha.url]))
                until("hanging failures counted", lambda: b.metric("syncref_bridge_relay_failures_total",
                                                                   relay=hanging.url) >= 1)
                assert "no WebSocket handshake" in b.stderr() or "timed out" in b.stderr(), b.stderr()[-2000:]
        finally:
            hanging.close()
        check_relay_copies(s, alpha, hang_ids)
    base_call, base_sub = figures["both relays healthy"][:2]
    print(f"\nbridge isolation, {n_appends} appends per phase, {n_events} outbox rows enqueued among them "
          f"(median latency, ratio to the healthy phase; CPU seconds during the phase; load {os.getloadavg()[0]:.1f}):")
    for phase, (call, sub, worker_cpu, server_cpu) in figures.items():
        print(f"  {phase:<28} reducer call {call * 1000:7.2f} ms ({call / base_call:4.2f}x)   "
              f"subscription {sub * 1000:7.2f} ms ({sub / base_sub:4.2f}x)   "
              f"cpu: worker {worker_cpu:.2f} s, server {server_cpu:.2f} s")


# --- bad input, dead letters --------------------------------------------------------------------------


def test_bad_relays_get_one_line_each_and_the_healthy_relay_still_gets_everything(relays: dict[str, RealRelay],
                                                                                   tmp_path: Path) -> None:
    alpha = relays["alpha"]
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    garbage = asyncio.run_coroutine_threadsafe(FakeRelay("garbage").start(), loop).result(10)
    try:
        with site(tmp_path, "bad") as s, bridge(s, ["http://not-a-relay.test", garbage.url, alpha.url], "bad") as b:
            ids = s.enqueue_receipts("bad", 3)
            until("alpha has them", lambda: all_sent(s, ids, [alpha.url]))
            check_relay_copies(s, alpha, ids)
            until("garbage relay failure", lambda: b.metric("syncref_bridge_relay_failures_total",
                                                            relay=garbage.url) >= 1)
            err = b.stderr()
            refused = [line for line in err.splitlines() if "not-a-relay" in line]
            assert refused == ["syncref bridge: relay left out: relay URL 'http://not-a-relay.test' must start "
                               "with ws:// or wss://"], err
            garbage_lines = [line for line in err.splitlines() if garbage.url in line and "failed" in line]
            assert garbage_lines and all("Traceback" not in line for line in garbage_lines), err
    finally:
        asyncio.run_coroutine_threadsafe(garbage.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_a_relay_that_always_rejects_ends_in_dead_letters(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    rejecting = asyncio.run_coroutine_threadsafe(FakeRelay("reject").start(), loop).result(10)
    try:
        with site(tmp_path, "dead") as s, bridge(s, [rejecting.url], "dead", reject_retry_ms=200) as b:
            ids = s.enqueue_receipts("dead", 2)
            until("dead letters", lambda: all(r["status"] == "failed" for r in s.outbox().values()), timeout=60)
            rows = s.outbox()
            assert {rows[i]["attempts"] for i in ids} == {5}
            assert all("blocked: this test relay refuses everything" in _opt(rows[i]["last_error"]) for i in ids)
            until("dead-letter metric", lambda: b.metric("syncref_bridge_dead_letters") == 2)
            assert b.metric("syncref_bridge_relay_failures_total", relay=rejecting.url, outcome="rejected") >= 1
            assert b.metric("syncref_bridge_relay_failures_total", relay=rejecting.url) >= 10  # 5 attempts x 2 rows
            assert b.metric("syncref_bridge_calls_total", reducer="record_bridge_failure", result="ok") >= 10
    finally:
        asyncio.run_coroutine_threadsafe(rejecting.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "not found (create one with: syncref nostr-key --create"),
    ("malformed", "malformed: expected one line of 64 hex digits"),
    ("readable", "lets other users read the secret key"),
])
def test_key_problems_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str,
                                              message: str) -> None:
    key = tmp_path / "bridge.key"
    if setup == "malformed":
        key.write_text("nope\n")
        key.chmod(0o600)
    elif setup == "readable":
        create_key_file(key)
        key.chmod(0o644)
    status = cli_main(["bridge", "--url", "http://127.0.0.1:9", "--relay", "ws://127.0.0.1:9", "--key-file", str(key)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and message in err and err.startswith("syncref bridge: signing key file "), err


@pytest.mark.parametrize(("argv", "message"), [
    (["--relay", "http://x.test"], "no usable relay: relay left out: relay URL 'http://x.test' must start with ws://"),
    ([], "no relay: give --relay"),
    (["--relay", "ws://x.test", "--config", "/nonexistent/bridge.toml"], "cannot read it"),
    (["--relay", "ws://x.test", "--token-file", "/nonexistent/token"], "token file /nonexistent/token: cannot read"),
])
def test_config_problems_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                                 message: str) -> None:
    key = tmp_path / "k"
    create_key_file(key)
    status = cli_main(["bridge", "--url", "http://127.0.0.1:9", "--key-file", str(key), *argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err


def test_the_cli_runs_the_bridge_subcommand() -> None:
    """One subprocess run: the console script knows ``bridge`` (the tests above call it in-process)."""
    out = subprocess.run([str(SYNCREF), "bridge", "--url", "http://127.0.0.1:9", "--key-file", "/nonexistent/key",
                          "--relay", "ws://127.0.0.1:9"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and out.stderr.startswith("syncref bridge: signing key file /nonexistent/key: not found")


# --- crash between publish and mark ------------------------------------------------------------------


def test_sigkill_between_publish_and_mark_republishes_the_same_event(relays: dict[str, RealRelay],
                                                                    tmp_path: Path) -> None:
    alpha, beta = relays["alpha"], relays["beta"]
    hold = tmp_path / "hold-marks"
    hold.write_text("")
    fault = f'[faults]\npause_before_mark_while = "{hold}"\n'
    with site(tmp_path, "crash") as s:
        with bridge(s, [alpha.url, beta.url], "crash-1", fault) as first:
            ids = s.enqueue_receipts("crash", 3)
            until("both relays have the events", lambda: all(len(on_relay(r.url, s.pubkey)) == 3
                                                             for r in (alpha, beta)))
            rows = s.outbox()
            assert {rows[i]["status"] for i in ids} == {"pending"}  # published, not marked
            before = {r.name: on_relay(r.url, s.pubkey) for r in (alpha, beta)}
            first.kill()
        os.unlink(hold)
        with bridge(s, [alpha.url, beta.url], "crash-2") as second:
            until("rows sent after the restart", lambda: all_sent(s, ids, [alpha.url, beta.url]))
            for relay in (alpha, beta):
                check_relay_copies(s, relay, ids)
                assert on_relay(relay.url, s.pubkey) == before[relay.name]  # same ids, same signatures
            assert second.metric("syncref_bridge_relay_acks_total") >= 6  # both relays answered duplicate:
        recorded = {_opt(r["nostr_event_id"]) for r in s.outbox().values()}
        assert recorded == set(before["alpha"]) == set(before["beta"])
        assert hashlib.sha256(b"").hexdigest() not in recorded
