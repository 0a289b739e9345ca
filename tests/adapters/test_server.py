"""The server over real sockets: routes, the upgrade order, messages, errors and limits.

Each test starts a fresh server on a free port with its own data directory and talks to it with
the raw wire client of tests/support/server.py, so what is asserted is what a client receives.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest
from support.server import RawSocketClient, WireClient, call_http, http, running_server, with_limits
from websockets.exceptions import InvalidStatus

from adapters import bsatn, wire
from adapters.auth import AuthConfig
from spec.compat import CompatWindow
from spec.errors import SyncError
from spec.values import SyncEvent, SyncStream

S = "demo.s1"
SUB_EVENTS = f"SELECT * FROM sync_event WHERE stream_id = '{S}'"


def reducer_error(msg: wire.ReducerResult) -> SyncError:
    assert isinstance(msg.outcome, wire.ReducerErr), msg.outcome
    text = bsatn.Reader(msg.outcome.error).string()
    return SyncError.parse(text)


def test_routes_ping_schema_metrics_public_key(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        assert http("GET", f"{st.base}/v1/ping").status == 200
        schema = http("GET", f"{st.base}/v1/database/autopilot-sync/schema").json()
        tables = {t["name"]: t for t in schema["tables"]}
        assert [c["name"] for c in tables["sync_event"]["columns"]][:3] == ["stream_id", "epoch", "seq"]
        assert tables["stream_signal"]["event"] is True
        assert {r["name"] for r in schema["reducers"]} >= {"append_sync_event", "ack_checkpoint"}
        assert http("GET", f"{st.base}/v1/database/nope/schema").status == 404
        pem = http("GET", f"{st.base}/v1/identity/public-key")
        assert pem.status == 200 and pem.body.startswith(b"-----BEGIN PUBLIC KEY-----")
        metrics = http("GET", f"{st.base}/metrics")
        assert metrics.status == 200 and b"syncref_committed_offset" in metrics.body


def test_identity_routes(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        assert http("POST", f"{st.base}/v1/identity").status == 403  # anonymous identities are off by default
        assert http("POST", f"{st.base}/v1/identity/websocket-token").status == 401
        assert http("POST", f"{st.base}/v1/identity/websocket-token",
                    headers={"Authorization": "Bearer not-a-jwt"}).status == 401
        assert http("POST", f"{st.base}/v1/identity/websocket-token",
                    headers={"Authorization": "Basic abc"}).status == 400
        tok = st.token(scopes=["sync.subscribe"], streams=["demo.*"])
        short = http("POST", f"{st.base}/v1/identity/websocket-token", headers={"Authorization": f"Bearer {tok}"})
        assert short.status == 200
        c = WireClient(st, short.json()["token"])
        assert c.initial.token == short.json()["token"]
        c.close()
    with running_server(tmp_path / "anon", auth=AuthConfig(allow_anonymous=True)) as st:
        minted = http("POST", f"{st.base}/v1/identity").json()
        assert minted["identity"].startswith("c200") and len(minted["identity"]) == 64
        c = WireClient(st, None)  # anonymous connect: the server mints, as SpacetimeDB
        assert c.initial.identity.startswith("c200") and c.initial.token
        c.close()


@pytest.mark.parametrize(("query", "protocols", "status", "needle"), [
    ("", ["v2.bsatn.spacetimedb"], 401, "Authorization required"),
    ("token=garbage", ["v2.bsatn.spacetimedb"], 401, ""),
    ("TOKEN&connection_id=00000000000000000000000000000000", ["v2.bsatn.spacetimedb"], 400, "all-zeros"),
    ("TOKEN&connection_id=xyz", ["v2.bsatn.spacetimedb"], 400, "Invalid connection ID"),
    ("TOKEN", ["v1.bsatn.spacetimedb"], 400, "no valid protocol selected"),
    ("TOKEN&compression=Zstd", ["v2.bsatn.spacetimedb"], 400, "Zstd"),
])
def test_upgrade_refusals(tmp_path: Path, query: str, protocols: list[str], status: int, needle: str) -> None:
    with running_server(tmp_path) as st:
        q = query.replace("TOKEN", f"token={st.token()}")
        url = f"{st.ws_base}/v1/database/autopilot-sync/subscribe?{q}"
        from websockets.sync.client import connect
        with pytest.raises(InvalidStatus) as info:
            connect(url, subprotocols=protocols, open_timeout=10)  # type: ignore[arg-type]
        assert info.value.response.status_code == status
        assert needle.encode() in info.value.response.body


def test_upgrade_order_and_unknown_database(tmp_path: Path) -> None:
    from websockets.sync.client import connect
    with running_server(tmp_path) as st:
        # token is checked before the database and the subprotocol
        with pytest.raises(InvalidStatus) as info:
            connect(f"{st.ws_base}/v1/database/nope/subscribe?token=bad", subprotocols=["x"])  # type: ignore[list-item]
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            connect(f"{st.ws_base}/v1/database/nope/subscribe?token={st.token()}",
                    subprotocols=["x"])  # type: ignore[list-item]
        assert info.value.response.status_code == 404


def test_server_prefers_v3_and_echoes_it(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        c = WireClient(st, st.token(), protocols=["v2.bsatn.spacetimedb", "v3.bsatn.spacetimedb"])
        assert c.ws.subprotocol == "v3.bsatn.spacetimedb"
        c.close()
        c = WireClient(st, st.token(), protocols=["v2.bsatn.spacetimedb"])
        assert c.ws.subprotocol == "v2.bsatn.spacetimedb"
        c.close()


def test_compat_window_426(tmp_path: Path) -> None:
    """COMPAT-1 at the upgrade and on HTTP: the first failing check decides the 426 body."""
    window = CompatWindow(min_client_build_id="20260601T000000Z")
    with running_server(tmp_path, window=window) as st:
        old = st.token(client_build_id="20260101T000000Z", protocol_version="oa.sync.v1", schema_version=3)
        from websockets.sync.client import connect
        with pytest.raises(InvalidStatus) as info:
            connect(f"{st.ws_base}/v1/database/autopilot-sync/subscribe?token={old}",
                    subprotocols=["v2.bsatn.spacetimedb"])  # type: ignore[list-item]
        assert info.value.response.status_code == 426
        body = json.loads(info.value.response.body)
        assert body["code"] == "upgrade_required" and body["upgrade_required"] is True
        assert body["window"]["min_client_build_id"] == "20260601T000000Z"
        ok = st.token(client_build_id="20260701T000000Z", protocol_version="oa.sync.v1", schema_version=3)
        WireClient(st, ok).close()
        bad_proto = st.token(client_build_id="20260701T000000Z", protocol_version="oa.sync.v0", schema_version=3)
        res = call_http(st, bad_proto, "append_sync_event", [S, "k", "{}", {"none": []}, {"none": []}])
        assert res.status == 426 and res.json()["code"] == "unsupported_protocol_version"


@pytest.mark.parametrize("version", [2, 3])
def test_subscribe_call_and_live_update(tmp_path: Path, version: int) -> None:
    """IDEM-1/IDEM-2 and DELIV-1/DELIV-2 over the wire: the caller gets its ReducerResult with its rows,
    others a TransactionUpdate; a retry returns the existing seq; a resume query sees only what is after W."""
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token(), version=version)
        b = WireClient(st, st.token(), version=version)
        applied = a.subscribe(1, SUB_EVENTS)
        assert isinstance(applied, wire.SubscribeApplied) and applied.query_set_id == 1
        assert applied.rows.tables == ()  # empty table: nothing
        assert isinstance(b.subscribe(7, SUB_EVENTS), wire.SubscribeApplied)
        res = a.call("append_sync_event", S, "k1", '{"b":1,"a":2}', None, None)
        assert isinstance(res.outcome, wire.ReducerOk)
        assert bsatn.decode_ret("append_sync_event", res.outcome.ret_value) == 1
        (qs,) = res.outcome.transaction_update.query_sets
        assert qs.query_set_id == 1
        (tu,) = qs.tables
        assert tu.table_name == "sync_event"
        (rows,) = tu.rows
        assert isinstance(rows, wire.PersistentTableRows)
        (event,) = wire.decode_rows("sync_event", rows.inserts)
        assert isinstance(event, SyncEvent) and event.payload == '{"a":2,"b":1}' and event.seq == 1
        upd = b.recv()
        assert isinstance(upd, wire.TransactionUpdate)
        assert upd.query_sets[0].query_set_id == 7
        assert wire.decode_rows("sync_event", upd.query_sets[0].tables[0].rows[0].inserts) == [event]  # type: ignore[union-attr]
        # same key, different payload: a structured error to the caller only
        err = reducer_error(a.call("append_sync_event", S, "k1", '{"other":true}', None, None))
        assert err.code.value == "idempotency_conflict" and err.details["existing_seq"] == 1
        # same key, same payload: the existing seq, nothing written, no update for b
        again = a.call("append_sync_event", S, "k1", '{"a":2,"b":1}', None, None)
        assert isinstance(again.outcome, wire.ReducerOk)
        assert bsatn.decode_ret("append_sync_event", again.outcome.ret_value) == 1
        # a resume query with a watermark gets only what is after it
        a.call("append_sync_event", S, "k2", "2", None, None)
        c = WireClient(st, st.token(), version=version)
        resumed = c.subscribe(1, SUB_EVENTS + " AND epoch = 1 AND seq > 1")
        assert isinstance(resumed, wire.SubscribeApplied)
        assert [e.seq for e in wire.decode_rows("sync_event", resumed.rows.tables[0].rows)] == [2]  # type: ignore[attr-defined]
        for x in (a, b, c):
            x.close()


def test_event_table_rows_are_event_updates(tmp_path: Path) -> None:
    """EVT-1: event rows travel as EventTableRows, never in a snapshot."""
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        applied = a.subscribe(1, f"SELECT * FROM stream_signal WHERE stream_id = '{S}'")
        assert isinstance(applied, wire.SubscribeApplied) and applied.rows.tables == ()
        res = a.call("publish_stream_signal", S, "typing", '{"x":1}')
        assert isinstance(res.outcome, wire.ReducerOk)
        (tu,) = res.outcome.transaction_update.query_sets[0].tables
        (rows,) = tu.rows
        assert isinstance(rows, wire.EventTableRows)
        (sig,) = wire.decode_rows("stream_signal", rows.events)
        assert sig.kind == "typing"  # type: ignore[attr-defined]
        a.close()


def test_bad_query_keeps_socket_open_and_forbidden_stream(tmp_path: Path) -> None:
    """AUTH-1: a query pinning an ungranted stream is refused with no details; bad queries keep the socket."""
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token(streams=["demo.*"]))
        err = a.subscribe(3, "SELECT nope FROM sync_event")
        assert isinstance(err, wire.SubscriptionError) and err.request_id is not None and err.query_set_id == 3
        assert SyncError.parse(err.error).code.value == "invalid_query"
        forbidden = a.subscribe(4, "SELECT * FROM sync_event WHERE stream_id = 'other.s'")
        assert isinstance(forbidden, wire.SubscriptionError)
        assert SyncError.parse(forbidden.error).code.value == "forbidden_stream"
        assert SyncError.parse(forbidden.error).details == {}  # nothing about the stream leaks
        # the id may be reused after an error; the socket still works
        assert isinstance(a.subscribe(3, SUB_EVENTS), wire.SubscribeApplied)
        a.close()


def test_stale_cursor_is_a_subscription_error(tmp_path: Path) -> None:
    """STALE-1 over the wire: a resume from another epoch is a stale_cursor SubscriptionError."""
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        a.call("append_sync_event", S, "k1", "1", None, None)
        err = a.subscribe(1, SUB_EVENTS + " AND epoch = 7 AND seq > 0")
        assert isinstance(err, wire.SubscriptionError)
        parsed = SyncError.parse(err.error)
        assert parsed.code.value == "stale_cursor" and parsed.details["reasons"] == ["epoch_changed"]
        a.close()


def test_reused_active_query_set_closes_1011(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        other = WireClient(st, st.token())
        assert isinstance(a.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
        a.send(wire.Subscribe(a.rid(), 1, (SUB_EVENTS,)))
        code, reason = a.closed()
        assert code == 1011 and "already active" in reason
        # nobody else is disturbed
        assert isinstance(other.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
        other.close()


def test_malformed_and_text_frames_close_1011(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        a.ws.send(b"\x09garbage")
        code, reason = a.closed()
        assert code == 1011 and "malformed" in reason and len(reason.encode()) <= 123
        b = WireClient(st, st.token())
        b.ws.send("hello")
        code, reason = b.closed()
        assert code == 1011 and "text" in reason
        c = WireClient(st, st.token())
        c.ws.send(wire.encode_client(wire.CallReducer(1, 0, "append_sync_event", b"\x01\x00")))
        res = c.recv()
        assert isinstance(res, wire.ReducerResult)
        assert reducer_error(res).code.value == "invalid_argument"  # bad args: an error, socket open
        assert isinstance(c.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
        c.close()


def test_unknown_reducer_and_unsubscribe(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        res = a.call("append_sync_event", S, "k1", "1", None, None)
        assert isinstance(res.outcome, wire.ReducerOk)
        a.send(wire.CallReducer(a.rid(), 0, "nope", b""))
        assert reducer_error(a.recv_until(wire.ReducerResult)).code.value == "no_such_reducer"
        applied = a.subscribe(2, SUB_EVENTS)
        assert isinstance(applied, wire.SubscribeApplied)
        a.send(wire.Unsubscribe(a.rid(), 2, True))
        un = a.recv()
        assert isinstance(un, wire.UnsubscribeApplied) and un.rows is not None
        assert [e.seq for e in wire.decode_rows("sync_event", un.rows.tables[0].rows)] == [1]  # type: ignore[attr-defined]
        a.send(wire.Unsubscribe(a.rid(), 2, False))
        assert isinstance(a.recv(), wire.SubscriptionError)  # unknown set now
        a.send(wire.OneOffQuery(a.rid(), SUB_EVENTS))
        one = a.recv()
        assert isinstance(one, wire.OneOffQueryResult) and isinstance(one.result, wire.QueryRows)
        a.close()


def test_http_call_and_sql(tmp_path: Path) -> None:
    """AUTH-2 on the HTTP call route (530 forbidden_stream), SEQ-4 (sequence_conflict), SQL row-filtered (AUTH-1)."""
    with running_server(tmp_path) as st:
        tok = st.token(streams=["demo.*"])
        ok = call_http(st, tok, "append_sync_event", [S, "k1", '{"a":1}', {"none": []}, {"some": 1}])
        assert ok.status == 200 and ok.headers["syncref-return-value"] == "1"
        conflict = call_http(st, tok, "append_sync_event", [S, "k2", "1", {"none": []}, {"some": 9}])
        assert conflict.status == 530 and conflict.text.startswith("sequence_conflict: ")
        assert call_http(st, tok, "nope", []).status == 404
        assert call_http(st, tok, "append_sync_event", [S]).status == 400
        assert call_http(st, tok, "append_sync_event", [S, "k", "1", 5, None]).status == 400  # 5 is no option
        denied = call_http(st, tok, "append_sync_event", ["other.s", "k", "1", {"none": []}, {"none": []}])
        assert denied.status == 530 and denied.text.startswith("forbidden_stream")
        no_ct = http("POST", f"{st.base}/v1/database/autopilot-sync/call/append_sync_event", "[]",
                     {"Authorization": f"Bearer {tok}"})
        assert no_ct.status == 415
        assert call_http(st, "bad", "append_sync_event", []).status == 401
        sql = http("POST", f"{st.base}/v1/database/autopilot-sync/sql",
                   f"SELECT * FROM sync_stream WHERE stream_id = '{S}'", {"Authorization": f"Bearer {tok}"})
        assert sql.status == 200
        (stmt,) = sql.json()
        names = [e["name"]["some"] for e in stmt["schema"]["elements"]]
        assert names[:6] == ["stream_id", "stream_class", "epoch", "continues_epoch", "continues_seq", "head_seq"]
        (row,) = stmt["rows"]
        assert row[0] == S and row[names.index("head_seq")] == 1 and row[names.index("continues_epoch")] == 0
        hidden = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", "SELECT * FROM sync_event",
                      {"Authorization": f"Bearer {st.token(streams=['x.*'])}"})
        assert hidden.status == 200 and hidden.json()[0]["rows"] == []  # row-filtered by grants
        bad = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", "DELETE FROM sync_event",
                   {"Authorization": f"Bearer {tok}"})
        assert bad.status == 400 and bad.text.startswith("invalid_query")


def test_compression_tags(tmp_path: Path) -> None:
    big = json.dumps({"blob": "x" * 4000})
    for name, tag in (("Gzip", 2), ("Brotli", 1), ("None", 0)):
        with running_server(tmp_path / name) as st:
            a = WireClient(st, st.token(), compression=name)
            a.subscribe(1, SUB_EVENTS)
            a.frames.clear()
            res = a.call("append_sync_event", S, "k1", big, None, None)
            assert isinstance(res.outcome, wire.ReducerOk)
            assert a.frames[-1][0] == tag
            small = a.call("append_sync_event", S, "k2", "1", None, None)
            assert isinstance(small.outcome, wire.ReducerOk) and a.frames[-1][0] == 0
            a.close()


def test_v3_accepts_several_messages_per_frame(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token(), version=3)
        a.send(wire.Subscribe(1, 1, (SUB_EVENTS,)), wire.Subscribe(2, 2, ("SELECT * FROM sync_stream",)),
               wire.CallReducer(3, 0, "append_sync_event", bsatn.encode_args(
                   "append_sync_event", (S, "k", "1", None, None))))
        got = [a.recv(), a.recv(), a.recv()]
        assert [type(x).__name__ for x in got] == ["SubscribeApplied", "SubscribeApplied", "ReducerResult"]
        assert len(a.frames) <= 3
        a.close()


def test_inbound_queue_bound_closes_1013(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=with_limits(max_inbound_queue=8)) as st:
        a = WireClient(st, st.token(), version=3)
        other = WireClient(st, st.token())
        flood = b"".join(wire.encode_client(wire.OneOffQuery(i, "SELECT * FROM sync_stream")) for i in range(50))
        a.ws.send(flood)
        code, reason = a.closed()
        assert code == 1013 and reason == "too many requests"
        assert isinstance(other.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
        other.close()


def test_max_message_size(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=with_limits(max_message_size=1024)) as st:
        a = WireClient(st, st.token())
        a.send(wire.Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = '" + "x" * 2000 + "'",)))
        code, _ = a.closed()
        assert code == 1009


def test_a_dropped_slow_consumer_leaves_no_session_behind(tmp_path: Path) -> None:
    """A slow consumer whose peer reads nothing cannot take its close frame: its close waits in
    aiohttp's drain, whose one waiter the connection's sender shares, so cancelling the sender ends
    the close cancelled, and the handler awaiting that close with it.  Its session must still go:
    a session left in the server's table counted
    against ``max_connections_per_identity`` for good (the identity's next upgrade was 429 forever)
    and held its socket's state; and the TCP connection must be cut, not closed gracefully behind
    bytes the peer will never read (it stayed open, counted against ``max_connections``).  Oracles:
    the connection gate's count, and the identity connects again (limit 1)."""
    limits = with_limits(max_outbound_queue=16, close_timeout_s=1.0, max_connections_per_identity=1)
    with running_server(tmp_path, limits=limits) as st:
        tok, writer = st.token(), st.token()
        slow = RawSocketClient(st, tok, rcvbuf=4096)  # never reads
        assert b"101" in slow.status_line
        slow.send(wire.Subscribe(1, 1, (SUB_EVENTS,)))
        payload = json.dumps({"pad": "y" * 100_000})
        for i in range(400):
            assert call_http(st, writer, "append_sync_event", [S, f"k{i}", payload, {"none": []},
                                                               {"none": []}]).status == 200
            if not st.call(lambda: len(st.server.engine.conns)):
                break
        assert not st.call(lambda: len(st.server.engine.conns)), "the slow consumer was never dropped"
        deadline = time.monotonic() + 20  # close_timeout_s (+1) and the abort, on a loaded machine

        def left() -> tuple[int, int]:  # sessions, and open TCP connections (the ConnectionGate's count)
            return st.call(lambda: (len(st.server.sessions), st.server._gate.open if st.server._gate else -1))

        while left() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        # the TCP connection is cut too, though its peer still reads nothing: closed gracefully, the
        # socket would wait for that peer to take the bytes queued in it, indefinitely
        assert left() == (0, 0)
        again = WireClient(st, tok)  # not 429: the dropped connection no longer counts
        assert isinstance(again.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
        again.close()
        slow.close()


def test_slow_consumer_is_dropped_others_unaffected(tmp_path: Path) -> None:
    """SLOW-1 over real sockets: a client that does not read is dropped (1008, slow_consumer); others flow."""
    with running_server(tmp_path, limits=with_limits(max_outbound_queue=16)) as st:
        slow = RawSocketClient(st, st.token(), rcvbuf=4096)  # never reads
        assert b"101" in slow.status_line
        slow.send(wire.Subscribe(1, 1, (SUB_EVENTS,)))
        fast = WireClient(st, st.token())
        fast.subscribe(1, SUB_EVENTS)
        writer_tok = st.token()
        payload = json.dumps({"pad": "y" * 20000})
        dropped_at = None
        for i in range(400):
            assert call_http(st, writer_tok, "append_sync_event", [S, f"k{i}", payload, {"none": []},
                                                                   {"none": []}]).status == 200
            assert isinstance(fast.recv_until(wire.TransactionUpdate), wire.TransactionUpdate)  # unaffected
            if st.call(lambda: len(st.server.engine.conns)) == 1:
                dropped_at = i
                break
        assert dropped_at is not None, "the slow consumer was never dropped"
        tail = slow.read_all(30)  # returns at the close; generous for a loaded machine
        # its last frame is a close frame: 1008 with a reason naming slow_consumer
        close_at = tail.rfind(b"\x88")
        assert close_at >= 0 and b"slow_consumer" in tail[close_at:]
        assert tail[close_at + 2:close_at + 4] == (1008).to_bytes(2, "big")
        metrics = http("GET", f"{st.base}/metrics").text
        assert 'syncref_closes_total{cause="slow_consumer"} 1.0' in metrics
        fast.close()


def test_idle_peer_is_dropped(tmp_path: Path) -> None:
    """A peer that answers the keepalive's pings stays past ``idle_timeout_s``; one that answers none is
    dropped.  The timeout is 2 s with a ping every 0.2 s: a pong has 1.8 s to arrive (with 0.5 s, a
    loaded machine's 0.3 s of slack dropped the live client now and then)."""
    with running_server(tmp_path, limits=with_limits(ping_interval_s=0.2, idle_timeout_s=2.0)) as st:
        a = WireClient(st, st.token())
        # a live client answers pings (websockets does it in its background thread) and stays
        time.sleep(3.0)  # past the idle timeout: only its pongs kept it
        assert isinstance(a.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
        a.close()
        raw = RawSocketClient(st, st.token())  # never answers pings
        started = time.monotonic()
        raw.read_all(30)
        assert time.monotonic() - started < 29  # the server dropped it (read_all returned at the close)
        raw.close()


def test_an_idle_peer_that_reads_nothing_is_cut(tmp_path: Path) -> None:
    """A peer silent past ``idle_timeout_s`` whose socket holds bytes it never reads: the server's
    graceful close would wait for it to read them, so the TCP connection and the session stayed
    for good (counted against ``max_connections`` and the identity's limit).  It is cut
    ``close_timeout_s`` after the idle close.  Oracle: the connection gate's count."""
    limits = with_limits(idle_timeout_s=1.0, ping_interval_s=0.25, close_timeout_s=1.0)
    with running_server(tmp_path, limits=limits) as st:
        writer = st.token()
        silent = RawSocketClient(st, st.token(), rcvbuf=4096)  # reads nothing, answers no ping
        silent.send(wire.Subscribe(1, 1, (SUB_EVENTS,)))
        payload = json.dumps({"pad": "y" * 100_000})

        def state() -> tuple[int, int, int]:  # sessions, open TCP connections, bytes its transport holds
            return st.call(lambda: (len(st.server.sessions), st.server._gate.open if st.server._gate else -1,
                                    sum(s.request.transport.get_write_buffer_size() for s in st.server.sessions.values()
                                        if s.request.transport is not None)))

        for i in range(200):  # until its kernel buffers are full and the transport holds more
            assert call_http(st, writer, "append_sync_event", [S, f"k{i}", payload, {"none": []},
                                                               {"none": []}]).status == 200
            if state()[2] > 100 * 1024:
                break
        assert state()[2] > 100 * 1024
        deadline = time.monotonic() + 20
        while state()[:2] != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state()[:2] == (0, 0)
        silent.close()


def test_a_keepalive_ping_the_peer_does_not_take_is_bounded(tmp_path: Path) -> None:
    """aiohttp's writer waits for the socket to drain once the control frames it wrote (our pings,
    the pongs to a peer's pings) pass its limit, with no deadline.  A peer that sends pings, reads
    nothing, and lands that crossing on the keepalive's ping (it knows every frame's size: its own
    pings' pongs and our empty pings) parked the keepalive, and with it the idle check, for good:
    the connection was never dropped.  The ping is bounded by ``send_timeout_s`` (slow consumer).
    Here the peer's pongs fill its socket, and the counter is then set at the limit (white box)."""
    limits = with_limits(idle_timeout_s=5.0, ping_interval_s=0.25, close_timeout_s=1.0, send_timeout_s=1.0)
    with running_server(tmp_path, limits=limits) as st:
        silent = RawSocketClient(st, st.token(), rcvbuf=4096)  # reads nothing
        ping = b"\x89" + bytes((0x80 | 125,)) + b"\0\0\0\0" + b"p" * 125  # masked (a zero key)
        silent.sock.settimeout(5)
        with contextlib.suppress(OSError):  # the server stops reading once its pongs fill the socket
            silent.sock.sendall(ping * 60_000)

        def paused() -> bool:
            return bool(st.call(lambda: [s.request.transport.get_write_buffer_size() > 64 * 1024
                                         for s in st.server.sessions.values() if s.request.transport is not None]
                                == [True]))

        deadline = time.monotonic() + 10
        while not paused() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert paused()

        def at_limit() -> None:
            for s in st.server.sessions.values():
                s.last_seen = time.monotonic()  # heard from just now: the keepalive's next step is a ping
                s.ws._writer._output_size = s.ws._writer._limit  # type: ignore[union-attr]

        st.call(at_limit)
        deadline = time.monotonic() + 20

        def left() -> tuple[int, int]:
            return st.call(lambda: (len(st.server.sessions), st.server._gate.open if st.server._gate else -1))

        while left() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left() == (0, 0)
        silent.close()


def test_confirmed_reads_wait_for_durability(tmp_path: Path) -> None:
    """CONF-1: a confirmed-read client hears of an offset only once it is durable."""
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token(), confirmed=True)
        a.subscribe(1, SUB_EVENTS)
        res = a.call("append_sync_event", S, "k1", "1", None, None)
        assert isinstance(res.outcome, wire.ReducerOk)
        # by the time a confirmed client hears of offset N, N is durable
        committed, durable = st.call(lambda: (st.server.engine.committed, st.server.engine.durable))
        assert durable >= 1 and committed >= durable


def test_a_burst_is_answered_in_order_whichever_task_takes_each_call(tmp_path: Path) -> None:
    """ADR-0019: a call arriving on an empty inbound queue is handed to the engine by the reader, the
    rest queue for the processor.  With the disk stalled, a burst fills the connection's undurable
    share (4) so both paths are taken; every call is still answered, in order, with the seqs of
    the order they were sent in, and only once durable."""
    stall = tmp_path / "stall"
    with running_server(tmp_path / "data", limits=with_limits(max_undurable_per_connection=4),
                        stall_commits_while=stall) as st:
        a = WireClient(st, st.token(), confirmed=True)
        stall.touch()
        rids = [a.rid() for _ in range(40)]
        a.send(*(wire.CallReducer(rid, 0, "append_sync_event", bsatn.encode_args(
            "append_sync_event", (S, f"b{i}", str(i), None, None))) for i, rid in enumerate(rids)))
        deadline = time.monotonic() + 30  # the burst reaches the engine: its share, however loaded the machine
        while st.call(lambda: st.server.engine.committed) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # and no further: what a fifth call would have had to commit by now
        committed, durable, by_reader = st.call(
            lambda: (st.server.engine.committed, st.server.engine.durable, st.server.taken_by_reader))
        assert committed == 4 and durable == 0, (committed, durable)  # the share is full; nothing answered yet
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.2)
        stall.unlink()
        results = [a.recv_until(wire.ReducerResult) for _ in rids]
        assert [r.request_id for r in results] == rids
        assert [bsatn.decode_ret("append_sync_event", r.outcome.ret_value) for r in results  # type: ignore[union-attr]
                ] == list(range(1, 41))
        taken = st.call(lambda: st.server.taken_by_reader)
        assert by_reader >= 1 and taken < 40, (by_reader, taken)  # both paths were taken
        a.close()


def test_the_reader_takes_a_call_only_when_the_processor_would(tmp_path: Path) -> None:
    """``SyncServer._take_now`` directly: it refuses (and the engine does not move) while anything is
    queued ahead, the connection's undurable share is in use, or the connection closes; otherwise it
    hands the call to the engine and counts it."""
    stall = tmp_path / "stall"
    with running_server(tmp_path / "data", limits=with_limits(max_undurable_per_connection=2),
                        stall_commits_while=stall) as st:
        a = WireClient(st, st.token())
        stall.touch()
        calls = iter(range(100))

        def call() -> wire.CallReducer:
            i = next(calls)
            return wire.CallReducer(1000 + i, 0, "append_sync_event",
                                    bsatn.encode_args("append_sync_event", (S, f"t{i}", "1", None, None)))

        def attempt(setup: str) -> tuple[bool, int]:
            server = st.server
            (s,) = server.sessions.values()
            before = server.engine.committed
            if setup == "queued":
                s.inbound.append((call(), 0))
            elif setup == "closing":
                s.closing = True
            try:
                taken = server._take_now(s, call())
            finally:
                if setup == "queued":
                    s.inbound.clear()
                s.closing = False
            return taken, server.engine.committed - before

        assert st.call(attempt, "queued") == (False, 0)
        assert st.call(attempt, "closing") == (False, 0)
        count = st.call(lambda: st.server.taken_by_reader)
        assert st.call(attempt, "") == (True, 1)
        assert st.call(attempt, "") == (True, 1)
        assert st.call(attempt, "") == (False, 0)  # the share (2) is in use until the disk answers
        assert st.call(lambda: st.server.taken_by_reader) == count + 2
        stall.unlink()
        a.close()


def test_acknowledged_writes_survive_restart(tmp_path: Path) -> None:
    """DUR-1: every write acknowledged over HTTP (200 after durability) survives a restart."""
    with running_server(tmp_path) as st:
        tok = st.token()
        for i in range(20):
            res = call_http(st, tok, "append_sync_event", [S, f"k{i}", str(i), {"none": []}, {"none": []}])
            assert res.status == 200
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        applied = a.subscribe(1, f"SELECT * FROM sync_stream WHERE stream_id = '{S}'")
        assert isinstance(applied, wire.SubscribeApplied)
        (stream,) = wire.decode_rows("sync_stream", applied.rows.tables[0].rows)
        assert isinstance(stream, SyncStream) and stream.head_seq == 20 and stream.epoch == 1  # clean restart
        a.close()


def test_equal_updates_are_encoded_once(tmp_path: Path) -> None:
    """Subscribers with the same queries (and query set id) get byte-identical frames from one encoding."""
    with running_server(tmp_path) as st:
        subs = [WireClient(st, st.token()) for _ in range(4)]
        for c in subs:
            assert isinstance(c.subscribe(1, SUB_EVENTS), wire.SubscribeApplied)
            c.frames.clear()
        before = st.call(lambda: st.server.metrics.sends.encode_hits)
        tok = st.token()
        for i in range(3):
            res = call_http(st, tok, "append_sync_event", [S, f"k{i}", str(i), {"none": []}, {"none": []}])
            assert res.status == 200
        for c in subs:
            for _ in range(3):
                assert isinstance(c.recv(), wire.TransactionUpdate)
        assert all(c.frames == subs[0].frames for c in subs)
        hits = st.call(lambda: st.server.metrics.sends.encode_hits) - before
        assert hits == 3 * (len(subs) - 1)  # each update encoded once, shared three times
        for c in subs:
            c.close()


def test_auth_matrix_over_the_wire(tmp_path: Path) -> None:
    """AUTH-1/AUTH-2 end to end: scopes gate reducers and subscriptions, grants gate streams, rows are
    filtered by grants, checkpoints are visible to their owner only, external HS256 tokens work."""
    import jwt
    secret = b"s" * 32
    auth = AuthConfig(external_issuer="https://control.example", external_hs256_secret=secret)
    with running_server(tmp_path, auth=auth) as st:
        admin = WireClient(st, st.token())
        for sid in ("demo.a", "demo.b", "other.c"):
            assert isinstance(admin.call("append_sync_event", sid, "k", "1", None, None).outcome, wire.ReducerOk)
        only_a = WireClient(st, st.token(scopes=["sync.subscribe", "sync.append", "sync.checkpoint.write"],
                                         streams=["demo.a"]))
        applied = only_a.subscribe(1, "SELECT * FROM sync_event")
        assert isinstance(applied, wire.SubscribeApplied)
        seen = {e.stream_id for t in applied.rows.tables for e in wire.decode_rows(t.table, t.rows)}  # type: ignore[attr-defined]
        assert seen == {"demo.a"}
        # live updates are filtered the same way
        admin.call("append_sync_event", "demo.b", "k2", "2", None, None)
        admin.call("append_sync_event", "demo.a", "k2", "2", None, None)
        upd = only_a.recv_until(wire.TransactionUpdate)
        rows = wire.decode_rows("sync_event", upd.query_sets[0].tables[0].rows[0].inserts)
        assert [(e.stream_id, e.seq) for e in rows] == [("demo.a", 2)]  # type: ignore[attr-defined]
        # reducers: grant and scope checks, in the documented order
        assert reducer_error(only_a.call("append_sync_event", "demo.b", "k", "1", None, None)).code.value \
            == "forbidden_stream"
        assert reducer_error(only_a.call("upsert_presence", "sess", "dev", "node", "online", "eu", 5000)).code.value \
            == "missing_scope"
        no_sub = WireClient(st, st.token(scopes=["sync.append"], streams=["demo.*"]))
        err = no_sub.subscribe(1, "SELECT * FROM sync_stream")
        assert isinstance(err, wire.SubscriptionError) and SyncError.parse(err.error).code.value == "missing_scope"
        # checkpoints: only their owner sees them
        assert isinstance(only_a.call("ack_checkpoint", "c1", "demo.a", 1, 1).outcome, wire.ReducerOk)
        mine = only_a.subscribe(2, "SELECT * FROM sync_checkpoint")
        assert isinstance(mine, wire.SubscribeApplied) and len(mine.rows.tables) == 1
        theirs = admin.subscribe(9, "SELECT * FROM sync_checkpoint")
        assert isinstance(theirs, wire.SubscribeApplied) and theirs.rows.tables == ()
        # an external issuer's HS256 token
        ext = jwt.encode({"iss": "https://control.example", "sub": "user-1", "aud": ["spacetimedb"],
                          "iat": int(time.time()), "exp": int(time.time()) + 60,
                          "oa_sync_scopes": ["sync.subscribe"], "oa_sync_streams": ["other.*"]}, secret,
                         algorithm="HS256")
        ext_client = WireClient(st, ext)
        got = ext_client.subscribe(1, "SELECT * FROM sync_event")
        assert isinstance(got, wire.SubscribeApplied)
        assert {e.stream_id for t in got.rows.tables for e in wire.decode_rows(t.table, t.rows)} == {"other.c"}  # type: ignore[attr-defined]
        forged = jwt.encode({"iss": "https://control.example", "sub": "user-1", "aud": ["spacetimedb"]}, b"x" * 32,
                            algorithm="HS256")
        res = call_http(st, forged, "append_sync_event", [S, "k", "1", {"none": []}, {"none": []}])
        assert res.status == 401
        for c in (admin, only_a, no_sub, ext_client):
            c.close()


def test_sql_statements_split_outside_literals() -> None:
    from adapters.server import split_statements
    assert split_statements("SELECT * FROM a; SELECT * FROM b WHERE x = 'p;q' ;") == [
        "SELECT * FROM a", "SELECT * FROM b WHERE x = 'p;q'"]
    assert split_statements("SELECT * FROM t WHERE s = 'it''s; fine'") == ["SELECT * FROM t WHERE s = 'it''s; fine'"]


@pytest.mark.parametrize(("claims", "code"), [
    ({}, None),  # no compatibility claims at all: admitted (the window does not require them)
    ({"client_build_id": "20260701T000000Z", "protocol_version": "oa.sync.v1", "schema_version": 3}, None),
    ({"client_build_id": " ", "protocol_version": "oa.sync.v1", "schema_version": 3}, "invalid_client_build"),
    ({"client_build_id": "2026-07-01", "protocol_version": "oa.sync.v1", "schema_version": 3},
     "invalid_client_build"),
    ({"client_build_id": "20260701T000000Z", "protocol_version": "oa.sync.v2", "schema_version": 3},
     "unsupported_protocol_version"),
    ({"client_build_id": "20260701T000000Z", "protocol_version": "oa.sync.v1", "schema_version": 2},
     "unsupported_schema_version"),  # a schema-2 client (before ADR-0010's chain columns) is refused
    ({"client_build_id": "20250101T000000Z", "protocol_version": "oa.sync.v1", "schema_version": 3},
     "upgrade_required"),
    ({"client_build_id": "21000101T000000Z", "protocol_version": "oa.sync.v1", "schema_version": 3},
     "unsupported_client_build"),
    # several failures: the first in the documented order decides
    ({"client_build_id": "20250101T000000Z", "protocol_version": "oa.sync.v0", "schema_version": 9},
     "unsupported_protocol_version"),
])
def test_compatibility_matrix(tmp_path: Path, claims: dict[str, object], code: str | None) -> None:
    """COMPAT-1 over the wire for every rejection code, at the upgrade (426 + JSON body)."""
    from websockets.sync.client import connect
    window = CompatWindow(min_client_build_id="20260601T000000Z", max_client_build_id="20991231T235959Z")
    with running_server(tmp_path, window=window) as st:
        tok = st.token(**claims)
        url = f"{st.ws_base}/v1/database/autopilot-sync/subscribe?token={tok}"
        if code is None:
            WireClient(st, tok).close()
            return
        with pytest.raises(InvalidStatus) as info:
            connect(url, subprotocols=["v2.bsatn.spacetimedb"])  # type: ignore[list-item]
        assert info.value.response.status_code == 426
        body = json.loads(info.value.response.body)
        assert body["code"] == code and body["message"].startswith(code + ": ")
        assert body["upgrade_required"] is (code == "upgrade_required")
        assert body["window"] == window.as_json()


def test_commit_log_failure_acknowledges_nothing_more(tmp_path: Path) -> None:
    """If SQLite cannot be written (disk full, I/O error), no further write is acknowledged: HTTP 503,
    connections closed 1011, new upgrades refused 503, ``failed`` set for ``serve``; everything
    acknowledged before is still there after a restart (DUR-1)."""
    with running_server(tmp_path) as st:
        tok = st.token()
        assert call_http(st, tok, "append_sync_event", [S, "k0", "0", {"none": []}, {"none": []}]).status == 200
        watcher = WireClient(st, st.token())
        watcher.subscribe(1, SUB_EVENTS)
        store = st.server._store
        assert store is not None

        def broken(records: object) -> int:
            raise OSError(28, "No space left on device")

        st.call(lambda: setattr(store, "write_batch", broken))
        res = call_http(st, tok, "append_sync_event", [S, "k1", "1", {"none": []}, {"none": []}])
        assert res.status == 503 and "not acknowledged" in res.text
        code, reason = watcher.closed()
        assert code == 1011 and reason.startswith("durability failure")
        assert st.call(lambda: st.server.failed is not None and st.server.failed.done())
        from websockets.sync.client import connect
        with pytest.raises(InvalidStatus) as info:
            connect(f"{st.ws_base}/v1/database/autopilot-sync/subscribe?token={tok}",
                    subprotocols=["v2.bsatn.spacetimedb"])  # type: ignore[list-item]
        assert info.value.response.status_code == 503
    with running_server(tmp_path) as st:
        a = WireClient(st, st.token())
        applied = a.subscribe(1, SUB_EVENTS)
        assert isinstance(applied, wire.SubscribeApplied)
        assert [e.idempotency_key for e in wire.decode_rows("sync_event", applied.rows.tables[0].rows)] == ["k0"]  # type: ignore[attr-defined]
        a.close()
