"""Reconnect delays: capped, jittered exponential backoff.

After the ``n``-th failed attempt in a row (``n`` counts from 0) the client waits a random time in
``[ceiling * (1 - jitter), ceiling]`` where ``ceiling = min(cap, base * factor ** n)``.  The ceiling
grows geometrically until it reaches the cap and stays there; the jitter spreads a crowd of clients
that lost the same server over a window instead of letting them reconnect in lock-step (a
reconnect storm).  ``jitter = 1`` is "full jitter" (anywhere in ``[0, ceiling]``), ``jitter = 0`` is
no jitter at all.  The counter resets once a connection has stayed up ``Connection.healthy_after``
seconds (10 s by default) after its ``InitialConnection``, so a server that drops a healthy client
is retried quickly, while one that drops every connection at once (a crash loop, a resubscribe it
always answers by closing) is backed off from like one that refuses them.

The random source is injected (a ``() -> float`` in ``[0, 1)``, :func:`random.random` by default)
so tests can pin it; nothing here sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from spec.errors import LocalProtocolError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.25
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise LocalProtocolError(f"backoff needs 0 < base <= cap (base={self.base}, cap={self.cap})")
        if self.factor < 1:
            raise LocalProtocolError(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise LocalProtocolError(f"backoff jitter must be within [0, 1], got {self.jitter}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after ``attempt`` consecutive failures (``attempt`` >= 0)."""
        if attempt < 0:
            raise LocalProtocolError(f"attempt must be >= 0, got {attempt}")
        try:
            grown = self.base * self.factor ** min(attempt, 4096)
        except OverflowError:
            return self.cap
        return min(self.cap, grown)

    def delay(self, attempt: int) -> float:
        """A jittered delay in ``[ceiling * (1 - jitter), ceiling]``."""
        ceiling = self.ceiling(attempt)
        u = self.rng()
        if not 0 <= u <= 1:
            raise LocalProtocolError(f"the backoff rng must return a float in [0, 1], got {u!r}")
        return ceiling * (1 - self.jitter * (1 - u))
