"""``POST /v1/database/:name/compact``: retention on demand, for an admin granted every stream only.

The conformance kit's retention scenarios trigger compaction through it (``--compact-cmd``, the
local target's hook); any other token is refused before anything runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from support.server import call_http, http, running_server

from spec.policy import Policy, StreamClass

SMALL: Policy = Policy(classes=(("small.", StreamClass("small", retain_count=2)),))


def _floor(st: object, admin: str, stream: str) -> int:
    res = http(
        "POST",
        f"{st.base}/v1/database/autopilot-sync/sql",  # type: ignore[attr-defined]
        f"SELECT * FROM sync_stream WHERE stream_id = '{stream}'",
        {"Authorization": f"Bearer {admin}"},
    )
    assert res.status == 200, res.text
    rows = res.json()[0]["rows"]
    floor: int = rows[0][6]  # floor_seq, in wire order (docs/protocol.md)
    return floor


def _append_five(st: Any, writer: str) -> None:
    """Seqs 1..5 on ``small.s`` (retain_count 2: a compaction moves its floor to 4)."""
    for i in range(1, 6):
        res = call_http(st, writer, "append_sync_event", ["small.s", f"k{i}", str(i), {"none": []}, {"none": []}])
        assert res.status == 200


def test_compaction_on_demand_needs_an_admin_granted_every_stream(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", policy=SMALL, compact_interval_s=3600.0) as st:
        url = f"{st.base}/v1/database/autopilot-sync/compact"
        writer = st.token(scopes=("sync.subscribe", "sync.append"), streams=("*",))
        _append_five(st, writer)
        admin = st.token(scopes=("sync.admin", "sync.subscribe"), streams=("*",))
        assert _floor(st, admin, "small.s") == 1
        limited = st.token(scopes=("sync.admin",), streams=("small.*",))
        for headers in (
            {},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": f"Bearer {writer}"},
            {"Authorization": f"Bearer {limited}"},
        ):
            refused = http("POST", url, headers=headers)
            assert refused.status in (400, 401, 403), refused.text
            assert _floor(st, admin, "small.s") == 1  # nothing ran
        assert http("POST", url, headers={"Authorization": f"Bearer {writer}"}).status == 403
        ok = http("POST", url, headers={"Authorization": f"Bearer {admin}"})
        assert ok.status == 200, ok.text
        assert ok.json()["compacted"] is True
        assert _floor(st, admin, "small.s") == 4  # retain_count 2 of seqs 1..5
        again = http("POST", url, headers={"Authorization": f"Bearer {admin}"})
        assert again.status == 200 and again.json()["compacted"] is False  # nothing left to drop: no transaction
        assert again.json()["committed_offset"] == ok.json()["committed_offset"]
        assert (
            http("POST", f"{st.base}/v1/database/other/compact", headers={"Authorization": f"Bearer {admin}"}).status
            == 404
        )


def test_compaction_answers_its_own_offset_not_a_later_commit(tmp_path: Path) -> None:
    """The answer's ``committed_offset`` is where the compaction left the log -- durable when the
    answer comes (docs/protocol.md) -- not whatever another caller committed while the compaction
    waited for durability (that commit need not be durable yet).  The log is stalled (``[faults]
    stall_commits_while``) while an append commits behind the compaction; no timing is asserted:
    the commits are observed through the engine's offset before the stall is lifted."""
    stall = tmp_path / "stall"
    with running_server(tmp_path / "d", policy=SMALL, compact_interval_s=3600.0, stall_commits_while=stall) as st:
        url = f"{st.base}/v1/database/autopilot-sync/compact"
        writer = st.token(scopes=("sync.subscribe", "sync.append"), streams=("*",))
        admin = st.token(scopes=("sync.admin", "sync.subscribe"), streams=("*",))
        _append_five(st, writer)

        def committed() -> int:
            value: int = st.call(lambda: st.server.engine.committed)
            return value

        def until(offset: int) -> None:
            deadline = time.monotonic() + 20
            while committed() < offset:
                assert time.monotonic() < deadline, f"the engine did not reach offset {offset}"
                time.sleep(0.01)

        before = committed()
        stall.touch()
        answers: dict[str, Any] = {}
        compacting = threading.Thread(
            target=lambda: answers.setdefault(
                "compact", http("POST", url, headers={"Authorization": f"Bearer {admin}"})
            )
        )
        compacting.start()
        until(before + 1)  # the compaction committed; its answer waits for durability
        appending = threading.Thread(
            target=lambda: answers.setdefault(
                "append", call_http(st, writer, "append_sync_event", ["small.s", "k6", "6", {"none": []}, {"none": []}])
            )
        )
        appending.start()
        until(before + 2)  # an append committed behind it
        stall.unlink()
        compacting.join(30)
        appending.join(30)
        ok = answers["compact"]
        assert ok.status == 200 and ok.json()["compacted"] is True, ok.text
        assert answers["append"].status == 200
        assert ok.json()["committed_offset"] == before + 1


def test_compaction_on_demand_runs_nothing_once_the_log_has_failed(tmp_path: Path) -> None:
    """After the commit log failed nothing more may be committed (the scheduled compaction checks
    ``failed`` before it steps, the WebSocket processor takes nothing): the route answers 503 and
    runs no compaction -- before, it committed one in memory (seen by subscribers without confirmed
    reads, never durable) and then answered 503.  Oracle: the engine's committed offset."""
    with running_server(tmp_path / "d", policy=SMALL, compact_interval_s=3600.0) as st:
        writer = st.token(scopes=("sync.subscribe", "sync.append"), streams=("*",))
        admin = st.token(scopes=("sync.admin", "sync.subscribe"), streams=("*",))
        for i in range(1, 6):
            res = call_http(st, writer, "append_sync_event", ["small.s", f"k{i}", str(i), {"none": []}, {"none": []}])
            assert res.status == 200

        def fail() -> int:
            server = st.server
            assert server.failed is not None
            server.failed.set_result(OSError("disk gone (test)"))
            return server.engine.committed

        before = st.call(fail)
        refused = http(
            "POST", f"{st.base}/v1/database/autopilot-sync/compact", headers={"Authorization": f"Bearer {admin}"}
        )
        assert refused.status == 503, refused.text
        assert st.call(lambda: st.server.engine.committed) == before  # nothing ran
