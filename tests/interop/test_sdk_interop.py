"""The official npm ``spacetimedb`` SDK (2.10.1, pinned in package-lock.json) against ``syncref serve``.

One server per module (a temporary data directory, ``--port 0``).  Per run, the test mints two
tokens (the SDK client's and an appender's), appends seqs 1..5 over HTTP, then runs
``client.mjs`` (see its header for the scenario) and checks every observation it prints:

* connect: the SDK trades the token at ``/v1/identity/websocket-token``, opens
  ``/v1/database/autopilot-sync/subscribe`` with the subprotocol the server echoes, and is told
  the identity the token names;
* resume: through the SDK's typed query builder (quoted, parenthesized SQL), ``stream_id = S AND
  epoch = 1 AND seq > 2`` gives exactly seqs 3, 4, 5 in the snapshot, with the bytes the appender
  wrote; the same without the epoch is refused with ``invalid_query`` naming the resume form
  (ADR-0003); the stream row arrives through the typed query builder too;
* live tail: seqs 6, 7 appended over HTTP by another identity arrive as one TransactionUpdate each;
* reducers: an append from the SDK is seq 8 with ``ret_value`` u64 8; replaying it is a no-op
  success; the same key with another payload is rejected with ``idempotency_conflict: {...}``;
* event table: a ``stream_signal`` row is delivered once (as ``EventTable`` on the wire) and never
  cached;
* unsubscribe: the SDK drops exactly the rows it held; then a clean disconnect.

Two runs: gzip with the SDK's own subprotocol offer (v3 negotiated), and no compression with
only v2 offered.  The frame summaries (frame_tap.mjs) pin the wire shape the SDK does not check:
compression tags, the EventTable variant, one message per transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.server import ServedProcess, mint_cli, serve_process

INTEROP_DIR = Path(__file__).resolve().parent
DATABASE = "autopilot-sync"
WAIT_S = 25.0
HEX64 = re.compile(r"[0-9a-f]{64}")
HEX32 = re.compile(r"[0-9a-f]{32}")


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- the server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    with serve_process(tmp_path_factory.mktemp("interop-data"), wait_s=WAIT_S) as served:
        yield served


def mint(server: ServedProcess, subject: str) -> tuple[str, str]:
    """A token for ``subject`` with sync.subscribe,sync.append on demo.*, and the identity it names."""
    minted = mint_cli(server.data, "sync.subscribe,sync.append", "demo.*", "--ttl", "3600", "--subject", subject)
    assert HEX64.fullmatch(minted["identity"]), minted
    return minted["token"], minted["identity"]


def http_append(server: ServedProcess, token: str, stream: str, key: str, payload: str) -> None:
    body = json.dumps([stream, key, payload, {"none": []}, {"none": []}]).encode()
    req = urllib.request.Request(f"{server.url}/v1/database/{DATABASE}/call/append_sync_event", data=body,
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    except urllib.error.HTTPError as exc:
        pytest.fail(f"HTTP append {key} failed: {exc.code} {exc.read().decode(errors='replace')}")


# --- the node client --------------------------------------------------------------------------


class NodeClient:
    """``client.mjs`` as a subprocess: its JSON lines in a queue, commands on its stdin."""

    def __init__(self, node: str, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.proc = subprocess.Popen([node, "client.mjs"], cwd=INTEROP_DIR, env={**os.environ, **env},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def diagnostics(self) -> str:
        self._stderr.flush()
        tail = "\n".join(json.dumps(e) for e in self.events[-15:])
        return f"last events:\n{tail}\nnode stderr:\n{self.stderr_path.read_text()[-4000:]}"

    def until(self, event: str, **match: object) -> dict[str, Any]:
        """Collect events up to the first ``event`` matching ``match``; fail on an error event."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {event} {match} from the SDK client within {WAIT_S}s\n{self.diagnostics()}")
            if line is None:
                pytest.fail(f"client exited ({self.proc.wait()}) before {event} {match}\n{self.diagnostics()}")
            obs: dict[str, Any] = json.loads(line)
            self.events.append(obs)
            if obs["event"] == "error":
                pytest.fail(f"the SDK client reported an error: {line}\n{self.diagnostics()}")
            if obs["event"] == event and all(obs.get(k) == v for k, v in match.items()):
                return obs

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._stderr.close()

    def of(self, event: str, **match: object) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


def pad_payload(i: int) -> str:
    """Payloads big enough that a 3-row snapshot is over the 1 KiB compression threshold."""
    return canonical({"i": i, "pad": "p" * 400})


BY_IDENTITY = "<the database identity>"  # resolved with GET /v1/database/:name/identity, as the CLI does
RUNS = {
    "gzip-sdk-offer": {"SYNCREF_COMPRESSION": "gzip"},
    "none-v2-only": {"SYNCREF_COMPRESSION": "none", "SYNCREF_WS_PROTOCOLS": "v2.bsatn.spacetimedb"},
    # withDatabaseName(<identity hex>): SpacetimeDB's routes take a database's name or its identity
    "gzip-by-identity": {"SYNCREF_COMPRESSION": "gzip", "SYNCREF_DB": BY_IDENTITY},
}


def database_segment(server: ServedProcess, run: str) -> str:
    if RUNS[run].get("SYNCREF_DB") != BY_IDENTITY:
        return DATABASE
    with urllib.request.urlopen(f"{server.url}/v1/database/{DATABASE}/identity", timeout=10) as resp:
        ident: str = resp.read().decode()
    assert re.fullmatch(r"[0-9a-f]{64}", ident), ident
    return ident


@pytest.mark.parametrize("run", sorted(RUNS))
def test_official_sdk_scenario(node: str, server: ServedProcess, run: str, tmp_path: Path) -> None:
    stream = f"demo.interop.{run}"
    client_token, client_id = mint(server, f"sdk-client-{run}")
    appender_token, appender_id = mint(server, f"http-appender-{run}")
    assert client_id != appender_id
    payloads = {i: pad_payload(i) for i in range(1, 8)}
    for i in range(1, 6):
        http_append(server, appender_token, stream, f"k{i}", payloads[i])

    db = database_segment(server, run)
    env = {"SYNCREF_URL": server.url, "SYNCREF_TOKEN": client_token, "SYNCREF_STREAM": stream, **RUNS[run],
           "SYNCREF_DB": db}
    c = NodeClient(node, env, tmp_path / "node.stderr")
    try:
        c.until("ready", step="append_live")
        for i in (6, 7):
            http_append(server, appender_token, stream, f"k{i}", payloads[i])
        c.send("append_live")
        c.until("done")
    finally:
        code = c.close()
        (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in c.events))
    assert code == 0, c.diagnostics()
    check_observations(c, run, stream, client_id, appender_id, payloads, db)


def event_row(stream: str, seq: int, key: str, payload: str, producer: str) -> dict[str, object]:
    return {"stream_id": stream, "epoch": 1, "seq": seq, "idempotency_key": key, "payload_hash": sha(payload),
            "payload": payload, "producer": producer}


def without_server_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A sync_event row minus committed_at / tx_offset, which are the server's (checked for type)."""
    assert isinstance(row["committed_at"], int) and row["committed_at"] > 1_600_000_000_000_000
    assert isinstance(row["tx_offset"], int) and row["tx_offset"] >= 1
    return {k: v for k, v in row.items() if k not in ("committed_at", "tx_offset")}


def check_observations(c: NodeClient, run: str, stream: str, client_id: str, appender_id: str,
                       payloads: dict[int, str], db: str = DATABASE) -> None:
    # (a) connect: websocket-token exchange, then the subscribe route; the identity of the token.
    (req,) = c.of("ws_open_request")
    assert req["path"] == f"/v1/database/{db}/subscribe"
    assert req["params"]["token"] is True  # the short-lived token from /v1/identity/websocket-token
    assert req["params"]["compression"] == {"gzip": "Gzip", "none": "None"}[RUNS[run]["SYNCREF_COMPRESSION"]]
    offered = RUNS[run].get("SYNCREF_WS_PROTOCOLS", "v3.bsatn.spacetimedb,v2.bsatn.spacetimedb").split(",")
    assert req["protocols"] == offered
    (opened,) = c.of("ws_open")
    assert opened["protocol"] == offered[0]  # the server's preference: v3, else v2
    (connect,) = c.of("connect")
    assert connect["identity"] == client_id
    assert HEX32.fullmatch(connect["connection_id"]) and int(connect["connection_id"], 16) != 0
    assert connect["token_is_ours"] is True

    # (b) a resume without the epoch is refused, with the form to use; with it, exactly 3, 4, 5 in the
    # snapshot, as the appender wrote them.
    (refusal,) = c.of("refused", query_set="unpinned")
    assert "invalid_query" in refusal["message"] and "missing: epoch" in refusal["message"], refusal
    assert "SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W" in refusal["message"], refusal
    (resume,) = c.of("subscribe", query_set="events")
    assert resume["queries"] == [
        f'SELECT * FROM "sync_event" WHERE (("sync_event"."stream_id" = \'{stream}\') AND ("sync_event"."epoch" = 1))'
        f' AND ("sync_event"."seq" > 2)']
    inserts = c.of("insert", table="sync_event")
    snapshot = [e for e in inserts if e["phase"] == "SubscribeApplied"]
    assert [without_server_fields(e["row"]) for e in snapshot] == [
        event_row(stream, i, f"k{i}", payloads[i], appender_id) for i in (3, 4, 5)]
    applied = c.of("applied", query_set="events")
    assert len(applied) == 1 and applied[0]["sync_event_cache"] == [3, 4, 5]
    stream_rows = c.of("insert", table="sync_stream")
    assert len(stream_rows) == 1 and stream_rows[0]["phase"] == "SubscribeApplied"
    head = stream_rows[0]["row"]
    assert (head["stream_id"], head["epoch"], head["head_seq"], head["floor_seq"]) == (stream, 1, 5, 1)
    (typed,) = c.of("subscribe", query_set="stream")
    assert typed["queries"][0].startswith('SELECT * FROM "sync_stream" WHERE')

    # (c) live tail: 6 and 7 from the HTTP appender, one transaction each, in order.
    live = [e for e in inserts if e["phase"] == "Transaction"]
    assert [without_server_fields(e["row"]) for e in live] == [
        event_row(stream, i, f"k{i}", payloads[i], appender_id) for i in (6, 7)]
    assert [u["row"]["head_seq"] for u in c.of("update", table="sync_stream", phase="Transaction")] == [6, 7]

    # (d) reducer calls from the SDK.
    results = {r["call"]: r for r in c.of("reducer_result")}
    assert results["append"]["ok"] is True and results["append"]["cache_delta"] == 1
    mine = [e for e in inserts if e["phase"] == "Reducer"]
    assert len(mine) == 1
    assert without_server_fields(mine[0]["row"]) == event_row(stream, 8, "k-node-1", '{"n":1}', client_id)
    assert mine[0]["reducer"] == "append_sync_event" and mine[0]["outcome"] == "Ok"
    assert mine[0]["ret_seq"] == 8  # ReducerOk.ret_value is the BSATN u64 seq
    assert results["replay"]["ok"] is True and results["replay"]["cache_delta"] == 0  # dedupe: no write
    conflict = results["conflict"]
    assert conflict["ok"] is False and conflict["error_name"] == "SenderError", conflict
    assert conflict["error"].startswith("idempotency_conflict: "), conflict
    details = json.loads(conflict["error"].removeprefix("idempotency_conflict: "))
    assert details == {"existing_payload_hash": sha('{"n":1}'), "existing_seq": 8, "idempotency_key": "k-node-1",
                       "payload_hash": sha('{"n":2}'), "stream_id": stream}
    assert conflict["cache_delta"] == 0
    assert [u["row"]["head_seq"] for u in c.of("update", table="sync_stream", phase="Reducer")] == [8]
    assert [e["row"]["seq"] for e in inserts] == [3, 4, 5, 6, 7, 8]  # nothing duplicated, nothing else

    # (e) the event table: delivered once to the caller, never cached.
    assert c.of("applied", query_set="signals")
    assert results["signal"]["ok"] is True
    (signal_row,) = c.of("insert", table="stream_signal")
    assert signal_row["phase"] == "Reducer" and signal_row["reducer"] == "publish_stream_signal"
    row = signal_row["row"]
    assert isinstance(row.pop("at"), int)
    assert row == {"stream_id": stream, "kind": "typing", "payload": '{"x":1}', "sender": client_id}
    assert c.of("cache", table="stream_signal") == [{"event": "cache", "table": "stream_signal", "count": 0}]

    # (f) unsubscribe drops exactly the rows held; the stream subscription keeps its row; clean disconnect.
    (end,) = c.of("end", query_set="events")
    assert end["sync_event_count"] == 0 and end["sync_stream_count"] == 1
    assert sorted(e["row"]["seq"] for e in c.of("delete", table="sync_event")) == [3, 4, 5, 6, 7, 8]
    assert all(e["phase"] == "UnsubscribeApplied" for e in c.of("delete", table="sync_event"))
    assert c.of("cache", table="sync_event")[-1]["rows"] == []
    (gone,) = c.of("disconnect")
    assert gone["error"] is None

    check_frames(c, run)


def check_frames(c: NodeClient, run: str) -> None:
    """The wire shape, from frame_tap.mjs summaries of every inbound frame."""
    frames = c.of("frame")
    assert frames and all("parse_error" not in f for f in frames), [f for f in frames if "parse_error" in f]
    messages = [m for f in frames for m in f["messages"]]
    assert messages[0]["type"] == "InitialConnection"
    gzip = RUNS[run]["SYNCREF_COMPRESSION"] == "gzip"
    for f in frames:
        # Tag 0 is always legal; the requested algorithm is used only (and then always) over 1 KiB.
        expected_tag = 2 if gzip and f["body_size"] > 1024 else 0
        assert f["compression"] == expected_tag, f
    assert any(f["compression"] == 2 for f in frames) == gzip  # the 3-row snapshot is over 1 KiB
    if RUNS[run].get("SYNCREF_WS_PROTOCOLS", "").startswith("v2"):
        assert all(len(f["messages"]) == 1 for f in frames)  # v2: exactly one message per frame
    types = [m["type"] for m in messages]
    assert types.count("InitialConnection") == 1
    assert types.count("SubscriptionError") == 1  # the resume without an epoch, and nothing else
    assert types.count("SubscribeApplied") == 3 and types.count("UnsubscribeApplied") == 1
    assert types.count("TransactionUpdate") == 2  # one per live append, none for the caller's own reducers
    results = [m for m in messages if m["type"] == "ReducerResult"]
    assert [m["outcome"] for m in results] == ["Ok", "Ok", "Err", "Ok"]
    # event-table rows travel as EventTable, persistent ones as PersistentTable
    table_updates = [t for m in messages if m["type"] in ("TransactionUpdate", "ReducerResult")
                     for t in m.get("tables") or []]
    kinds = {(t["table"], t["kind"]) for t in table_updates}
    assert kinds == {("sync_event", "PersistentTable"), ("sync_stream", "PersistentTable"),
                     ("stream_signal", "EventTable")}, kinds
    assert [t["events"] for t in table_updates if t["kind"] == "EventTable"] == [1]
    # the dedupe replay wrote nothing, so its ReducerResult carries no rows
    assert results[1]["tables"] == []
    (unsub,) = [m for m in messages if m["type"] == "UnsubscribeApplied"]
    assert unsub["tables"] is not None and sum(t["rows"] for t in unsub["tables"]) == 6  # SendDroppedRows
