"""``SyncServer._turn`` at v3: a turn of shared updates is built once per pass and the next
receivers of the same updates take it as it is (ADR-0023) -- and count what they would have
counted message by message.

Driven on a never-started server (a real engine, stand-in sessions): several v3 subscribers of
one stream each take their turn of the same queued updates.  Checked against what the first
receiver's turn (built message by message) counts and against the wire: every receiver's frame
decodes to the same updates in commit order; the sent-message and encode-hit counters and the
fanout latency observations (offset, receivers) are what one count per receiver per message gives;
a receiver whose turn differs (a message more) builds its own.  Planted bugs in the shortcut
(``tests/support/edited.py``) must fail these checks.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from support.edited import edited_module

from adapters import server as srv
from adapters import wire
from spec.auth import Claims
from spec.messages import CallReducer, Subscribe
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))
QUERY = "SELECT * FROM sync_event WHERE stream_id = 's'"


def rig(module: Any, subscribers: int, events: int) -> tuple[Any, list[Any], list[tuple[int, int]]]:
    server = module.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
    engine = server._engine = srv.Engine(max_queue=1000)
    sessions = []
    for _ in range(subscribers):
        cid = engine.connect(ADMIN, confirmed=False)
        engine.handle(cid, Subscribe(1, 1, (QUERY,)))
        engine.take(cid, 64, 1 << 20)  # the SubscribeApplied
        s = types.SimpleNamespace(conn_id=cid, side=deque(), busy=False, wake=asyncio.Event(), version=3,
                                  compression=wire.Compression.NONE, broken=False, closers=[])
        server.sessions[cid] = s
        sessions.append(s)
    writer = engine.connect(ADMIN, confirmed=False)
    for k in range(events):
        engine.handle(writer, CallReducer(k + 1, "append_sync_event", ("s", f"k{k}", "{}", None, None)))
        server._commits.stamp(engine.committed, 0.0)
    engine.take(writer, 1000, 1 << 30)
    observed: list[tuple[int, int]] = []

    def observe(_value: float, n: int = 1) -> None:
        observed.append((n, 0))

    server.metrics.fanout_latency = types.SimpleNamespace(observe=observe)
    return server, sessions, observed


def seqs_of(frames: list[Any]) -> list[int]:
    out = []
    for frame in frames:
        assert isinstance(frame, bytes)
        payload = frame[2:] if frame[1] < 126 else frame[4:] if frame[1] == 126 else frame[10:]
        for msg in wire.decode_server_frame(payload, 3):
            assert isinstance(msg, wire.TransactionUpdate)
            rows = msg.query_sets[0].tables[0].rows[0]
            assert isinstance(rows, wire.PersistentTableRows)
            out += [r.seq for r in wire.decode_rows("sync_event", rows.inserts)]  # type: ignore[attr-defined]
    return out


def counts(server: Any) -> tuple[int, int]:
    sends = server.metrics.sends
    return sends.messages.get("TransactionUpdate", 0), sends.encode_hits


def test_receivers_of_the_same_updates_take_the_first_turn_as_it_is() -> None:
    server, sessions, observed = rig(srv, 4, 5)
    turns = [server._turn(s) for s in sessions]
    assert server._turn_hits  # the later receivers took the turn as it was
    first_frames, first_payload = turns[0]
    for frames, payload in turns:
        assert seqs_of(frames) == [1, 2, 3, 4, 5]  # every update, in commit order, one frame
        assert len(frames) == 1 and frames[0] is first_frames[0] and payload == first_payload
    server._flush_delivered()
    assert counts(server) == (4 * 5, 3 * 5)  # a message per receiver; the three later ones all shared
    assert sum(n for n, _ in observed) == 4 * 5 and len(observed) == 5  # each offset once, weighted
    assert not server._turn_hits and not server._v3_turns


def test_a_receiver_with_another_turn_builds_its_own() -> None:
    server, sessions, observed = rig(srv, 3, 4)
    engine = server.engine
    engine.take(sessions[2].conn_id, 1, 1 << 20)  # this one already had the first update
    turns = [server._turn(s) for s in sessions]
    assert seqs_of(turns[0][0]) == seqs_of(turns[1][0]) == [1, 2, 3, 4]
    assert seqs_of(turns[2][0]) == [2, 3, 4]
    assert turns[2][0][0] is not turns[0][0][0]
    server._flush_delivered()
    assert counts(server) == (4 + 4 + 3, 4 + 3)  # the third's updates were encoded already: hits, not a turn
    assert sum(n for n, _ in observed) == 11


def test_a_second_pass_starts_afresh() -> None:
    server, sessions, _observed = rig(srv, 2, 2)
    first = [server._turn(s) for s in sessions]
    server._flush_delivered()
    engine = server.engine
    writer = max(engine.conns)
    engine.handle(writer, CallReducer(99, "append_sync_event", ("s", "k99", "{}", None, None)))
    engine.take(writer, 10, 1 << 20)
    second = [server._turn(s) for s in sessions]
    assert seqs_of(second[0][0]) == seqs_of(second[1][0]) == [3]
    assert second[0][0][0] is not first[0][0][0]
    server._flush_delivered()
    assert counts(server) == (2 * 2 + 2, 2 + 1)


PLANTED: dict[str, tuple[str, str]] = {
    "shortcut counts no deliveries": ("                    delivered[offset] = delivered.get(offset, 0) + n\n",
                                      "                    pass\n"),
    "shortcut counts one message per turn": (
        'sends.messages.get("TransactionUpdate", 0) + n * len(offsets)',
        'sends.messages.get("TransactionUpdate", 0) + n'),
    "shortcut counts each turn once": ("                    hit[0] += 1\n", "                    pass\n"),
    "shortcut ignores the turn's length": ("            made = self._v3_turns.get((compression, tuple(v3_ids)))",
                                           "            made = self._v3_turns.get((compression, tuple(v3_ids[-1:])))"),
    "turns outlive the pass": ("            self._turn_hits.clear()\n        self._v3_turns.clear()",
                               "            self._turn_hits.clear()"),
}
CHECKS = (test_receivers_of_the_same_updates_take_the_first_turn_as_it_is,
          test_a_receiver_with_another_turn_builds_its_own, test_a_second_pass_starts_afresh)


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_bugs_in_the_shortcut_fail_the_checks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = edited_module(srv, [PLANTED[name]], name)
    failed = []
    for check in CHECKS:
        with monkeypatch.context() as mp:
            mp.setitem(globals(), "srv", planted)
            try:
                check()
            except AssertionError:
                failed.append(check.__name__)
    assert failed, f"planted bug survived: {name}"


def test_the_rebuilt_module_alone_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = edited_module(srv, [], "control")
    for check in CHECKS:
        with monkeypatch.context() as mp:
            mp.setitem(globals(), "srv", planted)
            check()
