"""``syncref chaos``: the schedule is a function of the seed, the checker catches every anomaly it
names (planted histories, one mutation each), the proxy cuts and refuses, a quick run against real
server processes finds nothing, and a planted client bug is reported with its seed."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import subprocess
from pathlib import Path

import jwt
import pytest
from support.server import SYNCREF
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from adapters.chaos.history import REBOOTSTRAP, Applied, FinalState, History, Write, check
from adapters.chaos.proxy import ChaosProxy, ClientFrames, Frame, token_of
from adapters.chaos.runner import run_chaos
from adapters.chaos.schedule import KINDS, PROFILES, plan

QUICK = PROFILES["quick"]


# --- the schedule ---------------------------------------------------------------------------------


def test_one_seed_one_schedule() -> None:
    assert plan(7, QUICK) == plan(7, QUICK)
    assert plan(7, QUICK) != plan(8, QUICK)
    long = PROFILES["long"]
    assert plan(7, long) == plan(7, long)


def test_schedules_cover_every_kind_and_stay_in_the_window() -> None:
    seen = set()
    for seed in range(40):
        sched = plan(seed, QUICK)
        assert sched, seed
        assert all(0 < n.at_s < QUICK.duration_s for n in sched)
        assert [n.at_s for n in sched] == sorted(n.at_s for n in sched)
        for a, b in itertools.pairwise(sched):  # a nemesis ends before the next one starts
            assert b.at_s >= a.at_s + a.params.get("stall_s", 0) + a.params.get("for_s", 0)
        seen.update(n.kind for n in sched)
    assert seen == set(KINDS)


def test_the_quick_profile_is_pinned() -> None:
    assert (QUICK.duration_s, QUICK.writers, QUICK.subscribers, QUICK.streams) == (18.0, 3, 2, 2)
    assert PROFILES["long"].duration_s == 1200.0


# --- the checker, on planted histories ------------------------------------------------------------


def clean() -> tuple[History, FinalState]:
    """Two writers, one stream of 4 events, one subscriber that applied all of them."""
    events = [(1, "w0.1", "h1"), (2, "w1.1", "h2"), (3, "w0.2", "h3"), (4, "w1.2", "h4")]
    h = History()
    h.writes = [Write("w0", "append", "w0.1", "h1", "ok", "s", 1), Write("w1", "append", "w1.1", "h2", "ok", "s", 2),
                Write("w0", "append", "w0.2", "h3", "ok", "s", 3), Write("w1", "append", "w1.2", "h4", "unknown", "s"),
                Write("w0", "open", "req-1", "r1", "ok"), Write("w1", "enqueue", "ob-1", "o1", "ok"),
                Write("w1", "append", "w1.3", "h9", "failed", "s")]
    h.applied = [Applied("sub0", "s", seq, key, hsh) for seq, key, hsh in events]
    h.views = {"sub0": {"s": (4, {seq: (key, hsh) for seq, key, hsh in events})}}
    h.presence_acked = {"sess-w0": {"online", "away"}}
    h.progress = [("w0 append after the heal", True)]
    h.expired_tokens = [True]
    final = FinalState(events={"s": events}, floors={"s": 1}, heads={"s": 4}, assignments={"req-1": "r1"},
                       outbox={"ob-1": "o1"}, presence={"sess-w0": "away"})
    return h, final


def test_a_clean_history_has_no_anomaly() -> None:
    h, final = clean()
    assert check(h, final) == []
    # an unanswered write may or may not be there; a refused one is not looked for
    final2 = dataclasses.replace(final, events={"s": final.events["s"][:3]}, heads={"s": 3})
    h.views = {"sub0": {"s": (3, {seq: (key, hsh) for seq, key, hsh in final.events["s"][:3]})}}
    h.applied = h.applied[:3]
    assert check(h, final2) == []
    # offline is always an acceptable presence (disconnects and the sweep mark it)
    assert check(*clean()[:1], dataclasses.replace(final, presence={"sess-w0": "offline"})) == []


def _events(final: FinalState, rows: list[tuple[int, str, str]]) -> FinalState:
    return dataclasses.replace(final, events={"s": rows}, heads={"s": max(r[0] for r in rows)})


CASES = {
    "lost_write": lambda h, f: (h, _events(f, [r for r in f.events["s"] if r[1] != "w0.2"] + [(3, "x", "hx")])),
    "lost_write/open": lambda h, f: (h, dataclasses.replace(f, assignments={})),
    "lost_write/outbox-content": lambda h, f: (h, dataclasses.replace(f, outbox={"ob-1": "other"})),
    "acked_seq_changed": lambda h, f: (dataclasses.replace(h, writes=[
        dataclasses.replace(w, seq=9) if w.key == "w0.1" else w for w in h.writes]), f),
    "duplicate_write": lambda h, f: (h, _events(f, [*f.events["s"], (5, "w1.2-r2", "h4")])),
    "non_contiguous": lambda h, f: (h, dataclasses.replace(f, heads={"s": 5})),
    "duplicate_apply": lambda h, f: (dataclasses.replace(h, applied=[*h.applied, h.applied[3]]), f),
    "skipped_event": lambda h, f: (dataclasses.replace(h, applied=[h.applied[0], *h.applied[2:]]), f),
    "non_monotonic_read": lambda h, f: (dataclasses.replace(h, applied=[*h.applied[:3], Applied("sub0", "s", 2, "w1.1",
                                                                                                "h2")]), f),
    "confirmed_read_of_lost_write": lambda h, f: (dataclasses.replace(h, applied=[
        *h.applied[:3], Applied("sub0", "s", 4, "w9.9", "lost")]), f),
    "view_mismatch": lambda h, f: (dataclasses.replace(h, views={"sub0": {"s": (4, {1: ("w0.1", "h1")})}}), f),
    "view_mismatch/behind": lambda h, f: (dataclasses.replace(h, views={"sub0": {"s": (3, {
        seq: (k, x) for seq, k, x in f.events["s"][:3]})}}), f),
    "unexpected_rebootstrap": lambda h, f: (dataclasses.replace(h, rebootstraps=[("sub0", "s")]), f),
    "no_progress": lambda h, f: (dataclasses.replace(h, progress=[("w0 append after the heal", False)]), f),
    "token_accepted": lambda h, f: (dataclasses.replace(h, expired_tokens=[True, False]), f),
    "presence_mismatch": lambda h, f: (h, dataclasses.replace(f, presence={"sess-w0": "busy"})),
    "presence_mismatch/missing": lambda h, f: (h, dataclasses.replace(f, presence={})),
    "client_error": lambda h, f: (dataclasses.replace(h, client_errors=["w0: append refused: forbidden"]), f),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_checker_catches_each_planted_anomaly(case: str) -> None:
    h, final = clean()
    h2, final2 = CASES[case](h, final)
    codes = {a.code for a in check(h2, final2)}
    assert case.split("/")[0] in codes, codes


def test_a_rebootstrap_marker_starts_the_subscriber_afresh() -> None:
    h, final = clean()
    marker = Applied("sub0", "s", REBOOTSTRAP, "", "")
    h.applied = [*h.applied[:3], marker, *h.applied]  # rehydrated from the floor after the marker
    assert check(h, final) == []
    h.applied = [*h.applied[:3], marker, *h.applied[1:]]  # ... but not from past the floor
    assert {a.code for a in check(h, final)} == {"skipped_event"}


# --- the proxy ------------------------------------------------------------------------------------


def test_the_proxy_forwards_cuts_and_refuses() -> None:
    async def body() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(100):
                w.write(data)
                await w.drain()
            w.close()

        upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        proxy = ChaosProxy(port)
        await proxy.start()
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"ping")
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"ping"
        proxy.delay(0.2)
        loop = asyncio.get_running_loop()
        t = loop.time()
        w.write(b"slow")
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"slow"
        assert loop.time() - t >= 0.35  # delayed both ways
        proxy.clear()
        assert proxy.cut() == 1
        assert await asyncio.wait_for(r.read(10), 5) == b""  # the client sees its socket die
        upstream.close()
        await upstream.wait_closed()
        r2, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(r2.read(10), 5) == b""  # upstream down: closed at once
        assert proxy.refused == 1 and proxy.accepted == 2
        await proxy.stop()

    asyncio.run(body())


# --- real runs ------------------------------------------------------------------------------------


def test_a_quick_chaos_run_finds_nothing(tmp_path: Path) -> None:
    assert {n.kind for n in plan(3, QUICK)} == set(KINDS)  # seed 3: every kind of nemesis in one quick run
    report = run_chaos(3, QUICK, tmp_path / "run")
    assert report["ok"], json.dumps(report["anomalies"][:20], indent=1)
    assert report["proxy"]["frames_duplicated"] > 0 and report["proxy"]["frames_replayed"] > 0
    assert report["sigkill_restarts"] >= 1 and report["server_starts"] == report["sigkill_restarts"] + 1
    assert report["writes"]["ok"] > 50 and report["events_applied"] > 50 and report["log_records"] > 50
    assert report["expired_tokens_refused"] == report["faults"].get("token_expiry", 0)
    assert report["replay"] == "syncref chaos --seed 3 --quick"
    assert [n["kind"] for n in report["schedule"]] == [n.kind for n in plan(3, QUICK)]


def test_a_planted_client_bug_is_reported_with_its_seed(tmp_path: Path) -> None:
    out = subprocess.run([str(SYNCREF), "chaos", "--quick", "--duration", "5", "--seed", "4242", "--plant",
                          "skip-apply", "--json", str(tmp_path / "r.json"), "--workdir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    codes = set(report["anomaly_counts"])
    assert {"skipped_event", "view_mismatch"} <= codes, codes
    assert "seed 4242" in out.stdout and "syncref chaos --seed 4242 --quick --plant skip-apply" in out.stdout
    # progress on stderr, plain off a terminal: one line per phase and per nemesis, no control characters
    steps = [line for line in out.stderr.splitlines() if line.startswith("[")]  # not the SDK's warnings
    n = len(report["schedule"])
    assert len(steps) == n + 3 and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out.stderr), out.stderr
    assert re.fullmatch(rf"\[1/{n + 3} +\d+s\] starting the server, the proxy and the subscribers", steps[0])
    assert all(f"nemesis {i}/{n} at " in steps[i] for i in range(1, n + 1)), steps
    assert "healing" in steps[-2] and "checking the histories" in steps[-1]


def test_chaos_misuse_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    for args, text in ((["--duration", "0"], "--duration must be positive"),
                       (["--workdir", str(tmp_path / "busy")], "is not empty")):
        out = subprocess.run([str(SYNCREF), "chaos", "--seed", "1", *args], capture_output=True, text=True,
                             timeout=60, check=False)
        assert out.returncode == 2 and text in out.stderr, out.stderr
    out = subprocess.run([str(SYNCREF), "chaos", "--plant", "nope"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2 and "invalid choice" in out.stderr


# --- frame duplication (the ``duplicate`` nemesis) ---------------------------------------------------


def _ws(payload: bytes, opcode: Opcode = Opcode.BINARY, fin: bool = True) -> bytes:
    """A masked client frame, serialized by the websockets library (not by the code under test)."""
    return WsFrame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])


def _jwt(sub: str) -> str:
    return jwt.encode({"iss": "syncref://local", "sub": sub}, "k" * 32, algorithm="HS256")


HEAD = b"GET /v1/database/d/subscribe?compression=None&token=%s HTTP/1.1\r\nHost: x\r\n\r\n"


def test_client_frames_cut_the_stream_whatever_the_chunking() -> None:
    frames = [_ws(b"a" * n) for n in (0, 1, 125, 126, 300, 65535, 65536, 70000)]
    frames.insert(2, _ws(b"ping", Opcode.PING))
    frames.insert(4, _ws(b"part", fin=False))
    stream = HEAD % _jwt("w0").encode() + b"".join(frames)
    for size in (1, 7, 4096, len(stream)):
        cut = ClientFrames()
        pieces = [p for i in range(0, len(stream), size) for p in cut.feed(stream[i:i + size])]
        head = b"".join(p for p in pieces if isinstance(p, bytes))
        got = [p for p in pieces if isinstance(p, Frame)]
        assert head == HEAD % _jwt("w0").encode() and cut.head == head, size
        assert [f.raw for f in got] == frames, size
        assert [(f.opcode, f.fin) for f in got][2:5] == [(9, True), (2, True), (2, False)]
    opaque = ClientFrames()  # not a WebSocket client: passed through untouched after the head
    assert opaque.feed(b"GET / HTTP/1.1\r\n\r\n\x82\x03abc") == [b"GET / HTTP/1.1\r\n\r\n", b"\x82\x03abc"]
    assert opaque.feed(b"more") == [b"more"]
    raw = ClientFrames()  # no head at all: every byte forwarded as it comes
    assert raw.feed(b"ping") == [b"ping"] and raw.head is None


def test_token_of_names_the_subject_not_the_token() -> None:
    a, b = _jwt("w0"), _jwt("w0")
    assert token_of(HEAD % a.encode()) == token_of(b"GET / HTTP/1.1\r\nAuthorization: Bearer " + b.encode()
                                                   + b"\r\n\r\n") == "syncref://local w0"
    assert token_of(HEAD % _jwt("w1").encode()) == "syncref://local w1"
    assert token_of(b"GET / HTTP/1.1\r\n\r\n") is None
    assert token_of(HEAD % b"not-a-jwt") == "not-a-jwt"


def test_the_proxy_duplicates_frames_and_replays_them_on_the_next_connection() -> None:
    async def body() -> None:
        received: list[list[bytes]] = []

        async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            mine: list[bytes] = []
            received.append(mine)
            cut = ClientFrames()
            while data := await r.read(65536):
                mine.extend(p.raw for p in cut.feed(data) if isinstance(p, Frame))
            w.close()

        upstream = await asyncio.start_server(sink, "127.0.0.1", 0)
        proxy = ChaosProxy(upstream.sockets[0].getsockname()[1], seed=7)
        await proxy.start()
        sent = [_ws(f"call {i}".encode()) for i in range(20)]
        _, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(HEAD % _jwt("w0").encode())
        for f in sent[:10]:  # before duplicate(): forwarded once each
            w.write(f)
        await w.drain()
        await asyncio.sleep(0.2)
        proxy.duplicate()
        for f in sent[10:]:
            w.write(f)
        await w.drain()
        await asyncio.sleep(0.3)
        assert proxy.cut() == 1
        first = received[0]
        assert first[:10] == sent[:10] and proxy.duplicated > 0
        assert sorted(first[10:]) == sorted(sent[10:] + [f for f in sent[10:] if first.count(f) == 2])
        assert len(first) == 20 + proxy.duplicated and all(first.count(f) in (1, 2) for f in sent[10:])
        _, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)  # the same subject reconnects
        new = _ws(b"new")  # (masks are random: serialize once)
        w2.write(HEAD % _jwt("w0").encode() + new)
        await w2.drain()
        await asyncio.sleep(0.3)
        second = received[1]
        assert second[:8] == sent[12:] and second[8:] in ([new], [new, new])  # replayed first, then its own
        assert proxy.replayed == 8
        _, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)  # another subject: nothing replayed
        other = _ws(b"other")
        w3.write(HEAD % _jwt("w9").encode() + other)
        await w3.drain()
        await asyncio.sleep(0.3)
        assert received[2][0] == other and proxy.replayed == 8
        await proxy.stop()
        upstream.close()

    asyncio.run(body())
