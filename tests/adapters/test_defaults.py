"""Every default a user relies on, pinned (issue 9, "Defaults and public APIs").

A default changed by accident passes every test that sets the value explicitly, so each default is
written out here by hand: changing one is a deliberate edit of this file (and of the docs that state
it: docs/protocol.md "Limits", ADR-0003, docs/bridge.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from support.server import WireClient, running_server

from adapters import wire
from adapters.sdk.checkpoints import CheckpointStore
from adapters.server import Limits
from reference.engine import Engine
from spec.compat import CompatWindow
from spec.policy import DEFAULT_POLICY, Policy, StreamClass

MIB = 1024 * 1024
DAY_US = 86_400 * 10**6


def test_websocket_upgrade_defaults_to_confirmed_reads(tmp_path: Path) -> None:
    """No ``confirmed`` parameter means confirmed reads (CONF-1 for every client that does not opt out)."""
    with running_server(tmp_path) as st:
        clients = [WireClient(st, st.token()), WireClient(st, st.token(), confirmed=False),
                   WireClient(st, st.token(), confirmed=True)]
        try:
            engine = st.server.engine
            confirmed = st.call(lambda: sorted((cid, c.confirmed) for cid, c in engine.conns.items()))
        finally:
            for c in clients:
                c.ws.close()
    assert [flag for _cid, flag in confirmed] == [True, False, True]


def test_compression_defaults_to_brotli_as_upstream() -> None:
    assert wire.Compression.parse(None) is wire.Compression.BROTLI


def test_limits_defaults() -> None:
    expected = {
        "max_message_size": 32 * MIB, "max_inbound_queue": 16384, "max_inbound_bytes": 64 * MIB,
        "max_outbound_queue": 16384, "max_outbound_bytes": 64 * MIB, "max_outbound_message_bytes": 32 * MIB,
        "max_undurable": 1024, "max_undurable_per_connection": 32, "max_batch_per_turn": 4,
        "ping_interval_s": 15.0, "idle_timeout_s": 30.0, "close_timeout_s": 5.0, "send_timeout_s": 60.0,
        "header_timeout_s": 10.0, "body_timeout_s": 30.0, "max_sql_bytes": 64 * 1024, "max_call_body_bytes": MIB,
        "max_arg_items": 1024,
        "max_sql_statements": 64, "max_sql_rows": 100_000, "max_sql_response_bytes": 16 * MIB,
        "max_query_bytes": 8 * 1024, "max_query_conjuncts": 32, "max_scan_rows": 100_000,
        "max_queries_per_connection": 64,
        "max_connections": 1000, "max_connections_per_identity": 64,
    }
    assert dataclasses.asdict(Limits()) == expected  # every field: a new limit gets its default written here


def test_policy_defaults() -> None:
    assert Policy() == DEFAULT_POLICY
    p = Policy()
    assert p.classes == ()
    assert p.default_class == StreamClass("default", max_payload_bytes=256 * 1024, retain_count=None,
                                          retain_age_us=None, replay_budget=20000)
    assert (p.presence_min_ttl_ms, p.presence_max_ttl_ms) == (1_000, 300_000)
    assert p.bridge_kinds == frozenset({30078, 31990})  # ADR-0003 decision 7: no kind 1 notes
    assert (p.bridge_max_attempts, p.bridge_max_retry_after_ms, p.max_error_text) == (5, 86_400_000, 1024)
    assert (p.retain_offline_presence_us, p.retain_terminal_assignment_us, p.retain_sent_outbox_us,
            p.retain_failed_outbox_us) == (DAY_US, 7 * DAY_US, 7 * DAY_US, 30 * DAY_US)  # ADR-0003 decision 8


def test_compat_window_defaults() -> None:
    w = CompatWindow()
    # schema 3: the continuation chain (ADR-0010)
    assert (w.protocol_version, w.min_schema_version, w.max_schema_version) == ("oa.sync.v1", 3, 3)
    assert (w.min_client_build_id, w.max_client_build_id, w.require_claims) == (
        "20260101T000000Z", "20991231T235959Z", False)


def test_engine_defaults_are_unbounded_until_the_server_sets_limits() -> None:
    """The sans-I/O engine leaves every limit off; the server sets them from ``Limits`` (pinned above)."""
    e = Engine()
    assert e.policy == DEFAULT_POLICY and (e.max_queue, e.max_undurable) == (1024, 1024)
    assert (e.max_query_bytes, e.max_query_conjuncts, e.max_queries_per_connection, e.max_outbound_bytes,
            e.max_outbound_message_bytes, e.max_scan_rows) == (None, None, None, None, None, None)


def test_read_turn_and_off_loop_compression_bounds_are_pinned() -> None:
    """docs/protocol.md "Limits", "Fixed": a turn ends after 10,000 rows examined by reads; v3
    messages decoded per turn; bodies over 1 MiB (kept as parts) are compressed off the loop."""
    from adapters.server import BODY_CACHE_ITEM_BYTES, DECODE_TURN, SCAN_TURN_ROWS

    assert (SCAN_TURN_ROWS, DECODE_TURN, BODY_CACHE_ITEM_BYTES) == (10_000, 256, MIB)


def test_checkpoint_store_defaults_to_synchronous_full(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "cp.sqlite") as store:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_token_expiry_check_period_is_pinned() -> None:
    """docs/protocol.md "Limits": an open connection's token expiry is re-checked against the wall clock
    every second at least (a forward clock step closes it within that of passing ``exp``)."""
    from adapters.server import EXPIRY_CHECK_S

    assert EXPIRY_CHECK_S == 1.0


def test_revocation_defaults_are_pinned(tmp_path: Path) -> None:
    """docs/operations.md: the list is DATA/revoked-jti, re-read every second; minted tokens carry a jti."""
    from adapters.auth import MAX_JTI_CHARS, REVOKED_JTI_FILE
    from adapters.server import REVOCATION_CHECK_S

    assert (REVOKED_JTI_FILE, REVOCATION_CHECK_S, MAX_JTI_CHARS) == ("revoked-jti", 1.0, 128)
    with running_server(tmp_path) as st:
        assert st.server.auth.revocations.path == tmp_path / "revoked-jti"
        assert "jti" in st.server.auth.verify(st.token()).raw


def test_group_commit_gathering_default_is_pinned(tmp_path: Path) -> None:
    """ADR-0014 / docs/operations.md: an idle writer waits at most 4 ms for a round; serve uses it."""
    from adapters.server import ServerConfig

    assert ServerConfig(data_dir=tmp_path).commit_gather_s == 0.004
    with running_server(tmp_path) as st:
        assert st.server._writer._gather_s == 0.004


def test_turn_bounds_are_pinned() -> None:
    """docs/protocol.md ("Frames"), ADR-0018: a connection's turn -- one transport write -- takes
    at most 64 released messages (v3: 256, in one frame) and 512 KiB unless one message is larger."""
    from adapters.server import SEND_BATCH, SEND_BATCH_V3

    assert (SEND_BATCH, SEND_BATCH_V3, wire.V3_SOFT_CAP) == (64, 256, 512 * 1024)


def test_delivery_slice_is_pinned() -> None:
    """docs/protocol.md ("Frames", "Limits"), ADR-0023: a delivery pass hands the event loop back
    every 1 ms, looked at every 16 connections (a pass over fewer is never cut)."""
    from adapters.server import DELIVER_CHECK, DELIVER_SLICE_S

    assert (DELIVER_SLICE_S, DELIVER_CHECK) == (0.001, 16)


def test_log_and_shape_bounds_are_pinned() -> None:
    """ADR-0029 / docs/operations.md: the group commit's multi-row INSERT takes up to 8 records (64
    raised memory per retained event by ~15 %, "Phase 12"), the writer checkpoints the WAL itself
    about every 4 MiB; docs/protocol.md: at most 256 shapes are kept after their last subscriber."""
    from reference.durability import CHECKPOINT_BYTES, INSERT_ROWS
    from reference.engine import IDLE_SHAPES

    assert (INSERT_ROWS, CHECKPOINT_BYTES, IDLE_SHAPES) == (8, 4 * MIB, 256)


def test_listen_backlog_and_descriptor_reserve_are_pinned() -> None:
    """ADR-0030, docs/operations.md: the kernel queues 511 connections before accept, and 64 + 511
    descriptors are kept out of the connection cap."""
    from adapters.guard import DESCRIPTOR_RESERVE, LISTEN_BACKLOG

    assert (LISTEN_BACKLOG, DESCRIPTOR_RESERVE) == (511, 575)


def test_the_listen_queue_holds_a_storm_while_the_loop_is_busy(tmp_path: Path) -> None:
    """What the backlog is for, measured on the socket: while the server's event loop is busy (a
    reducer run, a delivery pass), 300 clients connecting at once each complete the TCP handshake
    at once -- the kernel queues them.  With asyncio's default of 100 the 102nd and later SYNs are
    dropped and their clients wait for the SYN resend, about a second (the reconnect storm in
    docs/performance.md)."""
    import socket
    import threading
    import time

    with running_server(tmp_path) as st:
        busy = threading.Event()

        def hold_the_loop() -> None:
            busy.set()
            time.sleep(2.0)

        holder = threading.Thread(target=st.call, args=(hold_the_loop,))
        holder.start()
        assert busy.wait(10)
        socks: list[socket.socket] = []
        slow: list[int] = []
        try:
            for k in range(300):
                started = time.monotonic()
                try:
                    socks.append(socket.create_connection(("127.0.0.1", st.server.port), timeout=0.5))
                except OSError:
                    slow.append(k)
                    break
                if time.monotonic() - started > 0.25:
                    slow.append(k)
        finally:
            holder.join()
            for s in socks:
                s.close()
    assert slow == [] and len(socks) == 300, f"connections that waited: {slow[:5]} of {len(socks)} made"


def test_python_sdk_defaults_are_pinned() -> None:
    """docs/clients.md: what an application gets without setting anything -- v3 first then v2, gzip,
    the server's confirmed-read default, 30 s calls, backoff 0.25 s doubling to 30 s with half
    jitter reset after 10 s up, the last 64 disconnects kept; a consumer's queue bounded at 1024
    messages and 64 MiB (past them it sheds and resumes from its watermark); stray server errors
    logged at most once per 10 s per kind."""
    import inspect

    from adapters.sdk.backoff import Backoff
    from adapters.sdk.connection import V2, V3, Connection
    from adapters.sdk.consumer import StreamConsumer

    def defaults(fn: object) -> dict[str, object]:
        return {name: p.default for name, p in inspect.signature(fn).parameters.items()  # type: ignore[arg-type]
                if p.default is not inspect.Parameter.empty}

    conn = defaults(Connection.__init__)
    assert {k: conn[k] for k in ("protocols", "compression", "confirmed", "exchange_token", "reconnect",
                                 "call_timeout", "open_timeout", "ping_interval", "healthy_after")} == {
        "protocols": (V3, V2), "compression": wire.Compression.GZIP, "confirmed": None, "exchange_token": True,
        "reconnect": True, "call_timeout": 30.0, "open_timeout": 10.0, "ping_interval": 20.0, "healthy_after": 10.0}
    assert (V3, V2) == ("v3.bsatn.spacetimedb", "v2.bsatn.spacetimedb")
    b = Backoff()
    assert (b.base, b.cap, b.factor, b.jitter) == (0.25, 30.0, 2.0, 0.5)
    built = Connection("http://127.0.0.1:1", "db", "token")
    assert built.max_disconnects_kept == 64
    consumer = defaults(StreamConsumer.__init__)
    assert {k: consumer[k] for k in ("ack_delay", "ack_timeout", "ack_retry", "max_queue", "max_queue_bytes")} == {
        "ack_delay": 0.0, "ack_timeout": 30.0, "ack_retry": 1.0, "max_queue": 1024, "max_queue_bytes": 64 * MIB}
    from adapters.sdk.cache import STRAY_LOG_INTERVAL_S, ClientCache
    from adapters.sdk.session import Session

    intervals = (Session()._stray_log.interval_s, ClientCache()._warn.interval_s)
    assert (STRAY_LOG_INTERVAL_S, *intervals) == (10.0, 10.0, 10.0)  # one line per 10 s per kind of stray input


def test_this_sessions_new_bounds_are_pinned() -> None:
    """Bounds added in the seventh session, each documented: an unknown procedure's name echoed up
    to 128 characters (docs/protocol.md, ProcedureResult); a revocation file stamped within 2 s is
    read again (docs/operations.md); a relay connection logs at most 32 NOTICEs (docs/bridge.md);
    the bench times 200 small-gap replays a run, 5 in --quick (ADR-0006's amendment)."""
    from adapters.auth import RACY_NS
    from adapters.bench.workloads import FULL, QUICK
    from adapters.nostr.client import _MAX_NOTICES
    from adapters.server import PROCEDURE_NAME_ECHO

    assert (PROCEDURE_NAME_ECHO, RACY_NS, _MAX_NOTICES) == (128, 2 * 10**9, 32)
    assert (FULL.gap_repeats, QUICK.gap_repeats, FULL.replay_repeats) == (200, 5, 5)


def test_the_bridge_logs_its_held_rows_at_a_bounded_rate() -> None:
    """docs/bridge.md: a row held because one relay rejected it while another gave no verdict is
    logged at most once every 10 s (all such rows together), the next line counting the rest."""
    from adapters.bridge.core import HELD_LOG_INTERVAL_S, BridgeCore
    from adapters.nostr.keys import SigningKey

    core = BridgeCore(("ws://a.test",), SigningKey(b"\x01" * 32))
    assert (HELD_LOG_INTERVAL_S, core._held_log.interval_s) == (10.0, 10.0)


def test_a_decoder_steps_over_at_most_1024_query_texts() -> None:
    """docs/protocol.md, Limits (`max_queries_per_connection`): a Subscribe over the bound that
    declares more than 1024 texts is malformed before any length is read."""
    from adapters.wire import SKIP_MOST_QUERIES

    assert SKIP_MOST_QUERIES == 1024


def test_operator_edge_bounds_are_pinned() -> None:
    """Bounds of the operator-facing review: ``syncref token mint --ttl`` at most 2^53 - 1 seconds
    (docs/operations.md, "Tokens"); the sweep and compaction intervals at least 0.01 s."""
    from adapters.auth import MAX_TTL_S
    from adapters.commands import MIN_INTERVAL_S

    assert MAX_TTL_S == 9_007_199_254_740_991
    assert MIN_INTERVAL_S == 0.01  # [server] sweep_interval_s / compact_interval_s (docs/operations.md)


def test_consumer_streak_bounds_and_the_close_flush_are_pinned() -> None:
    """docs/clients.md: a consumer still stale after five rebootstraps in a row stops, and so does one whose
    server skips the next seq five resubscriptions in a row (docs/protocol.md); close() gives pending acks
    2 s; failing connect attempts are a warning from the third in a row, at most one per 30 s."""
    from adapters.sdk.connection import Connection
    from adapters.sdk.consumer import ConsumerCore

    assert (ConsumerCore.MAX_STALE_STREAK, ConsumerCore.MAX_GAP_STREAK) == (5, 5)
    assert ConsumerCore.PAGE_EVENTS == 256  # docs/clients.md, protocol.md, ADR-0040: the first page's events
    from adapters.sdk.connection import CONNECT_WARN_AFTER, CONNECT_WARN_INTERVAL_S

    assert (CONNECT_WARN_AFTER, CONNECT_WARN_INTERVAL_S) == (3, 30.0)  # connect failures: a warning from the 3rd
    assert Connection("http://127.0.0.1:1", "db", "token").close_flush_timeout == 2.0


def test_consumer_stop_gives_async_callbacks_two_seconds(tmp_path: Path) -> None:
    """docs/clients.md, protocol.md Limits: ``StreamConsumer.stop()`` gives an async ``on_error`` still
    running ``stop_timeout`` = 2 s, then cancels it (as ``Connection.close`` does its callbacks)."""
    from adapters.sdk.consumer import StreamConsumer

    with CheckpointStore(tmp_path / "cp.sqlite") as store:
        c = StreamConsumer(object(), store, "s.x", apply=lambda tx, e: None,  # type: ignore[arg-type]
                           on_rebootstrap=lambda tx, stale: None)
        assert c.stop_timeout == 2.0


def test_read_slice_and_head_mark_defaults() -> None:
    """Two tenth-session defaults users rely on: a one-off read or /sql is built and matched 1,000 rows
    between other clients' turns (ADR-0038; docs/protocol.md Limits), and the head mark is rewritten at
    most once a second while records commit -- the bound of the loss it can detect after a crash
    (ADR-0039; docs/operations.md)."""
    from adapters.server import READ_SLICE_ROWS
    from reference.durability import HEAD_MARK_S

    assert READ_SLICE_ROWS == 1_000
    assert HEAD_MARK_S == 1.0


def test_eleventh_session_defaults(tmp_path: Path) -> None:
    """This session's defaults the docs state: the engine slices no snapshot until its I/O layer sets
    ``slice_rows``, and the server sets it to READ_SLICE_ROWS, so a Subscribe's snapshot or an Unsubscribe's
    dropped rows over 1,000 candidate rows are matched between other clients' turns (ADR-0041); the
    conformance kit listens 0.5 s after its fence for a connection that must hear nothing (``--quiet``), and
    ``--local`` serves with an outbound queue bound of 32 for its slow-consumer scenario
    (docs/conformance.md)."""
    from adapters.conformance.local import SLOW_CONSUMER_QUEUE
    from adapters.conformance.wire_runner import Options
    from adapters.server import READ_SLICE_ROWS, ServerConfig, SyncServer

    engine = Engine()
    assert engine.slice_rows is None
    SyncServer(ServerConfig(tmp_path))._limit_engine(engine)
    assert engine.slice_rows == READ_SLICE_ROWS == 1_000
    assert SLOW_CONSUMER_QUEUE == 32
    assert {f.name: f.default for f in dataclasses.fields(Options)}["quiet_s"] == 0.5
    import argparse

    from adapters.conformance.wire_runner import add_parser

    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    (parser,) = sub.choices.values()
    assert parser.get_default("quiet") == 0.5  # what `syncref conformance` runs with


def test_twelfth_session_defaults() -> None:
    """This session's defaults the docs state: the conformance kit judges /sql's limits at the server's
    own defaults unless told otherwise (``--max-sql-bytes`` 64 KiB, ``--max-sql-statements`` 64 -- the
    Limits a default ``syncref serve`` runs with, so a default target is judged by its documented
    bounds), drives the 408 and 429 scenarios only when given the target's bounds (no guess), holds
    each scenario's last stall 4 x ``--quiet`` (2 s), and
    ``--local`` serves with limits other than the defaults (100,000 bytes, 48 statements, a 2 s body
    timeout, 8 connections per identity) so the kit is seen to take them (docs/conformance.md)."""
    import argparse

    from adapters.conformance import local
    from adapters.conformance.wire_runner import LONG_HOLD_QUIETS, Options, add_parser
    from adapters.server import Limits

    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    assert fields["max_sql_bytes"] == Limits().max_sql_bytes == 64 * 1024
    assert fields["max_sql_statements"] == Limits().max_sql_statements == 64
    assert fields["body_timeout_s"] is None and fields["max_connections_per_identity"] is None
    assert LONG_HOLD_QUIETS == 4  # a scenario's last stall, and http_durable's, last 4 x --quiet (2 s by default)
    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    (parser,) = sub.choices.values()
    assert parser.get_default("max_sql_bytes") == 64 * 1024 and parser.get_default("max_sql_statements") == 64
    assert (local.SQL_BYTES, local.SQL_STATEMENTS, local.BODY_TIMEOUT_S, local.IDENTITY_CONNECTIONS) == \
        (100_000, 48, 2.0, 8)
