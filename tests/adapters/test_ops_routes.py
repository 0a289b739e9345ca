"""The operator's page routes over real sockets: who gets what, and that the page's assets are the
server's own."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from support.server import call_http, http, running_server

from adapters import ops_routes

ROUTES = ("/", "/ops/data")


def test_page_and_feed_need_an_admin_token(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as st:
        writer = st.token(scopes=("sync.subscribe", "sync.append"), streams=("*",))
        assert call_http(st, writer, "append_sync_event", ["secret.s", "k", "1", {"none": []}, {"none": []}]).status \
            == 200
        admin = st.token(scopes=("sync.admin",), streams=("*",))
        none = http("GET", st.base + "/ops/data")
        assert none.status == 401 and "admin token" in none.text and "secret.s" not in none.text
        shell = http("GET", st.base + "/")  # no token at all: the page without data (a reload; see the browser test)
        assert shell.status == 200 and shell.body == (Path(ops_routes.__file__).parent / "ops_page" / "index.html")\
            .read_bytes() and "default-src 'none'" in shell.headers["content-security-policy"]
        for route in ROUTES:
            empty = http("GET", f"{st.base}{route}?token=")  # a token given, even empty, is checked
            assert empty.status == 401 and "secret.s" not in empty.text
            bad = http("GET", st.base + route, headers={"Authorization": "Bearer not-a-jwt"})
            assert bad.status in (400, 401) and "secret.s" not in bad.text
            other = http("GET", st.base + route, headers={"Authorization": f"Bearer {writer}"})
            assert other.status == 403 and "sync.admin" in other.text and "secret.s" not in other.text
            assert other.headers["cache-control"] == "no-store"
            ok = http("GET", f"{st.base}{route}?token={admin}")
            assert ok.status == 200, ok.text
        page = http("GET", st.base + "/", headers={"Authorization": f"Bearer {admin}"})
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        data = http("GET", st.base + "/ops/data", headers={"Authorization": f"Bearer {admin}"}).json()
        assert [r["stream_id"] for r in data["streams"]["rows"]] == ["secret.s"]
        assert data["durability"]["durable_offset"] == data["durability"]["committed_offset"] == 1
        assert data["durability"]["batches"] >= 1 and data["durability"]["records_written"] == 1
        assert data["server"]["database"] == "autopilot-sync"


def test_the_feed_names_the_log_id_and_the_head_mark(tmp_path: Path) -> None:
    """The running server's ``/ops/data`` names its log's id (read here from the database's ``meta``)
    and the head mark the server wrote (read here from ``DIR/syncref.head``).  Failed before (review
    of ADR-0039): neither was on the page."""
    import json
    import sqlite3
    import time

    data_dir = tmp_path / "d"
    with running_server(data_dir) as st:
        store = st.server._store
        assert store is not None
        store.head_mark_s = 0.05
        writer = st.token(scopes=("sync.append",), streams=("*",))
        assert call_http(st, writer, "append_sync_event", ["m.s", "k", "1", {"none": []}, {"none": []}]).status == 200
        admin = st.token(scopes=("sync.admin",), streams=("*",))
        deadline = time.monotonic() + 20
        while True:
            dur = http("GET", st.base + "/ops/data", headers={"Authorization": f"Bearer {admin}"}).json()["durability"]
            if dur["head_mark"]["offset"] == dur["durable_offset"]:
                break
            assert time.monotonic() < deadline, dur
            time.sleep(0.02)
        on_disk = json.loads((data_dir / "syncref.head").read_text())
        conn = sqlite3.connect(f"file:{data_dir / 'syncref.sqlite3'}?mode=ro", uri=True)
        try:
            (stored_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        finally:
            conn.close()
    assert dur["log_id"] == stored_id == on_disk["log_id"]
    assert dur["head_mark"]["offset"] == on_disk["offset"] and dur["head_mark"]["behind"] == 0
    assert dur["head_mark"]["written"] >= 1 and dur["head_mark"]["errors"] == 0


def test_a_limited_admin_sees_only_its_streams(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as st:
        writer = st.token(scopes=("sync.append",), streams=("*",))
        for sid in ("demo.one", "demo.two", "other.x"):
            assert call_http(st, writer, "append_sync_event", [sid, "k", "1", {"none": []}, {"none": []}]).status \
                == 200
        limited = st.token(scopes=("sync.admin",), streams=("demo.*",))
        res = http("GET", st.base + "/ops/data", headers={"Authorization": f"Bearer {limited}"})
        data = res.json()
        assert [r["stream_id"] for r in data["streams"]["rows"]] == ["demo.one", "demo.two"]
        assert "other.x" not in res.text and "connections" not in data and "errors" not in data


def test_assets_are_served_by_the_server_and_load_nothing_else(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as st:
        admin = st.token(scopes=("sync.admin",), streams=("*",))
        page = http("GET", st.base + "/", headers={"Authorization": f"Bearer {admin}"}).text
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(refs) == ["/ops/app.js", "/ops/style.css", "data:,"]  # data:, the empty favicon
        refs.remove("data:,")
        for ref in refs:
            res = http("GET", st.base + ref)  # code and style only: no token needed, no data inside
            assert res.status == 200 and res.headers["x-content-type-options"] == "nosniff"
            assert not re.search(r"https?://", res.text), ref
        assert http("GET", st.base + "/ops/nothing.js").status == 404
        assert "syncref_http_requests_total{route=\"ops_data\"" not in http("GET", st.base + "/metrics").text
        http("GET", st.base + "/ops/data", headers={"Authorization": f"Bearer {admin}"})
        metrics = http("GET", st.base + "/metrics").text
        assert 'syncref_http_requests_total{route="ops_data",status="200"} 1.0' in metrics


def test_the_feed_long_polls_on_the_committed_offset(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as st:
        admin = st.token(scopes=("sync.admin",), streams=("*",))
        writer = st.token(scopes=("sync.append",), streams=("*",))
        auth = {"Authorization": f"Bearer {admin}"}
        # failed before: "²" (%C2%B2) passed str.isdigit and int() raised: a 500 and a logged traceback;
        # "٣" (Arabic-Indic three) was read as 3
        for bad in ("-1", "x", "1.5", "9" * 21, "%C2%B2", "%D9%A3", "%EF%BC%91"):
            res = http("GET", f"{st.base}/ops/data?wait={bad}", headers=auth)
            assert res.status == 400 and "wait must be a committed offset" in res.text, (bad, res.status)
        idle = http("GET", f"{st.base}/ops/data?wait=0", headers=auth)  # nothing commits: answered after WAIT_S
        assert idle.status == 200 and idle.json()["durability"]["committed_offset"] == 0
        stale = http("GET", f"{st.base}/ops/data?wait=5", headers=auth)  # not the current offset: at once
        assert stale.json()["durability"]["committed_offset"] == 0
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(
            http("GET", f"{st.base}/ops/data?wait=0", headers=auth).json()["durability"]["committed_offset"]))
        waiter.start()
        assert call_http(st, writer, "append_sync_event", ["w.s", "k", "1", {"none": []}, {"none": []}]).status \
            == 200
        waiter.join(10)
        assert got == [1]
        assert http("GET", f"{st.base}/ops/data?wait=0").status == 401  # the token comes first


def test_documented_feed_defaults_are_pinned() -> None:
    from adapters import ops_routes
    assert (ops_routes.WAIT_S, ops_routes.WAIT_STEP_S) == (1.0, 0.05)  # docs/protocol.md: "else after 1 s"
