"""Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket, spoken with the
``websockets`` library the project already depends on).

:func:`chromium` starts Debian's ``chromium`` (``--headless --no-sandbox``: CI runs as root) on a
free debugging port with a throw-away profile and yields a :class:`Browser`; each
:meth:`Browser.page` is one tab whose console errors, uncaught exceptions and failed loads are
collected in ``problems``.  When Chromium is missing or cannot start, tests skip with the reason
-- except under ``CI`` or ``SYNCREF_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def require_or_skip(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("SYNCREF_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"chromium is required here (CI): {reason}", pytrace=False)
    print(f"SKIP: chromium cannot run: {reason}")
    pytest.skip(f"chromium cannot run: {reason}")


def find_chromium() -> str | None:
    override = os.environ.get("SYNCREF_CHROMIUM")
    if override:
        return shutil.which(override)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One tab: ``call`` a CDP method, ``evaluate`` JavaScript, ``wait_for`` a JS condition."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next = 0
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []

    def _note(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.problems.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                              for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.problems.append("exception: " + str(details.get("exception", {}).get("description")
                                                     or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.problems.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    def call(self, method: str, timeout: float = 15, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"CDP {method} got no answer within {timeout:g}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"CDP {method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self._note(msg)

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._note(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluate {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def navigate(self, url: str, timeout: float = 15) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load within {timeout:g}s")
            time.sleep(0.05)

    def wait_for(self, condition: str, timeout: float = 10, interval: float = 0.02) -> float:
        """Wait until the JS ``condition`` is truthy; the seconds it took."""
        start = time.monotonic()
        while not self.evaluate(condition):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{condition!r} not true within {timeout:g}s")
            time.sleep(interval)
        return time.monotonic() - start

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port

    def _json(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    @contextmanager
    def page(self, width: int = 1360, height: int = 1000) -> Iterator[Page]:
        target = self._json("/json/new?about:blank", method="PUT")
        with connect(target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                page.call(f"{domain}.enable")
            page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
            yield page
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/close/{target['id']}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()


@contextmanager
def chromium(timeout: float = 30) -> Iterator[Browser]:
    exe = find_chromium()
    if exe is None:
        require_or_skip("no chromium executable on PATH (apt-get install chromium; .ci/run installs it)")
    assert exe is not None
    profile = Path(tempfile.mkdtemp(prefix="syncref-chromium-"))
    log = (profile / "chromium.log").open("w+")
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                             "--remote-debugging-port=0", f"--user-data-dir={profile / 'profile'}", "about:blank"],
                            stdout=log, stderr=log)
    try:
        active = profile / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        port = None
        while port is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read()[-1500:]
                require_or_skip(f"{exe} exited with {proc.returncode} or did not open its debugging port "
                                f"within {timeout:g}s: {tail}")
            if active.exists():
                lines = active.read_text().split()
                if lines:
                    port = int(lines[0])
                    continue
            time.sleep(0.05)
        yield Browser(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
