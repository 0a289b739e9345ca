"""Switches for the costlier contracts (see docs/contracts.md).

Three levels, from cheap to expensive:

* always on: a contract whose condition costs about as much as the function;
* ``icontract.SLOW`` (``ICONTRACT_SLOW=1``): contracts that rescan, re-parse or re-hash;
* :data:`PER_ROW` (also ``SYNCREF_PER_ROW_CONTRACTS=1``): contracts on functions called per row,
  per string or per grant (``Comparison.holds``, ``grant_matches``, ...).  Their conditions are
  trivial; the call overhead of the contract is not.  CrossHair runs with them on;
* :data:`WHOLE_STATE` (also ``SYNCREF_WHOLE_STATE_CONTRACTS=1``): every state and transition
  invariant around every committed reducer call -- what the stateful machines already check after
  every step.

icontract reads those switches when a module is imported: set them before importing ``spec``.

One more switch works at run time: :func:`hot`.  Contracts on the server's hot path (the
engine's ``handle``, ``pop``, ``take_records``, ``advance_durable``, the sealing and publishing
of a commit, ...) cost about a sixth of a durable append in the profiles (docs/performance.md).
A function decorated ``@hot`` above its icontract decorators runs either the checked function
or the bare one underneath, whichever :func:`hot_enabled` says *at the time of the call*:

* on in the test suite (``tests/conftest.py`` sets ``SYNCREF_CONTRACTS=1``);
* off by default in a server (``syncref serve``), on with ``syncref serve --contracts``, the
  ``SYNCREF_CONTRACTS=1`` environment variable, ``[server] contracts = true`` in the config file,
  or :func:`enable_hot` in a running process (``syncref_contracts_enabled`` on ``/metrics``
  shows which).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

import icontract

SLOW: bool = icontract.SLOW
PER_ROW: bool = SLOW and bool(os.environ.get("SYNCREF_PER_ROW_CONTRACTS"))
WHOLE_STATE: bool = SLOW and bool(os.environ.get("SYNCREF_WHOLE_STATE_CONTRACTS"))


def _env_on(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


_HOT: bool = _env_on(os.environ.get("SYNCREF_CONTRACTS"))

F = TypeVar("F", bound=Callable[..., Any])


def hot_enabled() -> bool:
    """Whether ``@hot`` functions check their contracts now."""
    return _HOT


def enable_hot(on: bool = True) -> None:
    """Turn the hot-path contracts on or off for every later call, in this process."""
    global _HOT
    _HOT = bool(on)


def hot(func: F) -> F:
    """Put the icontract contracts of ``func`` (decorated below this) behind the run-time
    switch: with it off, the undecorated function runs, with no icontract frame at all."""
    plain = inspect.unwrap(func)
    if plain is func:  # nothing to switch: no icontract decorator below
        return func
    checked: Callable[..., Any] = func

    @functools.wraps(plain)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        if _HOT:
            return checked(*args, **kwargs)
        return plain(*args, **kwargs)

    dispatch.__wrapped__ = checked
    return cast(F, dispatch)
