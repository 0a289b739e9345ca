"""The server takes snapshots while it serves (ADR-0011) and restarts from them.

With ``snapshot_every=5``, twelve confirmed HTTP appends leave snapshots in ``DATA/snapshots``
(the newest two kept), the next start begins at the newest and applies only the tail, and the
state it serves equals what was acknowledged; ``verify-log`` finds every snapshot equal to the
replay.  A corrupt newest snapshot is passed over with a warning naming it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from support.server import ServerThread, call_http, running_server

from reference import snapshot
from reference.replay import verify_log


def append(st: ServerThread, token: str, n: int, prefix: str) -> None:
    for i in range(n):
        res = call_http(st, token, "append_sync_event", ["s.snap", f"{prefix}{i}", json.dumps({"i": i}),
                                                         {"none": []}, {"none": []}])
        assert res.status == 200, res.text


def test_the_server_snapshots_while_serving_and_restarts_from_the_newest(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    with running_server(data, snapshot_every=5, snapshot_keep=2) as st:
        token = st.token()
        append(st, token, 12, "a")
        deadline = time.monotonic() + 20
        while len(snapshot.listing(data / snapshot.SNAPSHOT_DIR)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        committed = st.call(lambda: st.server.engine.committed)
    offsets = [o for o, _ in snapshot.listing(data / snapshot.SNAPSHOT_DIR)]
    assert len(offsets) == 2 and offsets[0] > offsets[1] and offsets[0] <= committed, offsets
    with running_server(data, snapshot_every=5) as st:
        report = st.server._store.recovery if st.server._store else None
        assert report is not None and report.snapshot_offset == offsets[0] and report.rejected == []
        assert report.tail_records == committed - offsets[0]
        # primed at start (ADR-0011 "incremental capture"): the first periodic snapshot views only
        # the streams changed since, not every stream on the event loop
        snaps = st.server._snapshots
        assert snaps is not None and st.call(lambda: set(snaps._capture._entries)) == {"s.snap"}
        rows = st.call(lambda: [e.idempotency_key for e in st.server.engine.db.logs["s.snap"].events])
        assert rows == [f"a{i}" for i in range(12)]
    checked = verify_log(data)
    assert checked.ok and checked.snapshots and all(c.status == "match" for c in checked.snapshots), checked
    # a corrupt newest snapshot: passed over, named in a warning, the older one used
    newest = data / snapshot.SNAPSHOT_DIR / snapshot.file_name(offsets[0])
    newest.write_bytes(newest.read_bytes()[:-10])
    caplog.set_level(logging.WARNING, logger="syncref")
    with running_server(data, snapshot_every=0) as st:
        report = st.server._store.recovery if st.server._store else None
        assert report is not None and report.snapshot_offset == offsets[1]
        rows = st.call(lambda: [e.idempotency_key for e in st.server.engine.db.logs["s.snap"].events])
        assert rows == [f"a{i}" for i in range(12)]
    assert any(newest.name in r.getMessage() and "not used" in r.getMessage() for r in caplog.records), caplog.text
