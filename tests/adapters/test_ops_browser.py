"""The operator's page in a real browser: headless Chromium (Debian's ``chromium``, driven over
the DevTools protocol) against a running ``syncref serve``.

The page must load with no console error, show an append made over the WebSocket within a second,
and show a limited admin token nothing outside its grants.  Screenshots are written to the test's
tmp dir, or to ``$SYNCREF_ARTIFACTS`` when set; ``SYNCREF_UPDATE_SCREENSHOTS=1`` also refreshes
the committed ``docs/ops-page.png``.  Without Chromium the tests skip with the reason -- and fail
under CI (``CI`` or ``SYNCREF_REQUIRE_CHROMIUM=1``, set by ``.ci/run``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.browser import Page, chromium, require_or_skip
from support.server import WireClient, http, mint_cli, serve_process

from adapters import wire

DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "ops-page.png"
ALL = "sync.subscribe,sync.append,presence.write,compute.request,bridge.enqueue,bridge.mark_sent"
NONE = {"none": []}


def artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("SYNCREF_ARTIFACTS") or tmp_path / "artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def call(base: str, token: str, reducer: str, args: list[object]) -> None:
    res = http("POST", f"{base}/v1/database/autopilot-sync/call/{reducer}", json.dumps(args),
               {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert res.status == 200, (reducer, res.status, res.text)


def row(stream: str) -> str:
    return f"document.querySelector('#streams tr[data-key=\"{stream}\"]')"


def head_of(page: Page, stream: str) -> int | None:
    """The head column of the stream's row as the page shows it (None: no row)."""
    value = page.evaluate(f"(() => {{ const r = {row(stream)}; return r ? r.children[5].textContent : null; }})()")
    return None if value is None else int(value)


def test_operators_page_live_in_chromium(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shots = artifacts(tmp_path)
    with chromium() as browser, serve_process(data) as served:
        base = served.url
        admin = mint_cli(data, "sync.admin", "*")["token"]
        writer = mint_cli(data, ALL, "*")["token"]
        for i in range(3):
            call(base, writer, "append_sync_event", ["demo.chat", f"k{i}", json.dumps({"n": i}), NONE, NONE])
        call(base, writer, "append_sync_event", ["other.audit", "k0", "{}", NONE, NONE])
        call(base, writer, "upsert_presence", ["laptop-1", "laptop", "node-a", "online", "eu-west", 300_000])
        call(base, writer, "open_compute_assignment", ["job-1", 5050, '{"prompt":"hi"}'])
        call(base, writer, "enqueue_bridge_event", ["out-1", "demo.chat", 30078, "[]", "hello"])
        client = WireClient(SimpleNamespace(ws_base=base.replace("http://", "ws://")), writer, version=3)
        try:
            client.subscribe(1, "SELECT * FROM sync_event WHERE stream_id = 'demo.live'")
            with browser.page(width=1600, height=1000) as page:
                page.navigate(f"{base}/?token={admin}")
                page.wait_for(f"{row('other.audit')} !== null")
                assert "token=" not in page.evaluate("location.href")  # the token leaves the address bar
                assert head_of(page, "demo.chat") == 3 and head_of(page, "demo.live") is None
                text = page.evaluate("document.body.innerText")
                assert "fresh" in page.evaluate(f"{row('demo.chat')}.textContent")  # schema 2: epoch origin
                for needle in ("v3.bsatn.spacetimedb", "laptop-1", "online", "open", "backlog", "durable offset"):
                    assert needle in text, needle
                sent = time.monotonic()
                result = client.call("append_sync_event", "demo.live", "live-1", '{"live":true}', None, None)
                assert isinstance(result.outcome, wire.ReducerOk), result
                page.wait_for(f"{row('demo.live')} !== null", timeout=10)
                took = time.monotonic() - sent
                # a measurement, not a pass/fail timing (the long poll's wake-up on commit is checked
                # without a clock in test_ops_routes: a waiting /ops/data answers the commit's offset)
                print(f"append over the WebSocket appeared on the page after {took * 1000:.0f} ms")
                assert head_of(page, "demo.live") == 1
                page.pump(0.5)
                assert page.problems == [], page.problems
                shot = page.screenshot(shots / "ops-page-admin.png")
                print(f"screenshot: {shot}")
                if os.environ.get("SYNCREF_UPDATE_SCREENSHOTS") == "1":
                    shutil.copyfile(shot, DOCS_SHOT)
        finally:
            client.close()


def test_a_limited_token_sees_only_its_streams_in_chromium(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shots = artifacts(tmp_path)
    with chromium() as browser, serve_process(data) as served:
        base = served.url
        writer = mint_cli(data, ALL, "*")["token"]
        for sid in ("demo.one", "demo.two", "secret.payroll"):
            call(base, writer, "append_sync_event", [sid, "k", "{}", NONE, NONE])
        limited = mint_cli(data, "sync.admin", "demo.*")["token"]
        with browser.page() as page:
            page.navigate(f"{base}/?token={limited}")
            page.wait_for(f"{row('demo.two')} !== null")
            page.pump(0.3)
            text = page.evaluate("document.body.innerText")
            assert "secret.payroll" not in text and "secret.payroll" not in page.evaluate(
                "document.documentElement.outerHTML")
            assert "limited to demo.*" in text
            assert page.problems == [], page.problems
            page.screenshot(shots / "ops-page-limited.png")
        with browser.page() as page:  # a token without sync.admin: the refusal and nothing else
            page.navigate(f"{base}/?token={writer}")
            text = page.evaluate("document.body.innerText")
            assert "sync.admin" in text and "demo.one" not in text
            page.screenshot(shots / "ops-page-refused.png")


def test_the_page_survives_a_reload(tmp_path: Path) -> None:
    """The script moves the token out of the address bar into ``sessionStorage``; a reload then asks
    for ``/`` with no token.  Failed before: ``GET /`` without a token was the 401 text, so the
    operator's first F5 (or the browser restoring the tab) lost the page although the token was
    still in ``sessionStorage``.  The shell holds no data: the feed still needs the token."""
    data = tmp_path / "data"
    with chromium() as browser, serve_process(data) as served:
        base = served.url
        writer = mint_cli(data, ALL, "*")["token"]
        call(base, writer, "append_sync_event", ["demo.reload", "k", "{}", NONE, NONE])
        admin = mint_cli(data, "sync.admin", "*")["token"]
        with browser.page() as page:
            page.navigate(f"{base}/?token={admin}")
            page.wait_for(f"{row('demo.reload')} !== null")
            assert page.evaluate("location.href") == f"{base}/"
            page.navigate(f"{base}/")  # what a reload requests now
            page.wait_for(f"{row('demo.reload')} !== null")
            assert page.problems == [], page.problems
        with browser.page() as page:  # a fresh tab: no token anywhere, the page says how to give one
            page.navigate(f"{base}/")
            page.wait_for("document.getElementById('status').textContent.includes('no token')")
            assert "demo.reload" not in page.evaluate("document.documentElement.outerHTML")


HOSTILE = "</td><img id=pwn src=x onerror=\"document.title='pwned'\"><script>window.pwned=1</script>"


def test_client_text_is_rendered_as_text_not_markup(tmp_path: Path) -> None:
    """Text a client chooses reaches the page: a subscription's query text (any string literal) and
    a bridge failure's error.  The page writes every value with ``textContent``: the markup shows as
    characters and makes no element (a planted ``innerHTML`` in ``cell()`` fails this test)."""
    data = tmp_path / "data"
    with chromium() as browser, serve_process(data) as served:
        base = served.url
        writer = mint_cli(data, ALL, "*")["token"]
        call(base, writer, "enqueue_bridge_event", ["out-x", "demo.x", 30078, "[]", "hello"])
        for _ in range(5):  # bridge_max_attempts: the fifth failure makes it a dead letter
            call(base, writer, "record_bridge_failure", ["out-x", HOSTILE, 1000])
        client = WireClient(SimpleNamespace(ws_base=base.replace("http://", "ws://")), writer, version=3)
        try:
            quoted = HOSTILE.replace("'", "''")
            applied = client.subscribe(1, f"SELECT * FROM sync_event WHERE stream_id = '{quoted}'")
            assert not isinstance(applied, wire.SubscriptionError), applied
            admin = mint_cli(data, "sync.admin", "*")["token"]
            with browser.page() as page:
                page.navigate(f"{base}/?token={admin}")
                page.wait_for("document.getElementById('connections').textContent.includes('onerror')")
                page.wait_for("document.getElementById('outbox').textContent.includes('onerror')")
                page.pump(0.3)
                assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
                assert page.evaluate("document.getElementById('pwn') === null && window.pwned === undefined")
                assert "pwned" not in page.evaluate("document.title")
                for box in ("connections", "outbox"):
                    assert "<img id=pwn" in page.evaluate(f"document.getElementById('{box}').textContent"), box
        finally:
            client.close()


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SYNCREF_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium cannot run: gone"):
        require_or_skip("gone")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is required here \\(CI\\): gone"):
        require_or_skip("gone")
    monkeypatch.delenv("CI")
    monkeypatch.setenv("SYNCREF_CHROMIUM", "no-such-browser-here")
    with pytest.raises(pytest.skip.Exception, match="no chromium executable"), chromium():
        pass
