"""The SDK end to end against ``syncref serve``: append, consume into SQLite, ack, survive drops.

A real server runs in a subprocess (fresh data directory, tokens minted with ``syncref token mint``).
Every scenario runs over v2 and over v3, each with a different compression.  What is checked is
what an application relies on: every event applied exactly once and in order (the application's
table has seq as its primary key, so a duplicate apply would fail the consumer), the durable
watermark, the server-side checkpoint after acks, and a rebootstrap after an epoch reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import subprocess
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.ports import reserved_port
from support.server import SYNCREF, ServedProcess, mint_cli, running_server, serve_process

from adapters.sdk import (
    V2,
    V3,
    BacklogTooLarge,
    Backoff,
    CallTimeout,
    Checkpoint,
    CheckpointStore,
    ConnectError,
    Connection,
    ConnectionClosed,
    ConnectionLost,
    ReducerError,
    Stale,
    StreamConsumer,
)
from spec.policy import Policy, StreamClass
from spec.values import SyncCheckpoint, SyncEvent

SCOPES = "sync.subscribe,sync.append,sync.checkpoint.write"
MODES = [pytest.param((V2,), "None", id="v2-none"), pytest.param((V3,), "Gzip", id="v3-gzip"),
         pytest.param((V3, V2), "Brotli", id="v3-brotli")]
FAST = Backoff(base=0.02, cap=0.2, jitter=0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    with serve_process(tmp_path_factory.mktemp("sdk-e2e-data")) as served:
        yield served


def mint(server: ServedProcess, subject: str, scopes: str = SCOPES, streams: str = "e2e.*") -> str:
    return mint_cli(server.data, scopes, streams, "--subject", subject)["token"]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class App:
    """The application: a table of applied events in the same SQLite file as the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = CheckpointStore(path)
        self.store.db.execute("CREATE TABLE IF NOT EXISTS events (epoch INTEGER, seq INTEGER, payload TEXT, "
                              "hash TEXT, PRIMARY KEY (epoch, seq))")
        self.stales: list[Stale] = []

    def apply(self, tx: sqlite3.Connection, e: SyncEvent) -> None:
        assert e.payload_hash == sha(e.payload)
        tx.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (e.epoch, e.seq, e.payload, e.payload_hash))

    def rebootstrap(self, tx: sqlite3.Connection, stale: Stale) -> None:
        self.stales.append(stale)
        tx.execute("DELETE FROM events")

    def seqs(self, epoch: int = 1) -> list[int]:
        return [s for (s,) in self.store.db.execute("SELECT seq FROM events WHERE epoch = ? ORDER BY seq", (epoch,))]


def payload(i: int) -> str:
    return json.dumps({"i": i, "text": f"message {i}"}, sort_keys=True, separators=(",", ":"))


async def append(conn: Connection, stream: str, i: int) -> int:
    out = await conn.call("append_sync_event", stream, f"key-{i}", payload(i), sha(payload(i)), None)
    assert isinstance(out.value, int)
    return out.value


def connection(server: ServedProcess, token: str, protocols: tuple[str, ...], compression: str) -> Connection:
    return Connection(server.url, token=token, protocols=protocols, compression=compression, backoff=FAST,
                      call_timeout=20)


@pytest.mark.parametrize(("protocols", "compression"), MODES)
def test_append_consume_ack(server: ServedProcess, tmp_path: Path, protocols: tuple[str, ...],
                            compression: str) -> None:
    stream = f"e2e.{uuid.uuid4().hex[:12]}"

    async def body() -> None:
        producer = connection(server, mint(server, "producer"), protocols, compression)
        reader_token = mint(server, "reader")
        reader = connection(server, reader_token, protocols, compression)
        info = await reader.connect()
        assert info.protocol == protocols[0]
        app = App(tmp_path / "app.sqlite")
        consumer = StreamConsumer(reader, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap,
                                  client_id="reader-laptop")
        await consumer.start()
        seqs = [await append(producer, stream, i) for i in range(1, 31)]
        assert seqs == list(range(1, 31))
        assert await append(producer, stream, 7) == 7  # same key, same payload: the existing seq
        await consumer.wait_for(30)
        assert app.seqs() == list(range(1, 31))
        await consumer.flush_acks()
        ckpt = reader.subscribe([f"SELECT * FROM sync_checkpoint WHERE stream_id = '{stream}'"])
        await reader.applied(ckpt, timeout=10)
        rows = [r for r in reader.cache.table("sync_checkpoint") if isinstance(r, SyncCheckpoint)]
        assert [(r.client_id, r.epoch, r.last_applied_seq) for r in rows] == [("reader-laptop", 1, 30)]
        assert rows[0].owner == info.identity
        with pytest.raises(ReducerError) as err:
            await producer.call("append_sync_event", stream, "key-7", payload(8), None, None)
        assert err.value.code == "idempotency_conflict" and err.value.error is not None
        assert err.value.error.details["existing_seq"] == 7
        await consumer.stop()
        await reader.close()
        await producer.close()
        app.store.close()

    run(body())


@pytest.mark.parametrize(("protocols", "compression"), MODES)
def test_dropped_connections_and_a_restart_lose_and_duplicate_nothing(server: ServedProcess, tmp_path: Path,
                                                                     protocols: tuple[str, ...],
                                                                     compression: str) -> None:
    stream = f"e2e.{uuid.uuid4().hex[:12]}"
    total = 80

    async def body() -> None:
        producer = connection(server, mint(server, "producer"), protocols, compression)
        token = mint(server, "reader")
        reader = connection(server, token, protocols, compression)
        await reader.connect()
        app = App(tmp_path / "app.sqlite")
        consumer = StreamConsumer(reader, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap,
                                  client_id="reader")
        await consumer.start()

        async def produce(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                assert await append(producer, stream, i) == i
                if i % 7 == 0:
                    await asyncio.sleep(0.01)

        task = asyncio.create_task(produce(1, total // 2 + 1))
        for _ in range(4):  # drop the consumer's socket mid-stream, several times
            await asyncio.sleep(0.05)
            reader.abort()
        await task
        await consumer.wait_for(total // 2)
        assert reader.connects >= 2 and consumer.error is None
        # a "process restart": everything closed, then reopened from the SQLite file
        await consumer.stop()
        await reader.close()
        app.store.close()
        await produce(total // 2 + 1, total + 1)  # appended while the consumer is away
        app = App(tmp_path / "app.sqlite")
        assert app.store.load(stream) is not None
        reader = connection(server, token, protocols, compression)
        await reader.connect()
        consumer = StreamConsumer(reader, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap,
                                  client_id="reader")
        await consumer.start()
        await consumer.wait_for(total)
        assert app.seqs() == list(range(1, total + 1))
        assert app.stales == [] and consumer.core.gaps == 0
        await consumer.stop()
        await reader.close()
        await producer.close()
        app.store.close()

    run(body())


@pytest.mark.parametrize(("protocols", "compression"), MODES[:2])
def test_an_epoch_reset_rebootstraps_live_and_on_resume(server: ServedProcess, tmp_path: Path,
                                                        protocols: tuple[str, ...], compression: str) -> None:
    stream = f"e2e.{uuid.uuid4().hex[:12]}"

    async def body() -> None:
        admin = connection(server, mint(server, "admin", SCOPES + ",sync.admin"), protocols, compression)
        token = mint(server, "reader")
        reader = connection(server, token, protocols, compression)
        await reader.connect()
        live, resumed = App(tmp_path / "live.sqlite"), App(tmp_path / "resumed.sqlite")
        c_live = StreamConsumer(reader, live.store, stream, apply=live.apply, on_rebootstrap=live.rebootstrap)
        c_old = StreamConsumer(reader, resumed.store, stream, apply=resumed.apply,
                               on_rebootstrap=resumed.rebootstrap)
        await c_live.start()
        await c_old.start()
        for i in range(1, 6):
            await append(admin, stream, i)
        await c_live.wait_for(5)
        await c_old.wait_for(5)
        await c_old.stop()  # this one is offline during the reset
        await admin.call("reset_stream_epoch", stream)
        await c_live.wait_for(0, epoch=2)
        assert [s.reasons for s in live.stales] == [("epoch_changed",)] and not live.stales[0].from_server
        assert live.seqs(1) == []  # the callback dropped the old epoch's state
        for i in range(6, 9):
            await append(admin, stream, i)
        await c_old.start()  # resumes with epoch 1: the server refuses with stale_cursor
        epoch = live.stales[0].epoch
        head = (await admin.call("append_sync_event", stream, "key-8", payload(8), None, None)).value
        assert isinstance(head, int)
        await c_live.wait_for(head, epoch=epoch)
        await c_old.wait_for(head, epoch=epoch)
        assert len(resumed.stales) == 1
        assert resumed.stales[0].from_server and "epoch_changed" in resumed.stales[0].reasons
        floor = live.stales[0].floor_seq
        assert live.seqs(epoch) == resumed.seqs(epoch) == list(range(floor, head + 1))
        for c in (c_live, c_old):
            await c.stop()
        await reader.close()
        await admin.close()
        live.store.close()
        resumed.store.close()

    run(body())


def test_a_replay_past_the_budget_rebootstraps_once_and_rehydrates_the_window(tmp_path: Path) -> None:
    """ADR-0013 decision 3 / REPLAY-3: a stale cursor costs one rebootstrap, because the rehydrate read
    cannot be stale.  A new consumer of a stream longer than its class's replay budget is refused
    ``replay_budget_exceeded`` (from watermark 0); its callback returns None (no authority of its own),
    so it must read the retained window with no seq bound -- not resume from ``floor_seq - 1`` = 0
    again, which is just as far past the budget (it used to rebootstrap five times, dropping the
    application's state each time, then stop with "still stale")."""
    stream = f"e2e.budget.{uuid.uuid4().hex[:8]}"
    app = App(tmp_path / "budget.sqlite")
    policy = Policy(default_class=StreamClass("default", replay_budget=5))
    with running_server(tmp_path / "data", policy=policy) as st:
        token = st.token()

        async def body() -> None:
            async with Connection(st.base, token=token, backoff=FAST, call_timeout=20) as conn:
                for i in range(1, 13):
                    assert await append(conn, stream, i) == i
                consumer = StreamConsumer(conn, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap)
                await consumer.start()
                await asyncio.wait_for(consumer.wait_for(12), 20)
                assert [s.reasons for s in app.stales] == [("replay_budget_exceeded",)]
                assert app.seqs() == list(range(1, 13)) and consumer.core.rebootstraps == 1
                assert await append(conn, stream, 13) == 13  # the rehydrate's query set carries the live tail
                await asyncio.wait_for(consumer.wait_for(13), 20)
                assert app.seqs() == list(range(1, 14))
                conn.abort()  # a reconnect after the rehydrate resumes from the watermark: within the budget
                for _ in range(50):  # a call on the dying socket is lost: retry under the same key
                    try:
                        assert await append(conn, stream, 14) == 14
                        break
                    except ConnectionLost:
                        await asyncio.sleep(0.05)
                await asyncio.wait_for(consumer.wait_for(14), 20)
                assert app.seqs() == list(range(1, 15)) and len(app.stales) == 1 and consumer.error is None
                await consumer.stop()

        run(body())
    app.store.close()


@pytest.mark.parametrize("crash_at", [1, 7])
def test_a_restart_mid_rehydrate_reads_the_window_again_without_a_second_rebootstrap(tmp_path: Path,
                                                                                     crash_at: int) -> None:
    """REPLAY-3 across a process restart: the rehydrate (the window read a rebootstrap without a watermark
    asked for) is stored with the checkpoint.  The first process is refused ``replay_budget_exceeded``,
    its callback drops the application's state and returns None, and it dies while applying the window
    (at seq 1: nothing of the window committed; at seq 7 of 12: seqs 1-6 committed).  The restarted
    process must finish reading the window from its watermark: no second ``on_rebootstrap`` (nothing new
    is stale), and no seq delivered again.  (It used to resume ``seq > 0`` or ``seq > 6``, past the
    budget of 5: stale again, the callback ran a second time, and seqs 1-6 were applied twice.)"""
    stream = f"e2e.rehydrate.{uuid.uuid4().hex[:8]}"
    policy = Policy(default_class=StreamClass("default", replay_budget=5))
    delivered: list[int] = []

    class Crash(Exception):
        """The process dies here: the window's transaction is not committed past the seq before."""

    with running_server(tmp_path / "data", policy=policy) as st:
        token = st.token()

        async def process(crash: int | None) -> tuple[App, StreamConsumer]:
            app = App(tmp_path / "app.sqlite")

            def apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
                if e.seq == crash:
                    raise Crash(e.seq)
                delivered.append(e.seq)
                app.apply(tx, e)

            async with Connection(st.base, token=token, backoff=FAST, call_timeout=20) as conn:
                consumer = StreamConsumer(conn, app.store, stream, apply=apply, on_rebootstrap=app.rebootstrap)
                await consumer.start()
                if crash is not None:
                    with pytest.raises(Crash):
                        await asyncio.wait_for(consumer.wait_for(12), 20)
                else:
                    await asyncio.wait_for(consumer.wait_for(12), 20)
                await consumer.stop()
            app.store.close()
            return app, consumer

        async def body() -> None:
            async with Connection(st.base, token=token, backoff=FAST, call_timeout=20) as producer:
                for i in range(1, 13):
                    assert await append(producer, stream, i) == i
            first, _ = await process(crash_at)
            assert [s.reasons for s in first.stales] == [("replay_budget_exceeded",)]
            assert delivered == list(range(1, crash_at))
            second, consumer = await process(None)
            assert second.stales == [], "the restart rebootstrapped again"
            assert delivered == list(range(1, 13)), "events were delivered twice"
            reopened = App(tmp_path / "app.sqlite")
            assert reopened.seqs() == list(range(1, 13)) and consumer.core.rebootstraps == 0
            assert reopened.store.load(stream) == Checkpoint(stream, 1, 12)  # the window has been read
            reopened.store.close()

        run(body())


def test_a_consumer_behind_a_burst_sheds_its_queue_and_still_applies_each_event_once(tmp_path: Path) -> None:
    """A slow ``apply`` (2 ms an event) behind a burst of 300 pipelined appends, with ``max_queue=4``:
    the consumer sheds (unsubscribes, resubscribes from its watermark when the set has ended) and
    every event is applied exactly once, in order, with no rebootstrap."""
    import time
    stream = f"e2e.burst.{uuid.uuid4().hex[:8]}"
    app = App(tmp_path / "burst.sqlite")

    def slow_apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
        time.sleep(0.002)
        app.apply(tx, e)

    with running_server(tmp_path / "data") as st:
        token = st.token()

        async def body() -> None:
            async with Connection(st.base, token=token, backoff=FAST, call_timeout=30) as producer, \
                    Connection(st.base, token=token, backoff=FAST, call_timeout=30) as reader:
                consumer = StreamConsumer(reader, app.store, stream, apply=slow_apply,
                                          on_rebootstrap=app.rebootstrap, max_queue=4)
                await consumer.start()
                seqs = await asyncio.gather(*(append(producer, stream, i) for i in range(1, 301)))
                assert sorted(seqs) == list(range(1, 301))
                await asyncio.wait_for(consumer.wait_for(300), 60)
                assert app.seqs() == list(range(1, 301)) and app.stales == [] and consumer.error is None
                assert consumer.overflows >= 1 and consumer.queued == 0
                await consumer.stop()

        run(body())
    app.store.close()


def test_a_normal_close_is_quiet_and_flushes_acks(server: ServedProcess, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Leaving ``async with Connection`` with a running consumer: pending acks are sent first, the
    consumer stops without an error report, nothing is logged above DEBUG (issue 15)."""
    app = App(tmp_path / "quiet.sqlite")
    caplog.set_level(logging.DEBUG, logger="syncref.sdk")

    async def body() -> None:
        async with Connection(server.url, token=mint(server, "quiet")) as conn:
            consumer = StreamConsumer(conn, app.store, "e2e.quiet", client_id="quiet", apply=app.apply,
                                      on_rebootstrap=app.rebootstrap, ack_delay=0.2)  # acks still pending
            await consumer.start()
            last = 0
            for i in range(3):
                last = (await conn.call("append_sync_event", "e2e.quiet", f"q{i}", payload(i), sha(payload(i)),
                                        None)).value
            await consumer.wait_for(last)
        assert consumer.acked == (1, last)  # flushed by close
        assert isinstance(consumer.error, ConnectionClosed)
        with pytest.raises(ConnectionClosed):
            await consumer.wait_for(last + 1)

    run(body())
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG and r.name.startswith("syncref.sdk")]
    assert loud == [], [r.getMessage() for r in loud]
    assert any("consumer stopped: the connection was closed" in r.getMessage() for r in caplog.records)


def test_a_server_that_goes_away_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same consumer, but the connection is closed for good by the other side: an error."""
    app = App(tmp_path / "loud.sqlite")
    with serve_process(tmp_path / "data") as served:
        token = mint(served, "loud")

        async def body() -> None:
            conn = Connection(served.url, token=token, reconnect=False)
            await conn.connect()
            consumer = StreamConsumer(conn, app.store, "e2e.loud", client_id="loud", apply=app.apply,
                                      on_rebootstrap=app.rebootstrap)
            await consumer.start()
            seq = (await conn.call("append_sync_event", "e2e.loud", "k", payload(1), sha(payload(1)), None)).value
            await consumer.wait_for(seq)
            await asyncio.get_running_loop().run_in_executor(None, served.stop)
            with pytest.raises(ConnectionClosed):
                await consumer.wait_for(seq + 1)
            await conn.close()

        run(body())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("e2e.loud: consumer stopped" in m for m in errors), errors


def test_a_revoked_token_stops_the_consumer_with_the_servers_reason(server: ServedProcess, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The operator revokes the consumer's token (``syncref token revoke``): the server closes the socket
    1008 and refuses the reconnect's token exchange 401 ``token revoked``, for good.  Before, nothing said
    so: no log line named the refusal, and the consumer stopped with a bare ``ConnectionClosed("...: the
    connection was closed")`` -- the one thing the developer needs (revoked, get another token) was lost.
    Now the connection logs the refusal it gives up on, exposes it (``Connection.fatal``), and the
    consumer's error names it and has it as its cause."""
    app = App(tmp_path / "revoked.sqlite")
    minted = mint_cli(server.data, SCOPES, "e2e.*", "--subject", "revoked")

    async def body() -> None:
        conn = Connection(server.url, token=minted["token"], backoff=FAST, call_timeout=20)
        consumer = StreamConsumer(conn, app.store, "e2e.revoked", apply=app.apply, on_rebootstrap=app.rebootstrap)
        await consumer.start()
        seq = (await conn.call("append_sync_event", "e2e.revoked", "k", payload(1), sha(payload(1)), None)).value
        await consumer.wait_for(seq)
        subprocess.run([str(SYNCREF), "token", "revoke", "--data", str(server.data), "--jti", minted["jti"]],
                       check=True, capture_output=True, timeout=30)
        with pytest.raises(ConnectionClosed) as info:
            await consumer.wait_for(seq + 1)
        assert isinstance(conn.fatal, ConnectError) and conn.fatal.status == 401 and conn.fatal.permanent
        assert "token revoked" in str(info.value) and info.value.__cause__ is conn.fatal
        await conn.close()

    run(body())
    logged = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and r.name.startswith("syncref.sdk")]
    assert any("token revoked" in m and "giving up" in m for m in logged), logged


def test_an_anonymous_connection_keeps_its_identity_across_reconnects(tmp_path: Path) -> None:
    """Without a token (``--allow-anonymous``) the server mints an identity and returns its token in
    InitialConnection, with the grant ``identity.<own hex>.*``.  The SDK reconnects by itself, but it
    reconnected anonymously again: a new identity each time, so its own stream was no longer granted
    (the consumer's resubscription saw no rows, silently) and its appends were ``forbidden_stream``.
    It now presents the minted token on reconnect, as the official SDKs' applications do with the
    token ``onConnect`` gives them."""
    from adapters.auth import AuthConfig

    app = App(tmp_path / "anon.sqlite")
    with running_server(tmp_path / "data", auth=AuthConfig(allow_anonymous=True)) as st:
        async def body() -> None:
            conn = Connection(st.base, backoff=FAST, call_timeout=20)
            info = await conn.connect()
            stream = f"identity.{info.identity}.notes"
            consumer = StreamConsumer(conn, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            await consumer.wait_for(await append(conn, stream, 1))
            conn.abort()
            while not conn.disconnects:  # the drop seen (a call made before could go out on the dead socket)
                await asyncio.sleep(0.01)
            seq = await append(conn, stream, 2)  # after the reconnect
            assert conn.connects == 2 and conn.identity == info.identity
            await consumer.wait_for(seq)
            assert app.seqs() == [1, 2]
            await conn.close()

        run(body())


def test_a_connection_made_with_an_exchanged_token_outlives_the_websocket_token(tmp_path: Path) -> None:
    """Failed before (a strict xfail from the revc review): every client that trades its long-lived token
    for a websocket token (the Python SDK's default, and the official TypeScript SDK) connects with a token
    that expires in 60 s, and the server closed each connection 1008 ``token expired`` at that token's
    ``exp`` + 30 s: measured against ``syncref serve``, a Python SDK connection with a one-hour token was
    dropped at 90 s, and again every 90 s (a resubscription each time; in-flight calls get ConnectionLost;
    the TypeScript SDK does not reconnect at all).  The credential that bounds the connection (ADR-0004
    decision 8) is the long-lived one, carried in the websocket token as ``oa_conn_exp``.  Here the
    websocket token lives 1 s (no leeway) and the long-lived token an hour: the connection stays up."""
    from adapters.auth import AuthConfig

    with running_server(tmp_path / "data", auth=AuthConfig(websocket_token_ttl_s=1, leeway_s=0)) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            await conn.connect()
            await asyncio.sleep(2.5)
            closes = [(d.code, d.reason) for d in conn.disconnects]
            await conn.close()
            assert closes == [] and conn.connects == 1, closes

        run(body())


def test_a_connection_made_with_an_exchanged_token_ends_with_the_token_it_was_traded_for(tmp_path: Path) -> None:
    """The other half of ``oa_conn_exp``: the long-lived token still bounds the connection.  A parent token
    that lives 7 s (6-7 s: exp is whole seconds), traded for a 1 s websocket token (no leeway, so the old
    bound fell within 1 s of the trade): the connection is up at 2 s (4 s of margin for a slow connect on
    a loaded machine) and closed 1008 ``token expired`` once the parent expires."""
    from adapters.auth import AuthConfig, Authenticator, KeyStore

    config = AuthConfig(websocket_token_ttl_s=1, leeway_s=0)
    with running_server(tmp_path / "data", auth=config) as st:
        parent = Authenticator(config, KeyStore.load_or_create(st.config.data_dir)).mint(
            scopes=frozenset({"sync.subscribe"}), streams=("*",), ttl_s=7)

        async def body() -> None:
            conn = Connection(st.base, token=parent, backoff=FAST, call_timeout=20)
            await conn.connect()
            await asyncio.sleep(2.0)  # past the websocket token's own exp, before the parent's
            assert [d.code for d in conn.disconnects] == []
            for _ in range(150):  # the parent's exp is at most 5 s away now
                if conn.disconnects:
                    break
                await asyncio.sleep(0.1)
            closes = [(d.code, d.reason) for d in conn.disconnects]
            await conn.close()
            assert closes[:1] == [(1008, "token expired: reconnect with a fresh token")], closes

        run(body())


def test_revoking_the_parent_closes_a_connection_made_with_an_exchanged_token(tmp_path: Path) -> None:
    """A websocket token keeps its parent's ``jti``: revoking the long-lived token closes the connection
    the SDK opened with the token it traded it for (1008 ``token revoked``), bound or not."""
    import jwt

    from adapters.auth import REVOKED_JTI_FILE

    with running_server(tmp_path / "data") as st:
        parent = st.token()

        async def body() -> None:
            conn = Connection(st.base, token=parent, backoff=FAST, call_timeout=20)
            await conn.connect()
            jti = jwt.decode(parent, options={"verify_signature": False})["jti"]
            (st.config.data_dir / REVOKED_JTI_FILE).write_text(f"{jti}\n")
            for _ in range(100):
                if conn.disconnects:
                    break
                await asyncio.sleep(0.1)
            closes = [(d.code, d.reason) for d in conn.disconnects]
            await conn.close()
            assert closes[:1] == [(1008, "token revoked: reconnect with another token")], closes

        run(body())


@pytest.mark.parametrize("how", ["provider", "set_token"])
def test_a_long_running_consumer_survives_its_token_expiring_and_being_replaced(tmp_path: Path, how: str) -> None:
    """Token rotation.  The server closes a connection 1008 ``token expired`` when its long-lived token
    expires (ADR-0004 decision 8, ``oa_conn_exp``), and the SDK reconnected with the same, now expired,
    token: the exchange answers 401, which is permanent, so the connection gave up and the consumer stopped
    with ConnectionClosed -- a long-running consumer could not outlive its first token.  Now ``token=`` may
    be a provider (called at every connect; here it mints a new 3 s token each time) or the application
    calls ``conn.set_token()`` before the old one runs out (here every second, from a task of its own, so a
    slow machine's appends do not delay it).  Tokens live 2-3 s (exp is whole seconds, no
    leeway); events are appended across three of them and the consumer applies every one, once."""
    from adapters.auth import AuthConfig, Authenticator, KeyStore

    config = AuthConfig(leeway_s=0)
    with running_server(tmp_path / "data", auth=config) as st:
        auth = Authenticator(config, KeyStore.load_or_create(st.config.data_dir))
        minted: list[str] = []

        def fresh() -> str:
            minted.append(auth.mint(subject="rotating-reader", scopes=frozenset(SCOPES.split(",")),
                                    streams=("e2e.*",), ttl_s=3))
            return minted[-1]

        app = App(tmp_path / "rot.sqlite")

        async def body() -> None:
            producer = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            conn = Connection(st.base, token=fresh if how == "provider" else fresh(), backoff=FAST, call_timeout=20)
            consumer = StreamConsumer(conn, app.store, "e2e.rot", apply=app.apply, on_rebootstrap=app.rebootstrap)
            async def rotate() -> None:  # a fresh token every second, well before the current one runs out
                while True:
                    await asyncio.sleep(1)
                    conn.set_token(fresh())

            rotator = asyncio.create_task(rotate()) if how == "set_token" else None
            await consumer.start()
            try:
                for i in range(1, 17):  # ~8 s: past three expiries
                    assert await append(producer, "e2e.rot", i) == i
                    await asyncio.sleep(0.5)
                assert await asyncio.wait_for(consumer.wait_for(16), 20) == 16
                expired = [d for d in conn.disconnects if d.reason.startswith("token expired")]
                assert app.seqs() == list(range(1, 17)) and consumer.error is None and conn.fatal is None
                assert len(expired) >= 2 and expired == conn.disconnects and conn.connects >= 3, conn.disconnects
            finally:
                if rotator is not None:
                    rotator.cancel()
                await producer.close()
                await conn.close()

        run(body())


def test_without_a_new_token_the_consumer_stops_when_its_token_expires_and_says_why(tmp_path: Path) -> None:
    """The other side of rotation: a plain token that expires (2-3 s, no leeway) ends the connection 1008;
    the reconnect's exchange is refused 401 ``token expired`` (permanent), so the consumer stops with
    ConnectionClosed naming it -- no retry loop with a dead credential."""
    from adapters.auth import AuthConfig, Authenticator, KeyStore

    config = AuthConfig(leeway_s=0)
    with running_server(tmp_path / "data", auth=config) as st:
        token = Authenticator(config, KeyStore.load_or_create(st.config.data_dir)).mint(
            scopes=frozenset(SCOPES.split(",")), streams=("e2e.*",), ttl_s=3)
        app = App(tmp_path / "dead.sqlite")

        async def body() -> None:
            conn = Connection(st.base, token=token, backoff=FAST, call_timeout=20)
            consumer = StreamConsumer(conn, app.store, "e2e.dead", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            try:
                with pytest.raises(ConnectionClosed) as caught:
                    await asyncio.wait_for(consumer.wait_for(1), 20)
                cause = caught.value.__cause__
                assert isinstance(cause, ConnectError) and (cause.status, cause.permanent) == (401, True)
                assert "token expired" in str(cause) and conn.fatal is cause
            finally:
                await conn.close()

        run(body())


def test_a_consumer_catches_up_on_a_backlog_larger_than_one_message(tmp_path: Path) -> None:
    """A consumer's catch-up is one snapshot: the resume (``seq > W``, up to the replay budget of 20,000
    events) or the rehydrate (the whole retained window; the default policy retains everything).  A
    snapshot over ``max_outbound_message_bytes`` (32 MiB) is refused ``limit_exceeded``, which the consumer
    takes as fatal -- and a restart asks for the same snapshot.  Measured with the defaults: 140 events of
    250 KiB appended, a new consumer stops at once with ``limit_exceeded {"actual": 35861967, ...}``; so
    a device joining a busy stream, or one offline long enough, never catches up.  Here the limit is
    1 MiB and the backlog 8 events of 200 KiB."""
    from support.server import with_limits

    app = App(tmp_path / "big.sqlite")
    limits = with_limits(max_outbound_message_bytes=1024 * 1024, max_outbound_bytes=64 * 1024 * 1024)
    with running_server(tmp_path / "data", limits=limits) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            text = json.dumps({"t": "x" * (200 * 1024)}, separators=(",", ":"))
            for i in range(8):
                await conn.call("append_sync_event", "e2e.big", f"k{i}", text, sha(text), None)
            consumer = StreamConsumer(conn, app.store, "e2e.big", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            try:
                assert await asyncio.wait_for(consumer.wait_for(8), 20) == 8
                assert app.seqs() == list(range(1, 9)) and consumer.core.pages >= 2 and app.stales == []
                await conn.call("append_sync_event", "e2e.big", "k8", text, sha(text), None)
                assert await asyncio.wait_for(consumer.wait_for(9), 20) == 9  # then the live tail
            finally:
                await conn.close()

        run(body())


BIG = json.dumps({"t": "x" * (200 * 1024)}, separators=(",", ":"))
ONE_MIB = {"max_outbound_message_bytes": 1024 * 1024, "max_outbound_bytes": 64 * 1024 * 1024}


def test_a_backlog_of_few_large_events_is_paged_after_one_head_read_not_a_halving_cascade(tmp_path: Path) -> None:
    """Ten events of 200 KiB under the 1 MiB bound, against the real server, counting the subscriptions the
    consumer makes.  The first page (``page_events`` = 256) asks past the head and holds the whole backlog,
    so its refusal says nothing about how many events fit; the consumer used to halve blind -- 256, 128, 64,
    32, 16, 8 refused -- 11 subscriptions (measured).  Now it reads the head (the stream row alone: ``seq > W
    AND seq <= W``, which the server answers) and asks for the share that fits: the refused resume, the
    refused first page, the head, two pages, the live resume -- 6."""
    from support.server import with_limits

    app = App(tmp_path / "few.sqlite")
    with running_server(tmp_path / "data", limits=with_limits(**ONE_MIB)) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(10):
                await conn.call("append_sync_event", "e2e.few", f"k{i}", BIG, sha(BIG), None)
            consumer = StreamConsumer(conn, app.store, "e2e.few", apply=app.apply, on_rebootstrap=app.rebootstrap)
            asked: list[tuple[str, ...]] = []
            subscribe = conn.subscribe

            def counting(queries: Any, **kw: Any) -> Any:
                asked.append(tuple(queries() if callable(queries) else queries))  # (the consumer passes a function)
                return subscribe(queries, **kw)

            conn.subscribe = counting  # type: ignore[method-assign]
            await consumer.start()
            try:
                assert await asyncio.wait_for(consumer.wait_for(10), 30) == 10
                assert app.seqs() == list(range(1, 11)) and consumer.error is None
                assert (len(asked), consumer.core.pages, consumer.core.head_reads) == (6, 2, 1), asked
                assert asked[2][1].endswith("seq > 0 AND seq <= 0"), asked[2]
            finally:
                await conn.close()

        run(body())


def test_events_appended_while_a_consumer_pages_are_applied_once_in_order(tmp_path: Path) -> None:
    """Paging (ADR-0040) while a producer keeps appending: every event exactly once, in seq order."""
    from support.server import with_limits

    app = App(tmp_path / "busy.sqlite")
    with running_server(tmp_path / "data", limits=with_limits(**ONE_MIB)) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            producer = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(10):
                await conn.call("append_sync_event", "e2e.busy", f"k{i}", BIG, sha(BIG), None)
            consumer = StreamConsumer(conn, app.store, "e2e.busy", apply=app.apply, on_rebootstrap=app.rebootstrap)

            async def produce() -> None:
                for i in range(10, 20):
                    await producer.call("append_sync_event", "e2e.busy", f"k{i}", BIG, sha(BIG), None)

            try:
                await asyncio.gather(consumer.start(), produce())
                assert await asyncio.wait_for(consumer.wait_for(20), 30) == 20
                assert app.seqs() == list(range(1, 21)) and consumer.core.pages >= 2
            finally:
                await producer.close()
                await conn.close()

        run(body())


def test_a_rehydrate_over_one_message_is_paged(tmp_path: Path) -> None:
    """on_rebootstrap returns None after an epoch reset: the retained window (10 events of 200 KiB) is over
    the 1 MiB message bound, so it is read in pages; the callback runs once and the checkpoint's
    rehydrating mark is cleared once the window is applied."""
    from support.server import with_limits

    app = App(tmp_path / "re.sqlite")
    with running_server(tmp_path / "data", limits=with_limits(**ONE_MIB)) as st:
        async def body() -> None:
            admin = Connection(st.base, token=st.token(scopes={*SCOPES.split(","), "sync.admin"}), backoff=FAST,
                               call_timeout=20)
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(3):
                await append(admin, "e2e.re", i)
            consumer = StreamConsumer(conn, app.store, "e2e.re", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            await consumer.wait_for(3)
            await consumer.stop()
            await admin.call("reset_stream_epoch", "e2e.re")
            for i in range(10):
                head = (await admin.call("append_sync_event", "e2e.re", f"big{i}", BIG, sha(BIG), None)).value
            try:
                await consumer.start()
                assert await asyncio.wait_for(consumer.wait_for(head, epoch=2), 30) == head
                assert len(app.stales) == 1 and app.stales[0].epoch == 2
                assert app.seqs(1) == [] and app.seqs(2) == list(range(app.stales[0].floor_seq, head + 1))
                assert len(app.seqs(2)) == 10 and consumer.core.pages >= 2
                cp = app.store.load("e2e.re")
                assert cp is not None and not cp.rehydrating
            finally:
                await admin.close()
                await conn.close()

        run(body())


def test_a_fresh_consumer_joins_a_stream_longer_than_max_scan_rows(tmp_path: Path) -> None:
    """ADR-0042: a fresh consumer of a stream whose retained window is over ``max_scan_rows`` (and so over the
    replay budget) rehydrates in pages from ``floor_seq - 1``.  Before, every page was a resume measured as
    ``head - W`` against the budget and refused ``replay_budget_exceeded``, so the consumer stopped with
    BacklogTooLarge(window_over_replay_budget): with the defaults (budget 20,000, max_scan_rows 100,000) no
    consumer could join a stream of more than 100,000 events.  Scaled down: budget 50, max_scan_rows 100,
    120 events; the consumer's default page (256 events) is over the budget, so it is cut to 50."""
    from support.server import with_limits

    app = App(tmp_path / "long.sqlite")
    policy = Policy(default_class=StreamClass("default", replay_budget=50))
    with running_server(tmp_path / "data", policy=policy, limits=with_limits(max_scan_rows=100)) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(1, 121):
                assert await append(conn, "e2e.long", i) == i
            consumer = StreamConsumer(conn, app.store, "e2e.long", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            try:
                assert await asyncio.wait_for(consumer.wait_for(120), 30) == 120
                assert [s.reasons for s in app.stales] == [("replay_budget_exceeded",)]
                assert app.seqs() == list(range(1, 121)) and consumer.core.pages >= 3 and consumer.error is None
                cp = app.store.load("e2e.long")
                assert cp is not None and not cp.rehydrating
                assert await append(conn, "e2e.long", 121) == 121
                assert await asyncio.wait_for(consumer.wait_for(121), 20) == 121  # then the live tail
            finally:
                await conn.close()

        run(body())


def test_an_event_larger_than_one_message_stops_the_consumer_with_a_clear_error(tmp_path: Path) -> None:
    """Event 2 alone (200 KiB) is over a 150 KiB message bound: no page can carry it.  The consumer applies
    event 1 and stops with BacklogTooLarge naming seq 2 -- it does not page forever."""
    from support.server import with_limits

    app = App(tmp_path / "huge.sqlite")
    limits = with_limits(max_outbound_message_bytes=150 * 1024, max_outbound_bytes=64 * 1024 * 1024)
    with running_server(tmp_path / "data", limits=limits) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            await append(conn, "e2e.huge", 1)
            await conn.call("append_sync_event", "e2e.huge", "big", BIG, sha(BIG), None)
            await append(conn, "e2e.huge", 3)
            consumer = StreamConsumer(conn, app.store, "e2e.huge", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            try:
                with pytest.raises(BacklogTooLarge) as caught:
                    await asyncio.wait_for(consumer.wait_for(3), 20)
                assert caught.value.reason == "event_too_large" and caught.value.seq == 2
                assert caught.value.details.get("limit") == "max_outbound_message_bytes"
                assert app.seqs() == [1] and consumer.watermark == 1
            finally:
                await conn.close()

        run(body())


@pytest.mark.parametrize("rehydrate", [False, True], ids=["resume", "rehydrate"])
def test_dropped_sockets_mid_paging_lose_and_duplicate_nothing(tmp_path: Path, rehydrate: bool) -> None:
    """Review revpage of ADR-0040: the socket is dropped after every 5th (rehydrate) or 6th (resume) event
    applied, i.e. in the middle of a paged catch-up (30 or 40 events of 200 KiB, 1 MiB bound), six times.
    Each reconnect resubscribes the current page from the watermark; every event is applied once, in order
    (the table's primary key would fail a second apply), the rehydrate's callback runs once and its mark is
    cleared.  (Passes on 85757a6; killed by the planted page lower bound ``seq > W + 1``.)"""
    from support.server import with_limits

    app = App(tmp_path / "drop.sqlite")
    with running_server(tmp_path / "data", limits=with_limits(**ONE_MIB)) as st:
        async def body() -> None:
            admin = Connection(st.base, token=st.token(scopes={*SCOPES.split(","), "sync.admin"}), backoff=FAST,
                               call_timeout=20)
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            epoch, every = (2, 5) if rehydrate else (1, 6)
            aborted: list[int] = []

            def apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
                app.apply(tx, e)
                if e.epoch == epoch and e.seq % every == 0 and len(aborted) < 6:
                    aborted.append(e.seq)
                    conn.abort()

            consumer = StreamConsumer(conn, app.store, "e2e.drop", apply=apply, on_rebootstrap=app.rebootstrap)
            if rehydrate:
                for i in range(3):
                    await append(admin, "e2e.drop", i)
                await consumer.start()
                await consumer.wait_for(3)
                await consumer.stop()
                await admin.call("reset_stream_epoch", "e2e.drop")
            for i in range(30 if rehydrate else 40):
                head = (await admin.call("append_sync_event", "e2e.drop", f"big{i}", BIG, sha(BIG), None)).value
            try:
                await consumer.start()
                assert await asyncio.wait_for(consumer.wait_for(head, epoch=epoch), 30) == head
                first = app.stales[0].floor_seq if rehydrate else 1
                assert app.seqs(epoch) == list(range(first, head + 1)) and len(aborted) == 6
                assert len(app.stales) == int(rehydrate) and consumer.error is None and conn.connects >= 6
                cp = app.store.load("e2e.drop")
                assert cp is not None and not cp.rehydrating and consumer.core.pages >= 6
            finally:
                await admin.close()
                await conn.close()

        run(body())


def test_a_retention_drop_between_pages_rebootstraps_once_and_applies_the_window(tmp_path: Path) -> None:
    """Review revpage of ADR-0040: a consumer paging from seq 3 of 25 (retain_count 25) is held back while
    35 more are appended and retention runs (floor 36): its next page is stale (retention_floor_breach),
    the callback runs once, and the new window 36..60 is applied once.  (Passes on 85757a6; killed by the
    planted page lower bound ``seq > W + 1``.)"""
    from support.server import with_limits

    app = App(tmp_path / "ret.sqlite")
    policy = Policy(default_class=StreamClass("default", retain_count=25))
    with running_server(tmp_path / "data", limits=with_limits(**ONE_MIB), policy=policy) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            producer = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(25):
                await producer.call("append_sync_event", "e2e.ret", f"k{i}", BIG, sha(BIG), None)
            third = asyncio.Event()

            def apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
                app.apply(tx, e)
                if e.seq == 3:
                    third.set()

            consumer = StreamConsumer(conn, app.store, "e2e.ret", apply=apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            await third.wait()
            async with app.store.async_lock():  # the consumer handles nothing meanwhile
                for i in range(25, 60):
                    head = (await producer.call("append_sync_event", "e2e.ret", f"k{i}", BIG, sha(BIG), None)).value
                await asyncio.to_thread(st.call, st.server._compact)
            try:
                assert await asyncio.wait_for(consumer.wait_for(head), 30) == head == 60
                assert [(s.reasons, s.floor_seq) for s in app.stales] == [(("retention_floor_breach",), 36)]
                assert app.seqs() == list(range(36, 61)) and consumer.error is None
            finally:
                await producer.close()
                await conn.close()

        run(body())


def test_a_rehydrate_over_max_scan_rows_is_read_as_a_resume(tmp_path: Path) -> None:
    """Review revpage of ADR-0040, decision 5's ``max_scan_rows`` case against the real server: a rehydrate's
    window (120 small events after an epoch reset, ``max_scan_rows`` 50) is refused ``max_scan_rows``.  The
    consumer paged it -- but this server counts a page (``seq > W AND seq <= B`` is not the resume form) as
    every event of the stream after W, so each page was refused ``max_scan_rows`` too, the consumer halved
    down to one event and stopped with ``BacklogTooLarge: event seq 4 (epoch 2) alone is over the server's
    max_scan_rows (121 > 50)``.  The resume form (``seq > W``) is not counted (the replay budget bounds it):
    the window is read with it, the callback runs once, the mark is cleared."""
    from support.server import with_limits

    app = App(tmp_path / "scan.sqlite")
    with running_server(tmp_path / "data", limits=with_limits(max_scan_rows=50)) as st:
        async def body() -> None:
            admin = Connection(st.base, token=st.token(scopes={*SCOPES.split(","), "sync.admin"}), backoff=FAST,
                               call_timeout=20)
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(3):
                await append(admin, "e2e.scan", i)
            consumer = StreamConsumer(conn, app.store, "e2e.scan", apply=app.apply, on_rebootstrap=app.rebootstrap,
                                      page_events=16)
            await consumer.start()
            await consumer.wait_for(3)
            await consumer.stop()
            await admin.call("reset_stream_epoch", "e2e.scan")
            for i in range(120):
                head = await append(admin, "e2e.scan", i)
            try:
                await consumer.start()
                assert await asyncio.wait_for(consumer.wait_for(head, epoch=2), 30) == head
                assert len(app.stales) == 1 and app.seqs(2) == list(range(app.stales[0].floor_seq, head + 1))
                cp = app.store.load("e2e.scan")
                assert cp is not None and not cp.rehydrating and consumer.error is None
            finally:
                await admin.close()
                await conn.close()

        run(body())


def test_a_backlog_over_max_scan_rows_and_one_message_is_paged_to_the_end(tmp_path: Path) -> None:
    """The window (30 events of 200 KiB) is over ``max_scan_rows`` (25) *and* over one message (1 MiB): read
    as a resume it is refused for bytes, then paged.  Before ADR-0042 the server counted each page as every
    event after W (31 > 25) whatever its size, and the consumer stopped at the first page with
    ``backlog_over_max_scan_rows`` (before the review revpage: halved to one event, ``event_too_large``).
    Now a page counts its own rows: refused ``max_scan_rows`` only while it holds over 24 events, it is cut
    to the share that fits (then by bytes), and every event is applied once."""
    from support.server import with_limits

    app = App(tmp_path / "scan2.sqlite")
    limits = with_limits(max_scan_rows=25, **ONE_MIB)
    with running_server(tmp_path / "data", limits=limits) as st:
        async def body() -> None:
            admin = Connection(st.base, token=st.token(scopes={*SCOPES.split(","), "sync.admin"}), backoff=FAST,
                               call_timeout=20)
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            for i in range(3):
                await append(admin, "e2e.scan2", i)
            consumer = StreamConsumer(conn, app.store, "e2e.scan2", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            await consumer.wait_for(3)
            await consumer.stop()
            await admin.call("reset_stream_epoch", "e2e.scan2")
            for i in range(30):
                head = (await admin.call("append_sync_event", "e2e.scan2", f"big{i}", BIG, sha(BIG), None)).value
            try:
                await consumer.start()
                assert await asyncio.wait_for(consumer.wait_for(head, epoch=2), 60) == head
                assert len(app.stales) == 1 and consumer.error is None and consumer.core.pages >= 6
                assert app.seqs(2) == list(range(app.stales[0].floor_seq, head + 1)) and len(app.seqs(2)) == 30
            finally:
                await admin.close()
                await conn.close()

        run(body())


def test_a_page_cut_by_one_large_event_grows_back_for_the_rest_of_the_catch_up(tmp_path: Path) -> None:
    """One 200 KiB event, then 300 of 2 KiB, under a 256 KiB message bound: the page holding the large event
    is cut to the share that fits (~25 events).  It used to stay that small for the rest of the catch-up
    (14 pages measured); pages that fit with room to spare now double the next, up to ``page_events``."""
    from support.server import with_limits

    app = App(tmp_path / "grow.sqlite")
    limits = with_limits(max_outbound_message_bytes=256 * 1024, max_outbound_bytes=64 * 1024 * 1024)
    small = json.dumps("y" * 2000)
    with running_server(tmp_path / "data", limits=limits) as st:
        async def body() -> None:
            conn = Connection(st.base, token=st.token(), backoff=FAST, call_timeout=20)
            await conn.call("append_sync_event", "e2e.grow", "big", BIG, sha(BIG), None)
            await asyncio.gather(*(conn.call("append_sync_event", "e2e.grow", f"k{i}", small, sha(small), None)
                                   for i in range(300)))
            consumer = StreamConsumer(conn, app.store, "e2e.grow", apply=app.apply, on_rebootstrap=app.rebootstrap)
            await consumer.start()
            try:
                assert await asyncio.wait_for(consumer.wait_for(301), 30) == 301
                assert app.seqs() == list(range(1, 302)) and consumer.error is None
                assert consumer.core.pages <= 8, consumer.core.pages
            finally:
                await conn.close()

        run(body())


# --- an unclean restart of the server (ADR-0003 decision 6) ----------------------------------------


@pytest.fixture
def port() -> Iterator[int]:
    """A port held for the whole test (tests/support/ports.py): the server is SIGKILLed or stopped and
    restarted on it under live, reconnecting clients, and between the two no other process can take it."""
    with reserved_port() as held:
        yield held


def test_sigkill_a_confirmed_consumer_continues_a_consumer_that_saw_a_lost_event_is_told(tmp_path: Path,
                                                                                       port: int) -> None:
    """CONT-1 end to end.  ``syncref serve`` with a disk we can stall ([faults] stall_commits_while):
    events 1..3 are durable; then the disk stalls, event 4 is committed and sent to the consumers
    without confirmed reads, and the server is SIGKILLed.  After the restart the stream's new epoch
    continues epoch 1 up to seq 3.  The confirmed consumer (it saw 1..3) continues: same watermark,
    same rows, its rebootstrap callback never called.  The other two saw seq 4, which no longer
    exists: each is told (its rebootstrap callback runs, once) and rehydrates.  One is told before the
    new seq 4 is appended (the stream's head is 3, below its watermark: ``cursor_ahead_of_head`` too);
    the late one, whose application was closed through the crash, comes back after it (the head is 4
    again, the same seq with other content: ``epoch_changed`` alone, and still told).  The new seq 4
    then reaches all three.  (The order is made, not raced: the test used to append the new seq 4 as
    soon as the confirmed consumer had moved, and the told consumer's stale answer had head 3 or 4
    depending on which reconnected first -- a CI flake under load.)"""
    data, stall = tmp_path / "data", tmp_path / "stall"
    config = tmp_path / "syncref.toml"
    config.write_text(f'[faults]\nstall_commits_while = "{stall}"\n', encoding="utf-8")
    stream = f"e2e.crash.{uuid.uuid4().hex[:8]}"
    args = ("--config", str(config), "--port", str(port))

    async def phase_one(server: ServedProcess, producer: Connection, consumers: tuple[StreamConsumer, ...]) -> None:
        confirmed, unconfirmed, late = consumers
        await producer.connect()
        for i in (1, 2, 3):
            assert await append(producer, stream, i) == i
        for c in consumers:
            await c.start()
        for c in consumers:
            await c.wait_for(3)
        stall.write_text("the disk stalls")
        # committed and sent at once to readers without confirmed reads (the producer is one), never durable
        lost = await producer.call("append_sync_event", stream, "key-lost", '{"lost":true}', None, None)
        assert lost.value == 4
        await unconfirmed.wait_for(4)
        await late.wait_for(4)
        await late.stop()  # its application closes: checkpoint (1, 4)
        assert confirmed.watermark == 3  # confirmed reads: a transaction that is not durable is not shown
        server.proc.kill()  # SIGKILL: no clean-shutdown marker
        server.proc.wait()

    async def phase_two(producer: Connection, consumers: tuple[StreamConsumer, ...],
                        apps: tuple[App, App, App]) -> None:
        confirmed, unconfirmed, late = consumers
        ok_app, told_app, late_app = apps
        new_epoch = await asyncio.wait_for(_epoch_moved(confirmed), 30)
        # told (and rebootstrapped to the new epoch) before the new seq 4 exists
        assert await asyncio.wait_for(_epoch_moved(unconfirmed), 30) == new_epoch
        assert await append(producer, stream, 4) == 4  # seq 4 again, in the new epoch, other content
        await late.start()  # back from its checkpoint (1, 4), after the new seq 4
        for c in consumers:
            await c.wait_for(4, epoch=new_epoch)
        # the confirmed consumer continued: nothing replaced, never told to rebootstrap
        assert ok_app.stales == [] and confirmed.core.rebootstraps == 0 and confirmed.core.continues == 1
        assert ok_app.seqs(1) == [1, 2, 3] and ok_app.seqs(new_epoch) == [4]
        # the other two applied the lost seq 4: each was told, once, and rehydrated
        assert told_app.stales == [Stale(stream, ("epoch_changed", "cursor_ahead_of_head"), new_epoch, 1, 3, 1, 4,
                                         from_server=True)]
        assert late_app.stales == [Stale(stream, ("epoch_changed",), new_epoch, 1, 4, 1, 4, from_server=True)]
        for c, app in ((unconfirmed, told_app), (late, late_app)):
            assert c.core.rebootstraps == 1 and c.core.continues == 0
            assert app.seqs(new_epoch) == [1, 2, 3, 4]  # replayed from the start of the continuing epoch
            payloads = [p for (p,) in app.store.db.execute("SELECT payload FROM events ORDER BY seq")]
            assert payloads == [payload(i) for i in (1, 2, 3, 4)]  # the lost '{"lost":true}' is gone

    producer_token = mint_cli(data, SCOPES, "e2e.*", "--subject", "producer")["token"]  # creates the data dir
    reader_token = mint_cli(data, SCOPES, "e2e.*", "--subject", "reader")["token"]
    apps = (App(tmp_path / "confirmed.sqlite"), App(tmp_path / "unconfirmed.sqlite"), App(tmp_path / "late.sqlite"))

    async def body() -> None:
        url = f"http://127.0.0.1:{port}"
        producer = Connection(url, token=producer_token, confirmed=False, backoff=FAST, call_timeout=20)
        readers = [Connection(url, token=reader_token, confirmed=c, backoff=FAST, call_timeout=20)
                   for c in (True, False, False)]
        consumers = tuple(StreamConsumer(r, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap)
                          for r, app in zip(readers, apps, strict=True))
        with serve_process(data, *args) as first:
            for r in readers:
                await r.connect()
            await phase_one(first, producer, consumers)
            await readers[2].close()  # the late application is gone through the crash and the restart
        readers[2] = Connection(url, token=reader_token, confirmed=False, backoff=FAST, call_timeout=20)
        consumers = (*consumers[:2], StreamConsumer(readers[2], apps[2].store, stream, apply=apps[2].apply,
                                                    on_rebootstrap=apps[2].rebootstrap))
        stall.unlink()
        with serve_process(data, *args):  # recovery: the epoch moves on, continuing epoch 1 up to seq 3
            await phase_two(producer, consumers, apps)
            for c in consumers:
                await c.stop()
            for conn in (producer, *readers):
                await conn.close()

    run(body())
    # the recovery record holds the moved stream rows, not the relabelled events: replay re-derives
    # them and must arrive at the same chain (verify-log parity)
    from reference.replay import verify_log
    report = verify_log(data)
    assert report.ok and report.clean_shutdown, report


async def _epoch_moved(consumer: StreamConsumer) -> int:
    while consumer.epoch == 1:
        await asyncio.sleep(0.02)
    return consumer.epoch


def test_a_confirmed_consumer_away_through_two_sigkills_continues_CONT_1(tmp_path: Path) -> None:
    """CONT-1 over a chain, end to end (ADR-0010; issue 9, found by the chaos harness).  A confirmed
    consumer applies 1..3 and stops (the application closes; its checkpoint is (1, 3)).  The server is
    SIGKILLed, restarts (epoch E2 continuing 1 up to 3), takes seq 4, is SIGKILLed again and restarts
    (E3 continuing E2 up to 4 and, through the chain, 1 up to 3).  The application starts again from
    its checkpoint: the consumer continues into E3 with watermark 3 -- its rebootstrap callback is
    never called -- and applies seq 4.  Before ADR-0010 the stale cursor named only E2: it rebootstrapped."""
    data = tmp_path / "data"
    stream = f"e2e.chain.{uuid.uuid4().hex[:8]}"
    producer_token = mint_cli(data, SCOPES, "e2e.*", "--subject", "producer")["token"]
    reader_token = mint_cli(data, SCOPES, "e2e.*", "--subject", "reader")["token"]
    app = App(tmp_path / "app.sqlite")
    # no client lives across a restart: each run's server takes a port of its own (--port 0) and its
    # clients are given that server's URL -- no port to hold between a SIGKILL and the next start

    def producer(url: str) -> Connection:  # confirmed: an acknowledged append is durable
        return Connection(url, token=producer_token, confirmed=True, backoff=FAST, call_timeout=20)

    async def first_run(server: ServedProcess) -> None:
        prod = producer(server.url)
        reader = Connection(server.url, token=reader_token, confirmed=True, backoff=FAST, call_timeout=20)
        await prod.connect()
        await reader.connect()
        for i in (1, 2, 3):
            assert await append(prod, stream, i) == i
        consumer = StreamConsumer(reader, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap)
        await consumer.start()
        await consumer.wait_for(3)
        await consumer.stop()
        for conn in (prod, reader):
            await conn.close()
        server.proc.kill()  # SIGKILL: no clean-shutdown marker
        server.proc.wait()

    async def second_run(server: ServedProcess) -> None:
        prod = producer(server.url)
        await prod.connect()
        assert await append(prod, stream, 4) == 4
        await prod.close()
        server.proc.kill()
        server.proc.wait()

    async def third_run(server: ServedProcess) -> None:
        reader = Connection(server.url, token=reader_token, confirmed=True, backoff=FAST, call_timeout=20)
        consumer = StreamConsumer(reader, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap)
        await reader.connect()
        await consumer.start()
        new_epoch = await asyncio.wait_for(_epoch_moved(consumer), 30)
        await consumer.wait_for(4, epoch=new_epoch)
        assert app.stales == [] and consumer.core.rebootstraps == 0 and consumer.core.continues == 1
        assert app.seqs(1) == [1, 2, 3] and app.seqs(new_epoch) == [4]
        await consumer.stop()
        await reader.close()

    with serve_process(data) as first:
        run(first_run(first))
    with serve_process(data) as second:
        run(second_run(second))
    with serve_process(data) as third:
        run(third_run(third))
    from reference.replay import verify_log
    report = verify_log(data)
    assert report.ok, report


def test_a_clean_server_restart_under_a_live_consumer_and_retried_appends_loses_and_duplicates_nothing(
        tmp_path: Path, port: int) -> None:
    """The delivery contract across a clean restart (SIGTERM, then the same data and port): a producer
    appends 1..40 with one idempotency key each, retrying every call that got no answer
    (``ConnectionLost``, ``CallTimeout``) under the same key and arguments; a consumer follows live.
    Each key ends with exactly one seq (a retried call whose first attempt ran is answered with the
    seq it has), the stream is 1..40, and the consumer applies each once, in order, with no
    rebootstrap (a clean restart keeps the epoch)."""
    data = tmp_path / "data"
    stream = f"e2e.clean.{uuid.uuid4().hex[:8]}"
    token = mint_cli(data, SCOPES, "e2e.*", "--subject", "both")["token"]
    app = App(tmp_path / "app.sqlite")
    url = f"http://127.0.0.1:{port}"
    total = 40

    async def produce(conn: Connection, seqs: dict[int, int], lo: int, hi: int) -> None:
        for i in range(lo, hi):
            while True:
                try:
                    seqs[i] = await append(conn, stream, i)
                    break
                except (ConnectionLost, CallTimeout):
                    await asyncio.sleep(0.02)

    async def body() -> None:
        seqs: dict[int, int] = {}
        producer = Connection(url, token=token, backoff=FAST, call_timeout=5)
        reader = Connection(url, token=token, backoff=FAST, call_timeout=20)
        consumer = StreamConsumer(reader, app.store, stream, apply=app.apply, on_rebootstrap=app.rebootstrap,
                                  client_id="clean")
        with serve_process(data, "--port", str(port)) as first:
            await reader.connect()
            await consumer.start()
            await produce(producer, seqs, 1, 11)
            task = asyncio.create_task(produce(producer, seqs, 11, total + 1))
            await asyncio.sleep(0.05)
            await asyncio.get_running_loop().run_in_executor(None, first.stop)
        with serve_process(data, "--port", str(port)):
            await asyncio.wait_for(task, 60)
            await asyncio.wait_for(consumer.wait_for(total), 60)
            assert sorted(seqs.values()) == list(range(1, total + 1))
            assert [seqs[i] for i in range(1, total + 1)] == list(range(1, total + 1))  # one producer, in order
            assert app.seqs() == list(range(1, total + 1)) and app.stales == [] and consumer.error is None
            assert reader.connects >= 2 and producer.connects >= 2
            await consumer.stop()
            for conn in (producer, reader):
                await conn.close()

    run(body())
    app.store.close()
