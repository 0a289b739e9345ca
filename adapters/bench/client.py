"""A bench client process: ``python -m adapters.bench.client`` runs one task given on stdin.

The orchestrator (:mod:`adapters.bench.workloads`) starts one or more of these per run, so the
load comes from processes other than the server's.  The conversation is JSON lines:

1. the orchestrator writes the task (``{"kind": ..., "target": "syncref"|"redis"|"echo", ...}``);
2. the client opens its connections (subscribers subscribe) and answers ``{"ready": true}``;
3. ``{"go": <wall-clock start, s>}`` starts the measured phase;
4. the fanout writer says ``{"sent": n}`` after its last send; subscriber tasks then get
   ``{"expect": n, "grace": <s>}`` and stop when every subscription has all n events, or when
   the grace runs out;
5. the client prints its result (``{"result": {...}}``, with its own CPU seconds over the
   measured phase, so the orchestrator can tell a busy client from a busy server) and exits.

What each task does on each target is written down in :mod:`adapters.bench` (the module essay);
the frame helpers below read the few fields the bench needs straight from the frame bytes (the
layout is pinned by tests against :mod:`adapters.wire`), because a full decode per delivery
would make the client, not the server, the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import bsatn, wire
from adapters.bench.hist import Hist
from adapters.bench.proto import RespClient, WsClient
from adapters.heap import CLIENT_KEEP_MIB, keep_freed_heap

DATABASE = "autopilot-sync"
SUBPROTOCOL = "v2.bsatn.spacetimedb"
SUBPROTOCOLS = {"v2": SUBPROTOCOL, "v3": "v3.bsatn.spacetimedb"}  # a task's "protocol" -> what it offers
SLICES = 5  # the fanout run is cut into this many slices of send time, to see latency grow

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")

# server message tags (adapters.wire.encode_server)
TAG_INITIAL, TAG_SUB_APPLIED, TAG_UNSUB_APPLIED, TAG_SUB_ERROR, TAG_TX_UPDATE, TAG_ONE_OFF = range(6)
TAG_REDUCER_RESULT = 6


# --- payloads and frames ---------------------------------------------------------------------------


def payload(i: int, size: int, t_us: int | None = None) -> str:
    """A canonical JSON object of exactly ``size`` bytes: ``{"i":i,"pad":"xxx"[,"t":t_us]}`` (``t``:
    the writer's send time in µs since the epoch -- within JSON's safe integers, unlike ns)."""
    tail = "" if t_us is None else f',"t":{t_us}'
    bare = f'{{"i":{i},"pad":""{tail}}}'
    return f'{{"i":{i},"pad":"{"x" * max(0, size - len(bare))}"{tail}}}'


def append_frame(request_id: int, stream: str, key: str, body: str) -> bytes:
    """The v2 ``CallReducer`` of ``append_sync_event(stream, key, body, none, none)``."""
    return wire.encode_client(wire.CallReducer(request_id, 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", (stream, key, body, None, None))))


def reducer_result(frame: bytes) -> tuple[int, bool] | None:
    """(request id, ok) of an uncompressed v2 ``ReducerResult`` frame; None for other messages.
    Layout: compression tag 0, message tag 6, request_id u32, timestamp i64, outcome tag (0 = Ok)."""
    if len(frame) < 15 or frame[0] != 0 or frame[1] != TAG_REDUCER_RESULT:
        return None
    return _U32.unpack_from(frame, 2)[0], frame[14] == 0


def message_tag(frame: bytes) -> int:
    """The server message tag of an uncompressed frame."""
    if not frame or frame[0] != 0:
        raise ValueError("expected an uncompressed frame (compression=None)")
    return frame[1]


def marks(data: bytes) -> list[tuple[int, int, int]]:
    """Every bench payload in ``data``: (i, t_us, end) where ``end`` is the offset just past the
    payload's closing brace.  Payloads are ``{"i":..,"pad":"..","t":..}`` (keys sorted, so ``t``
    is last); anything else is skipped."""
    out = []
    pos = data.find(b'"t":')
    while pos >= 0:
        close = data.find(b"}", pos)
        start = data.rfind(b'{"i":', 0, pos)
        if close < 0 or start < 0:
            break
        comma = data.find(b",", start)
        out.append((int(data[start + 5:comma]), int(data[pos + 4:close]), close + 1))
        pos = data.find(b'"t":', close)
    return out


_EVENT = re.compile(rb'\{"i":(\d+),"pad":"[^"]*","t":(\d+)\}')


def events(data: bytes) -> tuple[list[int], list[int]]:
    """Every bench payload in ``data`` as two lists, its ``i`` values and its ``t_us`` values, in
    order -- :func:`marks` without the end offsets, for a v3 frame of many messages: one C-level
    regex pass over the frame and two ints per event, no Python loop per byte or per message (the
    messages' boundaries are not walked: in the fanout a subscriber's frame holds only
    ``TransactionUpdate`` messages, and a payload's bytes appear verbatim in its row, whatever message
    of the frame carries it)."""
    pairs = _EVENT.findall(data)
    return [int(i) for i, _t in pairs], [int(t) for _i, t in pairs]


def payload_end(data: bytes, i: int, start: int = 0) -> int:
    """The offset just past the closing brace of the payload of event ``i`` in ``data``, searched
    from ``start`` (-1 if absent)."""
    at = data.find(b'{"i":%d,' % i, start)
    if at < 0:
        return -1
    return data.find(b"}", at) + 1


def committed_at(frame: bytes, payload_end: int) -> int:
    """The ``committed_at`` (µs) of the ``sync_event`` row whose payload ends at ``payload_end``:
    the row continues with ``producer`` (Identity, 32 bytes) then ``committed_at`` (i64)."""
    value: int = _I64.unpack_from(frame, payload_end + 32)[0]
    return value


# --- connections ------------------------------------------------------------------------------------


def syncref_path(token: str) -> str:
    """Confirmed reads named, not left to the server's default: the fsync-before-answer side of the
    comparison with Redis's ``appendfsync always`` must not move with a default."""
    return f"/v1/database/{DATABASE}/subscribe?token={token}&compression=None&confirmed=true"


ANSWER_TIMEOUT = 120.0  # s: an answer that takes longer is reported as an error, not waited for


async def recv(ws: WsClient) -> bytes:
    return await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)


_CONNECTIONS = itertools.count()


async def syncref_connect(task: dict[str, Any]) -> WsClient:
    """Upgrade and read InitialConnection.  Successive connections of one process take the task's
    tokens in turn: each simulated client is its own identity, as separate apps are."""
    tokens = task.get("tokens") or [task["token"]]
    token = tokens[next(_CONNECTIONS) % len(tokens)]
    offered = SUBPROTOCOLS[task.get("protocol", "v2")]
    ws = await WsClient.connect(task["host"], task["port"], syncref_path(token), (offered,))
    if ws.subprotocol != offered:
        ws.close()
        raise RuntimeError(f"offered {offered}, the server chose {ws.subprotocol!r}")
    first = await recv(ws)
    if message_tag(first) != TAG_INITIAL:
        raise RuntimeError(f"expected InitialConnection, got tag {first[1]}")
    return ws


async def syncref_subscribe(ws: WsClient, request_id: int, qs: int, queries: tuple[str, ...]) -> bytes:
    """Subscribe and return the ``SubscribeApplied`` frame (raises on a ``SubscriptionError``)."""
    ws.send(wire.encode_client(wire.Subscribe(request_id, qs, queries)))
    while True:
        frame = await recv(ws)
        tag = message_tag(frame)
        if tag == TAG_SUB_APPLIED:
            return frame
        if tag == TAG_SUB_ERROR:
            raise RuntimeError(f"subscription refused: {wire.decode_server_frame(frame, 2)[0]}")


async def echo_connect(task: dict[str, Any]) -> WsClient:
    return await WsClient.connect(task["host"], task["port"], "/")


@dataclass
class Phase:
    """The measured window: wall-clock start and the CPU seconds this process had used then."""

    t0: float
    cpu0: float

    @classmethod
    def start(cls, t0: float) -> Phase:
        return cls(t0, time.process_time())

    def cpu(self) -> float:
        return time.process_time() - self.cpu0


async def wait_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# --- append: closed loop (window 1) and pipelined windows -----------------------------------------------


class AppendConn:
    """One append client: sends a window of calls, waits for all of their answers, repeats."""

    def __init__(self, task: dict[str, Any], index: int) -> None:
        self.task = task
        self.index = index
        self.target: str = task["target"]
        streams = task.get("streams")
        self.stream: str = streams[index] if streams else f"{task['stream_prefix']}{index}"
        self.keys = f"{task.get('key_prefix', 'k')}-{index}-"
        self.ws: WsClient | None = None
        self.redis: RespClient | None = None
        self.waiting: dict[int, float] = {}
        self.done: asyncio.Future[None] | None = None
        self.next_id = 1
        self.redis_next = 1
        self.errors = 0
        self.first_error = ""
        self.record: Callable[[float], None] | None = None
        self.echo_size = len(append_frame(1, self.stream, "k-0-000000", payload(0, task["payload_size"])))

    async def open(self) -> None:
        if self.target == "syncref":
            self.ws = await syncref_connect(self.task)
            self.ws.on_frame = self._on_syncref
            self.ws.on_close = self._gone
        elif self.target == "echo":
            self.ws = await echo_connect(self.task)
            self.ws.on_frame = self._on_echo
            self.ws.on_close = self._gone
        else:
            self.redis = await RespClient.connect(self.task["host"], self.task["port"])
            self.redis.on_reply = self._on_redis
            self.redis.on_close = self._gone
            self.redis_next = 1

    def _on_redis(self, reply: Any) -> None:
        rid = self.redis_next
        self.redis_next += 1
        ok = not isinstance(reply, Exception)
        if not ok and not self.first_error:
            self.first_error = str(reply)[:300]
        self._arrived(rid, ok)

    def _arrived(self, rid: int, ok: bool) -> None:
        sent = self.waiting.pop(rid, None)
        if sent is None:
            return
        if self.record is not None:
            self.record((time.perf_counter() - sent) * 1e6)
        if not ok:
            self.errors += 1
        if not self.waiting and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _on_syncref(self, frame: bytes) -> None:
        rr = reducer_result(frame)
        if rr is None:
            return
        rid, ok = rr
        if not ok and not self.first_error:
            self.first_error = str(wire.decode_server_frame(frame, 2)[0])[:300]
        self._arrived(rid, ok)

    def _on_echo(self, frame: bytes) -> None:
        self._arrived(_U32.unpack_from(frame, 1)[0], True)

    async def window(self, n: int, base: int) -> int:
        """Send ``n`` calls (events ``base .. base+n-1`` of this client), wait for every answer;
        return how many failed."""
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        now = time.perf_counter()
        size = self.task["payload_size"]
        errors_before = self.errors
        if self.target == "redis":
            assert self.redis is not None
            cmds: list[tuple[bytes | str | int, ...]] = []
            for k in range(n):
                i = base + k
                rid = self.next_id
                self.next_id += 1
                self.waiting[rid] = now
                cmds.append(("XADD", self.stream, f"{i + 1}-1" if self.task.get("explicit_id") else "*",
                             "k", f"{self.keys}{i}", "p", payload(i, size)))
            self.redis.send_many(cmds)
            await self._wait()
            return self.errors - errors_before
        assert self.ws is not None
        frames = []
        for k in range(n):
            rid = self.next_id
            self.next_id += 1
            self.waiting[rid] = now
            if self.target == "syncref":
                frames.append(append_frame(rid, self.stream, f"{self.keys}{base + k}", payload(base + k, size)))
            else:
                frames.append(b"\x00" + _U32.pack(rid) + b"x" * max(0, self.echo_size - 5))
        self.ws.send_many(frames)
        await self._wait()
        return self.errors - errors_before

    async def _wait(self) -> None:
        """Until every call of the window is answered; a dropped connection or an answer that
        never comes is an error naming what is missing (never a silent hang)."""
        assert self.done is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.done), ANSWER_TIMEOUT)
        except TimeoutError:
            missing = sorted(self.waiting)
            raise RuntimeError(f"{self.target} stream {self.stream}: {len(missing)} calls unanswered after "
                               f"{ANSWER_TIMEOUT} s (request ids {missing[:5]}...; "
                               f"connection closed: {self._closed_note()})") from None

    def _closed_note(self) -> str:
        if self.ws is not None:
            return (f"closed={self.ws.closed} code={self.ws.close_code} reason={self.ws.close_reason!r} "
                    f"{self.ws.lost_reason}")
        return str(self.redis is not None and self.redis.closed)

    def _gone(self, _conn: object) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError(f"{self.target} closed the connection with calls in flight: "
                                                 f"{self._closed_note()}"))


async def run_append(task: dict[str, Any], control: Control) -> dict[str, Any]:
    conns = [AppendConn(task, task["first_client"] + i) for i in range(task["clients"])]
    await asyncio.gather(*(c.open() for c in conns))
    go = await control.ready()
    hist = Hist()
    window: int = task["window"]
    total: int | None = task.get("total")  # preload mode: a fixed number of events per client
    warmup = float(task.get("warmup", 0.0))
    duration = float(task.get("duration", 0.0))
    phase = Phase.start(go)
    if total is None and warmup > 0:  # the CPU of the measured phase only, over that phase's wall time

        def measured() -> None:
            phase.cpu0 = time.process_time()
        asyncio.get_running_loop().call_later(max(0.0, go + warmup - time.time()), measured)
    counted = [0]

    async def drive(c: AppendConn) -> None:
        i = 0
        measure_from = go + warmup
        measure_to = measure_from + duration
        while True:
            now = time.time()
            if total is None and now >= measure_to:
                return
            if total is not None and i >= total:
                return
            n = window if total is None else min(window, total - i)
            c.record = hist.add if (total is not None or now >= measure_from) else None
            await c.window(n, i)
            if total is not None or now >= measure_from:
                counted[0] += n
            i += n

    started = time.time()
    await asyncio.gather(*(drive(c) for c in conns))
    wall = time.time() - (started if total is not None else go + warmup)
    result = {"ops": counted[0], "errors": sum(c.errors for c in conns),
              "first_error": next((c.first_error for c in conns if c.first_error), ""),
              "hist": hist.to_json(), "wall_s": wall, "cpu_s": phase.cpu()}
    for c in conns:
        if c.ws is not None:
            c.ws.close()
        if c.redis is not None:
            c.redis.close()
    return result


# --- fanout: subscribers and the paced writer -------------------------------------------------------------


class Subscriber:
    def __init__(self, run: FanoutSubs) -> None:
        self.run = run
        self.count = 0
        self.next_i = 0
        self.out_of_order = 0
        self.ws: WsClient | None = None
        self.redis: RespClient | None = None
        self.last_id = b"0-0"
        self.frames = 0  # frames (or Redis replies) that carried events
        # the events seen, kept only from the first one out of order: until then they are exactly
        # 0 .. next_i - 1 (each was next_i when it came), so no set is paid for in a clean run
        self.seen: set[int] | None = None

    @property
    def distinct(self) -> int:
        """How many different events arrived (``count`` counts a duplicate twice)."""
        return self.next_i if self.seen is None else len(self.seen)

    @property
    def sampled(self) -> int:
        """How many different sampled events (``i % 8 == 0``, the commit->delivery sample) arrived."""
        return (self.next_i + 7) // 8 if self.seen is None else sum(1 for i in self.seen if i % 8 == 0)

    def _jump(self, i: int) -> None:
        """Event ``i`` came when ``next_i`` was expected."""
        self.out_of_order += 1
        if self.seen is None:
            self.seen = set(range(self.next_i))

    def got(self, i: int, t_us: int, now_us: float) -> None:
        if i != self.next_i:
            self._jump(i)
        if self.seen is not None:
            self.seen.add(i)
        self.next_i = i + 1
        self.count += 1
        self.run.delivered(self, t_us, now_us)

    def on_syncref(self, frame: bytes) -> None:
        if len(frame) < 2 or frame[1] != TAG_TX_UPDATE:
            return
        now_us = time.time_ns() / 1000
        self.frames += 1
        for i, t_us, end in marks(frame):
            self.got(i, t_us, now_us)
            if self.run.commit_hist is not None and i % 8 == 0:
                self.run.commit_hist.add(now_us - committed_at(frame, end))

    def on_syncref_v3(self, frame: bytes) -> None:
        """A v3 frame: one or more ``TransactionUpdate`` messages concatenated (a subscriber that lags
        gets its backlog in few frames).  Every event in it is marked with one receipt time, and
        the per-event work is a list element here and there (:func:`events`,
        :meth:`FanoutSubs.delivered_many`): the cost per event falls as frames grow, as a Redis
        client's does with an ``XREAD`` reply of many entries."""
        if len(frame) < 2 or frame[0] != 0 or frame[1] != TAG_TX_UPDATE:
            return
        now_us = time.time_ns() / 1000
        run = self.run
        pairs = _EVENT.findall(frame)
        k = len(pairs)
        if k == 1:  # a subscriber that keeps up: what on_syncref does, without the batch's lists
            self.frames += 1
            i_text, t_text = pairs[0]
            i = int(i_text)
            self.got(i, int(t_text), now_us)
            if run.commit_hist is not None and i % 8 == 0:
                run.commit_hist.add(now_us - committed_at(frame, payload_end(frame, i)))
            return
        if not k:
            return
        self.frames += 1
        ids = [int(i) for i, _t in pairs]
        ts = [int(t) for _i, t in pairs]
        first = self.next_i
        in_order = ids[0] == first and ids[-1] == first + k - 1 and ids == list(range(first, first + k))
        if in_order:
            if self.seen is not None:
                self.seen.update(ids)
            self.next_i = first + k
        else:
            for i in ids:  # as got() counts, event by event
                if i != self.next_i:
                    self._jump(i)
                if self.seen is not None:
                    self.seen.add(i)
                self.next_i = i + 1
        self.count += k
        if run.commit_hist is not None:  # 1 event in 8, as on_syncref samples
            if in_order:  # the payloads are in frame order: each search starts where the last ended
                at = 0
                for i in range(first + (-first) % 8, first + k, 8):
                    at = payload_end(frame, i, at)
                    run.commit_hist.add(now_us - committed_at(frame, at))
            else:
                for i in ids:
                    if i % 8 == 0:
                        run.commit_hist.add(now_us - committed_at(frame, payload_end(frame, i)))
        run.delivered_many(self, ts, now_us)

    def on_echo(self, frame: bytes) -> None:
        now_us = time.time_ns() / 1000
        self.frames += 1
        for i, t_us, _end in marks(frame):
            self.got(i, t_us, now_us)

    def on_redis(self, reply: Any) -> None:
        now_us = time.time_ns() / 1000
        if isinstance(reply, Exception):  # an error reply ends this subscriber, reported (never retried in a loop)
            self.run.errors += 1
            self.run.first_error = self.run.first_error or str(reply)[:300]
            return
        if isinstance(reply, list):
            for _stream, entries in reply:
                self.frames += 1
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    for i, t_us, _end in marks(fields[fields.index(b"p") + 1]):
                        self.got(i, t_us, now_us)
        if not self.run.stopping and self.redis is not None:
            self.redis.send("XREAD", "BLOCK", "0", "STREAMS", self.run.stream, self.last_id)


class FanoutSubs:
    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.stream: str = task["stream"]
        self.subs = [Subscriber(self) for _ in range(task["subs"])]
        self.hist = Hist()
        self.slices = [Hist() for _ in range(SLICES)]
        self.commit_hist: Hist | None = Hist() if task["target"] == "syncref" else None
        self.t0_us = 0.0
        self.slice_us = 1.0
        self.expect: int | None = None
        self.all_in: asyncio.Future[None] | None = None
        self.last_us = 0.0
        self.stopping = False
        self.closed = 0
        self.errors = 0  # error replies (Redis) that ended a subscriber
        self.first_error = ""
        self.v3 = task["target"] == "syncref" and task.get("protocol", "v2") == "v3"

    def delivered(self, sub: Subscriber, t_us: int, now_us: float) -> None:
        lat_us = now_us - t_us
        self.hist.add(lat_us)
        k = min(SLICES - 1, max(0, int((t_us - self.t0_us) // self.slice_us)))
        self.slices[k].add(lat_us)
        self.last_us = now_us
        if self.expect is not None and sub.distinct >= self.expect:
            self.check_done()

    def delivered_many(self, sub: Subscriber, ts: list[int], now_us: float) -> None:
        """:meth:`delivered` of several events received at once (send times ``ts``, µs): the same
        histograms, filled a batch at a time."""
        lats = [now_us - t for t in ts]
        self.hist.add_many(lats)
        t0, width, last = self.t0_us, self.slice_us, SLICES - 1
        lo = min(last, max(0, int((min(ts) - t0) // width)))
        hi = min(last, max(0, int((max(ts) - t0) // width)))
        if lo == hi:  # the common case: the whole batch in one fifth of the run
            self.slices[lo].add_many(lats)
        else:
            for t, lat in zip(ts, lats, strict=True):
                self.slices[min(last, max(0, int((t - t0) // width)))].add(lat)
        self.last_us = now_us
        if self.expect is not None and sub.distinct >= self.expect:
            self.check_done()

    def check_done(self) -> None:
        if (self.expect is not None and self.all_in is not None and not self.all_in.done()
                and all(s.distinct >= self.expect for s in self.subs)):
            self.all_in.set_result(None)

    def _closed(self, _ws: WsClient) -> None:
        self.closed += 1

    async def open(self) -> None:
        target = self.task["target"]
        query = f"SELECT * FROM sync_event WHERE stream_id = '{self.stream}'"
        batch = 50  # connect in batches: a burst of hundreds of upgrades is the storm workload's job

        async def one(sub: Subscriber) -> None:
            if target == "syncref":
                sub.ws = await syncref_connect(self.task)
                await syncref_subscribe(sub.ws, 1, 1, (query,))
                sub.ws.on_frame = sub.on_syncref_v3 if self.v3 else sub.on_syncref
                sub.ws.on_close = self._closed
            elif target == "echo":
                sub.ws = await echo_connect(self.task)
                sub.ws.send(b"\x01")
                await recv(sub.ws)
                sub.ws.on_frame = sub.on_echo
                sub.ws.on_close = self._closed
            else:
                sub.redis = await RespClient.connect(self.task["host"], self.task["port"])
                sub.redis.on_reply = sub.on_redis
                sub.redis.send("XREAD", "BLOCK", "0", "STREAMS", self.stream, sub.last_id)

        for k in range(0, len(self.subs), batch):
            started = time.monotonic()
            try:
                await asyncio.gather(*(one(s) for s in self.subs[k:k + batch]))
            except TimeoutError:
                raise RuntimeError(f"subscribers {k}..{k + batch - 1} of {len(self.subs)}: connecting and "
                                   f"subscribing timed out after {time.monotonic() - started:.0f} s") from None


async def run_subscribers(task: dict[str, Any], control: Control) -> dict[str, Any]:
    run = FanoutSubs(task)
    await run.open()
    go = await control.ready()
    phase = Phase.start(go)
    run.t0_us = go * 1e6
    run.slice_us = max(1.0, float(task["duration"]) * 1e6 / SLICES)
    msg = await control.next()
    run.expect = int(msg["expect"])
    run.all_in = asyncio.get_running_loop().create_future()
    run.check_done()
    try:
        await asyncio.wait_for(run.all_in, float(msg["grace"]))
        complete = True
    except TimeoutError:
        complete = False
    run.stopping = True
    cpu = phase.cpu()
    wall = (run.last_us / 1e6 - go) if run.last_us else 0.0
    result = {"subs": len(run.subs), "expect": run.expect, "complete": complete,
              "received": sum(s.count for s in run.subs), "min_received": min(s.count for s in run.subs),
              "distinct": sum(s.distinct for s in run.subs), "sampled": sum(s.sampled for s in run.subs),
              "out_of_order": sum(s.out_of_order for s in run.subs), "closed": run.closed,
              "frames": sum(s.frames for s in run.subs), "errors": run.errors, "first_error": run.first_error,
              "hist": run.hist.to_json(), "slices": [h.to_json() for h in run.slices],
              "commit_hist": None if run.commit_hist is None else run.commit_hist.to_json(),
              "wall_s": wall, "cpu_s": cpu}
    for s in run.subs:
        if s.ws is not None:
            s.ws.close()
        if s.redis is not None:
            s.redis.close()
    return result


async def run_writer(task: dict[str, Any], control: Control) -> dict[str, Any]:
    """Open loop: event k goes at t0 + k/rate whatever the answers do; answers are counted."""
    target = task["target"]
    stream = task["stream"]
    size = task["payload_size"]
    rate = float(task["rate"])
    n = int(rate * float(task["duration"]))
    acks = Hist()
    sent_at: dict[int, float] = {}
    state = {"ok": 0, "errors": 0, "first_error": ""}
    finished = asyncio.get_running_loop().create_future()

    def answered(key: int, ok: bool, detail: str = "") -> None:
        t = sent_at.pop(key, None)
        if t is not None:
            acks.add((time.perf_counter() - t) * 1e6)
        state["ok" if ok else "errors"] += 1  # type: ignore[operator]
        if not ok and not state["first_error"]:
            state["first_error"] = detail[:300]
        if state["ok"] + state["errors"] >= n and not finished.done():  # type: ignore[operator]
            finished.set_result(None)

    ws: WsClient | None = None
    redis: RespClient | None = None
    redis_seq = [0]
    if target == "syncref":
        ws = await syncref_connect(task)

        def on_frame(frame: bytes) -> None:
            rr = reducer_result(frame)
            if rr is not None:
                answered(rr[0], rr[1], "" if rr[1] else str(wire.decode_server_frame(frame, 2)[0]))
        ws.on_frame = on_frame
    elif target == "echo":
        ws = await echo_connect(task)
    else:
        redis = await RespClient.connect(task["host"], task["port"])

        def on_reply(reply: Any) -> None:
            redis_seq[0] += 1
            answered(redis_seq[0], not isinstance(reply, Exception), str(reply))
        redis.on_reply = on_reply
    go = await control.ready()
    phase = Phase.start(go)
    max_lag = 0.0
    for k in range(n):
        due = go + k / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        body = payload(k, size, time.time_ns() // 1000)
        sent_at[k + 1] = time.perf_counter()
        if target == "syncref":
            assert ws is not None
            ws.send(append_frame(k + 1, stream, f"f-{k}", body))
        elif target == "echo":
            assert ws is not None
            ws.send(b"\x02" + body.encode())
        else:
            assert redis is not None
            redis.send("XADD", stream, "*", "k", f"f-{k}", "p", body)  # the key syncref's writer sends, as appends do
    emit({"sent": n})  # the subscribers' grace starts now, not when the last answer arrives
    if target == "echo":
        state["ok"] = n
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished, float(task.get("ack_grace", 30.0)))
    result = {"sent": n, "ok": state["ok"], "errors": state["errors"], "first_error": state["first_error"],
              "ack_hist": acks.to_json(), "max_schedule_lag_s": max_lag, "cpu_s": phase.cpu(),
              "wall_s": time.time() - go}
    if ws is not None:
        ws.close()
    if redis is not None:
        redis.close()
    return result


# --- replay and the reconnect storm ----------------------------------------------------------------------


def count_rows(frame: bytes, table: str) -> int:
    """Rows of ``table`` in a ``SubscribeApplied`` frame: the frame decoded (which splits every
    row list into its rows, checking they fit) and the rows counted -- what the Redis client's
    hiredis does with an XRANGE reply (parse every entry, count them); no row is decoded further."""
    msg = wire.decode_server_frame(frame, 2)[0]
    assert isinstance(msg, wire.SubscribeApplied)
    return sum(t.rows.count() for t in msg.rows.tables if t.table == table)


def resume_queries(stream: str, watermark: int) -> tuple[str, ...]:
    """The resume query set (DESIGN §3): the stream row and its events after the watermark."""
    return (f"SELECT * FROM sync_stream WHERE stream_id = '{stream}'",
            f"SELECT * FROM sync_event WHERE stream_id = '{stream}' AND epoch = 1 AND seq > {watermark}")


async def run_replay(task: dict[str, Any], control: Control) -> dict[str, Any]:
    """``repeats`` replays from the watermark, one after another; each is timed alone."""
    target = task["target"]
    stream = task["stream"]
    watermark = int(task["watermark"])
    times: list[float] = []
    counts: list[int] = []
    ws: WsClient | None = None
    redis: RespClient | None = None
    if target == "syncref":
        ws = await syncref_connect(task)
    else:
        redis = await RespClient.connect(task["host"], task["port"])
    go = await control.ready()
    phase = Phase.start(go)
    for k in range(int(task["repeats"])):
        started = time.perf_counter()
        if ws is not None:
            frame = await syncref_subscribe(ws, 2 * k + 1, 1, resume_queries(stream, watermark))
            n = count_rows(frame, "sync_event")
            times.append(time.perf_counter() - started)
            ws.send(wire.encode_client(wire.Unsubscribe(2 * k + 2, 1)))
            while message_tag(await recv(ws)) != TAG_UNSUB_APPLIED:
                pass
        else:
            assert redis is not None
            start = "-" if watermark == 0 else f"({watermark}-1"
            entries = await asyncio.wait_for(redis.call("XRANGE", stream, start, "+"), ANSWER_TIMEOUT)
            n = len(entries)
            times.append(time.perf_counter() - started)
        counts.append(n)
    if ws is not None:
        ws.close()
    if redis is not None:
        redis.close()
    return {"times_s": times, "counts": counts, "cpu_s": phase.cpu(), "wall_s": time.time() - go}


async def run_storm(task: dict[str, Any], control: Control) -> dict[str, Any]:
    """``clients`` connections opened at once at the go time; each is *live* when it has resumed
    (syncref: upgraded, InitialConnection, SubscribeApplied of the resume query set; Redis:
    connected and XRANGE of the gap answered; echo: upgraded and one round trip)."""
    target = task["target"]
    stream = task["stream"]
    watermark = int(task["watermark"])
    go = await control.ready()
    phase = Phase.start(go)
    await wait_until(go)
    failures: list[str] = []
    conns: list[WsClient | RespClient] = []

    async def one() -> float:
        if target == "syncref":
            ws = await syncref_connect(task)
            conns.append(ws)
            await syncref_subscribe(ws, 1, 1, resume_queries(stream, watermark))
        elif target == "echo":
            ws = await echo_connect(task)
            conns.append(ws)
            ws.send(b"\x00ping")
            await recv(ws)
        else:
            redis = await RespClient.connect(task["host"], task["port"])
            conns.append(redis)
            await asyncio.wait_for(redis.call("XRANGE", stream, f"({watermark}-1", "+"), ANSWER_TIMEOUT)
        return time.time() - go

    results = await asyncio.gather(*(one() for _ in range(int(task["clients"]))), return_exceptions=True)
    live = []
    for res in results:
        if isinstance(res, BaseException):
            failures.append(f"{type(res).__name__}: {res}"[:200])
        else:
            live.append(res)
    for c in conns:
        c.close()
    return {"live_s": live, "failures": failures, "cpu_s": phase.cpu(), "wall_s": time.time() - go}


# --- the process ----------------------------------------------------------------------------------------


class Control:
    """The JSON-lines conversation with the orchestrator on stdin/stdout."""

    async def next(self) -> dict[str, Any]:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            raise SystemExit("the orchestrator went away")
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def ready(self) -> float:
        """Say ready, wait for the go time and for it to come (every client starts together)."""
        emit({"ready": True})
        go = float((await self.next())["go"])
        await wait_until(go)
        return go


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


TASKS = {"append": run_append, "subscribe": run_subscribers, "writer": run_writer, "replay": run_replay,
         "storm": run_storm}


async def main() -> None:
    keep_freed_heap(default=CLIENT_KEEP_MIB)  # freed large blocks reused, for every peer's client (ADR-0020)
    control = Control()
    task = await control.next()
    try:
        result = await TASKS[task["kind"]](task, control)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        emit({"error": f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno} "
                       f"{where.name})"[:600]})
        return
    emit({"result": result})


if __name__ == "__main__":
    asyncio.run(main())
