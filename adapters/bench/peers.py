"""The processes under test, each started by the bench on loopback and stopped after it.

* :class:`SyncrefPeer`: ``syncref serve`` (this interpreter, ``-m adapters.cli``) with its
  defaults -- SQLite WAL + ``synchronous=FULL`` group commit, confirmed reads, no config file --
  on a fresh temporary data directory and a free port; the bench mints its token from the data
  directory's key, as ``syncref token mint`` does.
* :class:`RedisPeer`: Debian's ``redis-server`` (found on ``PATH`` or in ``/usr/bin`` and
  ``/usr/sbin``) as its own instance -- ``--appendonly yes --appendfsync always``, no RDB
  snapshots, a temporary ``--dir``, a free port.  It is never a system service.  When the binary
  is missing the peer raises :class:`PeerUnavailable` with the reason and the install command:
  the report then says *skipped*, never passed.
* :class:`EchoPeer`: :mod:`adapters.bench.echo` in its own process.

CPU time and RSS of a peer come from ``/proc/<pid>`` (Linux).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from adapters.auth import AuthConfig, Authenticator, KeyStore
from adapters.netutil import free_port
from spec.schema import SCOPES

ROOT = Path(__file__).resolve().parents[2]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class PeerUnavailable(Exception):
    """The peer cannot run on this machine (the message says why and how to fix it)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the bench dies (Linux ``PR_SET_PDEATHSIG``), so an
    interrupted or killed bench leaves no server or client behind."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# The server under test runs as deployed: no contract checking, whatever the caller's
# environment says (the test suite turns every level on for itself; a bench server that inherits
# ICONTRACT_SLOW rescans the whole state after every message, which is not what is measured).
CONTRACT_SWITCHES = ("ICONTRACT_SLOW", "SYNCREF_CONTRACTS", "SYNCREF_PER_ROW_CONTRACTS",
                     "SYNCREF_WHOLE_STATE_CONTRACTS")


def child_env(code: Path | None = None) -> dict[str, str]:
    """The environment of a child process running the tree at ``code`` (default: this one) first."""
    env = {k: v for k, v in os.environ.items() if k not in CONTRACT_SWITCHES}
    first = str(code or ROOT)
    env["PYTHONPATH"] = first + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# The tree whose ``syncref serve`` and ``verify-log`` are measured (``syncref bench --server-code``);
# the clients, the peers and the harness always run this tree, so an A/B of two servers shares one
# harness.  Children run with ``-P`` (Python 3.11: no working directory or script directory put
# first on ``sys.path``) and ``PYTHONPATH`` set to the tree, so the tree is what they import
# wherever the bench was started: ``PYTHONPATH=OTHER python -c ...`` run from inside a checkout
# imports the checkout (the current directory comes first), which is how an earlier A/B recipe
# compared a branch with itself (docs/performance.md, "Method").
SERVER_CODE: Path = ROOT


def server_command(*args: str) -> list[str]:
    """``python -P -m adapters.cli ARGS`` of the measured tree (run it with :func:`server_env`)."""
    return [sys.executable, "-P", "-m", "adapters.cli", *args]


def server_env() -> dict[str, str]:
    return child_env(SERVER_CODE)


def code_origin(code: Path) -> dict[str, str | None]:
    """Where the measured code came from: its directory and, for a git checkout, its commit and
    whether its tree differs from it (recorded in the bench's JSON)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "spec", "reference", "adapters", "syncref") if commit else None
    return {"dir": str(code), "commit": commit, "modified": None if dirty is None else str(bool(dirty)).lower()}


class _Lines:
    """Lines of a child's stdout, read on a thread (so a wait can time out)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.proc = proc
        self.eof = threading.Event()  # set once every line the child wrote is in ``q``
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.q.put(line)
        finally:
            self.eof.set()

    def drained(self, grace: float = 10.0) -> bool:
        """The child has exited and every line it wrote has been taken from ``q``.  A child that
        prints its last line and exits at once is seen exited by ``poll()`` before this thread has
        queued that line; so an exit counts only once the pipe's end has been read."""
        if self.proc.poll() is None:
            return False
        self.eof.wait(grace)
        return self.q.empty()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.05)
            except queue.Empty:
                if self.drained():
                    break
                continue
            m = re.search(pattern, line)
            if m:
                return m
        raise RuntimeError(f"process {self.proc.args!r} did not print /{pattern}/ (exit {self.proc.poll()})")


def _stop(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class SyncrefPeer:
    name = "syncref"

    def __init__(self, workdir: Path, data: Path | None = None) -> None:
        self.workdir = workdir
        self.data = data or Path(tempfile.mkdtemp(prefix="syncref-", dir=workdir))
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.startup_s = 0.0
        self._tokens: dict[int, str] = {}
        self._auth: Authenticator | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> SyncrefPeer:
        log = (self.workdir / f"{self.data.name}-serve.log").open("a")
        started = time.perf_counter()
        self.proc = subprocess.Popen(server_command("serve", "--data", str(self.data), "--host", "127.0.0.1",
                                                    "--port", "0"), stdout=subprocess.PIPE,
                                     stderr=log, text=True, env=server_env(), cwd=SERVER_CODE,
                                     preexec_fn=die_with_parent)
        log.close()
        m = _Lines(self.proc).wait_for(r"listening on http://127\.0\.0\.1:(\d+) ", 600)
        self.startup_s = time.perf_counter() - started
        self.port = int(m.group(1))
        return self

    def token(self, client: int = 0) -> str:
        """Client ``client``'s token: every client is its own identity, as separate apps are (the
        server caps WebSocket connections per identity, ``max_connections_per_identity``)."""
        if client not in self._tokens:
            if self._auth is None:
                self._auth = Authenticator(AuthConfig(), KeyStore.load_or_create(self.data))
            self._tokens[client] = self._auth.mint(subject=f"bench-client-{client}", scopes=frozenset(SCOPES),
                                             streams=("*",), ttl_s=24 * 3600)
        return self._tokens[client]

    def stop(self) -> int:
        if self.proc is None:
            return 0
        code = _stop(self.proc)
        self.proc = None
        return code

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def find_redis(binary: str | None = None) -> str:
    """The redis-server binary, or :class:`PeerUnavailable` saying how to get it."""
    if binary is not None:
        if Path(binary).is_file() and os.access(binary, os.X_OK):
            return binary
        raise PeerUnavailable(f"redis-server not found at {binary}")
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if Path(p).is_file()), None)
    if found is None:
        raise PeerUnavailable("redis-server is not installed (Debian: apt-get install redis-server)")
    return found


def redis_command(sock: socket.socket, *args: str) -> bytes:
    """One command on a blocking socket; the raw reply (enough for PING, INFO, SHUTDOWN)."""
    import hiredis

    from adapters.bench.proto import encode_command
    sock.sendall(encode_command(*args))
    reader = hiredis.Reader()
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        reader.feed(chunk)
        reply = reader.gets()
        if reply is not False:
            if isinstance(reply, hiredis.ReplyError):
                return b"-" + str(reply).encode()
            return reply if isinstance(reply, bytes) else str(reply).encode()


class RedisPeer:
    name = "redis"

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        self.binary = find_redis(binary)
        self.workdir = workdir
        self.dir = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.version = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> float:
        """Start (or restart on the same directory); return seconds until it answers PING with
        PONG (while it loads the AOF it answers ``-LOADING``)."""
        self.port = self.port or free_port()
        log = (self.workdir / "redis-server.log").open("a")
        started = time.perf_counter()
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                                      "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
                                     stdout=log, stderr=log, text=True, preexec_fn=die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (see redis-server.log)")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if redis_command(s, "PING") == b"PONG":
                        elapsed = time.perf_counter() - started
                        info = self.info()
                        self.version = info.get("redis_version", "")
                        return elapsed
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError("redis-server did not answer PING")

    def info(self) -> dict[str, str]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            text = redis_command(s, "INFO").decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def command(self, *args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            return redis_command(s, *args)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ConnectionError), \
                socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
            s.recv(100)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class EchoPeer:
    name = "echo"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> EchoPeer:
        log = (self.workdir / "echo.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "adapters.bench.echo", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(), cwd=ROOT,
                                     preexec_fn=die_with_parent)
        log.close()
        self.port = int(_Lines(self.proc).wait_for(r"echo listening on (\d+)", 60).group(1))
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
