"""A throwaway ``syncref serve`` with every hook the wire runner can use.

``syncref conformance --local`` and ``syncref verify`` run the scenarios against the reference
server itself: a child process on a free loopback port, its data in a temporary directory (tokens
are minted with its signing key: ``--mint-with``), its commit log stallable through a file
(``[faults] stall_commits_while``: ``--stall-file``), and a shell command that SIGKILLs it and starts
it again on the same port and data (``--restart-cmd``).  Nothing here is specific to the runner's
scenarios; an implementer running the kit against their own server passes the same three hooks by
hand (docs/conformance.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.netutil import free_port

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LocalTarget:
    url: str
    data: Path
    stall_file: Path
    restart_cmd: str
    log: Path


def _wait_up(url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/ping", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
                raise RuntimeError(f"the local syncref serve did not answer within {START_TIMEOUT_S:.0f} s; "
                                   f"its log ends: {tail}") from None
            time.sleep(0.1)


SERVE = (sys.executable, "-m", "adapters.cli", "serve")


@contextlib.contextmanager
def local_target(workdir: Path, serve_cmd: Sequence[str] = SERVE, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> Iterator[LocalTarget]:
    """Start ``syncref serve`` under ``workdir`` (which must exist); stop it (SIGKILL) on exit.

    ``serve_cmd`` is the command up to and including ``serve`` (the runner's tests start the server
    with a planted bug this way); ``cwd`` and ``env`` apply to the start and to every restart."""
    port = free_port()
    data, stall, pidfile, log, config = (workdir / "data", workdir / "stall", workdir / "serve.pid",
                                         workdir / "serve.log", workdir / "syncref.toml")
    config.write_text(f"[faults]\nstall_commits_while = {json.dumps(str(stall))}\n", encoding="utf-8")
    serve = [*serve_cmd, "--port", str(port), "--data", str(data), "--config", str(config)]
    # a subshell that execs the server, so $! is the server's own pid (what the restart SIGKILLs)
    where = f"cd {shlex.quote(str(cwd))}; " if cwd is not None else ""
    assign = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " if env else ""
    start = (f"({where}exec {assign}{shlex.join(serve)} >> {shlex.quote(str(log))} 2>&1) & "
             f"echo $! > {shlex.quote(str(pidfile))}")
    pid = f"$(cat {shlex.quote(str(pidfile))})"
    restart = f"kill -9 {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done; {start}"
    url = f"http://127.0.0.1:{port}"
    subprocess.run(start, shell=True, check=True)
    try:
        _wait_up(url, log)
        yield LocalTarget(url, data, stall, restart, log)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
