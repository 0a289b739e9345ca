"""Nostr relays and the bridge worker for a chaos run.

:class:`Relay` is a real ``nostr-relay`` process (the PyPI package, in the dev extra) on a loopback
port with its own SQLite file, killed (SIGKILL, restarted on the same port and database) or frozen
(SIGSTOP, then SIGCONT) by the ``relay_outage`` nemesis.  :func:`relay_executable` finds it; when it
is missing the runner skips the relay kind and prints why (a run never pretends it ran).
:func:`read_relay` is the independent reader of what a relay holds: a plain ``REQ`` until ``EOSE``
over a WebSocket, parsed with ``json`` (none of syncref's Nostr code).

:class:`BridgeProcess` is ``syncref bridge`` in a subprocess, pointed at the run's proxy (so server
kills, storms and duplicated frames reach it too) and at the relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from adapters.netutil import free_port

STARTUP_S = 60.0


def relay_executable() -> str | None:
    candidate = Path(sys.executable).parent / "nostr-relay"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nostr-relay")


def relay_config(directory: Path, name: str, port: int, *, title: str,
                 validators: Sequence[str] = ("nostr_relay.validators.is_signed",),
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``DIR/NAME.yaml`` for a ``nostr-relay`` on 127.0.0.1:PORT with its own SQLite file
    (the absolute ``sqlite+aiosqlite:////...`` URL it needs) and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    db = (directory / f"{name}.sqlite3").resolve()
    config = {"DEBUG": False, "relay_name": title,
              "storage": {"sqlalchemy.url": f"sqlite+aiosqlite:///{db}", "validators": list(validators)},
              "gunicorn": {"bind": f"127.0.0.1:{port}"},
              "logging": {"version": 1, "root": {"level": "WARNING"}},
              **(extra or {})}
    path = directory / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to ``process``'s process group (a relay runs uvicorn under its launcher, so the
    group is the unit); a group that has already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def kill_group(process: subprocess.Popen[bytes], reap_s: float = 10.0) -> None:
    """SIGKILL ``process``'s process group and reap it (waiting up to ``reap_s``)."""
    signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(reap_s)


def spawn_relay(exe: str, config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``nostr-relay -c CONFIG serve --use-uvicorn`` in its own session (so a kill or a
    SIGSTOP reaches uvicorn's workers too), appending its output to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen([exe, "-c", str(config), "serve", "--use-uvicorn"], cwd=config.parent,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


class Relay:
    def __init__(self, directory: Path, name: str, exe: str) -> None:
        self.directory, self.name, self.exe = directory, name, exe
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.kills = self.freezes = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    async def start(self) -> None:
        config = relay_config(self.directory, self.name, self.port, title=f"syncref chaos relay {self.name}",
                              extra={"max_limit": 1_000_000})
        self.process = spawn_relay(self.exe, config, self.log_path)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relay {self.name} exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"relay {self.name} did not listen on {self.port} within {STARTUP_S:g} s")

    def kill(self) -> None:
        if self.process is None:
            return
        kill_group(self.process)
        self.process = None
        self.frozen = False

    def freeze(self) -> None:
        if self.process is not None:
            signal_group(self.process, signal.SIGSTOP)
            self.frozen = True
            self.freezes += 1

    def thaw(self) -> None:
        if self.process is not None and self.frozen:
            signal_group(self.process, signal.SIGCONT)
        self.frozen = False


async def read_relay(url: str, pubkey: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every event by ``pubkey`` the relay at ``url`` holds (REQ until EOSE)."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout), connect(url, open_timeout=timeout, max_size=None) as ws:
        await ws.send(json.dumps(["REQ", "chaos", {"authors": [pubkey], "limit": 1_000_000}]))
        while True:
            message = json.loads(await ws.recv())
            if message[0] == "EOSE":
                return events
            if message[0] == "EVENT" and message[1] == "chaos":
                events.append(message[2])
            elif message[0] == "CLOSED":
                raise RuntimeError(f"relay {url} closed the REQ: {message}")


class BridgeProcess:
    """``syncref bridge`` (through :mod:`adapters.chaos.planted` when a bridge plant is asked for)."""

    def __init__(self, workdir: Path, url: str, relays: list[str], key_file: Path, token_file: Path,
                 plants: tuple[str, ...] = ()) -> None:
        self.workdir, self.url, self.relays = workdir, url, relays
        self.key_file, self.token_file, self.plants = key_file, token_file, plants
        self.proc: asyncio.subprocess.Process | None = None
        self.log = workdir / "bridge.log"
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.workdir / "bridge.toml"
        # quick retries: the run's outages last seconds, and the heal waits for the backlog to drain; a 1 s
        # OK timeout makes a frozen relay (SIGSTOP for 0.5-2 s) fail its events, so they need a catch-up
        config.write_text("[policy]\nmin_retry_ms = 200\nmax_retry_ms = 3000\ncall_retry_ms = 500\n"
                          "reject_retry_ms = 3000\n"
                          "[pool]\nopen_timeout = 1.0\nack_timeout = 1.0\nbackoff_base = 0.2\nbackoff_cap = 2.0\n",
                          encoding="utf-8")
        prefix = ["-m", "adapters.chaos.planted", ",".join(self.plants)] if self.plants else ["-m", "adapters.cli"]
        args = [*prefix, "bridge", "--url", self.url, "--key-file", str(self.key_file), "--token-file",
                str(self.token_file), "--config", str(config)]
        for relay in self.relays:
            args += ["--relay", relay]
        with self.log.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=asyncio.subprocess.PIPE,
                                                             stderr=log, start_new_session=True)
        assert self.proc.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), STARTUP_S)
            except TimeoutError:
                line = b""
            if line.startswith(b"syncref bridge signing as"):
                break
            if not line:
                raise RuntimeError(f"syncref bridge did not come up; see {self.log}")
        self._drain = asyncio.create_task(self._pump(self.proc.stdout))

    @staticmethod
    async def _pump(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode or 0 if self.proc is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        return self.proc.returncode or 0
