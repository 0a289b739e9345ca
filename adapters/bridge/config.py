"""The bridge worker's configuration: a TOML file and the command line, checked into one value.

The file (``--config``) has optional tables; command-line flags win over it:

    [bridge]    url, database, relays (list), key_file, token_file, metrics_port, metrics_host
    [policy]    kinds (list), reject_retry_ms, min_retry_ms, max_retry_ms, call_retry_ms,
                max_rejections, max_in_flight
    [pool]      open_timeout, ack_timeout, max_queue, backoff_base, backoff_cap, ping_interval
    [mappings]  provider_capability (bool), receipts (bool), receipt_statuses (list), d_prefix
    [faults]    pause_before_mark_while (testing only: while that file exists, marks wait)

Every problem is a :class:`BridgeConfigError` with a one-line message.  A relay URL that is not
``ws://``/``wss://`` is not fatal: it is reported (one line each) in :attr:`BridgeConfig.bad_relays`
and the worker serves the others; no usable relay at all is fatal.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.bridge.core import BridgePolicy
from adapters.bridge.mappings import MappingConfig
from adapters.nostr.connection import check_relay_url
from adapters.nostr.errors import NostrUsageError
from adapters.nostr.pool import PoolConfig
from adapters.sdk.backoff import Backoff
from spec.errors import LocalProtocolError
from spec.schema import DEFAULT_DATABASE

__all__ = ["BridgeConfig", "BridgeConfigError", "load_bridge_config"]

_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "bridge": {"url": str, "database": str, "relays": list, "key_file": str, "token_file": str,
               "metrics_port": int, "metrics_host": str},
    "policy": {"kinds": list, "reject_retry_ms": int, "min_retry_ms": int, "max_retry_ms": int,
               "call_retry_ms": int, "max_rejections": int, "max_in_flight": int},
    "pool": {"open_timeout": (int, float), "ack_timeout": (int, float), "max_queue": int,
             "backoff_base": (int, float), "backoff_cap": (int, float), "ping_interval": (int, float)},
    "mappings": {"provider_capability": bool, "receipts": bool, "receipt_statuses": list, "d_prefix": str},
    "faults": {"pause_before_mark_while": str},
}


class BridgeConfigError(Exception):
    """The bridge cannot start with this configuration (one line)."""


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    url: str
    database: str
    relays: tuple[str, ...]
    key_file: Path
    token_file: Path | None = None
    policy: BridgePolicy = field(default_factory=BridgePolicy)
    pool: PoolConfig = field(default_factory=PoolConfig)
    mappings: MappingConfig = field(default_factory=MappingConfig)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    pause_before_mark_while: Path | None = None
    bad_relays: tuple[str, ...] = ()  # one-line reasons for the relay URLs left out


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BridgeConfigError(f"config {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BridgeConfigError(f"config {path}: not TOML: {exc}") from None
    for section, body in raw.items():
        if section not in _SECTIONS or not isinstance(body, dict):
            raise BridgeConfigError(f"config {path}: unknown table [{section}]; allowed: {', '.join(_SECTIONS)}")
        allowed = _SECTIONS[section]
        for key, value in body.items():
            if key not in allowed:
                raise BridgeConfigError(f"config {path}: [{section}] unknown key {key}; allowed: "
                                        f"{', '.join(allowed)}")
            want = allowed[key]
            if (isinstance(value, bool) and want is not bool) or not isinstance(value, want):
                raise BridgeConfigError(f"config {path}: [{section}] {key}: wrong type ({type(value).__name__})")
    return raw


def load_bridge_config(path: Path | None, *, url: str | None = None, database: str | None = None,
                       relays: list[str] | None = None, key_file: str | None = None, token_file: str | None = None,
                       metrics_port: int | None = None) -> BridgeConfig:
    raw = _read(path) if path is not None else {}
    b = raw.get("bridge", {})
    url = url or b.get("url")
    if not url:
        raise BridgeConfigError("no server URL: give --url (or [bridge] url)")
    key = key_file or b.get("key_file")
    if not key:
        raise BridgeConfigError("no signing key: give --key-file (or [bridge] key_file)")
    listed = list(relays or b.get("relays") or [])
    if not listed:
        raise BridgeConfigError("no relay: give --relay ws://... (or [bridge] relays)")
    good: list[str] = []
    bad: list[str] = []
    for item in listed:
        try:
            checked = check_relay_url(item) if isinstance(item, str) else check_relay_url(str(item))
        except NostrUsageError as exc:
            bad.append(f"relay left out: {exc}")
            continue
        if checked in good:
            bad.append(f"relay {item!r} left out: listed twice")
            continue
        good.append(checked)
    if not good:
        raise BridgeConfigError("no usable relay: " + "; ".join(bad))
    p, pl, m, f = raw.get("policy", {}), raw.get("pool", {}), raw.get("mappings", {}), raw.get("faults", {})
    try:
        policy = BridgePolicy(**{**p, **({"kinds": frozenset(p["kinds"])} if "kinds" in p else {})})
        defaults = PoolConfig()
        pool = PoolConfig(
            open_timeout=float(pl.get("open_timeout", defaults.open_timeout)),
            ack_timeout=float(pl.get("ack_timeout", defaults.ack_timeout)),
            max_queue=pl.get("max_queue", defaults.max_queue),
            ping_interval=float(pl.get("ping_interval", defaults.ping_interval or 20.0)),
            backoff=Backoff(base=float(pl.get("backoff_base", defaults.backoff.base)),
                            cap=float(pl.get("backoff_cap", defaults.backoff.cap)),
                            factor=defaults.backoff.factor, jitter=defaults.backoff.jitter))
        mappings = MappingConfig(
            provider_capability=m.get("provider_capability", False), receipts=m.get("receipts", False),
            receipt_statuses=frozenset(m.get("receipt_statuses", MappingConfig().receipt_statuses)),
            d_prefix=m.get("d_prefix", MappingConfig().d_prefix))
    except (LocalProtocolError, ValueError, TypeError) as exc:
        raise BridgeConfigError(f"config {path}: {exc}") from None
    port = metrics_port if metrics_port is not None else b.get("metrics_port")
    token = token_file or b.get("token_file")
    pause = f.get("pause_before_mark_while")
    return BridgeConfig(url=url, database=database or b.get("database") or DEFAULT_DATABASE, relays=tuple(good),
                        key_file=Path(key), token_file=Path(token) if token else None, policy=policy, pool=pool,
                        mappings=mappings, metrics_port=port, metrics_host=b.get("metrics_host", "127.0.0.1"),
                        pause_before_mark_while=Path(pause) if pause else None, bad_relays=tuple(bad))
