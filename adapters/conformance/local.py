"""A throwaway ``syncref serve`` with every hook the wire runner can use.

``syncref conformance --local`` and ``syncref verify`` run the scenarios against the reference
server itself: a child process on a free loopback port, its data in a temporary directory (tokens
are minted with its signing key: ``--mint-with``), its commit log stallable through a file
(``[faults] stall_commits_while``: ``--stall-file``), a shell command that SIGKILLs it and starts
it again on the same port and data (``--restart-cmd``), a shell command that makes it run its
retention now (``--compact-cmd``: ``python -m adapters.conformance.local compact URL TOKEN`` posts
``/v1/database/:name/compact`` with an admin token), its undurable window (the default ``[limits]
max_undurable``: ``--max-undurable``), and a small outbound queue bound (``[limits] max_outbound_queue``
= 32: ``--max-outbound-queue``, so a client that does not read is closed soon).  Its data directory is
created under the kit's policy (the default with the retention class ``conformance.retain.``) and its
scheduled compaction is off in practice (once a day), so retention runs only when a scenario asks.
Nothing here is specific
to the runner's scenarios; an implementer running the kit against their own server passes the same
hooks by hand (docs/conformance.md).
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
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.netutil import free_port

START_TIMEOUT_S = 60.0
SLOW_CONSUMER_QUEUE = 32  # its [limits] max_outbound_queue (--max-outbound-queue): small, so that the
# slow-consumer scenario closes a client that does not read within a few hundred updates
SQL_BYTES = 100_000  # its [limits] max_sql_bytes (--max-sql-bytes): not the default, so the kit is seen to take it
SQL_STATEMENTS = 48  # its [limits] max_sql_statements (--max-sql-statements): not the default either
BODY_TIMEOUT_S = 2.0  # its [limits] body_timeout_s (--body-timeout): what the 408 scenario waits; short, yet far
# above what a whole body takes to cross loopback on a loaded machine (every body the kit sends is in one write)
IDENTITY_CONNECTIONS = 8  # its [limits] max_connections_per_identity: the 429 scenario opens this many; no other
# scenario opens more than a few connections of one identity


@dataclass(frozen=True)
class LocalTarget:
    url: str
    data: Path
    stall_file: Path
    restart_cmd: str
    log: Path
    compact_cmd: str
    max_undurable: int  # its [limits] max_undurable (the default): --max-undurable
    max_outbound_queue: int  # its [limits] max_outbound_queue: --max-outbound-queue
    max_sql_bytes: int = SQL_BYTES  # --max-sql-bytes
    max_sql_statements: int = SQL_STATEMENTS  # --max-sql-statements
    body_timeout_s: float = BODY_TIMEOUT_S  # --body-timeout
    max_connections_per_identity: int = IDENTITY_CONNECTIONS  # --max-connections-per-identity


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
ADMIN_TTL_S = 7 * 86_400  # the compact command's admin token (a throwaway server lives minutes)


def compact(url: str, token: str) -> int:
    """POST ``url`` (a ``/compact`` route) with ``token``; 0 once it answered 200, else 1 (the answer on stderr)."""
    req = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            print(resp.read().decode("utf-8", "replace"))
            return 0
    except urllib.error.HTTPError as err:
        print(f"HTTP {err.code}: {err.read().decode('utf-8', 'replace')[:300]}", file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def local_target(workdir: Path, serve_cmd: Sequence[str] = SERVE, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> Iterator[LocalTarget]:
    """Start ``syncref serve`` under ``workdir`` (which must exist); stop it (SIGKILL) on exit.

    ``serve_cmd`` is the command up to and including ``serve`` (the runner's tests start the server
    with a planted bug this way); ``cwd`` and ``env`` apply to the start and to every restart."""
    port = free_port()
    data, stall, pidfile, log, config = (workdir / "data", workdir / "stall", workdir / "serve.pid",
                                         workdir / "serve.log", workdir / "syncref.toml")
    config.write_text(f"[faults]\nstall_commits_while = {json.dumps(str(stall))}\n"
                      "[server]\ncompact_interval_s = 86400.0\n"
                      f"[limits]\nmax_outbound_queue = {SLOW_CONSUMER_QUEUE}\nmax_sql_bytes = {SQL_BYTES}\n"
                      f"max_sql_statements = {SQL_STATEMENTS}\n"
                      f"body_timeout_s = {BODY_TIMEOUT_S}\nmax_connections_per_identity = {IDENTITY_CONNECTIONS}\n",
                      encoding="utf-8")
    from adapters.conformance.delivery import KIT_POLICY
    from reference.durability import LogStore

    store = LogStore.open(data)  # the data directory pins the kit's policy (the retention class)
    store.save_policy(KIT_POLICY)
    store.close_clean(store.last()[0])
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
        from adapters.auth import AuthConfig, Authenticator, KeyStore
        from adapters.server import Limits

        admin = Authenticator(AuthConfig(), KeyStore.load_or_create(data)).mint(
            subject="conformance-admin", scopes=("sync.admin",), streams=("*",), ttl_s=ADMIN_TTL_S)
        compact_cmd = (where + shlex.join([sys.executable, "-m", "adapters.conformance.local", "compact",
                                           f"{url}/v1/database/autopilot-sync/compact", admin]))
        yield LocalTarget(url, data, stall, restart, log, compact_cmd, Limits().max_undurable, SLOW_CONSUMER_QUEUE)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "compact":
        print("usage: python -m adapters.conformance.local compact URL TOKEN", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(compact(sys.argv[2], sys.argv[3]))
