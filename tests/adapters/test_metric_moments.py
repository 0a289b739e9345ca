"""Metrics of ``GET /metrics`` recorded at the right moment, for the right thing.

``syncref_replay_gap_events`` is documented as observed per *accepted* resume query: a resume
query that passes its stale-cursor check inside a ``Subscribe`` that is then refused (another of its
queries is stale, or its snapshot is over ``max_outbound_message_bytes``) replays nothing and must
not be observed.  Checked against the scraped count and sum (the events an accepted resume replays:
head seq minus the watermark); no timing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support.server import ServerThread, WireClient, call_http, http, running_server, with_limits

from adapters import bsatn, wire

S = "moments.s1"
SUB = f"SELECT * FROM sync_event WHERE stream_id = '{S}'"


def gap(st: ServerThread) -> tuple[float, float]:
    """(count, sum) of syncref_replay_gap_events."""
    got = {s.name: s.value for f in text_string_to_metric_families(http("GET", f"{st.base}/metrics").text)
           for s in f.samples if s.name.startswith("syncref_replay_gap_events")}
    return got["syncref_replay_gap_events_count"], got["syncref_replay_gap_events_sum"]


def appended(st: ServerThread, tok: str, n: int) -> str:
    """Append ``n`` events to S; the resume form of its query (with the stream's epoch)."""
    for i in range(n):
        assert call_http(st, tok, "append_sync_event", [S, f"k{i}", json.dumps({"i": i, "pad": "x" * 2000}),
                                                         {"none": []}, {"none": []}]).status == 200
    epoch = st.call(lambda: st.server.engine.db.get("sync_stream", (S,)).epoch)
    return f"{SUB} AND epoch = {epoch}"


def test_a_resume_in_a_refused_subscribe_is_not_a_replay(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        tok = st.token()
        resume = appended(st, tok, 8)
        c = WireClient(st, tok)
        c.send(wire.Subscribe(1, 1, (f"{resume} AND seq > 5", f"{resume} AND seq > 100")))
        refused = c.recv()
        assert isinstance(refused, wire.SubscriptionError) and "cursor_ahead_of_head" in refused.error
        assert gap(st) == (0, 0), "the first query's replay was counted although the Subscribe was refused"
        assert isinstance(c.subscribe(2, f"{resume} AND seq > 5"), wire.SubscribeApplied)
        assert gap(st) == (1, 3)  # head 8 - watermark 5
        c.close()


def test_a_resume_whose_snapshot_is_over_the_message_bound_is_not_a_replay(tmp_path: Path) -> None:
    with running_server(tmp_path, limits=with_limits(max_outbound_message_bytes=8 * 1024)) as st:
        tok = st.token()
        resume = appended(st, tok, 8)
        c = WireClient(st, tok)
        over = c.subscribe(1, f"{resume} AND seq > 2")  # six ~2 KB events: over 8 KiB
        assert isinstance(over, wire.SubscriptionError) and "max_outbound_message_bytes" in over.error, over
        assert gap(st) == (0, 0), "a refused resume was counted as a replay"
        assert isinstance(c.subscribe(2, f"{resume} AND seq > 6"), wire.SubscribeApplied)
        assert gap(st) == (1, 2)
        c.close()


def test_a_commit_is_stamped_when_it_happens_not_when_its_turn_ends(tmp_path: Path) -> None:
    """``syncref_fanout_latency_seconds`` runs from the moment the server saw the commit: a call
    followed in the same processor turn by a slow read (one v3 frame of both; the read made slow by
    the test) must be stamped before that read starts -- not at the end of the turn, after it, which
    left the read's time out of the latency of the call's update.  An ordering of the test's own
    clock readings; the sleep only makes the read slow, nothing asserts on its length."""
    import time

    with running_server(tmp_path) as st:
        tok = st.token()
        c = WireClient(st, tok, version=3, confirmed=False)
        started: list[tuple[str, float]] = []
        real = st.server._dispatch

        def recorded(s: object, msg: object) -> None:
            started.append((type(msg).__name__, time.monotonic()))
            if isinstance(msg, wire.OneOffQuery):
                time.sleep(0.05)  # a slow read after the call, in the same turn
            real(s, msg)  # type: ignore[arg-type]

        st.call(setattr, st.server, "_dispatch", recorded)
        c.send(wire.CallReducer(1, 0, "append_sync_event", bsatn.encode_args(
                   "append_sync_event", (S, "k1", json.dumps({"i": 1}), None, None))),
               wire.OneOffQuery(2, f"{SUB}"))
        assert isinstance(c.recv_until(wire.ReducerResult).outcome, wire.ReducerOk)
        assert isinstance(c.recv_until(wire.OneOffQueryResult), wire.OneOffQueryResult)
        assert [name for name, _at in started] == ["CallReducer", "OneOffQuery"]  # one turn, in order
        stamped = st.call(lambda: st.server._commits.at(st.server.engine.committed))
        assert stamped is not None
        assert stamped <= started[1][1], "the commit was stamped after the read that followed it"
        c.close()
