"""The relay pool against in-process fake relays: per-relay outcomes with one-line reasons, a
caller that never waits, backoff that fails fast and then recovers, bounded queues, closing.

No assertion here is a timing: where order matters, the margins are a local answer (milliseconds)
against timeouts of seconds.  The real relay and the latency ratios are in test_nostr_relay.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest
from support.nostr_relays import FakeRelay, HangingServer
from support.ports import reserved_port

from adapters.nostr.client import _MAX_NOTICES, RelaySession
from adapters.nostr.errors import NostrUsageError, RelayProtocolError, RelayUnavailable
from adapters.nostr.event import Event, EventTemplate, sign_event
from adapters.nostr.keys import SigningKey
from adapters.nostr.messages import Filter
from adapters.nostr.pool import OutcomeStatus, PoolConfig, RelayOutcome, RelayPool
from adapters.sdk.backoff import Backoff

KEY = SigningKey(hashlib.sha256(b"test_nostr_pool").digest())


def _event(n: int) -> Event:
    return sign_event(EventTemplate(1_700_000_000 + n, 30078, (("d", f"pool:{n}"),), f"event {n}"), KEY)


@pytest.fixture
def port() -> Iterator[int]:
    """A port that refuses connections for the whole test (a relay that is down), and that no other
    process can listen on, so a relay the test starts there is the one answering (tests/support/ports.py)."""
    with reserved_port() as held:
        yield held


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro_fn(), timeout)
    asyncio.run(main())


FAST = PoolConfig(open_timeout=1.5, ack_timeout=1.5, backoff=Backoff(base=0.2, cap=0.4, jitter=0.0))


def _one_line(outcome: RelayOutcome) -> str:
    assert outcome.reason and "\n" not in outcome.reason, outcome
    return outcome.reason


def test_each_relay_gets_its_own_outcome_and_the_caller_never_waits(port: int) -> None:
    async def scenario() -> None:
        healthy = await FakeRelay("accept").start()
        rejecting = await FakeRelay("reject").start()
        garbage = await FakeRelay("garbage").start()
        silent = await FakeRelay("silent").start()
        dropping = await FakeRelay("drop").start()
        hanging = await HangingServer().start()
        closed_port = f"ws://127.0.0.1:{port}"
        urls = [healthy.url, rejecting.url, garbage.url, silent.url, dropping.url, hanging.url, closed_port]
        async with RelayPool(urls, FAST) as pool:
            event = _event(1)
            ticket = pool.publish(event)
            assert ticket.result().pending == tuple(urls)  # publish() returned before any relay answered
            first = await ticket.outcome(healthy.url, timeout=30)
            assert first.status is OutcomeStatus.ACKED and not first.duplicate
            assert hanging.url in ticket.result().pending and silent.url in ticket.result().pending
            result = await ticket.wait(timeout=30)
            assert result.event_id == event.id
            assert result.acked == (healthy.url,)
            assert result.rejected == (rejecting.url,)
            assert set(result.failed) == {garbage.url, silent.url, dropping.url, hanging.url, closed_port}
            reasons = {o.relay: _one_line(o) for o in result.outcomes if o.status is not OutcomeStatus.ACKED}
            assert reasons[rejecting.url] == "blocked: this test relay refuses everything"
            assert "unknown relay message type" not in reasons[garbage.url]
            assert "invalid JSON" in reasons[garbage.url]
            assert f"no OK for event {event.id[:16]} within 1.5s" in reasons[silent.url]
            assert "going away mid-publish" in reasons[dropping.url]
            assert "no WebSocket handshake within 1.5s" in reasons[hanging.url]
            assert "connect failed" in reasons[closed_port]
            for url in (garbage.url, silent.url, dropping.url, hanging.url, closed_port):
                assert result.outcome(url).retry_after is not None and result.outcome(url).retry_after > 0
            assert result.outcome(rejecting.url).retry_after is None
            assert healthy.events == [event.to_json()]
            status = {s.relay: s for s in pool.status()}
            assert status[healthy.url].connected and status[healthy.url].acked == 1
            assert status[rejecting.url].rejected == 1 and status[rejecting.url].consecutive_failures == 0
            assert status[hanging.url].failed == 1 and status[hanging.url].consecutive_failures >= 1
        for server in (healthy, rejecting, garbage, silent, dropping):
            await server.stop()
        await hanging.stop()
    run(scenario)


def test_a_failed_relay_backs_off_then_recovers(port: int) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{port}"
        config = PoolConfig(open_timeout=1.0, ack_timeout=1.0, backoff=Backoff(base=0.3, cap=0.3, jitter=0.0))
        async with RelayPool([url], config) as pool:
            down = await pool.publish(_event(1)).wait(10)
            assert down.failed == (url,) and "connect failed" in down.outcomes[0].reason
            fast = await pool.publish(_event(2)).wait(10)
            outcome = fast.outcomes[0]
            assert outcome.status is OutcomeStatus.FAILED and outcome.reason.endswith("(backing off)")
            assert outcome.retry_after is not None and 0 < outcome.retry_after <= 0.3
            relay = await FakeRelay("accept", port).start()  # the relay comes back
            await asyncio.sleep(outcome.retry_after)
            back = await pool.publish(_event(3)).wait(10)
            assert back.acked == (url,)
            assert [e["id"] for e in relay.events] == [_event(3).id]  # the backed-off event never reached it
            assert pool.status()[0].consecutive_failures == 0
            await relay.stop()
    run(scenario)


def test_backoff_grows_and_is_capped(port: int) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{port}"
        config = PoolConfig(open_timeout=1.0, backoff=Backoff(base=0.05, cap=0.2, factor=2.0, jitter=0.0))
        async with RelayPool([url], config) as pool:
            while pool.status()[0].consecutive_failures == 0:  # the eager connect fails first
                await asyncio.sleep(0.01)
            delays = []
            for n in range(6):
                await asyncio.sleep(pool.status()[0].retry_in)
                result = await pool.publish(_event(n)).wait(10)
                delays.append(result.outcomes[0].retry_after)
            assert delays == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.2, 0.2], abs=0.02)  # after the eager connect's 0.05
    run(scenario)


def test_a_full_queue_fails_at_once() -> None:
    async def scenario() -> None:
        silent = await FakeRelay("silent").start()
        config = PoolConfig(open_timeout=2.0, ack_timeout=5.0, max_queue=2)
        async with RelayPool([silent.url], config) as pool:
            tickets = [pool.publish(_event(0))]
            while not silent.events:  # the worker took it off the queue and sent it: it hangs there
                await asyncio.sleep(0.01)
            tickets += [pool.publish(_event(n)) for n in (1, 2)]  # the queue holds two
            full = await pool.publish(_event(9)).wait(5)
            assert full.failed == (silent.url,) and "queue full (2 events waiting)" in full.outcomes[0].reason
            assert full.outcomes[0].retry_after is not None and full.outcomes[0].retry_after > 0
            assert [t.result().pending for t in tickets] == [(silent.url,)] * 3
        # closing the pool settles everything still queued or in flight
        for ticket in tickets:
            closed = ticket.result()
            assert closed.failed == (silent.url,) and "the pool closed" in closed.outcomes[0].reason
        await silent.stop()
    run(scenario)


def test_wait_with_a_timeout_reports_pending_relays() -> None:
    async def scenario() -> None:
        healthy = await FakeRelay("accept").start()
        hanging = await HangingServer().start()
        config = PoolConfig(open_timeout=5.0, ack_timeout=5.0)
        async with RelayPool([healthy.url, hanging.url], config) as pool:
            ticket = pool.publish(_event(1))
            await ticket.outcome(healthy.url, timeout=30)
            partial = await ticket.wait(timeout=0.05)
            assert partial.acked == (healthy.url,) and partial.pending == (hanging.url,)
            assert (await ticket.outcome(hanging.url, timeout=0.01)).status is OutcomeStatus.PENDING
            with pytest.raises(NostrUsageError, match="not in this pool"):
                await ticket.outcome("ws://elsewhere")
            with pytest.raises(NostrUsageError, match="not in this result"):
                partial.outcome("ws://elsewhere")
        await healthy.stop()
        await hanging.stop()
    run(scenario)


def test_duplicates_and_repeats_count_as_delivered() -> None:
    async def scenario() -> None:
        healthy = await FakeRelay("accept").start()
        async with RelayPool([healthy.url], FAST) as pool:
            event = _event(5)
            first, second = await pool.publish(event).wait(10), await pool.publish(event).wait(10)
            assert first.acked == second.acked == (healthy.url,)
        await healthy.stop()
    run(scenario)


def test_pool_misuse(port: int) -> None:
    with pytest.raises(NostrUsageError, match="at least one relay"):
        RelayPool([])
    with pytest.raises(NostrUsageError, match="at least one relay"):
        RelayPool("ws://a")
    with pytest.raises(NostrUsageError, match="listed twice: ws://a"):
        RelayPool(["ws://a", "ws://b", "ws://a"])
    with pytest.raises(NostrUsageError, match="must start with ws:// or wss://"):
        RelayPool(["ws://a", "https://b"])
    with pytest.raises(NostrUsageError, match="positive"):
        PoolConfig(ack_timeout=0)
    with pytest.raises(NostrUsageError, match="max_queue"):
        PoolConfig(max_queue=0)

    async def scenario() -> None:
        pool = RelayPool([f"ws://127.0.0.1:{port}"], FAST)
        with pytest.raises(NostrUsageError, match="started, open relay pool"):
            pool.publish(_event(1))
        await pool.start()
        with pytest.raises(NostrUsageError, match="already started"):
            await pool.start()
        with pytest.raises(NostrUsageError, match="needs an Event"):
            pool.publish("event")  # type: ignore[arg-type]
        await pool.close()
        with pytest.raises(NostrUsageError, match="started, open relay pool"):
            pool.publish(_event(1))
    run(scenario)


def test_the_defaults() -> None:
    from adapters.nostr.client import MAX_FRAME_BYTES
    from adapters.nostr.messages import MAX_SUBSCRIPTION_ID

    assert (MAX_FRAME_BYTES, MAX_SUBSCRIPTION_ID) == (1 << 20, 64)
    config = PoolConfig()
    assert (config.open_timeout, config.ack_timeout, config.max_queue, config.ping_interval) == (5.0, 10.0, 1000, 20.0)
    assert (config.backoff.base, config.backoff.cap, config.backoff.factor, config.backoff.jitter) == (0.5, 60.0, 2.0,
                                                                                                      0.5)


def test_session_errors_are_one_line_and_typed(port: int) -> None:
    async def scenario() -> None:
        garbage = await FakeRelay("garbage").start()
        session = await RelaySession.connect(garbage.url)
        with pytest.raises(RelayProtocolError, match="invalid JSON") as info:
            await session.publish(_event(1), timeout=5)
        assert "\n" not in str(info.value) and str(info.value).startswith(garbage.url)
        await asyncio.sleep(0.05)
        assert session.closed is not None
        with pytest.raises(RelayUnavailable, match="protocol error"):
            await session.publish(_event(2), timeout=5)
        await session.close()
        with pytest.raises(RelayUnavailable, match="connect failed") as refused:
            await RelaySession.connect(f"ws://127.0.0.1:{port}", open_timeout=2)
        assert "\n" not in str(refused.value)
        with pytest.raises(NostrUsageError, match="must start with"):
            await RelaySession.connect("http://127.0.0.1:1")
        accept = await FakeRelay("silent").start()
        session = await RelaySession.connect(accept.url)
        with pytest.raises(RelayUnavailable, match="no EOSE for subscription"):
            await session.query([Filter(kinds=(1,))], timeout=0.2)
        await session.close()
        await garbage.stop()
        await accept.stop()
    run(scenario)



def test_unsolicited_garbage_closes_the_session_cleanly() -> None:
    async def scenario() -> None:
        relay = await FakeRelay("greet_garbage").start()
        session = await RelaySession.connect(relay.url)
        while session.closed is None:
            await asyncio.sleep(0.01)
        assert session.closed.startswith("protocol error: bad OK message")
        with pytest.raises(RelayUnavailable, match="protocol error"):
            await session.publish(_event(1), timeout=5)
        await session.close()
        async with RelayPool([relay.url], FAST) as pool:
            result = await pool.publish(_event(2)).wait(10)
            assert result.failed == (relay.url,) and "protocol error" in result.outcomes[0].reason
        await relay.stop()
    run(scenario)


def test_an_unexpected_error_fails_one_event_and_the_relay_keeps_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        relay = await FakeRelay("accept").start()
        real_publish = RelaySession.publish
        calls = 0

        async def flaky(self: RelaySession, event: Event, *, timeout: float) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("planted bug")
            return await real_publish(self, event, timeout=timeout)

        monkeypatch.setattr(RelaySession, "publish", flaky)
        config = PoolConfig(backoff=Backoff(base=0.05, cap=0.05, jitter=0.0))
        async with RelayPool([relay.url], config) as pool:
            first = await pool.publish(_event(1)).wait(10)
            assert first.failed == (relay.url,)
            assert first.outcomes[0].reason.endswith("internal error: RuntimeError: planted bug")
            await asyncio.sleep(0.06)
            second = await pool.publish(_event(2)).wait(10)
            assert second.acked == (relay.url,)
        await relay.stop()
    run(scenario)


def test_a_frame_past_the_limit_closes_the_connection() -> None:
    async def scenario() -> None:
        relay = await FakeRelay("huge").start()
        async with RelayPool([relay.url], FAST) as pool:
            result = await pool.publish(_event(1)).wait(10)
        outcome = result.outcomes[0]
        assert outcome.status is OutcomeStatus.FAILED and "1009" in outcome.reason and "\n" not in outcome.reason
        await relay.stop()
    run(scenario)


def test_a_relay_that_stops_reading_fails_the_publish_within_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that accepted the connection but no longer reads its socket makes ``ws.send`` wait
    for the buffers to drain -- forever, with keepalive pings off (and for 2 x ``ping_interval``
    with them on).  The publish must still settle within its timeout, and the pool must fail that
    one relay and go on.  (The stall is planted on ``send``: filling the kernel's loopback buffers
    for real would take megabytes per event.)"""
    async def scenario() -> None:
        relay = await FakeRelay("accept").start()
        stalled = asyncio.Event()

        async def never_drains(self: object, message: object, text: bool | None = None) -> None:
            stalled.set()
            await asyncio.Event().wait()

        session = await RelaySession.connect(relay.url, ping_interval=None)
        monkeypatch.setattr(type(session._ws), "send", never_drains)
        with pytest.raises(RelayUnavailable, match="not reading") as info:
            await asyncio.wait_for(session.publish(_event(1), timeout=0.3), 10)
        assert stalled.is_set() and "\n" not in str(info.value) and str(info.value).startswith(relay.url)
        assert session.closed is not None  # half a frame may be out: the session is done
        await asyncio.wait_for(session.close(), 10)
        config = PoolConfig(open_timeout=1.5, ack_timeout=0.3, ping_interval=None,
                            backoff=Backoff(base=0.2, cap=0.4, jitter=0.0))
        async with RelayPool([relay.url], config) as pool:
            result = await pool.publish(_event(2)).wait(10)
            assert result.failed == (relay.url,) and "not reading" in result.outcomes[0].reason
        await relay.stop()
    run(scenario, timeout=30)



_FLOODER = """
import asyncio, contextlib, json, sys
from websockets.asyncio.server import serve
async def flood(ws):
    notice = json.dumps(["NOTICE", "n" * 100])
    with contextlib.suppress(Exception):
        while True:
            await ws.send(notice)
async def main():
    async with serve(flood, "127.0.0.1", 0) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def test_a_relay_flooding_notices_does_not_hold_back_the_healthy_relay(caplog: pytest.LogCaptureFixture) -> None:
    """A relay (its own process) sending NOTICE frames as fast as it can: frames already buffered
    were read without the reader ever yielding, so one flooding relay held the event loop -- every
    other relay's publish (and the bridge's server connection) with it; measured by hand, the
    healthy relay's publish went from 0.15 ms to 2.2 s median.  Its outcomes must settle as if the
    flood were not there: a local answer (well under 1 ms) against 1 s.  Nor may the flood flood the
    log: at most ``_MAX_NOTICES`` NOTICE lines per connection (it logged every one)."""
    caplog.set_level(logging.INFO, logger="syncref.nostr")
    flooder = subprocess.Popen([sys.executable, "-c", _FLOODER], stdout=subprocess.PIPE, text=True)
    try:
        assert flooder.stdout is not None
        flood_url = f"ws://127.0.0.1:{int(flooder.stdout.readline())}"

        async def scenario() -> None:
            healthy = await FakeRelay("accept").start()
            async with RelayPool([healthy.url, flood_url], FAST) as pool:
                while not {s.relay: s.connected for s in pool.status()}[flood_url]:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # the flood is under way
                for i in range(10):
                    outcome = await pool.publish(_event(100 + i), [healthy.url]).outcome(healthy.url, timeout=1)
                    assert outcome.status is OutcomeStatus.ACKED, outcome
                assert {s.relay: s.connected for s in pool.status()}[flood_url]  # a NOTICE is no protocol error
            await healthy.stop()
        run(scenario)
        notices = [r for r in caplog.records if "NOTICE" in r.getMessage()]
        connections = sum(1 for r in caplog.records if r.getMessage() == f"relay {flood_url} connected")
        assert connections >= 1 and len(notices) <= _MAX_NOTICES * connections, (len(notices), connections)
        assert notices[_MAX_NOTICES - 1].getMessage().endswith("(further NOTICEs on this connection are not logged)")
    finally:
        flooder.kill()
        flooder.wait()
