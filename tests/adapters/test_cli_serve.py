"""``syncref serve``/``token mint``/``trace`` as an operator runs them: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from support.server import http, mint_cli, serve_process

SYNCREF = [sys.executable, "-m", "adapters.cli"]
S = "demo.cli"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SYNCREF, *args], capture_output=True, text=True, timeout=60, check=False)


def test_serve_token_call_and_clean_stop(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_process(data) as served:
        base = served.url
        token = mint_cli(data, "sync.subscribe,sync.append", "demo.*")["token"]
        res = http("POST", f"{base}/v1/database/autopilot-sync/call/append_sync_event",
                   json.dumps([S, "k1", "1", {"none": []}, {"none": []}]),
                   {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert res.status == 200
        denied = http("POST", f"{base}/v1/database/autopilot-sync/call/append_sync_event",
                      json.dumps(["other", "k1", "1", {"none": []}, {"none": []}]),
                      {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert denied.status == 530 and denied.text.startswith("forbidden_stream")
        status, out = served.stop()
        assert status == 0 and any("stopped cleanly" in line for line in out)
    checked = run("verify-log", "--data", str(data), "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"] and report["clean_shutdown"] and report["records"] == 1


def test_busy_port_locked_dir_and_unusable_dir(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    busy = run("serve", "--data", str(tmp_path / "a"), "--port", str(port))
    sock.close()
    assert busy.returncode == 2 and f"port {port} on 127.0.0.1 is already in use" in busy.stderr
    assert "Traceback" not in busy.stderr
    with serve_process(tmp_path / "b"):
        locked = run("serve", "--data", str(tmp_path / "b"), "--port", "0")
        assert locked.returncode == 2 and "in use by another process" in locked.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = run("serve", "--data", str(blocker / "sub"), "--port", "0")
    assert bad.returncode == 2 and "is not usable" in bad.stderr and "Traceback" not in bad.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    for text, needle in (("[limits]\nmax_queue = 3\n", "unknown key(s) max_queue"),
                         ("[limits\n", "not valid TOML"),
                         ("[limits]\nping_interval_s = 'x'\n", "expected float"),
                         ("[compat]\nmin_client_build_id = 'yesterday'\n", "not well formed"),
                         ("[auth]\ndefault_scopes = ['root']\n", "default_scopes"),
                         # failed before: named default_stream_grants, a key no config file has
                         ("[auth]\ndefault_streams = ['team .*']\n", "default_streams): stream grant 'team .*'"),
                         ("[limits]\nmax_sql_rows = 0\n", "max_sql_rows must be a positive number"),
                         ("[limits]\nmax_outbound_message_bytes = 40000000\n", "at most 33554432"),
                         ("[server]\ndatabase = \"caf\xe9\"\n".encode("latin-1"), "is not valid UTF-8"),
                         ('[server]\ndatabase = "\\ud800"\n', "not valid TOML"),
                         ("[faults]\nstall_commits = 'x'\n", "unknown key(s) stall_commits"),
                         ("[faults]\nstall_commits_while = 3\n", "expected str"),
                         # failed before: a traceback (TypeError: 'int' object is not iterable)
                         ("auth = 5\n", "[auth] must be a table"),
                         ("limits = [1, 2]\n", "[limits] must be a table")):
        cfg = tmp_path / "c.toml"
        if isinstance(text, bytes):
            cfg.write_bytes(text)
        else:
            cfg.write_text(text)
        res = run("serve", "--data", str(tmp_path / "d"), "--port", "0", "--config", str(cfg))
        assert res.returncode == 2, text
        assert "bad config" in res.stderr and needle in res.stderr, (text, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1


def test_config_values_the_server_cannot_run_with_are_refused(tmp_path: Path) -> None:
    """Failed before: each was accepted.  A sweep or compaction interval of 0 (or 1e-9, or negative)
    made its loop spin -- 60-70 % of a core with nothing to do --, nan or inf stopped it for good
    (presence never expired, retention never ran); a database name with a '/' or an empty one (also
    ``--database ''``, which silently fell back to the default) could not be addressed, so every
    database route answered 404 while the server looked healthy."""
    import argparse

    from adapters.commands import ConfigError, load_config

    def load(text: str, database: str | None = None) -> Any:
        conf = tmp_path / "c.toml"
        conf.write_text(text)
        args = argparse.Namespace(dev=False, host=None, port=None, database=database, data=str(tmp_path))
        return load_config(conf, args)

    for key in ("sweep_interval_s", "compact_interval_s"):
        for bad in ("0", "-1", "1e-9", "nan", "inf"):
            with pytest.raises(ConfigError, match=f"{key} must be a finite number of seconds, at least 0.01"):
                load(f"[server]\n{key} = {bad}\n")
        assert getattr(load(f"[server]\n{key} = 0.01\n"), key) == 0.01
        assert getattr(load(f"[server]\n{key} = 5\n"), key) == 5
    for name in ("", "a/b", "with space", "caf\u00e9", "x" * 129):
        with pytest.raises(ConfigError, match="database name must be 1-128 characters of"):
            load(f"[server]\ndatabase = {json.dumps(name)}\n")
        with pytest.raises(ConfigError, match="database name must be 1-128 characters of"):
            load("", database=name)
    assert load("", database="my-db.2:x_y").database == "my-db.2:x_y"
    assert load("").database == "autopilot-sync"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_an_hs256_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    """Whoever reads the external issuer's HS256 secret mints tokens the server accepts as that issuer's,
    with any scope and stream -- as the server's own signing key, which is refused when group or others
    may read it.  Failed before: the secret file was read whatever its mode (only the key file's was
    checked).  Now the same rule and the same words: a ``bad config`` line naming the mode and
    ``chmod 600``; 0600 and 0400 are fine.  ``token mint --config`` reads the config the same way."""
    import argparse

    from adapters.commands import ConfigError, load_config

    secret = tmp_path / "control-hs256.secret"
    secret.write_bytes(b"s" * 40 + b"\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[auth]\nexternal_issuer = "https://control.example"\n'
                    f"external_hs256_secret_file = {json.dumps(str(secret))}\n")
    args = argparse.Namespace(dev=False, host=None, port=None, database=None, data=str(tmp_path / "d"))
    secret.chmod(mode)
    expected = (f"[auth] external_hs256_secret_file: {secret}: mode {mode:04o} lets other users read the HS256 "
                f"secret; make it private (chmod 600 {secret})")
    with pytest.raises(ConfigError) as refused:
        load_config(conf, args)
    assert str(refused.value) == expected
    if mode == 0o644:  # the operator's view, once: one line, exit 2, nothing started
        res = run("serve", "--data", str(tmp_path / "d"), "--port", "0", "--config", str(conf))
        assert res.returncode == 2 and res.stderr.strip() == f"syncref serve: bad config: {expected}", res.stderr
        res = run("token", "mint", "--data", str(tmp_path / "d"), "--config", str(conf), "--scopes", "sync.append")
        assert res.returncode == 2 and f"bad config: {expected}" in res.stderr and res.stdout == "", res.stderr
    for fine in (0o600, 0o400):
        secret.chmod(fine)
        assert load_config(conf, args).auth.external_hs256_secret == b"s" * 40


def test_an_hs256_secret_reached_through_a_symlink_is_judged_by_the_file_it_names(tmp_path: Path) -> None:
    """A symlink's own mode is always 0777 and says nothing; the secret's readers are the target's.  So a
    link to a 0644 secret is refused (naming the mode 0644) and a link to a 0600 one is accepted -- the
    mode is taken from the opened file (fstat), not the link (lstat) nor a second lookup of the path."""
    import argparse

    from adapters.commands import ConfigError, load_config

    secret = tmp_path / "real.secret"
    secret.write_bytes(b"s" * 40)
    link = tmp_path / "link.secret"
    link.symlink_to(secret)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[auth]\nexternal_issuer = "https://control.example"\n'
                    f"external_hs256_secret_file = {json.dumps(str(link))}\n")
    args = argparse.Namespace(dev=False, host=None, port=None, database=None, data=str(tmp_path / "d"))
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=re.escape(f"{link}: mode 0644 lets other users read the HS256 secret")):
        load_config(conf, args)
    secret.chmod(0o600)
    assert load_config(conf, args).auth.external_hs256_secret == b"s" * 40
def test_a_data_directory_syncref_creates_is_private(tmp_path: Path) -> None:
    """The data directory holds every stream's payloads, the owner-only checkpoints, the bridge
    outbox and the callers' claims (syncref.sqlite3, its -wal, snapshots), which the server only
    shows through grants.  Failed before: the directory was created 0755 and the database 0644, so
    any local user could read it all.  A directory that exists already keeps its mode (the
    operator's choice)."""
    import stat

    minted = tmp_path / "minted" / "data"
    assert run("token", "mint", "--data", str(minted), "--scopes", "sync.append").returncode == 0
    served = tmp_path / "served"
    with serve_process(served):
        pass
    for d in (minted, served):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, (d, oct(d.stat().st_mode))
    assert stat.S_IMODE(minted.parent.stat().st_mode) != 0o700  # parents are the operator's
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert run("token", "mint", "--data", str(shared), "--scopes", "sync.append").returncode == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


# (host, loopback?): what --dev may bind without --dev-allow-remote -- a table, not is_loopback's own answer
DEV_HOSTS = [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("LocalHost", True),
             ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.10", False), ("10.0.0.1", False),
             ("fe80::1", False), ("example.com", False), ("localhost.example.com", False), ("128.0.0.1", False)]


@pytest.mark.parametrize(("host", "loopback"), DEV_HOSTS)
def test_dev_on_a_host_that_is_not_loopback_needs_dev_allow_remote(tmp_path: Path, host: str, loopback: bool) -> None:
    """``--dev`` lets anyone who reaches the port mint an identity with every scope, sync.admin included.
    Failed before: ``--dev --host 0.0.0.0`` (or a [server] host in the config file) only printed the
    same warning as on 127.0.0.1 and served every interface.  Now a bad-config error unless
    ``--dev-allow-remote`` says so; loopback binds are unchanged, and without --dev any host is fine."""
    import argparse

    from adapters.commands import ConfigError, load_config

    def load(dev: bool, remote: bool, flag: str | None, in_file: str | None = None) -> Any:
        conf = tmp_path / "c.toml"
        conf.write_text("" if in_file is None else f"[server]\nhost = {json.dumps(in_file)}\n")
        args = argparse.Namespace(dev=dev, dev_allow_remote=remote, host=flag, port=None, database=None,
                                  data=str(tmp_path))
        return load_config(conf, args)

    for flag, in_file in ((host, None), (None, host)):  # the flag, or the config file's [server] host
        if loopback:
            assert load(True, False, flag, in_file).host == host
        else:
            with pytest.raises(ConfigError, match=re.escape(f"--dev on host {host!r}, which is not a loopback "
                                                            "address") + ".*--dev-allow-remote"):
                load(True, False, flag, in_file)
        assert load(True, True, flag, in_file).host == host  # the explicit override
        assert load(False, False, flag, in_file).host == host  # not --dev: nothing to refuse
    with pytest.raises(ConfigError, match="--dev-allow-remote only applies with --dev"):
        load(False, True, host)


def test_dev_on_every_interface_refuses_to_start_and_the_override_warns_louder(tmp_path: Path) -> None:
    """The operator's view: one line, exit 2, nothing created; with ``--dev-allow-remote`` it starts and
    the warning names the address.  (The override's run binds 0.0.0.0 on a free port and stops at once.)"""
    refused = run("serve", "--dev", "--host", "0.0.0.0", "--port", "0", "--data", str(tmp_path / "d"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith("syncref serve: bad config: --dev on host '0.0.0.0'"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stdout == "", refused.stderr
    assert not (tmp_path / "d").exists()
    proc = subprocess.Popen([*SYNCREF, "serve", "--dev", "--dev-allow-remote", "--host", "0.0.0.0", "--port", "0",
                             "--data", str(tmp_path / "d")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        warning = proc.stderr.readline()
        assert "WARNING: --dev" in warning and "--dev-allow-remote" in warning and "0.0.0.0" in warning, warning
        assert proc.stdout.readline().startswith("syncref listening on http://0.0.0.0:")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


# `syncref serve` with the resolver answering 0.0.0.0 for "localhost" -- what a host without a
# localhost entry in /etc/hosts gets from a DNS search domain with a wildcard record (asyncio's loop:
# it resolves through socket.getaddrinfo, which the wrapper can replace; uvloop resolves in C)
_LOCALHOST_ELSEWHERE = (
    "import socket, sys\n"
    "real = socket.getaddrinfo\n"
    "socket.getaddrinfo = lambda host, *a, **k: real('0.0.0.0' if host == 'localhost' else host, *a, **k)\n"
    "from adapters.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def test_dev_on_a_localhost_that_resolves_to_every_interface_refuses_to_serve(tmp_path: Path) -> None:
    """``localhost`` is a name: the config check trusts it, but the bind resolves it.  Where it resolves
    to a non-loopback address, ``--dev`` must not serve there.  Failed before: the server bound
    0.0.0.0 and printed ``syncref listening on http://localhost:...`` -- every interface could mint an
    identity with every scope.  Now the bound addresses are checked: one line, exit 2, before the
    listening line; with ``--dev-allow-remote`` it serves."""
    argv = [sys.executable, "-c", _LOCALHOST_ELSEWHERE, "serve", "--dev", "--host", "localhost", "--port", "0",
            "--loop", "asyncio", "--data", str(tmp_path / "d")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "listening" not in out and "Traceback" not in err, (proc.returncode, out, err)
    line = [x for x in err.splitlines() if not x.startswith("WARNING: --dev")]
    assert len(line) == 1 and line[0].startswith("syncref serve: bad config: --dev on host 'localhost', which "
                                                 "resolved to 0.0.0.0, not a loopback address"), err
    proc = subprocess.Popen([*argv, "--dev-allow-remote"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("syncref listening on http://localhost:")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
def test_dev_warns_and_mints_anonymous(tmp_path: Path) -> None:
    proc = subprocess.Popen([*SYNCREF, "serve", "--data", str(tmp_path), "--port", "0", "--dev"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        warning = proc.stderr.readline()
        assert "WARNING: --dev" in warning
        base = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        assert http("POST", f"{base}/v1/identity").status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_arguments_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    """A non-UTF-8 argument reaches Python as lone surrogates; no token, frame or log can carry
    them, so the CLI refuses them (the attack run minted a token with ``--device-id $'dev\\xff'``)."""
    for flag in ("--device-id", "--session-id", "--subject", "--streams"):
        res = subprocess.run([os.fsencode(sys.executable), b"-m", b"adapters.cli", b"token", b"mint", b"--data",
                              os.fsencode(tmp_path), b"--scopes", b"sync.append", flag.encode(), b"x\xff"],
                             capture_output=True, timeout=60, check=False)
        assert res.returncode == 2 and f"argument {flag} is not valid UTF-8 text".encode() in res.stderr, res
    res = subprocess.run([os.fsencode(sys.executable), b"-m", b"adapters.cli", b"serve", b"--data",
                          os.fsencode(tmp_path), b"--database", b"db\xfe"], capture_output=True, timeout=60,
                         check=False)
    assert res.returncode == 2 and b"argument --database is not valid UTF-8 text" in res.stderr
    # a data directory is a file name: any bytes the OS allows
    odd = os.fsencode(tmp_path) + b"/d\xff"
    res = subprocess.run([os.fsencode(sys.executable), b"-m", b"adapters.cli", b"token", b"mint", b"--data", odd,
                          b"--scopes", b"sync.append", b"--streams", b"*"], capture_output=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr


def test_token_mint_errors(tmp_path: Path) -> None:
    res = run("token", "mint", "--data", str(tmp_path), "--scopes", "sync.root")
    assert res.returncode == 2 and "unknown scope(s) sync.root" in res.stderr
    res = run("token", "mint", "--data", str(tmp_path), "--scopes", "sync.subscribe", "--ttl", "0")
    # failed before: 'ttl_s must be 1..9007199254740991 seconds or None' -- the library's parameter, not the flag
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == "syncref token mint: --ttl must be 1..9007199254740991 seconds, got 0", res.stderr
    res = run("token", "mint", "--data", str(tmp_path), "--scopes", "sync.subscribe", "--streams", "demo.*, other.*")
    assert res.returncode == 2 and "stream grant ' other.*' can match no stream id" in res.stderr, res.stderr
    # failed before: a traceback (OverflowError) with --json, and a token every route answered 500
    for flag in ((), ("--json",)):
        res = run("token", "mint", "--data", str(tmp_path), "--scopes", "sync.subscribe", "--ttl", "1" + "0" * 400,
                  *flag)
        assert res.returncode == 2 and "ttl" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_token_mint_that_fails_creates_no_data_directory_and_no_key(tmp_path: Path) -> None:
    """A refused mint (bad ``--ttl``, a grant that can match nothing, bad claim text) is an exit-2 error
    with nothing done -- but it created ``--data`` and a new signing key first, then failed: a mistyped
    directory was left holding a key no server uses (and ``token mint`` then said nothing about it)."""
    for bad in (("--ttl", "0"), ("--streams", "demo.*, other.*"), ("--subject", "")):
        target = tmp_path / f"typo{len(list(tmp_path.iterdir()))}"
        res = run("token", "mint", "--data", str(target), "--scopes", "sync.subscribe", *bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert not target.exists(), (bad, sorted(p.name for p in target.iterdir()))


def test_token_revoke_writes_the_list_and_refuses_what_it_cannot_name(tmp_path: Path) -> None:
    minted = json.loads(run("token", "mint", "--data", str(tmp_path), "--scopes", "sync.subscribe", "--json").stdout)
    res = run("token", "revoke", "--data", str(tmp_path), "--token", minted["token"])
    assert res.returncode == 0 and f"revoked jti {minted['jti']}" in res.stdout
    res = run("token", "revoke", "--data", str(tmp_path), "--jti", "abc123")
    assert res.returncode == 0
    assert (tmp_path / "revoked-jti").read_text() == f"{minted['jti']}\nabc123\n"
    no_jti = jwt.encode({"sub": "x", "iss": "y"}, "k" * 32, algorithm="HS256")
    res = run("token", "revoke", "--data", str(tmp_path), "--token", no_jti)
    assert res.returncode == 2 and "has no jti" in res.stderr
    for bad in ("has space", "a#b", "x" * 129):
        res = run("token", "revoke", "--data", str(tmp_path), "--jti", bad)
        assert res.returncode == 2 and "not a jti" in res.stderr, bad
    res = run("token", "revoke", "--data", str(tmp_path), "--token", "not-a-jwt")
    assert res.returncode == 2 and "not a JWT" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "revoked-jti").read_text() == f"{minted['jti']}\nabc123\n"  # the refusals wrote nothing


def test_token_mint_says_when_it_created_the_signing_key(tmp_path: Path) -> None:
    """A mistyped ``--data`` mints with a brand-new key, a token no running server accepts ("token
    signature invalid").  Failed before: nothing said so; now one line on stderr (stdout is still
    just the token)."""
    first = run("token", "mint", "--data", str(tmp_path / "new"), "--scopes", "sync.append")
    assert first.returncode == 0 and first.stdout.count(".") == 2
    assert "created a new signing key" in first.stderr and "only a server started on" in first.stderr
    again = run("token", "mint", "--data", str(tmp_path / "new"), "--scopes", "sync.append", "--streams", "app.*")
    assert again.returncode == 0 and again.stderr == ""


@pytest.mark.parametrize(("args", "warning"), [
    ((), "no --scopes given; this token can connect but call and read nothing"),
    (("--streams", "app.*"), "no --scopes given"),
    (("--scopes", "sync.append"), "no --streams given; sync.append reach no stream"),
    (("--scopes", "sync.subscribe,sync.checkpoint.write,compute.request"),
     "no --streams given; sync.checkpoint.write, sync.subscribe reach no stream"),
    (("--scopes", "compute.request"), None),
    (("--scopes", "sync.subscribe", "--streams", "app.*"), None),
])
def test_token_mint_warns_of_a_token_that_can_do_nothing(tmp_path: Path, args: tuple[str, ...],
                                                         warning: str | None) -> None:
    """Failed before: ``token mint`` without ``--scopes`` (or a stream scope without ``--streams``)
    minted, silently, a token that connects and then is refused everything (revc review).  It is
    allowed -- still minted, exit 0 -- but says so in one line on stderr."""
    assert run("token", "mint", "--data", str(tmp_path), "--scopes", "sync.append", "--streams", "x").returncode == 0
    res = run("token", "mint", "--data", str(tmp_path), *args)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    if warning is None:
        assert res.stderr == ""
    else:
        assert f"syncref token mint: warning: {warning}" in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr


def test_token_revoke_refuses_a_directory_no_server_uses(tmp_path: Path) -> None:
    """Failed before: ``token revoke --data TYPO`` created TYPO/revoked-jti and printed "revoked jti
    ... a running server closes its connections within a second" while the server, reading its own
    directory, went on accepting the token.  A directory without the server's signing key (which
    ``serve`` and ``token mint`` create) is refused, and nothing is created."""
    typo = tmp_path / "typo"
    res = run("token", "revoke", "--data", str(typo), "--jti", "abc123")
    assert res.returncode == 2 and "not a syncref data directory" in res.stderr and "Traceback" not in res.stderr
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("token", "revoke", "--data", str(empty), "--jti", "abc123").returncode == 2
    assert list(empty.iterdir()) == []


def test_token_mint_and_revoke_name_a_directory_they_cannot_look_into(tmp_path: Path) -> None:
    """Failed before: a traceback (``OSError`` from ``Path.exists``/``is_file``, exit 1) from ``token mint``
    and ``token revoke`` when the key file cannot even be looked up -- what an operator who is not the
    server's user meets on the 0700 data directory (EACCES; as root, a name too long, ENAMETOOLONG,
    shows it).  Before the key checks were added, mint said it in one line.  Now one line, exit 2."""
    unreachable = tmp_path / ("d" * 300)
    for args in (("token", "mint", "--data", str(unreachable), "--scopes", "sync.subscribe"),
                 ("token", "revoke", "--data", str(unreachable), "--jti", "abc123")):
        res = run(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "File name too long" in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_trace_decodes_frames(tmp_path: Path) -> None:
    from adapters import bsatn, wire
    call = wire.encode_client(wire.CallReducer(5, 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", (S, "k", '{"a":1}', None, 3))))
    err = wire.frame_server(wire.encode_server(wire.SubscriptionError(
        7, 2, 'stale_cursor: {"reasons":["epoch_changed"]}')), wire.Compression.NONE)
    capture = tmp_path / "cap.txt"
    capture.write_text(f"# captured\nc2s {call.hex()}\ns2c {err.hex()}\n")
    res = run("trace", str(capture))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 2
    assert "append_sync_event" in res.stdout and '"k"' in res.stdout and "stale_cursor" in res.stdout
    bad = run("trace", "--hex", "ff00", "--direction", "c2s")
    assert bad.returncode == 0 and "error" in bad.stdout  # a malformed frame is reported, not raised


def test_readme_quickstart_serve_command_exists() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip() and line.strip() != "sh"]
    assert commands == ["./run serve", "./run test"], commands
    assert os.access(Path(__file__).resolve().parents[2] / "run", os.X_OK)


def test_corrupt_commit_log_is_one_line(tmp_path: Path) -> None:
    import sqlite3
    data = tmp_path / "data"
    with serve_process(data) as served:
        base = served.url
        token = mint_cli(data, "sync.append", "demo.*")["token"]
        for i in range(3):
            assert http("POST", f"{base}/v1/database/autopilot-sync/call/append_sync_event",
                        json.dumps([S, f"k{i}", "1", {"none": []}, {"none": []}]),
                        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status == 200
    db = sqlite3.connect(data / "syncref.sqlite3")
    table = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%log%'").fetchone()[0]
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    hash_col = next(c for c in cols if c == "hash")
    db.execute(f"UPDATE {table} SET {hash_col} = 'sha256:' || substr('0000000000', 1, 10) WHERE rowid = 2")
    db.commit()
    db.close()
    res = run("serve", "--data", str(data), "--port", "0")
    assert res.returncode == 2 and "cannot be recovered" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_log_whose_commit_log_table_was_dropped_is_refused_not_served_empty(tmp_path: Path) -> None:
    """Failed before: the server re-created the dropped table, recovered an empty state over a
    directory whose meta says it holds a log, and served (every acknowledged write gone, silently).
    Now one line, exit 2, nothing written; and verify-log calls the log damaged (exit 1)."""
    import sqlite3
    data = tmp_path / "data"
    with serve_process(data) as served:
        token = mint_cli(data, "sync.append", "demo.*")["token"]
        assert http("POST", f"{served.url}/v1/database/autopilot-sync/call/append_sync_event",
                    json.dumps([S, "k", "1", {"none": []}, {"none": []}]),
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status == 200
    db = sqlite3.connect(data / "syncref.sqlite3")
    db.execute("DROP TABLE commit_log")
    db.commit()
    db.close()
    before = (data / "syncref.sqlite3").read_bytes()
    proc = subprocess.Popen([*SYNCREF, "serve", "--data", str(data), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 2, (proc.returncode, out, err)
    assert "cannot be recovered" in err and "no commit_log table" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "listening" not in out, (out, err)
    assert (data / "syncref.sqlite3").read_bytes() == before
    checked = run("verify-log", "--data", str(data))
    assert checked.returncode == 1 and "is damaged" in checked.stderr, checked.stderr


def _served_with_a_snapshot(tmp_path: Path) -> Path:
    """A data directory served with ``snapshot_every = 3``: four appends, then stopped once
    ``snap-3.json`` is in place."""
    data = tmp_path / "data"
    with serve_process(data, "--config", str(_snapshot_every(tmp_path, 3))) as served:
        token = mint_cli(data, "sync.append", "demo.*")["token"]
        for i in range(4):
            assert http("POST", f"{served.url}/v1/database/autopilot-sync/call/append_sync_event",
                        json.dumps([S, f"k{i}", "1", {"none": []}, {"none": []}]),
                        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status == 200
        deadline = time.monotonic() + 30
        while not list((data / "snapshots").glob("snap-*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
    return data


def test_snapshots_whose_log_was_deleted_are_refused_not_served_empty(tmp_path: Path) -> None:
    """A served directory with a snapshot, whose database (and WAL) was then deleted.  Failed before:
    ``syncref serve`` created a new log, logged "snapshot snap-N.json not used (its offset N is past the
    log head 0)" and served an empty state -- every acknowledged write gone, and the first snapshot of
    the new log would prune the old one.  Now one line, exit 2, nothing created."""
    data = _served_with_a_snapshot(tmp_path)
    assert list((data / "snapshots").glob("snap-*.json"))
    for name in ("syncref.sqlite3", "syncref.sqlite3-wal", "syncref.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)
    before = sorted(p.name for p in data.rglob("*"))
    res = run("serve", "--data", str(data), "--port", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "listening" not in res.stdout, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "cannot be recovered" in res.stderr and "snapshots of a log" in res.stderr, res.stderr
    assert sorted(p.name for p in data.rglob("*")) == before


def test_a_snapshot_past_the_log_head_is_refused_not_passed_over(tmp_path: Path) -> None:
    """A served directory with snap-3, whose log then lost records 2 onwards (an older copy restored,
    a cut file).  Failed before: ``syncref serve`` logged "snapshot snap-N.json not used (its offset N
    is past the log head 1)" and served the one record left -- acknowledged writes gone, and its first
    snapshot would prune snap-3.  Now one line naming the snapshot, both offsets and both ways out,
    exit 2, nothing written; verify-log exit 1 (ADR-0037)."""
    import sqlite3
    data = _served_with_a_snapshot(tmp_path)
    (snap,) = list((data / "snapshots").glob("snap-*.json"))
    db = sqlite3.connect(data / "syncref.sqlite3")
    db.execute('DELETE FROM commit_log WHERE "offset" > 1')
    db.commit()
    db.close()
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file() and not p.name.endswith("-shm")}
    res = run("serve", "--data", str(data), "--port", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "listening" not in res.stdout, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    # the snapshot names this log's id (ADR-0039): a loss, no longer "cannot tell" from another log's
    for part in ("cannot be recovered", snap.name, "ends at record 1", "restore", "move", "they were this log's"):
        assert part in res.stderr, (part, res.stderr)
    assert {p: p.read_bytes() for p in before} == before  # nothing written (the -shm is SQLite's index)
    checked = run("verify-log", "--data", str(data))
    assert checked.returncode == 1 and snap.name in checked.stderr, checked.stderr


def _log_id(data: Path) -> str:
    import sqlite3
    db = sqlite3.connect(data / "syncref.sqlite3")
    try:
        return str(db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0])
    finally:
        db.close()


def test_another_logs_snapshot_and_an_older_log_are_refused_by_serve(tmp_path: Path) -> None:
    """ADR-0039 as an operator meets it.  (1) A served directory's snapshot copied into another data
    directory (a log of 10 records, no snapshot of its own).  Failed before: ``serve`` logged "snapshot
    snap-3.json not used (not bound to this log ...)" and served -- and its first snapshot would prune
    the stranger.  (2) A served directory without snapshots whose log then lost its tail (an older copy
    restored).  Failed before: served the one record left.  Now one line each, exit 2, nothing written;
    ``verify-log`` exits 1 and its --json names the log id the message names."""
    import shutil
    import sqlite3

    from support.logfiles import long_log
    data = _served_with_a_snapshot(tmp_path)
    (snap,) = list((data / "snapshots").glob("snap-*.json"))
    other = tmp_path / "other"
    long_log(other, 10)
    (other / "snapshots").mkdir()
    shutil.copy(snap, other / "snapshots" / snap.name)
    theirs, mine = _log_id(data), _log_id(other)
    res = run("serve", "--data", str(other), "--port", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "listening" not in res.stdout, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    for part in ("cannot be recovered", f"snapshot {snap.name} belongs to another log (log id {theirs})",
                 f"(log id {mine})", f"move snapshots/{snap.name} aside", f"restore the log {theirs}"):
        assert part in res.stderr, (part, res.stderr)
    assert run("verify-log", "--data", str(other)).returncode == 1
    shown = run("verify-log", "--data", str(data), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["log_id"] == theirs, shown.stdout
    # (2): no snapshot; the head mark says record 4 was durable
    plain = tmp_path / "plain"
    with serve_process(plain) as served:
        token = mint_cli(plain, "sync.append", "demo.*")["token"]
        for i in range(4):
            assert http("POST", f"{served.url}/v1/database/autopilot-sync/call/append_sync_event",
                        json.dumps([S, f"k{i}", "1", {"none": []}, {"none": []}]),
                        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status == 200
    assert not (plain / "snapshots").exists() or not list((plain / "snapshots").iterdir())
    db = sqlite3.connect(plain / "syncref.sqlite3")
    db.execute('DELETE FROM commit_log WHERE "offset" > 1')
    db.commit()
    db.close()
    res = run("serve", "--data", str(plain), "--port", "0")
    assert res.returncode == 2 and "listening" not in res.stdout, res.stderr
    for part in ("head mark syncref.head says record 4 was durable", "ends at record 1", "remove syncref.head"):
        assert part in res.stderr, (part, res.stderr)
    checked = run("verify-log", "--data", str(plain))
    assert checked.returncode == 1 and "syncref.head" in checked.stderr, checked.stderr


def _snapshot_every(tmp_path: Path, n: int) -> Path:
    conf = tmp_path / "snap.toml"
    conf.write_text(f"[server]\nsnapshot_every = {n}\n")
    return conf
def test_fuzz_and_chaos_refuse_a_report_file_they_cannot_write_before_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Failed before: ``--json`` into a missing directory was a FileNotFoundError traceback after the
    whole run (20 minutes for the long chaos profile); a bad ``--target`` said "--inputs must be
    positive"."""
    import argparse

    from adapters.chaos import cli as chaos_cli
    from adapters.chaos import fuzz

    missing = tmp_path / "no" / "report.json"

    def must_not_run(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("ran although the report could not be written")

    monkeypatch.setattr(fuzz, "run_fuzz", must_not_run)
    monkeypatch.setattr(chaos_cli, "run_chaos", must_not_run)
    assert fuzz.run(argparse.Namespace(inputs=1, seed=1, target=None, json=str(missing))) == 2
    assert f"--json: no directory {missing.parent}" in capsys.readouterr().err
    assert fuzz.run(argparse.Namespace(inputs=1, seed=1, target=["nosuch"], json=None)) == 2
    err = capsys.readouterr().err
    assert "unknown --target nosuch" in err and "positive" not in err
    chaos_args = argparse.Namespace(quick=True, duration=None, seed=1, workdir=None, plant=None, json=str(missing))
    assert chaos_cli.run(chaos_args) == 2
    assert f"--json: no directory {missing.parent}" in capsys.readouterr().err


def test_trace_bad_hex_is_one_line() -> None:
    res = run("trace", "--hex", "zz")
    assert res.returncode == 2 and "--hex" in res.stderr and "Traceback" not in res.stderr


def test_trace_of_a_file_it_cannot_read_is_one_line(tmp_path: Path) -> None:
    """Failed before: a missing file, a directory and a file that is not UTF-8 were each a Python
    traceback (FileNotFoundError, IsADirectoryError, UnicodeDecodeError), exit 1."""
    binary = tmp_path / "capture.bin"
    binary.write_bytes(b"c2s \xad\xff\n")
    for path, needle in ((tmp_path / "missing.txt", "No such file"), (tmp_path, "Is a directory"),
                         (binary, "not UTF-8")):
        res = run("trace", str(path))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith(f"syncref trace: cannot read {path}") and needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_sigterm_right_after_the_listening_line_stops_cleanly(tmp_path: Path) -> None:
    """Regression (issue 13): the signal handlers were installed just *after* the listening line, so
    a supervisor (or test) that sent SIGTERM as soon as it read the line often killed the server
    with the default action -- no clean-shutdown marker, the next start an unclean recovery."""
    data = tmp_path / "data"
    for _ in range(2):
        with serve_process(data) as served:
            status, out = served.stop()  # SIGTERM at once
        assert status == 0 and any("stopped cleanly" in line for line in out), (status, out)
        report = json.loads(run("verify-log", "--data", str(data), "--json").stdout)
        assert report["ok"] and report["clean_shutdown"], report


def _wait_until_started(proc: subprocess.Popen[str], data: Path) -> None:
    """Until ``syncref serve`` has opened DATA -- its open clears the clean-shutdown marker, durably, and
    its signal handlers were installed before it.  (A hang guard, not a timing check.)"""
    import sqlite3
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        conn = sqlite3.connect(f"file:{data / 'syncref.sqlite3'}?mode=ro", uri=True)
        try:
            if conn.execute("SELECT 1 FROM meta WHERE key = 'clean_shutdown'").fetchone() is None:
                return
        finally:
            conn.close()
        time.sleep(0.01)
    raise AssertionError("syncref serve did not open its data directory")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_sigterm_during_a_long_recovery_stops_it_and_leaves_the_directory_as_it_was(tmp_path: Path,
                                                                                   loop: str) -> None:
    """A start replaying a long log (60,000 records: seconds) stops at the next batch of records when
    SIGTERM arrives, prints why, and exits 0 without listening; the directory is as it was (the clean
    marker the start cleared is put back), so the next start is clean too -- no recovery record, no
    epoch bump.  Failed before: the signal was handled by the event loop, which the replay blocks, so
    the process replayed the whole log, printed its listening line and only then stopped."""
    from support.logfiles import long_log

    data = tmp_path / "data"
    n = 60_000
    long_log(data, n)
    before = json.loads(run("verify-log", "--data", str(data), "--json").stdout)
    assert before["ok"] and before["clean_shutdown"] and before["records"] == n
    proc = subprocess.Popen([*SYNCREF, "serve", "--data", str(data), "--port", "0", "--loop", loop],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_started(proc, data)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "listening" not in out and "Traceback" not in err, (out, err)
    found = re.search(r"syncref stopped cleanly during start-up \(SIGTERM\): the recovery was interrupted after "
                      r"([\d,]+) of ([\d,]+) records; nothing was written", out)
    assert found is not None, (out, err)
    assert int(found.group(1).replace(",", "")) < n and int(found.group(2).replace(",", "")) == n, out
    after = json.loads(run("verify-log", "--data", str(data), "--json").stdout)
    assert after == before
    with serve_process(data) as served:  # the next start is clean: it writes no recovery record
        status, _ = served.stop()
    assert status == 0
    assert json.loads(run("verify-log", "--data", str(data), "--json").stdout)["records"] == n


def test_a_second_signal_during_a_stalled_start_ends_it_at_once(tmp_path: Path) -> None:
    """A start stuck in a write (here the stored policy's COMMIT, stalled with [faults]
    stall_commits_while -- a disk that does not answer) finishes that write before the first signal
    stops it, as a running server's stop does; a second signal (another SIGTERM, or SIGINT) ends the
    process at once, as a crash would: exit 1, one line, nothing acknowledged lost, and the next start
    recovers.  Failed before: both signals went to the blocked event loop and the process hung."""
    from support.logfiles import long_log

    data = tmp_path / "data"
    long_log(data, 50, policy=False)  # no stored policy: the start's first write stores it
    stall = tmp_path / "stall"
    stall.write_text("")
    config = tmp_path / "c.toml"
    config.write_text(f"[faults]\nstall_commits_while = {json.dumps(str(stall))}\n")
    proc = subprocess.Popen([*SYNCREF, "serve", "--data", str(data), "--port", "0", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_started(proc, data)
        proc.send_signal(signal.SIGTERM)  # (two different signals: two of one kind may arrive as one)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1 and "listening" not in out, (proc.returncode, out, err)
    assert err.strip() == ("syncref serve: stopped at once during start-up (a second signal), as in a crash: a write "
                           "in progress was abandoned; nothing acknowledged is lost, and the next start recovers"), err
    stall.unlink()
    report = json.loads(run("verify-log", "--data", str(data), "--json").stdout)
    assert report["ok"] and report["records"] == 50 and not report["clean_shutdown"], report


def test_serve_runs_on_uvloop_by_default_and_on_asyncio_when_asked(tmp_path: Path) -> None:
    """ADR-0014: uvloop when installed (it is a dependency), asyncio's own loop on request; the
    listening line says which, and the server answers on both."""
    for extra, expected in (((), "uvloop"), (("--loop", "asyncio"), "asyncio")):
        data = tmp_path / expected
        with serve_process(data, *extra) as served:
            assert f"event loop {expected})" in served.first_line
            assert http("GET", f"{served.url}/v1/ping").status == 200


def test_choose_loop_falls_back_cleanly_without_uvloop(monkeypatch: Any) -> None:
    import asyncio

    import pytest

    from adapters.commands import ConfigError, choose_loop
    name, factory = choose_loop("auto")
    assert name == "uvloop" and type(factory()).__module__.startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed: import fails
    name, factory = choose_loop("auto")
    loop = factory()
    assert name == "asyncio" and isinstance(loop, asyncio.BaseEventLoop) and type(loop).__module__.startswith("asyncio")
    loop.close()
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        choose_loop("uvloop")
    with pytest.raises(ConfigError, match="must be one of"):
        choose_loop("trio")
    bad = run("serve", "--data", "/nonexistent-unused", "--loop", "trio")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
