"""``syncref serve``, ``syncref token mint``, ``syncref trace``, ``syncref nostr-key`` (and ``bridge``).

``serve`` runs :class:`adapters.server.SyncServer` until SIGINT/SIGTERM, then shuts down
cleanly (flush, clean-shutdown marker); a signal during start-up stops the recovery at its next batch
of records (nothing written), and a second one ends the process at once (docs/operations.md).
Everything an operator can get wrong is reported as one line on stderr with exit status 2 and no
traceback: a busy port, a data directory that is unwritable or held by another server, a config
file that does not parse or names an unknown key.  The config file is TOML with five optional
tables (documented in docs/operations.md):

    [auth]    issuer, audience, external_issuer, external_hs256_secret_file,
              external_public_key_file, allow_anonymous, default_scopes, default_streams,
              identity_ttl_s
    [limits]  every field of ``adapters.server.Limits``
    [compat]  every field of ``spec.compat.CompatWindow``
    [server]  host, port, database, sweep_interval_s, compact_interval_s, contracts, snapshot_every,
              snapshot_keep, commit_gather_s, event_loop, gc_freeze
    [faults]  stall_commits_while (testing only: the commit log's COMMIT waits while that file exists)

Command-line flags win over the file.  ``--dev`` allows anonymous identities and gives every
*minted* identity every scope and stream (a presented token keeps its own claims); it prints a
warning saying so, and refuses a host that is not loopback (the flag's or ``[server] host``) unless
``--dev-allow-remote`` is given too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import ipaddress
import json
import math
import os
import signal
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spec import contracts
from spec.compat import CompatWindow, window_well_formed
from spec.schema import DEFAULT_DATABASE, SCOPES
from spec.values import is_id

DEFAULT_DATA_DIR = ".syncref-data"
STOP_TIMEOUT_S = 30.0  # a stop that takes longer ends without the clean-shutdown marker
MIN_INTERVAL_S = 0.01  # the shortest [server] sweep_interval_s / compact_interval_s


EVENT_LOOPS = ("auto", "uvloop", "asyncio")
STOPPED_AT_ONCE = ("syncref serve: stopped at once during start-up (a second signal), as in a crash: a write in "
                   "progress was abandoned; nothing acknowledged is lost, and the next start recovers")


class ConfigError(Exception):
    """The operator's configuration is unusable (reported as one line, exit status 2)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds loopback only: ``localhost`` or a literal loopback address (127.0.0.0/8,
    ::1).  Anything else -- every interface (``0.0.0.0``, ``::``, an empty host), another address, any
    other name (it may resolve anywhere) -- is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_loop(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop ``syncref serve`` runs on (ADR-0014): ``auto`` takes uvloop when it can be
    imported and falls back to asyncio's own loop (printing nothing: both are supported);
    ``uvloop`` insists (a :class:`ConfigError` when it is missing); ``asyncio`` never uses it."""
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise ConfigError(f"event loop uvloop is not installed ({exc}); use auto or asyncio") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def _fields(cls: Any) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_keys(section: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _typed(section: str, key: str, value: Any, like: Any) -> Any:
    if isinstance(like, bool):
        ok = isinstance(value, bool)
    elif isinstance(like, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(like, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(like, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"[{section}] {key}: expected {type(like).__name__}, got {value!r}")
    return value


def load_config(path: Path | None, args: argparse.Namespace) -> Any:
    """Build a :class:`adapters.server.ServerConfig` from the file (if any) and the flags."""
    from adapters.auth import AuthConfig, read_private_file
    from adapters.server import Limits, ServerConfig

    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    _check_keys("top level", raw, {"auth", "limits", "compat", "server", "faults"})
    for section, value in raw.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table (a [{section}] header and key = value lines), "
                              f"got {value!r:.60}")
    faults = raw.get("faults", {})
    _check_keys("faults", faults, {"stall_commits_while"})
    if "stall_commits_while" in faults:
        extra_faults: dict[str, Any] = {"stall_commits_while": Path(_typed("faults", "stall_commits_while",
                                                                             faults["stall_commits_while"], ""))}
    else:
        extra_faults = {}
    server = raw.get("server", {})
    _check_keys("server", server, {"host", "port", "database", "sweep_interval_s", "compact_interval_s",
                                   "contracts", "snapshot_every", "snapshot_keep", "commit_gather_s",
                                   "event_loop", "gc_freeze"})
    limits_raw = raw.get("limits", {})
    defaults = Limits()
    _check_keys("limits", limits_raw, set(_fields(Limits)))
    try:
        limits = Limits(**{k: _typed("limits", k, v, getattr(defaults, k)) for k, v in limits_raw.items()})
    except ValueError as exc:
        raise ConfigError(f"[limits] {exc}") from None
    compat_raw = raw.get("compat", {})
    _check_keys("compat", compat_raw, set(_fields(CompatWindow)))
    cw_defaults = CompatWindow()
    window = CompatWindow(**{k: _typed("compat", k, v, getattr(cw_defaults, k)) for k, v in compat_raw.items()})
    if not window_well_formed(window):
        raise ConfigError("[compat]: the window is not well formed (build ids are YYYYMMDDTHHMMSSZ, min <= max)")
    auth_raw = dict(raw.get("auth", {}))
    _check_keys("auth", auth_raw, {"issuer", "audience", "external_issuer", "external_hs256_secret_file",
                                   "external_public_key_file", "allow_anonymous", "default_scopes",
                                   "default_streams", "identity_ttl_s"})
    auth_kw: dict[str, Any] = {}
    for key in ("issuer", "audience", "external_issuer"):
        if key in auth_raw:
            auth_kw[key] = _typed("auth", key, auth_raw[key], "")
    for key, target in (("external_hs256_secret_file", "external_hs256_secret"),
                        ("external_public_key_file", "external_public_key_pem")):
        if key in auth_raw:
            path = Path(str(auth_raw[key]))
            try:  # the secret is checked as the signing key is (whoever reads it mints tokens); a public key is public
                data = read_private_file(path, "the HS256 secret") if target == "external_hs256_secret" \
                    else path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"[auth] {key}: cannot read {auth_raw[key]}: {exc.strerror}") from None
            except ValueError as exc:
                raise ConfigError(f"[auth] {key}: {exc}") from None
            auth_kw[target] = data.strip()
    if "allow_anonymous" in auth_raw:
        auth_kw["allow_anonymous"] = _typed("auth", "allow_anonymous", auth_raw["allow_anonymous"], True)
    if "default_scopes" in auth_raw:
        scopes = auth_raw["default_scopes"]
        if not isinstance(scopes, list) or not all(s in SCOPES for s in scopes):
            raise ConfigError(f"[auth] default_scopes: a list of scopes from {', '.join(SCOPES)}")
        auth_kw["default_scopes"] = frozenset(scopes)
    if "default_streams" in auth_raw:
        streams = auth_raw["default_streams"]
        if not isinstance(streams, list) or not all(isinstance(s, str) and s for s in streams):
            raise ConfigError("[auth] default_streams: a list of stream grants (exact ids or prefix*)")
        auth_kw["default_stream_grants"] = tuple(streams)
    if "identity_ttl_s" in auth_raw:
        auth_kw["identity_ttl_s"] = _typed("auth", "identity_ttl_s", auth_raw["identity_ttl_s"], 1)
    if ("external_hs256_secret" in auth_kw or "external_public_key_pem" in auth_kw) != ("external_issuer" in auth_kw):
        raise ConfigError("[auth]: external_issuer needs external_hs256_secret_file and/or "
                          "external_public_key_file, and they need external_issuer")
    if args.dev:
        auth_kw["dev"] = True
        auth_kw["allow_anonymous"] = True
    if getattr(args, "allow_anonymous", False):
        auth_kw["allow_anonymous"] = True
    try:
        auth = AuthConfig(**auth_kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[auth]: {exc}") from None
    host = args.host if args.host is not None else _typed("server", "host", server.get("host", "127.0.0.1"), "")
    port = args.port if args.port is not None else _typed("server", "port", server.get("port", 3000), 1)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0..65535, got {port!r}")
    remote = bool(getattr(args, "dev_allow_remote", False))
    if remote and not args.dev:
        raise ConfigError("--dev-allow-remote only applies with --dev")
    if args.dev and not remote and not is_loopback(host):
        raise ConfigError(f"--dev on host {host!r}, which is not a loopback address: anyone who can reach it could "
                          "mint an identity with every scope, sync.admin included; bind 127.0.0.1, ::1 or "
                          "localhost, or add --dev-allow-remote if that is really what you want")
    database = args.database if args.database is not None else _typed(
        "server", "database", server.get("database", DEFAULT_DATABASE), "")
    if not is_id(database):  # the URL segment /v1/database/:name must be able to name it
        raise ConfigError(f"database name must be 1-128 characters of [A-Za-z0-9._:-], got {database[:140]!r}")
    extra = {k: _typed("server", k, server[k], 1.0) for k in ("sweep_interval_s", "compact_interval_s")
             if k in server}
    for key, value in extra.items():  # 0 spins the loop; nan or inf stops it for good
        if not (math.isfinite(value) and value >= MIN_INTERVAL_S):
            raise ConfigError(f"[server] {key} must be a finite number of seconds, at least {MIN_INTERVAL_S}, "
                              f"got {value!r}")
    for key, least in (("snapshot_every", 0), ("snapshot_keep", 1)):
        if key in server:
            value = _typed("server", key, server[key], 1)
            if value < least:
                raise ConfigError(f"[server] {key}: at least {least}, got {value}")
            extra[key] = value
    if "commit_gather_s" in server:
        gather = _typed("server", "commit_gather_s", server["commit_gather_s"], 1.0)
        if not 0 <= gather <= 1:
            raise ConfigError(f"[server] commit_gather_s must be between 0 and 1 (seconds), got {gather!r}")
        extra["commit_gather_s"] = gather
    loop = getattr(args, "loop", None) or _typed("server", "event_loop", server.get("event_loop", "auto"), "")
    choose_loop(loop)  # an unknown or missing loop is a config error now, not at start
    extra["event_loop"] = loop
    if "gc_freeze" in server:
        from adapters.gcpolicy import GC_FREEZE_POLICIES
        policy = _typed("server", "gc_freeze", server["gc_freeze"], "")
        if policy not in GC_FREEZE_POLICIES:
            raise ConfigError(f"[server] gc_freeze must be one of {', '.join(GC_FREEZE_POLICIES)}, got {policy!r}")
        extra["gc_freeze"] = policy
    # hot-path contracts (docs/contracts.md): off unless --contracts, [server] contracts or SYNCREF_CONTRACTS
    checked = bool(_typed("server", "contracts", server.get("contracts", False), True))
    checked = checked or bool(getattr(args, "contracts", False)) or contracts.hot_enabled()
    return ServerConfig(data_dir=Path(args.data), host=host, port=port, database=database, auth=auth,
                        window=window, limits=limits, contracts=checked, **extra, **extra_faults)


def _log_to_stderr() -> None:
    """Warnings and errors of the ``syncref`` loggers go to stderr as bare lines -- what Python's
    last-resort handler did before the server attached its recent-errors handler (which would
    otherwise silence them).  Nothing is added when the application configured logging itself."""
    import logging

    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(handler)


def serve(args: argparse.Namespace) -> int:
    from adapters import gcpolicy
    from adapters.heap import keep_freed_heap
    from adapters.server import DataDirError, SyncServer
    from reference.durability import RecoveryInterrupted, writer_failure_line

    try:
        config = load_config(Path(args.config) if args.config else None, args)
    except ConfigError as exc:
        print(f"syncref serve: bad config: {exc}", file=sys.stderr)
        return 2
    if config.auth.dev:
        exposed = "" if is_loopback(config.host) else (
            f" --dev-allow-remote: it listens on {config.host}, not a loopback address: anyone who can reach it "
            "may do so.")
        print("WARNING: --dev: anyone may mint an identity (POST /v1/identity, or connect without a token) and "
              "every minted identity gets every scope, sync.admin included, and every stream. Never expose this "
              f"server.{exposed}", file=sys.stderr, flush=True)
    _log_to_stderr()
    try:
        keep_freed_heap()  # only if SYNCREF_HEAP_KEEP_MIB asks (ADR-0020)
    except ValueError as exc:
        print(f"syncref serve: bad environment: {exc}", file=sys.stderr)
        return 2
    try:
        loop_name, new_loop = choose_loop(config.event_loop)
    except ConfigError as exc:
        print(f"syncref serve: bad config: {exc}", file=sys.stderr)
        return 2
    server = SyncServer(config)

    async def run() -> int:
        # Signals are handled from the start: a stop sent as soon as the listening line appears
        # (or during recovery) must be a clean stop, not the default action's kill (which left no
        # clean-shutdown marker: the torn-tail storage test's "known bug").  During start-up the
        # event loop is blocked (the recovery runs on it), so a plain handler notes the signal: the
        # recovery stops at its next batch of records, a write in progress is finished first, and a
        # second signal ends the process at once, as a crash would (nothing acknowledged is lost).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        received: list[str] = []

        def during_start(signum: int, _frame: object) -> None:
            received.append(signal.Signals(signum).name)
            if len(received) > 1:  # (os.write: a print here could re-enter one the handler interrupted)
                os.write(2, STOPPED_AT_ONCE.encode() + b"\n")
                os._exit(1)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, during_start)
        try:
            await server.start(stop_requested=lambda: bool(received))
        except RecoveryInterrupted as exc:
            print(f"syncref stopped cleanly during start-up ({received[0]}): {exc}", flush=True)
            return 0
        except DataDirError as exc:
            print(f"syncref serve: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                print(f"syncref serve: port {config.port} on {config.host} is already in use", file=sys.stderr)
            else:
                print(f"syncref serve: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                      file=sys.stderr)
            return 2
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        exposed = [a for a in server.bound_addresses() if not is_loopback(a)]
        if config.auth.dev and exposed and not getattr(args, "dev_allow_remote", False):
            # the config check trusts the name "localhost"; the resolver may not (a missing /etc/hosts
            # entry, a search domain's wildcard): what was bound decides
            await server.stop()
            print(f"syncref serve: bad config: --dev on host {config.host!r}, which resolved to {', '.join(exposed)}, "
                  "not a loopback address: anyone who can reach it could mint an identity with every scope; bind "
                  "127.0.0.1 or ::1, or add --dev-allow-remote if that is really what you want", file=sys.stderr)
            return 2
        if received:  # after the recovery, before or while binding: the usual clean stop
            stop.set()
        # The recovered state lives as long as the process: keep it out of the cyclic collector's full
        # passes, which otherwise pause everyone for a time that grows with the log; and by default
        # (gc_freeze = survivors) each full pass's survivors too, so the next walks only what is
        # newer, its frozen cyclic garbage bounded (ADR-0036).
        gcpolicy.apply(config.gc_freeze)
        print(f"syncref listening on http://{config.host}:{server.port} (database {config.database}, "
              f"data {config.data_dir}, event loop {loop_name})", flush=True)
        assert server.failed is not None
        failed = server.failed
        waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        watched: list[asyncio.Future[Any]] = [waiter, failed]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        # Stopping is bounded: a second signal, or STOP_TIMEOUT_S, ends it without the clean
        # marker (the next start recovers, as after a crash; every acknowledged write is durable).
        stopping = asyncio.ensure_future(server.stop())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.cancel)
        try:
            await asyncio.wait_for(stopping, STOP_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            print("syncref serve: stopped without a clean shutdown (interrupted or timed out); the next start "
                  "recovers", file=sys.stderr, flush=True)
            return 1
        except Exception as exc:
            print(f"syncref serve: shutdown failed: {exc!r}", file=sys.stderr, flush=True)
            return 1
        if failed.done():
            print(f"syncref serve: {writer_failure_line(failed.result())}", file=sys.stderr)
            return 1
        if server.unclean_stop is not None:  # e.g. the final head mark failed (ADR-0039): no clean marker
            print(f"syncref serve: stopped without a clean shutdown: {server.unclean_stop}", file=sys.stderr,
                  flush=True)
            return 1
        print("syncref stopped cleanly", flush=True)
        return 0

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(run())


#: the scopes that act on streams, so that a token with one of them and no stream grant can do nothing with it
STREAM_SCOPES: frozenset[str] = frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write"})


def token_mint(args: argparse.Namespace) -> int:
    from adapters.auth import KEY_FILE_NAME, MAX_TTL_S, AuthConfig, Authenticator, KeyStore

    if not 0 < args.ttl <= MAX_TTL_S:
        print(f"syncref token mint: --ttl must be 1..{MAX_TTL_S} seconds, got {str(args.ttl)[:40]}", file=sys.stderr)
        return 2
    scopes = [s for s in (args.scopes or "").split(",") if s]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        print(f"syncref token mint: unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}",
              file=sys.stderr)
        return 2
    streams = [s for s in (args.streams or "").split(",") if s]
    config = AuthConfig()
    if args.config:
        ns = argparse.Namespace(data=args.data, host=None, port=None, database=None, dev=False)
        try:
            config = load_config(Path(args.config), ns).auth
        except ConfigError as exc:
            print(f"syncref token mint: bad config: {exc}", file=sys.stderr)
            return 2

    def mint(keys: KeyStore) -> str:
        return Authenticator(config, keys).mint(
            subject=args.subject, scopes=frozenset(scopes), streams=tuple(streams), ttl_s=args.ttl,
            device_id=args.device_id, session_id=args.session_id, client_build_id=args.client_build_id,
            protocol_version=args.protocol_version, schema_version=args.schema_version)

    try:  # the arguments first, with a throwaway key: a refused mint leaves no directory or key behind
        mint(KeyStore.generate())
    except ValueError as exc:
        print(f"syncref token mint: {exc}", file=sys.stderr)
        return 2
    try:  # (exists() raises too: a directory this user may not search, a name too long)
        had_key = (Path(args.data) / KEY_FILE_NAME).exists()
        keys = KeyStore.load_or_create(Path(args.data))
    except (OSError, ValueError) as exc:
        print(f"syncref token mint: cannot use data directory {args.data}: {exc}", file=sys.stderr)
        return 2
    if not had_key:  # a mistyped --data: the token verifies against no running server's key
        print(f"syncref token mint: created a new signing key {Path(args.data) / KEY_FILE_NAME}; only a server "
              f"started on {args.data} accepts this token", file=sys.stderr)
    if not scopes:  # allowed (a token that only connects), but rarely what the operator meant
        print("syncref token mint: warning: no --scopes given; this token can connect but call and read nothing",
              file=sys.stderr)
    elif not streams and set(scopes) & STREAM_SCOPES:
        print(f"syncref token mint: warning: no --streams given; {', '.join(sorted(set(scopes) & STREAM_SCOPES))} "
              f"reach no stream with this token (grant some: --streams 'app.*')", file=sys.stderr)
    auth = Authenticator(config, keys)
    try:
        token = mint(keys)
    except ValueError as exc:
        print(f"syncref token mint: {exc}", file=sys.stderr)
        return 2
    if args.json:
        verified = auth.verify(token)
        print(json.dumps({"token": token, "identity": verified.claims.identity, "jti": verified.raw["jti"]}))
    else:
        print(token)
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    """Append a jti to ``DIR/revoked-jti``; a running server picks it up within a second.  ``DIR`` must
    hold the server's signing key (a typo'd directory would revoke nothing while saying it did)."""
    import jwt

    from adapters.auth import KEY_FILE_NAME, MAX_JTI_CHARS, REVOKED_JTI_FILE

    jti = args.jti
    if args.token is not None:
        try:
            jti = jwt.decode(args.token, options={"verify_signature": False}).get("jti")
        except jwt.PyJWTError as exc:
            print(f"syncref token revoke: not a JWT: {exc}", file=sys.stderr)
            return 2
        if not isinstance(jti, str):
            print("syncref token revoke: this token has no jti, so it cannot be revoked by name; it stays valid "
                  "until its exp (or rotate the signing key)", file=sys.stderr)
            return 2
    if not jti or len(jti) > MAX_JTI_CHARS or not jti.isascii() or not jti.isprintable() or " " in jti \
            or "#" in jti:
        print(f"syncref token revoke: not a jti: {jti!r} (printable ASCII, no spaces or '#', at most "
              f"{MAX_JTI_CHARS} characters)", file=sys.stderr)
        return 2
    path = Path(args.data) / REVOKED_JTI_FILE
    try:
        has_key = (Path(args.data) / KEY_FILE_NAME).is_file()
    except OSError as exc:  # not "no such file": a directory this user may not search (0700), a name too long
        print(f"syncref token revoke: cannot look into {args.data}: {exc.strerror or exc}; nothing was revoked",
              file=sys.stderr)
        return 2
    if not has_key:  # a typo must not "revoke" where no server looks
        print(f"syncref token revoke: {args.data} is not a syncref data directory (no {KEY_FILE_NAME}: no server "
              "has started there, and no token was minted there); nothing was revoked", file=sys.stderr)
        return 2
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{jti}\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        print(f"syncref token revoke: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"revoked jti {jti} (in {path}; a running server closes its connections within a second)")
    return 0


def trace(args: argparse.Namespace) -> int:
    from adapters.trace import decode_trace, parse_capture

    if args.hex:
        try:
            frames = [(args.direction, bytes.fromhex(h)) for h in args.hex]
        except ValueError as exc:
            print(f"syncref trace: --hex: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            text = sys.stdin.read() if args.file in (None, "-") else Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"syncref trace: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except UnicodeDecodeError as exc:
            print(f"syncref trace: cannot read {args.file or 'stdin'}: not UTF-8 text ({exc.reason} at byte "
                  f"{exc.start}); a capture is lines of 'c2s|s2c <hex>'", file=sys.stderr)
            return 2
        try:
            frames = parse_capture(text)
        except ValueError as exc:
            print(f"syncref trace: {exc}", file=sys.stderr)
            return 2
    for item in decode_trace(frames, args.version):
        print(json.dumps(item, sort_keys=True, ensure_ascii=False))
    return 0


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the reference server (SQLite in a local data directory)")
    s.add_argument("--data", default=DEFAULT_DATA_DIR, metavar="DIR",
                   help=f"data directory (default {DEFAULT_DATA_DIR})")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 3000; 0 picks a free one)")
    s.add_argument("--database", default=None, help=f"database name (default {DEFAULT_DATABASE})")
    s.add_argument("--config", default=None, metavar="FILE", help="TOML config (see docs/operations.md)")
    s.add_argument("--dev", action="store_true",
                   help="DANGER: anyone may mint an identity, and minted identities get every scope and stream")
    s.add_argument("--dev-allow-remote", action="store_true",
                   help="let --dev listen on a host that is not loopback (refused without it)")
    s.add_argument("--allow-anonymous", action="store_true", help="mint identities for callers without a token")
    s.add_argument("--contracts", action="store_true",
                   help="check the engine's hot-path contracts (off by default: ~15%% of an append; "
                        "also SYNCREF_CONTRACTS=1 or [server] contracts = true)")
    s.add_argument("--loop", choices=EVENT_LOOPS, default=None,
                   help="event loop: auto (default: uvloop when installed, else asyncio), uvloop, asyncio "
                        "(also [server] event_loop)")
    t = sub.add_parser("token", help="JWT tools")
    tsub = t.add_subparsers(dest="token_command", required=True)
    mint = tsub.add_parser("mint", help="mint a token signed with the data directory's key")
    mint.add_argument("--data", default=DEFAULT_DATA_DIR, metavar="DIR")
    mint.add_argument("--config", default=None, metavar="FILE", help="the server's TOML config (for [auth] issuer)")
    mint.add_argument("--scopes", default="", help="comma-separated oa_sync_scopes")
    mint.add_argument("--streams", default="", help="comma-separated oa_sync_streams grants (id or prefix*)")
    mint.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (default 3600)")
    mint.add_argument("--subject", default=None, help="JWT sub (default: a random UUID)")
    mint.add_argument("--device-id", default=None)
    mint.add_argument("--session-id", default=None)
    mint.add_argument("--client-build-id", default=None)
    mint.add_argument("--protocol-version", default=None)
    mint.add_argument("--schema-version", type=int, default=None)
    mint.add_argument("--json", action="store_true", help="print {token, identity, jti}")
    rv = tsub.add_parser("revoke", help="stop accepting a token (and every websocket token traded for it)")
    rv.add_argument("--data", default=DEFAULT_DATA_DIR, metavar="DIR")
    what = rv.add_mutually_exclusive_group(required=True)
    what.add_argument("--token", help="the token to revoke (its jti is read; no signature check)")
    what.add_argument("--jti", help="the jti to revoke")
    tr = sub.add_parser("trace", help="decode captured frames into readable JSON lines")
    tr.add_argument("file", nargs="?", default=None, help="capture file (default stdin); see adapters/trace.py")
    tr.add_argument("--hex", nargs="+", default=None, help="frames as hex instead of a capture file")
    tr.add_argument("--direction", choices=("c2s", "s2c"), default="s2c", help="direction of --hex frames")
    tr.add_argument("--version", type=int, choices=(2, 3), default=2, help="protocol version (v3 batches)")
    nk = sub.add_parser("nostr-key", help="create or check the Nostr bridge's signing-key file; print its public key")
    nk.add_argument("--key-file", required=True, metavar="FILE", help="the key file (64 hex digits, mode 0600)")
    nk.add_argument("--create", action="store_true", help="create the file with a new key if it does not exist")
    from adapters.bridge.worker import add_parser as add_bridge_parser

    add_bridge_parser(sub)


def dispatch(args: argparse.Namespace) -> int | None:
    if args.command == "serve":
        return serve(args)
    if args.command == "token":
        return token_mint(args) if args.token_command == "mint" else token_revoke(args)
    if args.command == "trace":
        return trace(args)
    if args.command == "nostr-key":
        return nostr_key(args)
    if args.command == "bridge":
        from adapters.bridge.worker import main as bridge_main

        return bridge_main(args)
    return None


def nostr_key(args: argparse.Namespace) -> int:
    """Print the key file's public key (hex); with ``--create``, make the file first if absent."""
    from adapters.nostr.errors import KeyFileError
    from adapters.nostr.keys import load_key_file, load_or_create_key_file

    path = Path(args.key_file)
    try:
        key = load_or_create_key_file(path) if args.create else load_key_file(path)
    except KeyFileError as exc:
        print(f"syncref nostr-key: {exc}", file=sys.stderr)
        return 2
    print(key.public_key_hex)
    return 0
