"""``GET /metrics`` during a workload: each delivery and durability metric moves as it should.

One server; the group-commit writer is held at a gate (its ``write_batch`` waits) to create a
durability lag and a lagging confirmed-read subscriber on demand, then released.  Each metric is
read from the scraped text (``prometheus_client``'s parser), and checked against what the
workload did: counts equal to the deliveries, sums equal to the records written or the events
replayed, gauges up while the writer is held and back to 0 after.  No timing is asserted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.failing_checkpoints import FailingCheckpoints
from support.server import ServerThread, WireClient, call_http, http, rows_of, running_server, with_limits

from adapters import bsatn, wire
from adapters.observe import CommitClock, FastHistogram
from reference import durability

S = "metrics.s1"
SUB = f"SELECT * FROM sync_event WHERE stream_id = '{S}'"


def scrape(st: ServerThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    res = http("GET", f"{st.base}/metrics")
    assert res.status == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(res.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Gate:
    """Holds the commit-log writer before each batch while closed."""

    def __init__(self, st: ServerThread) -> None:
        store = st.server._store
        assert store is not None
        self.open = threading.Event()
        self.open.set()
        original = store.write_batch

        def gated(records: Any) -> int:
            self.open.wait(30)
            return original(records)

        store.write_batch = gated  # type: ignore[method-assign]


@pytest.fixture
def st(tmp_path: Path) -> Iterator[ServerThread]:
    with running_server(tmp_path, limits=with_limits(max_outbound_queue=20)) as server:
        yield server


def append(st: ServerThread, token: str, key: str) -> Any:
    return call_http(st, token, "append_sync_event", [S, key, json.dumps({"k": key}), {"none": []}, {"none": []}])


def test_metrics_move_with_the_workload(st: ServerThread) -> None:
    tok = st.token()
    gate = Gate(st)
    before = scrape(st)
    assert value(before, "syncref_fanout_latency_seconds_count") == 0
    assert value(before, "syncref_subscriber_lag_max_offsets") == 0

    # --- fanout latency: one observation per delivered update ------------------------------------
    subs = [WireClient(st, tok) for _ in range(3)]
    for c in subs:
        assert isinstance(c.subscribe(1, SUB), wire.SubscribeApplied)
    for i in range(5):
        assert append(st, tok, f"k{i}").status == 200
    for c in subs:
        for _ in range(5):
            assert isinstance(c.recv(), wire.TransactionUpdate)
    after = scrape(st)
    assert value(after, "syncref_fanout_latency_seconds_count") == 15
    assert value(after, "syncref_fanout_latency_seconds_sum") > 0
    assert value(after, "syncref_fanout_latency_seconds_bucket", le="+Inf") == 15

    # --- group-commit batches: their sizes add up to the records written --------------------------
    durable = value(after, "syncref_durable_offset")
    assert durable >= 5
    assert value(after, "syncref_group_commit_batch_records_sum") == durable
    assert 1 <= value(after, "syncref_group_commit_batch_records_count") <= durable

    # --- durability lag and subscriber lag: up while the writer is held, 0 after ------------------
    gate.open.clear()
    done: list[int] = []
    writers = [threading.Thread(target=lambda i=i: done.append(append(st, tok, f"held{i}").status)) for i in range(3)]
    for w in writers:
        w.start()
    wait_for(lambda: value(scrape(st), "syncref_durability_lag_offsets") >= 1, "a durability lag")
    held = scrape(st)
    lags = {labels: v for (name, labels), v in held.items() if name == "syncref_subscriber_lag_offsets"}
    assert len(lags) == 3 and all(v >= 1 for v in lags.values()), lags  # confirmed reads: held back
    assert value(held, "syncref_subscriber_lag_max_offsets") >= 1
    gate.open.set()
    for w in writers:
        w.join(20)
    assert done == [200, 200, 200]
    for c in subs:
        for _ in range(3):
            assert isinstance(c.recv(), wire.TransactionUpdate)
    wait_for(lambda: value(scrape(st), "syncref_subscriber_lag_max_offsets") == 0, "lag back to 0")
    released = scrape(st)
    assert value(released, "syncref_durability_lag_offsets") == 0
    assert value(released, "syncref_fanout_latency_seconds_count") == 15 + 9

    # --- replay gap: a resume query replays head - watermark events ------------------------------
    resumer = WireClient(st, tok)
    epoch = st.call(lambda: st.server.engine.db.get("sync_stream", (S,)).epoch)
    resume = f"{SUB} AND epoch = {epoch}"
    assert isinstance(resumer.subscribe(1, f"{resume} AND seq > 5"), wire.SubscribeApplied)  # head is 8
    gap = scrape(st)
    assert value(gap, "syncref_replay_gap_events_count") == 1
    assert value(gap, "syncref_replay_gap_events_sum") == 3

    # --- stale cursors, by reason ------------------------------------------------------------------
    stale = resumer.subscribe(2, f"{resume} AND seq > 100")
    assert isinstance(stale, wire.SubscriptionError) and "cursor_ahead_of_head" in stale.error
    counted = scrape(st)
    assert value(counted, "syncref_stale_cursors_total", reason="cursor_ahead_of_head") == 1
    assert value(counted, "syncref_stale_cursors_total", reason="replay_budget_exceeded") == 0
    assert value(counted, "syncref_replay_gap_events_count") == 1  # a refused resume replays nothing
    # client messages by kind (plain integers in the server, exposed as the counter was): the
    # subscribers' 3 and the resumer's 2 subscribes; the appends went over HTTP
    assert value(counted, "syncref_client_messages_total", kind="Subscribe") == 5
    assert not any(name == "syncref_client_messages_total" and "CallReducer" in str(labels)
                   for name, labels in counted)

    # --- slow consumers: a confirmed reader whose queue passes max_outbound_queue (20) -------------
    assert value(counted, "syncref_slow_consumer_disconnects_total") == 0
    gate.open.clear()
    writers = [threading.Thread(target=lambda i=i: append(st, tok, f"slow{i}")) for i in range(25)]
    for w in writers:
        w.start()
    wait_for(lambda: value(scrape(st), "syncref_slow_consumer_disconnects_total") >= 1, "a slow consumer")
    gate.open.set()
    for w in writers:
        w.join(30)
    assert value(scrape(st), "syncref_slow_consumer_disconnects_total") == 4  # the 3 subscribers and the resumer

    # --- outbox backlog: pending rows ------------------------------------------------------------
    assert value(scrape(st), "syncref_bridge_outbox_pending") == 0
    assert call_http(st, tok, "enqueue_bridge_event", ["ob1", "src", 31990, "[]", "hello"]).status == 200
    assert call_http(st, tok, "enqueue_bridge_event", ["ob2", "src", 31990, "[]", "hello"]).status == 200
    assert value(scrape(st), "syncref_bridge_outbox_pending") == 2
    sent = call_http(st, tok, "mark_bridge_event_sent", ["ob1", "ab" * 32, ["wss://relay.example"]])
    assert sent.status == 200, sent.text
    assert value(scrape(st), "syncref_bridge_outbox_pending") == 1
    for c in (*subs, resumer):
        c.close()


def test_failed_wal_checkpoints_are_on_the_metrics_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer checkpoints the WAL itself (ADR-0029) and goes on when a checkpoint fails: the WAL
    then keeps growing, so an operator must see the failures -- counted as the checkpoints run."""
    monkeypatch.setattr(durability, "CHECKPOINT_BYTES", 1)  # every COMMIT crosses the threshold
    with running_server(tmp_path) as st:
        tok = st.token()
        assert append(st, tok, "k0").status == 200
        wait_for(lambda: value(scrape(st), "syncref_wal_checkpoints_total") >= 1, "a checkpoint")
        assert value(scrape(st), "syncref_wal_checkpoint_errors_total") == 0
        store = st.server._store
        assert store is not None
        store._conn = FailingCheckpoints(store._conn)  # type: ignore[assignment]
        for i in range(3):
            assert append(st, tok, f"k{i + 1}").status == 200
        wait_for(lambda: value(scrape(st), "syncref_wal_checkpoint_errors_total") >= 3, "the failed checkpoints")
        samples = scrape(st)
        assert value(samples, "syncref_wal_checkpoints_total") >= 4
        store._conn = store._conn._conn  # type: ignore[attr-defined]


def test_the_head_mark_and_its_failures_are_on_the_metrics_page(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The head mark (ADR-0039) is written on its own thread and a failure leaves only a log line: an
    operator must see that the mark keeps up with the durable offset, and when it cannot be written.
    Marks written and the offset the mark holds follow the appends; with the mark's write failing
    (a full disk, injected), the error counter rises while the offset stays where it was; once writes
    succeed again the mark catches up with the durable offset.  Failed before (review of ADR-0039):
    none of the three metrics existed (``mark_errors`` was only an attribute)."""
    with running_server(tmp_path) as st:
        store = st.server._store
        assert store is not None
        store.head_mark_s = 0.05
        tok = st.token()
        assert append(st, tok, "m0").status == 200
        durable = st.server.engine.durable
        wait_for(lambda: value(scrape(st), "syncref_head_mark_offset") == durable, "the mark at the durable head")
        samples = scrape(st)
        assert value(samples, "syncref_head_marks_total") >= 1
        assert value(samples, "syncref_head_mark_errors_total") == 0

        def full(directory: Path, mark: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(durability, "write_head_mark", full)
        for i in range(3):
            assert append(st, tok, f"m{i + 1}").status == 200
        wait_for(lambda: value(scrape(st), "syncref_head_mark_errors_total") >= 2, "the failed mark writes")
        samples = scrape(st)
        assert value(samples, "syncref_head_mark_offset") == durable  # the older mark stays
        assert st.server.engine.durable > durable
        monkeypatch.undo()
        later = st.server.engine.durable
        wait_for(lambda: value(scrape(st), "syncref_head_mark_offset") == later, "the mark caught up")


def test_fast_histogram_buckets_and_exposition() -> None:
    h = FastHistogram("h_test", "doc", (1, 2, 5))
    for v in (0.5, 1, 1.5, 2, 7, 5):
        h.observe(v)
    assert h.counts == [2, 2, 1, 1]  # <=1, (1,2], (2,5], +Inf
    (family,) = h.collect()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "h_test_bucket"}
    assert buckets == {"1.0": 2, "2.0": 4, "5.0": 5, "+Inf": 6}
    assert h.total == 17 and h.count == 6
    with pytest.raises(ValueError):
        FastHistogram("bad", "doc", (2, 1))


def test_commit_clock_ring() -> None:
    clock = CommitClock(size=4)
    assert clock.at(1) is None
    clock.stamp(2, 10.0)
    clock.stamp(3, 11.0)
    clock.stamp(3, 99.0)  # already stamped: unchanged
    assert (clock.at(1), clock.at(2), clock.at(3), clock.at(4)) == (10.0, 10.0, 11.0, None)
    clock.stamp(9, 12.0)  # past the ring: only the last 4 offsets are known
    assert clock.at(5) is None and clock.at(6) == 12.0 and clock.at(9) == 12.0


def test_a_lagging_v3_subscriber_gets_its_backlog_in_few_frames(st: ServerThread) -> None:
    """Ten updates held back (confirmed reads, the writer at the gate) go to a v3 subscriber in
    fewer frames than updates -- in order, none lost -- while a v2 subscriber gets one frame each."""
    tok = st.token()
    gate = Gate(st)
    v3 = WireClient(st, tok, version=3)
    v2 = WireClient(st, tok, version=2)
    for c in (v3, v2):
        assert isinstance(c.subscribe(1, SUB), wire.SubscribeApplied)
        c.frames.clear()
    gate.open.clear()
    writers = [threading.Thread(target=lambda i=i: append(st, tok, f"lag{i}")) for i in range(10)]
    for w in writers:
        w.start()
    wait_for(lambda: st.call(lambda: st.server.engine.committed) >= 10, "ten commits held back")
    gate.open.set()
    for w in writers:
        w.join(20)
    for c in (v3, v2):
        seqs = []
        for _ in range(10):
            update = c.recv()
            assert isinstance(update, wire.TransactionUpdate)
            (qs,) = update.query_sets
            (table,) = qs.tables
            seqs.extend(row.seq for row in wire_rows(table))
        assert seqs == list(range(1, 11))
    assert len(v2.frames) == 10
    assert len(v3.frames) < 10, len(v3.frames)
    v3.close()
    v2.close()


@pytest.mark.parametrize("n", [10, 70])
def test_a_lagging_v2_subscriber_gets_its_backlog_in_fewer_writes(tmp_path: Path, n: int) -> None:
    """``n`` updates held back (confirmed reads, the writer at the gate) reach a v2 subscriber as
    ``n`` frames, in order, none lost -- written in fewer transport writes than frames (a turn's
    frames share a write, ADR-0018), as ``syncref_socket_writes_total`` counts, and no write
    carries more than a turn's 64 frames."""
    # the default queue bound (70 held updates are no slow consumer); 70 calls of one connection ahead of the disk
    with running_server(tmp_path, limits=with_limits(max_undurable_per_connection=128)) as st:
        lagging_v2(st, n)


def lagging_v2(st: ServerThread, n: int) -> None:
    tok = st.token()
    gate = Gate(st)
    turns: list[int] = []
    plain_turn = st.server._turn

    def spy(s: Any) -> Any:
        result = plain_turn(s)
        if result is not None and result[0]:
            turns.append(len(result[0]))
        return result

    st.server._turn = spy  # type: ignore[method-assign]
    v2 = WireClient(st, tok, version=2)
    assert isinstance(v2.subscribe(1, SUB), wire.SubscribeApplied)
    v2.frames.clear()
    before = scrape(st)
    gate.open.clear()
    turns.clear()
    writer = WireClient(st, tok)  # pipelines its n calls: all committed while the gate holds them
    start = st.call(lambda: st.server.engine.committed)
    writer.send(*(wire.CallReducer(writer.rid(), 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", (S, f"w{i}", json.dumps({"k": i}), None, None))) for i in range(n)))
    wait_for(lambda: st.call(lambda: st.server.engine.committed) >= start + n, "commits held back")
    gate.open.set()
    seqs = []
    for _ in range(n):
        update = v2.recv()
        assert isinstance(update, wire.TransactionUpdate)
        seqs.extend(row.seq for row in wire_rows(update.query_sets[0].tables[0]))
    assert seqs == list(range(1, n + 1))
    assert len(v2.frames) == n
    for _ in range(n):
        assert isinstance(writer.recv(), wire.ReducerResult)
    after = scrape(st)
    frames = value(after, "syncref_frames_sent_total") - value(before, "syncref_frames_sent_total")
    writes = value(after, "syncref_socket_writes_total") - value(before, "syncref_socket_writes_total")
    assert frames == 2 * n and 2 <= writes < 2 * n, (frames, writes)  # the subscriber's n, the writer's n results
    assert sum(turns) == 2 * n and max(turns) <= 64, turns
    writer.close()
    assert value(after, "syncref_bytes_sent_total") - value(before, "syncref_bytes_sent_total") == sum(
        map(len, v2.frames + writer.frames[1:]))  # the first, its IdentityToken, is not counted (protocol.md)
    v2.close()


def wire_rows(table: wire.TableUpdate) -> list[Any]:
    rows: list[Any] = []
    for part in table.rows:
        assert isinstance(part, wire.PersistentTableRows)
        rows.extend(rows_of(table.table_name, part.inserts))
    return rows


@pytest.mark.parametrize("pad", [10, 200, 70_000])  # WebSocket payload lengths of 7, 16 and 64 bits
def test_frames_written_directly_decode_at_every_length(st: ServerThread, pad: int) -> None:
    """Updates written straight to the transport (the pump's direct path) are well-formed
    WebSocket frames whatever their length, byte-identical for every subscriber."""
    from adapters.server import ws_binary_frame

    for n in (0, 125, 126, 65535, 65536):  # the header's length forms at their boundaries
        frame = ws_binary_frame(b"x" * n)
        assert frame[0] == 0x82 and frame.endswith(b"x" * n)
        assert len(frame) - n == (2 if n < 126 else 4 if n < 65536 else 10)
    tok = st.token()
    subs = [WireClient(st, tok) for _ in range(3)]
    for c in subs:
        assert isinstance(c.subscribe(1, SUB), wire.SubscribeApplied)
        c.frames.clear()
    payload = json.dumps({"pad": "p" * pad})
    for i in range(3):
        assert call_http(st, tok, "append_sync_event", [S, f"d{i}", payload, {"none": []}, {"none": []}]).status == 200
    for c in subs:
        for i in range(3):
            update = c.recv()
            assert isinstance(update, wire.TransactionUpdate)
            (event,) = wire_rows(update.query_sets[0].tables[0])
            assert event.seq == i + 1 and json.loads(event.payload) == {"pad": "p" * pad}
    assert all(c.frames == subs[0].frames for c in subs)
    for c in subs:
        c.close()


def parse_ws_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """Unmasked server frames (RFC 6455 §5.2) from ``data``: the whole binary frames' payloads
    and the bytes of an incomplete last frame."""
    import struct
    out: list[bytes] = []
    while len(data) >= 2:
        assert data[0] == 0x82, f"not a final binary frame: {data[:2]!r}"
        n, head = data[1], 2
        if n == 126:
            if len(data) < 4:
                break
            n, head = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                break
            n, head = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < head + n:
            break
        out.append(data[head:head + n])
        data = data[head + n:]
    return out, data


N_SLOW = 100


def test_a_subscriber_that_reads_slowly_gets_its_backlog_in_order_through_its_sender(tmp_path: Path) -> None:
    """A v2 subscriber whose socket stops taking frames falls back to its sender task: the sender
    writes whole turns (several frames per transport write once a backlog built up), waits for the
    peer under ``send_timeout_s``, and every update arrives once, in order, when the peer reads."""
    from support.server import RawSocketClient

    with running_server(tmp_path) as st:
        turns: list[tuple[bool, int]] = []  # (written by the sender task?, frames) per turn
        plain_turn = st.server._turn

        def spy(s: Any) -> Any:
            result = plain_turn(s)
            if result is not None and result[0]:
                turns.append((s.busy, len(result[0])))
            return result

        st.server._turn = spy  # type: ignore[method-assign]
        slow = RawSocketClient(st, st.token(), rcvbuf=4096)  # reads nothing until the end
        slow.send(wire.Subscribe(1, 1, (SUB,)))
        tok = st.token()
        payload = json.dumps({"pad": "z" * 60_000})  # 6 MB in all: more than the kernel's buffers take
        for i in range(N_SLOW):
            assert call_http(st, tok, "append_sync_event", [S, f"slow{i}", payload, {"none": []},
                                                            {"none": []}]).status == 200
        seqs: list[int] = []
        rest = b""
        deadline = time.monotonic() + 60
        while len(seqs) < N_SLOW and time.monotonic() < deadline:
            try:
                chunk = slow.sock.recv(1 << 20)
            except TimeoutError:
                continue
            assert chunk, "the server closed the connection"
            frames, rest = parse_ws_frames(rest + chunk)
            for frame in frames:
                for msg in wire.decode_server_frame(frame, 2):
                    if isinstance(msg, wire.TransactionUpdate):
                        seqs.extend(row.seq for row in wire_rows(msg.query_sets[0].tables[0]))
        assert seqs == list(range(1, N_SLOW + 1))
        by_sender = [n for busy, n in turns if busy]
        assert by_sender, "the sender task never wrote: the socket took everything directly"
        assert max(by_sender) > 1, turns
        slow.close()


@pytest.mark.parametrize("held", [1, 10])
def test_v3_subscribers_of_the_same_updates_share_each_turns_frame(st: ServerThread, monkeypatch: Any,
                                                                    held: int) -> None:
    """Three v3 subscribers (gzip: every body here is over the compression threshold) get the
    same updates: each turn's frame is built and compressed once for all three (ADR-0018), and
    each subscriber decodes every update, in order -- one update per turn when they keep up, a
    coalesced backlog when ``held`` updates wait for durability together."""
    from adapters import server as server_module

    tok = st.token()
    gate = Gate(st)
    subs = [WireClient(st, tok, version=3, compression="Gzip") for _ in range(3)]
    for c in subs:
        assert isinstance(c.subscribe(1, SUB), wire.SubscribeApplied)
        c.frames.clear()
    framed: list[int] = []
    plain = wire.frame_server

    def counting(body: bytes, compression: wire.Compression) -> bytes:
        framed.append(len(body))
        return plain(body, compression)

    monkeypatch.setattr(server_module.wire, "frame_server", counting)
    payload = json.dumps({"pad": "q" * 3000})
    if held > 1:
        gate.open.clear()
    writers = [threading.Thread(target=lambda i=i: call_http(
        st, tok, "append_sync_event", [S, f"v3s{i}", payload, {"none": []}, {"none": []}])) for i in range(held)]
    for w in writers:
        w.start()
    if held > 1:
        wait_for(lambda: st.call(lambda: st.server.engine.committed) >= held, "updates held back")
        gate.open.set()
    for w in writers:
        w.join(20)
    for c in subs:
        seqs = []
        while len(seqs) < held:
            update = c.recv()
            assert isinstance(update, wire.TransactionUpdate)
            seqs.extend(row.seq for row in wire_rows(update.query_sets[0].tables[0]))
        assert sorted(seqs) == seqs and len(set(seqs)) == held
    assert subs[0].frames == subs[1].frames == subs[2].frames
    assert len(framed) == len(subs[0].frames), (framed, len(subs[0].frames))  # once per frame, not per receiver
    if held > 1:
        assert len(subs[0].frames) < held  # coalesced
    for c in subs:
        c.close()
