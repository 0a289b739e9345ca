"""The limits the hostile suite does not reach, each through the public surface of an in-process
server: the durability window and each connection's share of it (WebSocket and HTTP), round-robin
turns, inbound bytes, request body time, and the HTTP size caps."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.server import (
    RawSocketClient,
    ServerThread,
    WireClient,
    call_http,
    http,
    metric,
    rows_of,
    running_server,
    with_limits,
)
from websockets.exceptions import ConnectionClosed

from adapters import bsatn, wire
from spec.errors import SyncError
from spec.values import SyncEvent


@contextmanager
def writer_paused(st: ServerThread) -> Iterator[threading.Event]:
    """Hold every commit-log write until the event is set (durability stands still meanwhile)."""
    store = st.server._store
    assert store is not None
    release = threading.Event()
    real = store.write_batch

    def held(records: Any) -> int:
        release.wait(30)
        return real(records)

    st.call(lambda: setattr(store, "write_batch", held))
    try:
        yield release
    finally:
        release.set()
        st.call(lambda: setattr(store, "write_batch", real))


def offsets(st: ServerThread) -> tuple[int, int]:
    return st.call(lambda: (st.server.engine.committed, st.server.engine.durable))


def wait_for(cond: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def append(rid: int, stream: str, key: str) -> wire.CallReducer:
    return wire.CallReducer(rid, 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", (stream, key, "{}", None, None)))


def test_a_connection_holds_at_most_its_share_of_the_durability_window(tmp_path: Path) -> None:
    limits = with_limits(max_undurable=6, max_undurable_per_connection=2)
    with running_server(tmp_path, limits=limits) as st:
        greedy = WireClient(st, st.token(), version=3)
        other = WireClient(st, st.token())
        base, _ = offsets(st)
        with writer_paused(st) as release:
            greedy.send(*[append(i + 1, "greedy", f"g{i}") for i in range(5)])
            wait_for(lambda: offsets(st)[0] >= base + 2)
            time.sleep(0.3)
            assert offsets(st)[0] == base + 2  # its share; the other three wait their turn
            other.send(append(1, "other", "o1"))
            wait_for(lambda: offsets(st)[0] == base + 3)  # another connection still gets in
            third = WireClient(st, st.token(), version=3)
            third.send(*[append(i + 1, "third", f"t{i}") for i in range(5)])
            wait_for(lambda: offsets(st)[0] == base + 5)
            time.sleep(0.3)
            committed, durable = offsets(st)
            assert committed == base + 5 and durable == base  # 2 + 1 + 2: shares, under the window of 6
            release.set()
        for client, n in ((greedy, 5), (other, 1), (third, 5)):
            done = 0
            while done < n:
                msg = client.recv(30)
                if isinstance(msg, wire.ReducerResult):
                    assert isinstance(msg.outcome, wire.ReducerOk), msg.outcome
                    done += 1
            client.close()
        assert offsets(st)[0] == base + 11


def test_calls_wait_at_the_durability_bound(tmp_path: Path) -> None:
    limits = with_limits(max_undurable=3, max_undurable_per_connection=3)
    with running_server(tmp_path, limits=limits) as st:
        clients = [WireClient(st, st.token(), version=3) for _ in range(2)]
        base, _ = offsets(st)
        with writer_paused(st) as release:
            for k, c in enumerate(clients):
                c.send(*[append(i + 1, f"w{k}", f"k{i}") for i in range(3)])
            wait_for(lambda: offsets(st)[0] == base + 3)
            time.sleep(0.3)
            assert offsets(st) == (base + 3, base)  # at the bound: nobody commits more
            release.set()
        wait_for(lambda: offsets(st) == (base + 6, base + 6))
        for c in clients:
            c.close()


def test_http_calls_of_one_identity_share_the_window(tmp_path: Path) -> None:
    limits = with_limits(max_undurable_per_connection=2)
    with running_server(tmp_path, limits=limits) as st:
        tok, other = st.token(), st.token()
        base, _ = offsets(st)
        with writer_paused(st) as release, ThreadPoolExecutor(8) as pool:
            mine = [pool.submit(call_http, st, tok, "append_sync_event", [f"h{i}", "k", "{}", {"none": []},
                                                                           {"none": []}]) for i in range(4)]
            wait_for(lambda: offsets(st)[0] == base + 2)
            time.sleep(0.3)
            assert offsets(st)[0] == base + 2  # two run; two queue behind them
            theirs = pool.submit(call_http, st, other, "append_sync_event", ["x", "k", "{}", {"none": []},
                                                                             {"none": []}])
            wait_for(lambda: offsets(st)[0] == base + 3)  # another identity is not held up
            release.set()
            assert [f.result().status for f in mine] == [200] * 4 and theirs.result().status == 200
        assert offsets(st)[0] == base + 5


def test_connections_take_turns(tmp_path: Path) -> None:
    """A client that sends 200 calls at once does not go first with all of them: one sent just
    after is handled within a few turns (its event's tx_offset says how many came before it)."""
    with running_server(tmp_path) as st:
        flood = WireClient(st, st.token(), version=3)
        late = WireClient(st, st.token())
        base, _ = offsets(st)
        flood.send(*[append(i + 1, "flood", f"f{i}") for i in range(200)])
        late.send(append(1, "late", "l"))
        result = late.recv_until(wire.ReducerResult)
        assert isinstance(result.outcome, wire.ReducerOk)
        event = st.call(lambda: st.server.engine.db.logs["late"].events[0])
        assert isinstance(event, SyncEvent)
        print(f"[turns] the late call committed {event.tx_offset - base - 1} of the flood's 200 calls after it began")
        assert event.tx_offset - base <= 100
        done = 0
        while done < 200:
            done += isinstance(flood.recv(30), wire.ReducerResult)
        flood.close()
        late.close()


def test_inbound_bytes_are_bounded(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=with_limits(max_inbound_bytes=4096)) as st:
        fits = WireClient(st, st.token())
        fits.send(wire.OneOffQuery(1, "SELECT * FROM sync_stream WHERE stream_id = '" + "x" * 3000 + "'"))
        assert isinstance(fits.recv_until(wire.OneOffQueryResult), wire.OneOffQueryResult)
        over = WireClient(st, st.token())
        over.send(wire.OneOffQuery(1, "SELECT * FROM sync_stream WHERE stream_id = '" + "x" * 5000 + "'"))
        assert over.closed() == (1013, "too many requests")
        assert 'syncref_closes_total{cause="inbound_bytes"} 1.0' in http("GET", f"{st.base}/metrics").text
        fits.close()


def test_a_subscribe_of_too_many_texts_is_refused_before_they_are_decoded(tmp_path: Path) -> None:
    """A ``Subscribe`` with more query texts than ``max_queries_per_connection`` is refused by the
    wire decoder before any text is decoded: one frame of short texts built ~10x its size in
    ``str`` objects (a 32 MiB frame: ~300 MiB) before the engine counted them.  Up to
    ``wire.SKIP_MOST_QUERIES`` texts the answer is the engine's own (``limit_exceeded`` naming the
    bound and the count, the socket stays open), and since the texts are never decoded, invalid
    UTF-8 among them is not reported either (before: close 1011).  Declaring more is malformed
    (close 1011 naming both bounds) before a single length is read: stepping over 8.4M empty
    texts held the loop ~0.5-2 s.  Memory is measured with tracemalloc over that exchange, both
    sides of the socket in this process: what remains is the frame's own copies (client, socket
    buffers, server), not 100,000 strings (~12x the frame before)."""
    n = 1000
    frame = wire.encode_client(wire.Subscribe(7, 1, ("ab",) * n))
    with running_server(tmp_path, limits=with_limits(max_queries_per_connection=8)) as st:
        c = WireClient(st, st.token())
        c.ws.send(frame)
        answer = c.recv()
        assert isinstance(answer, wire.SubscriptionError) and (answer.request_id, answer.query_set_id) == (7, 1)
        err = SyncError.parse(answer.error)
        assert (err.code.value, err.details) == (
            "limit_exceeded", {"actual": n, "limit": "max_queries_per_connection", "max": 8})
        bad = frame[:-2] + b"\xff\xfe"  # the last text is not UTF-8
        c.ws.send(bad)
        again = c.recv()
        assert isinstance(again, wire.SubscriptionError) and again.error == answer.error
        assert isinstance(c.subscribe(1, "SELECT * FROM sync_stream"), wire.SubscribeApplied)  # still open
        c.close()
        v3 = WireClient(st, st.token(), version=3)  # in a v3 frame: the messages after it are read as ever
        v3.ws.send(bad + wire.encode_client(wire.OneOffQuery(9, "SELECT * FROM sync_stream")))
        first, second = v3.recv(), v3.recv()
        assert isinstance(first, wire.SubscriptionError) and first.error == answer.error
        assert isinstance(second, wire.OneOffQueryResult) and second.request_id == 9
        v3.close()
        many = 100_000
        huge = wire.encode_client(wire.Subscribe(7, 1, ("ab",) * many))
        h = WireClient(st, st.token())
        tracemalloc.start()
        try:
            h.ws.send(huge)
            with pytest.raises(ConnectionClosed) as closed:
                h.recv()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert closed.value.rcvd.reason.startswith(
            f"malformed message: a Subscribe of {many} query texts: over max_queries_per_connection (8) "
            f"and the {wire.SKIP_MOST_QUERIES} a decoder skips")
        assert peak < 6 * len(huge), f"peak {peak} bytes for a {len(huge)}-byte frame"
        assert isinstance(WireClient(st, st.token()).subscribe(1, "SELECT * FROM sync_stream"), wire.SubscribeApplied)


def test_request_bodies_have_a_deadline_and_a_size(tmp_path: Path) -> None:
    limits = with_limits(body_timeout_s=0.5, max_sql_bytes=1000, max_call_body_bytes=2000)
    with running_server(tmp_path, limits=limits) as st:
        tok = st.token()
        sock = socket.create_connection(("127.0.0.1", st.server.port), timeout=10)
        sock.sendall(f"POST /v1/database/autopilot-sync/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                     "Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nSELECT".encode())
        started = time.monotonic()
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"did not arrive within 0.5 s" in head or b"did not arrive within 0.5 s" in sock.recv(4096)
        assert time.monotonic() - started < 5
        sock.close()
        sql = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", "SELECT * FROM sync_stream WHERE "
                   + " AND ".join("stream_id = 'x'" for _ in range(80)), {"Authorization": f"Bearer {tok}"})
        assert sql.status == 413 and sql.text == "SQL text over 1000 bytes"
        body = json.dumps(["s", "k", json.dumps({"p": "x" * 3000}), {"none": []}, {"none": []}])
        call = call_http(st, tok, "append_sync_event", json.loads(body))
        assert call.status == 413  # aiohttp's client_max_size = max(max_call_body_bytes, max_sql_bytes)
        assert call_http(st, tok, "append_sync_event", ["s", "k", "{}", {"none": []}, {"none": []}]).status == 200


def test_a_call_body_over_max_call_body_bytes_is_refused_when_max_sql_bytes_is_larger(tmp_path: Path) -> None:
    """docs/protocol.md "Limits": ``max_call_body_bytes`` bounds a ``call`` body.  aiohttp's own cap is
    max(it, ``max_sql_bytes``), so with a larger SQL bound a call body between the two got past
    aiohttp; it is refused 413 all the same (and counted), and one within the bound is taken."""
    with running_server(tmp_path, limits=with_limits(max_call_body_bytes=2000, max_sql_bytes=8000)) as st:
        tok = st.token()
        over = call_http(st, tok, "append_sync_event", ["s", "k", json.dumps({"p": "x" * 3000}), {"none": []},
                                                        {"none": []}])
        assert (over.status, over.text) == (413, "call body over 2000 bytes")
        assert 'syncref_refused_total{limit="max_call_body_bytes"} 1.0' in http("GET", f"{st.base}/metrics").text
        assert call_http(st, tok, "append_sync_event", ["s", "k", "{}", {"none": []}, {"none": []}]).status == 200
        assert st.call(lambda: st.server.engine.committed) == 1  # the refused call wrote nothing


def test_sql_text_over_max_sql_bytes_is_counted_as_refused(tmp_path: Path) -> None:
    """docs/protocol.md "Metrics": ``syncref_refused_total{limit}`` counts ``max_sql_*`` refusals --
    the SQL text's size (413) among them, as the statements, rows and answer bytes are."""
    with running_server(tmp_path, limits=with_limits(max_sql_bytes=1000)) as st:
        tok = st.token()
        sql = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", "SELECT * FROM sync_stream WHERE "
                   + " AND ".join("stream_id = 'x'" for _ in range(80)), {"Authorization": f"Bearer {tok}"})
        assert sql.status == 413 and sql.text == "SQL text over 1000 bytes"
        assert 'syncref_refused_total{limit="max_sql_bytes"} 1.0' in http("GET", f"{st.base}/metrics").text


def test_procedure_answers_are_bounded_like_other_output(tmp_path: Path) -> None:
    """The answers to ``CallProcedure`` (made by the I/O layer, not queued in the engine) count
    against ``max_outbound_queue``: a client that sends calls and reads nothing is dropped as a
    slow consumer at the bound, not after ``send_timeout_s`` with every answer held meanwhile
    (each one echoed the procedure's name, so a 4 MiB frame of calls held 4 MiB of answers).  And
    an answer echoes at most ``PROCEDURE_NAME_ECHO`` characters of the name."""
    with running_server(tmp_path, limits=with_limits(max_outbound_queue=64, close_timeout_s=1.0)) as st:
        echo = WireClient(st, st.token())
        echo.send(wire.CallProcedure(7, 0, "p" * 100_000, b""))
        answer = echo.recv_until(wire.ProcedureResult)
        assert isinstance(answer.status, wire.ProcedureInternalError) and answer.request_id == 7
        text = answer.status.message
        assert text.startswith("no such procedure: ppp") and text.endswith("(this module defines none)")
        assert len(text) < 300, len(text)
        # a short name is echoed whole
        echo.send(wire.CallProcedure(8, 0, "mine", b""))
        assert echo.recv_until(wire.ProcedureResult).status.message == \
            "no such procedure: mine (this module defines none)"
        slow = RawSocketClient(st, st.token(), rcvbuf=4096)  # never reads
        # more answers than the kernel's buffers take (~190 bytes each), as masked frames (a zero key)
        frames = b"".join(b"\x82" + bytes((0x80 | len(p),)) + b"\0\0\0\0" + p for p in (
            wire.encode_client(wire.CallProcedure(i, 0, "q" * 100, b"")) for i in range(60_000)))
        with contextlib.suppress(OSError):
            slow.sock.sendall(frames)
        wait_for(lambda: metric(st.base, "syncref_slow_consumer_disconnects_total") == 1, 20)
        assert st.call(lambda: max((len(s.side) for s in st.server.sessions.values()), default=0)) <= 65
        echo.send(wire.CallProcedure(9, 0, "still", b""))  # a bystander is served
        assert echo.recv_until(wire.ProcedureResult).request_id == 9
        slow.close()
        echo.close()


def test_rows_examined_per_request_are_bounded_before_they_are_matched(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_scan_rows`` bounds the rows one request's queries examine, all together: a query whose
    rows are not pinned (no stream, no key) walks its whole table, and one ``Subscribe`` of 64 such
    queries, or a ``/sql`` of 64 such statements, walked it 64 times on the event loop (measured:
    ~8 s for everyone over a 30,000-event table, docs/performance.md "Loop holds per request at the
    limits").  The rows of each query are counted before any of them is matched, so a request
    over the bound is refused (``limit_exceeded``) having matched at most the bound's worth: the
    number of ``matches`` calls is the mechanism asserted, not a time."""
    from spec import query as q

    calls = [0]
    real = q.matches

    def counted(query: Any, row: Any) -> bool:
        calls[0] += 1
        return real(query, row)

    monkeypatch.setattr(q, "matches", counted)
    n = 30
    scan = "SELECT * FROM sync_event WHERE payload_hash = 'sha256:none'"
    with running_server(tmp_path, limits=with_limits(max_scan_rows=2 * n - 1)) as st:
        tok = st.token()
        c = WireClient(st, tok)
        for i in range(n):
            assert isinstance(c.call("append_sync_event", f"s{i}", "k", "{}", None, None).outcome, wire.ReducerOk)

        def refused(answer: str) -> None:
            err = SyncError.parse(answer)
            assert (err.code.value, err.details) == (
                "limit_exceeded", {"actual": 2 * n, "limit": "max_scan_rows", "max": 2 * n - 1})

        calls[0] = 0
        c.send(wire.OneOffQuery(1, scan))  # one walk of n rows: within the bound
        one = c.recv_until(wire.OneOffQueryResult)
        assert isinstance(one.result, wire.QueryRows) and calls[0] == n

        calls[0] = 0
        sub = c.subscribe(1, scan, scan.replace("none", "other"))  # two walks: over
        assert isinstance(sub, wire.SubscriptionError)
        refused(sub.error)
        assert calls[0] == 0  # every query's rows are taken (and counted) before any is matched (ADR-0041)

        assert isinstance(c.subscribe(2, scan), wire.SubscribeApplied)
        calls[0] = 0
        c.send(wire.Unsubscribe(9, 2, True))  # its dropped rows are one walk: within
        assert isinstance(c.recv_until(wire.UnsubscribeApplied), wire.UnsubscribeApplied) and calls[0] == n

        calls[0] = 0
        sql = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", f"{scan}; {scan}",
                   {"Authorization": f"Bearer {tok}"})
        assert sql.status == 400
        refused(sql.text)
        assert calls[0] == 0  # every statement's read is taken (and counted) before any row is matched (ADR-0038)
        assert 'syncref_refused_total{limit="max_scan_rows"} 1.0' in http("GET", f"{st.base}/metrics").text
        c.close()


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("limit", ["max_scan_rows", "max_outbound_message_bytes"])
def test_an_unsubscribe_whose_dropped_rows_are_over_a_bound_still_ends_the_set(tmp_path: Path, version: int,
                                                                               limit: str) -> None:
    """An ``Unsubscribe`` with ``SendDroppedRows`` (the official TypeScript SDK always asks) of a
    set that grew past ``max_scan_rows`` (or whose rows no longer fit one message) takes effect
    anyway, as in SpacetimeDB, which removes the set before it reads the rows: the answer is a
    ``SubscriptionError`` ``limit_exceeded`` for the rows, naming the set (which, by the message's
    contract, has ended: the client drops that set's rows itself), and no update for the set
    follows -- neither in a ``TransactionUpdate`` nor in the caller's own ``ReducerResult`` -- and
    its id is free again (a ``Subscribe`` reusing an active id would close the connection)."""
    n = 6
    body = "{\"p\":\"" + "x" * 300 + "\"}"  # each row ~400 encoded bytes: one fits 1500, six do not
    bound = {"max_scan_rows": n - 1, "max_outbound_message_bytes": 1500}[limit]
    late = "SELECT * FROM sync_event WHERE stream_id = 'late'"  # pinned: examines 'late's events only
    with running_server(tmp_path, limits=with_limits(**{limit: bound})) as st:
        c = WireClient(st, st.token(), version=version)
        writer = WireClient(st, st.token())
        assert isinstance(c.subscribe(1, "SELECT * FROM sync_event"), wire.SubscribeApplied)  # empty yet
        assert isinstance(c.subscribe(2, late), wire.SubscribeApplied)
        for i in range(n):
            assert isinstance(writer.call("append_sync_event", f"s{i}", "k", body, None, None).outcome,
                              wire.ReducerOk)
        got = 0
        while got < n:  # set 1 has followed every append: it holds n rows now
            got += sum(u.query_set_id == 1 for u in c.recv_until(wire.TransactionUpdate).query_sets)
        rid = c.rid()
        c.send(wire.Unsubscribe(rid, 1, True))
        err = c.recv()
        assert isinstance(err, wire.SubscriptionError) and (err.request_id, err.query_set_id) == (rid, 1)
        parsed = SyncError.parse(err.error)
        assert (parsed.code.value, parsed.details["limit"], parsed.details["max"]) == ("limit_exceeded", limit, bound)

        # a write both sets match: another client's reaches set 2 alone, the caller's own too
        assert isinstance(writer.call("append_sync_event", "late", "k", "{}", None, None).outcome, wire.ReducerOk)
        update = c.recv()
        assert isinstance(update, wire.TransactionUpdate)
        assert [u.query_set_id for u in update.query_sets] == [2]
        own = c.call("append_sync_event", "late", "k2", "{}", None, None)
        assert isinstance(own.outcome, wire.ReducerOk)
        assert [u.query_set_id for u in own.outcome.transaction_update.query_sets] == [2]
        assert not c.other  # nothing else arrived meanwhile
        again = c.subscribe(1, late)  # the id is free: reusing an active one closes the connection (1011)
        assert isinstance(again, wire.SubscribeApplied) and again.query_set_id == 1
        c.close()
        writer.close()


def test_array_arguments_are_bounded_before_their_items_are_read(tmp_path: Path) -> None:
    """``max_arg_items`` bounds the items of one array argument (``nip90_kinds``, ``relays``) on
    both call paths: 1 MiB of arguments is 262,144 ``u32`` items, each decoded, type-checked and
    range-checked on the event loop (measured: ~0.2-0.45 s for everyone, docs/performance.md "Loop
    holds per request at the limits").  The count is checked before any item is read: an array over
    the bound whose items are also out of range is answered ``limit_exceeded``, not the reducer's
    ``invalid_argument`` about an item (which is what reading the items gave before)."""
    kinds = (5000, 5001, 1, 5003, 5004)  # 1 is out of range: reading the items would say so
    with running_server(tmp_path, limits=with_limits(max_arg_items=4)) as st:
        tok = st.token()
        c = WireClient(st, tok)
        over = c.call("publish_provider_capability", "p1", '{"a":1}', kinds, 1, "active").outcome
        assert isinstance(over, wire.ReducerErr)
        err = SyncError.parse(over.error[4:].decode())
        assert (err.code.value, err.details) == (
            "limit_exceeded", {"actual": 5, "limit": "max_arg_items", "max": 4})
        fits = c.call("publish_provider_capability", "p1", '{"a":1}', kinds[:4], 1, "active").outcome
        assert isinstance(fits, wire.ReducerErr) and b"each kind must be 5000-5999" in fits.error  # read: within
        relays = tuple(f"wss://r{i}" for i in range(5))
        sent = c.call("mark_bridge_event_sent", "o1", "e" * 64, relays).outcome
        assert isinstance(sent, wire.ReducerErr) and b'"limit":"max_arg_items"' in sent.error
        http_over = call_http(st, tok, "publish_provider_capability", ["p1", '{"a":1}', list(kinds), 1, "active"])
        assert http_over.status == 400
        err = SyncError.parse(http_over.text)
        assert (err.code.value, err.details) == (
            "limit_exceeded", {"actual": 5, "limit": "max_arg_items", "max": 4})
        by_name = http("POST", f"{st.base}/v1/database/autopilot-sync/call/publish_provider_capability",
                       json.dumps({"provider_id": "p1", "capability_json": '{"a":1}', "nip90_kinds": list(kinds),
                                   "price_hint_sats": 1, "status": "active"}),
                       {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        assert by_name.status == 400
        err = SyncError.parse(by_name.text)  # the arguments by name are bounded the same way
        assert (err.code.value, err.details) == (
            "limit_exceeded", {"actual": 5, "limit": "max_arg_items", "max": 4})
        c.close()


@pytest.mark.parametrize("compression", ["Gzip", "Brotli"])
def test_a_large_body_is_compressed_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       compression: str) -> None:
    """A message body over 1 MiB (kept as parts: a snapshot, dropped rows, a one-off answer, a large
    update) is compressed in a worker thread, not on the event loop: gzip level 1 of a 30 MiB
    snapshot held the loop ~0.8 s for everyone, brotli ~0.24 s (docs/performance.md "Loop holds
    per request at the limits"); zlib and brotli release the interpreter lock while they work.
    The mechanism asserted: which thread ran the compressor for the large body, and that the
    frame is whole and in order (the answer after it arrives after it)."""
    import threading

    seen: list[tuple[int, str]] = []
    real = wire._compress

    def recorded(body: bytes, how: wire.Compression) -> bytes:
        seen.append((len(body), threading.current_thread().name))
        return real(body, how)

    monkeypatch.setattr(wire, "_compress", recorded)
    payload = json.dumps("y" * (200 * 1024))
    with running_server(tmp_path) as st:
        c = WireClient(st, st.token(), compression=compression)
        for i in range(8):  # ~1.6 MiB of events: a snapshot body over 1 MiB
            assert isinstance(c.call("append_sync_event", "big", f"k{i}", payload, None, None).outcome, wire.ReducerOk)
        seen.clear()
        c.send(wire.Subscribe(7, 1, ("SELECT * FROM sync_event WHERE stream_id = 'big'",)),
               wire.OneOffQuery(8, "SELECT * FROM sync_stream WHERE stream_id = 'big'"))
        applied = c.recv_until(wire.SubscribeApplied)
        assert [len(rows_of("sync_event", t.rows)) for t in applied.rows.tables] == [8]
        after = c.recv()
        assert isinstance(after, wire.OneOffQueryResult) and after.request_id == 8
        large = [name for n, name in seen if n > 1024 * 1024]
        assert large and st._thread.name not in large, seen
        c.close()


@pytest.mark.parametrize("version", [2, 3])
def test_a_turn_ends_after_a_read_that_examined_many_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          version: int) -> None:
    """A connection's turn (``max_batch_per_turn`` messages) ends early once its reads have examined
    ``SCAN_TURN_ROWS`` rows: four one-off queries of 30,000 rows each held the loop four times as
    long as one before anyone else had a turn (a one-off of 30,000 rows: 0.16-0.47 s here).  The
    mechanism asserted: two connections whose heavy queries are all waiting at once are served
    alternately, one heavy query each per turn (before: all four of one, then all four of the other)."""
    from adapters import server as srv

    monkeypatch.setattr(srv, "SCAN_TURN_ROWS", 10)
    order: list[int] = []
    with running_server(tmp_path) as st:
        c = WireClient(st, st.token(), version=version)
        for i in range(12):
            assert isinstance(c.call("append_sync_event", f"s{i}", "k", "{}", None, None).outcome, wire.ReducerOk)
        a, b = WireClient(st, st.token(), version=version), WireClient(st, st.token(), version=version)
        ids = {st.call(lambda: max(st.server.sessions)) - 1: "a", st.call(lambda: max(st.server.sessions)): "b"}
        real = st.server._dispatch

        def recorded(s: Any, msg: Any) -> None:
            if isinstance(msg, wire.OneOffQuery):
                order.append(s.conn_id)
            real(s, msg)

        st.server._dispatch = recorded  # type: ignore[method-assign]
        scan = "SELECT * FROM sync_event WHERE payload_hash = 'sha256:none'"
        released = threading.Event()
        blocked = threading.Thread(target=lambda: st.call(lambda: released.wait(10)))
        blocked.start()  # the loop is held while both clients' queries arrive: all are waiting at once
        time.sleep(0.2)
        for client in (a, b):
            client.send(*(wire.OneOffQuery(i, scan) for i in range(4)))
        time.sleep(0.5)  # (sequencing, not a timing assertion: the frames reach the server's socket)
        released.set()
        blocked.join()
        for client in (a, b):
            for _ in range(4):
                assert isinstance(client.recv_until(wire.OneOffQueryResult), wire.OneOffQueryResult)
        names = "".join(ids[x] for x in order)
        assert names in ("abababab", "babababa"), names
        a.close()
        b.close()
        c.close()


def _trace_one_offs(st: Any, events: list[str]) -> Callable[[], None]:
    """Record on ``events``, in loop order: ``dN`` when OneOffQuery N is dispatched, ``eN`` when its
    answer is encoded, and ``t`` once per loop iteration (a ``call_later(0)`` chain, each link
    ready at the next iteration).  Returns the function that ends the chain."""
    server = st.server
    real_dispatch, real_encode = server._dispatch, server._encode

    def dispatch(s: Any, msg: Any) -> None:
        if isinstance(msg, wire.OneOffQuery):
            events.append(f"d{msg.request_id}")
        real_dispatch(s, msg)

    def encode(s: Any, message: Any) -> Any:
        if type(message).__name__ == "OneOffQueryResult":
            events.append(f"e{message.request_id}")
        return real_encode(s, message)

    running = [True]

    def tick() -> None:
        if running[0]:
            events.append("t")
            st.loop.call_later(0, tick)

    server._dispatch = dispatch
    server._encode = encode
    st.loop.call_soon_threadsafe(tick)
    return lambda: running.__setitem__(0, False)


@pytest.mark.parametrize("version", [2, 3])
def test_after_a_heavy_read_timers_and_input_run_before_the_next_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       version: int) -> None:
    """asyncio runs, in each loop iteration, the callbacks scheduled during the previous one before
    that iteration's input and timers: a processor that ended its turn after a heavy read (and
    scheduled the delivery of its answer) came back in the same iteration as that delivery, so the
    answer's encoding and the next read's evaluation held the loop together (up to ~2x one read).
    After a heavy read it yields twice (the processor, and the reader's direct path: v2).  The
    mechanism asserted: a timer chain on the loop fires between the encoding of one heavy answer and
    the evaluation of the next read."""
    from adapters import server as srv

    monkeypatch.setattr(srv, "SCAN_TURN_ROWS", 10)
    events: list[str] = []
    with running_server(tmp_path) as st:
        c = WireClient(st, st.token(), version=version)
        for i in range(12):
            assert isinstance(c.call("append_sync_event", f"s{i}", "k", "{}", None, None).outcome, wire.ReducerOk)
        scan = "SELECT * FROM sync_event WHERE payload_hash = 'sha256:none'"
        stop = _trace_one_offs(st, events)
        c.send(*(wire.OneOffQuery(i, scan) for i in (1, 2)))
        for _ in range(2):
            assert isinstance(c.recv_until(wire.OneOffQueryResult), wire.OneOffQueryResult)
        stop()
        e1, d2 = events.index("e1"), events.index("d2")
        assert e1 < d2 and "t" in events[e1 + 1:d2], [x for x in events if x != "t"]
        c.close()


@pytest.mark.parametrize("version", [2, 3])
def test_a_read_queued_as_the_processor_parks_after_a_heavy_one_waits_for_its_delivery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """The same mechanism when the next read arrives *after* the processor's heavy turn emptied the
    queue (CI caught the test above on this path: d1 e1 d2 with no timer between).  The processor
    parked; a frame read later in the same loop iteration woke it; in the next iteration the
    heavy answer's delivery (scheduled during the turn) and the woken processor's next read ran
    back to back.  A heavy turn now yields twice before the processor parks, as it does between
    turns.  Arranged deterministically: the second query is queued by a callback scheduled right
    behind the processor's wake-up for the first, i.e. it runs after the processor parked."""
    from adapters import server as srv

    monkeypatch.setattr(srv, "SCAN_TURN_ROWS", 10)
    events: list[str] = []
    scan = "SELECT * FROM sync_event WHERE payload_hash = 'sha256:none'"
    with running_server(tmp_path) as st:
        c = WireClient(st, st.token(), version=version)
        for i in range(12):
            assert isinstance(c.call("append_sync_event", f"s{i}", "k", "{}", None, None).outcome, wire.ReducerOk)
        server = st.server
        (s,) = st.call(lambda: list(server.sessions.values()))
        real_set = s.inbound_ready.set
        injected = [False]

        def inject() -> None:
            events.append("q2")
            s.inbound.append((wire.OneOffQuery(2, scan), 0))
            s.inbound_ready.set()

        def set_then_inject() -> None:
            real_set()  # the processor's wake-up is scheduled here ...
            first = s.inbound[0][0] if s.inbound else None
            if not injected[0] and isinstance(first, wire.OneOffQuery) and first.request_id == 1:
                injected[0] = True
                st.loop.call_soon(inject)  # ... and this right behind it: after its turn, as it parks

        s.inbound_ready.set = set_then_inject  # type: ignore[method-assign]
        stop = _trace_one_offs(st, events)
        c.send(wire.OneOffQuery(1, scan))
        for _ in range(2):
            assert isinstance(c.recv_until(wire.OneOffQueryResult), wire.OneOffQueryResult)
        stop()
        shown = [x for x in events if x != "t"]
        assert shown[:3] == ["d1", "q2", "e1"], shown  # arranged: queued after the turn, before its delivery
        e1, d2 = events.index("e1"), events.index("d2")
        assert e1 < d2 and "t" in events[e1 + 1:d2], shown
        c.close()


def test_a_read_turn_ends_on_the_connections_own_rows_not_anothers(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``SCAN_TURN_ROWS`` ends a connection's turn once *its* reads have examined that many rows
    (docs/protocol.md "Fixed").  The reader measured ``engine.rows_examined`` -- every connection's
    reads -- from before it awaited its next frame, so another connection's heavy reads in between
    ended a light connection's turn and made its reader yield twice per frame: the light client
    paid for the heavy one.  Oracle: the reader's own yields (``asyncio.sleep`` calls made by the
    server module from that connection's reader task), counted, not timed: a light connection whose
    reads examine no rows yields once every ``max_batch_per_turn`` frames, as without heavy readers."""
    import asyncio as real_asyncio
    import types

    import adapters.server as server_mod

    monkeypatch.setattr(server_mod, "SCAN_TURN_ROWS", 10)
    yields: dict[int, int] = {}
    real_sleep = real_asyncio.sleep

    async def counted_sleep(delay: float, *args: Any) -> Any:
        task = real_asyncio.current_task()
        coro = task.get_coro() if task is not None else None
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and frame.f_code.co_name == "_reader" and delay == 0:
            s = frame.f_locals.get("s")
            if s is not None:
                yields[s.conn_id] = yields.get(s.conn_id, 0) + 1
        return await real_sleep(delay, *args)

    proxy = types.SimpleNamespace(**{k: getattr(real_asyncio, k) for k in dir(real_asyncio) if not k.startswith("__")})
    proxy.sleep = counted_sleep
    monkeypatch.setattr(server_mod, "asyncio", proxy)
    batch = 4
    with running_server(tmp_path, limits=with_limits(max_batch_per_turn=batch)) as st:
        tok = st.token()
        heavy = WireClient(st, tok)
        for i in range(20):  # one heavy read examines 20 rows: over the (patched) turn bound of 10
            assert isinstance(heavy.call("append_sync_event", f"h{i}", "k", "{}", None, None).outcome, wire.ReducerOk)
        light = WireClient(st, tok)
        light_id = st.call(lambda: max(st.server.sessions))
        frames = 2 * batch
        for i in range(frames):
            heavy.send(wire.OneOffQuery(100 + i, "SELECT * FROM sync_event WHERE payload_hash = 'sha256:none'"))
            assert isinstance(heavy.recv_until(wire.OneOffQueryResult).result, wire.QueryRows)
            light.send(wire.OneOffQuery(200 + i, "SELECT * FROM sync_stream WHERE stream_id = 'none'"))  # no rows
            assert isinstance(light.recv_until(wire.OneOffQueryResult).result, wire.QueryRows)
        assert yields.get(light_id, 0) == frames // batch, yields
        heavy.close()
        light.close()
