"""Relays for the Nostr client's tests: a real ``nostr-relay`` process, and small misbehaving fakes.

:class:`RealRelay` runs ``nostr-relay -c relay.yaml serve --use-uvicorn`` (the PyPI package, in the
dev extra) on a free loopback port with its own SQLite file in a temp directory (an absolute
``sqlite+aiosqlite:////...`` URL), can be killed (SIGKILL) and restarted on the same port and
database, or frozen (SIGSTOP: a relay that hangs) and thawed.  :func:`start_relays` starts several
at once.  When the relay cannot start, the tests skip with the reason and the relay's log tail --
except under ``CI`` (set by ``.ci/run``'s environment) or ``SYNCREF_REQUIRE_NOSTR_RELAY=1``, where
they fail: CI must not pass without it.

The fakes run inside the test's event loop: :class:`FakeRelay` is a WebSocket server that answers
every ``EVENT`` according to ``behaviour`` (``accept``, ``reject``, ``garbage``, ``silent``,
``drop``, ``greet_garbage``: garbage on connect, then accept, ``huge``: a 2 MiB frame), and
:class:`HangingServer` accepts TCP connections and never says a word (a WebSocket handshake to it
can only time out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.sync.client import connect as sync_connect

from adapters.chaos.relays import kill_group, relay_config, relay_executable, signal_group, spawn_relay
from support.ports import PortReservation

STARTUP_TIMEOUT = 60.0


def raw_req(url: str, filters: dict[str, Any], timeout: float = 10) -> list[dict[str, Any]]:
    """REQ until EOSE over a plain WebSocket, parsed with ``json`` -- none of syncref's Nostr code: the
    independent reader the relay tests check with."""
    events: list[dict[str, Any]] = []
    with sync_connect(url, open_timeout=timeout) as ws:
        ws.send(json.dumps(["REQ", "raw", filters]))
        while True:
            message = json.loads(ws.recv(timeout=timeout))
            if message[0] == "EOSE":
                return events
            assert message[0] == "EVENT" and message[1] == "raw", message
            events.append(message[2])


def _require_or_skip(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("SYNCREF_REQUIRE_NOSTR_RELAY") == "1":
        pytest.fail(f"nostr-relay is required here (CI): {reason}", pytrace=False)
    pytest.skip(f"nostr-relay cannot start: {reason}")


@dataclass
class RealRelay:
    """A ``nostr-relay`` process; ``validators``/``extra`` go into its relay.yaml."""

    directory: Path
    name: str
    validators: Sequence[str] = ("nostr_relay.validators.is_signed",)
    extra: dict[str, Any] = field(default_factory=dict)
    # held from creation to release(), across kill/restart: no other process can listen on it, so a
    # connection that succeeds reaches this relay (tests/support/ports.py)
    reservation: PortReservation = field(default_factory=PortReservation)
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.reservation.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def write_config(self) -> Path:
        return relay_config(self.directory, self.name, self.port, title=f"syncref test relay {self.name}",
                            validators=self.validators, extra=self.extra)

    def spawn(self) -> None:
        exe = relay_executable()
        if exe is None:
            _require_or_skip("the nostr-relay executable is not installed (pip install -e '.[dev]')")
        assert exe is not None
        self.process = spawn_relay(exe, self.write_config(), self.log_path)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _require_or_skip(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.kill()
        _require_or_skip(f"{self.name} did not listen on port {self.port} within {timeout:g}s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def kill(self) -> None:
        """SIGKILL the relay's process group (uvicorn and all) and reap it."""
        if self.process is None:
            return
        kill_group(self.process)
        self.process = None

    def release(self) -> None:
        """Kill the relay and give its port back (the end of the test)."""
        self.kill()
        self.reservation.release()

    def freeze(self) -> None:
        """SIGSTOP the relay's process group: a relay that hangs.  The kernel still accepts TCP
        connections on its port (the listen backlog), but no WebSocket handshake and no ``OK`` comes."""
        assert self.process is not None
        signal_group(self.process, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`: the relay carries on with whatever it had been sent."""
        if self.process is not None:
            signal_group(self.process, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.spawn()
        self.wait_ready()


@contextlib.contextmanager
def start_relays(directory: Path, *relays: tuple[str, dict[str, Any]]) -> Iterator[list[RealRelay]]:
    """Start ``(name, RealRelay kwargs)`` relays in parallel; kill them all afterwards."""
    started = [RealRelay(directory, name, **kwargs) for name, kwargs in relays]
    try:
        for relay in started:
            relay.spawn()
        for relay in started:
            relay.wait_ready()
        yield started
    finally:
        for relay in started:
            relay.release()


# ------------------------------------------------------------------------------------------- fakes


class FakeRelay:
    """A WebSocket relay stand-in answering every ``EVENT`` per ``behaviour``."""

    def __init__(self, behaviour: str, port: int = 0) -> None:
        if behaviour not in {"accept", "reject", "garbage", "silent", "drop", "greet_garbage", "huge"}:
            raise ValueError(behaviour)
        self.behaviour = behaviour
        self.port = port
        self.server: Server | None = None
        self.connections = 0
        self.events: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> FakeRelay:
        self.server = await serve(self._handle, "127.0.0.1", self.port)
        self.port = next(iter(self.server.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            if self.behaviour == "greet_garbage":  # unsolicited garbage before anything was sent
                await ws.send('["OK"]')
            async for frame in ws:
                message = json.loads(frame)
                if message[0] != "EVENT":
                    continue
                event = message[1]
                self.events.append(event)
                if self.behaviour in ("accept", "greet_garbage"):
                    await ws.send(json.dumps(["OK", event["id"], True, ""]))
                elif self.behaviour == "reject":
                    await ws.send(json.dumps(["OK", event["id"], False, "blocked: this test relay refuses everything"]))
                elif self.behaviour == "garbage":
                    await ws.send("HTTP/1.1 200 OK <html>not nostr</html>")
                elif self.behaviour == "huge":  # past the client's 1 MiB frame limit
                    await ws.send(json.dumps(["NOTICE", "x" * (1 << 21)]))
                elif self.behaviour == "drop":
                    await ws.close(1011, "going away mid-publish")
                    return
                # silent: never answer


class HangingServer:
    """Accepts TCP connections and never answers (nor closes them)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> HangingServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)  # hold the connection open, say nothing

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
