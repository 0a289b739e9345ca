"""The nemesis schedule: a pure function of (seed, profile).

A :class:`Nemesis` is one fault at a time offset from the start of the run, with its parameters.
:func:`plan` draws them from ``random.Random(seed)`` only, so the same seed and profile give the
same schedule on every machine (``tests/adapters/test_chaos.py`` pins that, and that another seed
gives another schedule).  Kinds:

=================  =========================================================================
``kill``           SIGKILL the server, restart it on the same port after ``down_s``
``stall_kill``     stall the disk (``[faults] stall_commits_while``) for ``stall_s`` so commits
                   pile up undurable, then SIGKILL and restart: the unclean restart continues
                   the epoch (ADR-0003) and the undurable tail is gone
``stall``          durable lag: the disk stalls for ``stall_s`` then recovers
``storm``          the proxy cuts every client connection at once (a disconnect storm)
``delay``          the proxy delays every chunk by ``delay_ms`` for ``for_s``
``client_restart`` subscriber ``client`` stops, closes its store and connection, and starts again
                   from its persisted checkpoints
``token_expiry``   a client presents an expired token: it must be refused (HTTP 401) and leave no trace
``duplicate``      for ``for_s`` the proxy sends half the client frames twice, and halfway cuts every
                   connection, so each client's reconnect first carries its last frames replayed
``epoch_reset``    an admin calls ``reset_stream_epoch`` on stream ``stream``: its events are gone by
                   design and every subscriber must rebootstrap it (an *expected* rebootstrap)
``compaction``     subscriber ``client`` pauses (store and connection closed) for at least ``for_s`` and
                   until compaction of the small-retention stream has passed its watermark; on resume
                   the server must answer ``stale_cursor`` (``retention_floor_breach``) and the
                   subscriber rebootstraps from the retained window
``relay_outage``   Nostr relay ``relay`` of the bridge is SIGKILLed (``how`` 0, restarted on the same
                   port and database after ``for_s``) or SIGSTOPped (``how`` 1, SIGCONT after ``for_s``)
=================  =========================================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KINDS: tuple[str, ...] = ("kill", "stall_kill", "stall", "storm", "delay", "client_restart", "token_expiry",
                          "duplicate", "epoch_reset", "compaction", "relay_outage")
# relative weights of the kinds: about a third of the faults restart the server
WEIGHTS: tuple[int, ...] = (4, 2, 2, 3, 2, 2, 1, 2, 1, 1, 2)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    duration_s: float  # how long the nemeses act (the workload runs during it; the heal follows)
    gap_s: tuple[float, float]  # pause between two nemeses, drawn uniformly
    writers: int
    subscribers: int
    streams: int
    write_pause_s: float  # pause between one writer's operations


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", duration_s=18.0, gap_s=(0.6, 1.6), writers=3, subscribers=2, streams=2,
                     write_pause_s=0.02),
    "long": Profile("long", duration_s=1200.0, gap_s=(0.8, 3.0), writers=4, subscribers=3, streams=3,
                    write_pause_s=0.01),
}


@dataclass(frozen=True, slots=True)
class Nemesis:
    at_s: float
    kind: str
    params: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"at_s": self.at_s, "kind": self.kind, **self.params}


def plan(seed: int, profile: Profile) -> tuple[Nemesis, ...]:
    """The schedule for ``seed``: nemeses until ``profile.duration_s``, none overlapping."""
    rng = random.Random(seed)
    out: list[Nemesis] = []
    t = rng.uniform(*profile.gap_s)
    while t < profile.duration_s:
        kind = rng.choices(KINDS, weights=WEIGHTS)[0]
        params: dict[str, float]
        if kind == "kill":
            params = {"down_s": round(rng.uniform(0.0, 0.5), 3)}
        elif kind == "stall_kill":
            params = {"stall_s": round(rng.uniform(0.1, 0.6), 3), "down_s": round(rng.uniform(0.0, 0.3), 3)}
        elif kind == "stall":
            params = {"stall_s": round(rng.uniform(0.2, 1.5), 3)}
        elif kind == "storm":
            params = {}
        elif kind == "delay":
            params = {"delay_ms": float(rng.randint(5, 150)), "for_s": round(rng.uniform(0.3, 1.5), 3)}
        elif kind == "client_restart":
            params = {"client": float(rng.randrange(profile.subscribers))}
        elif kind == "duplicate":
            params = {"for_s": round(rng.uniform(0.4, 1.5), 3)}
        elif kind == "epoch_reset":
            params = {"stream": float(rng.randrange(profile.streams))}
        elif kind == "compaction":
            params = {"client": float(rng.randrange(profile.subscribers)), "for_s": round(rng.uniform(0.3, 1.0), 3)}
        elif kind == "relay_outage":
            params = {"relay": float(rng.randrange(2)), "how": float(rng.randrange(2)),
                      "for_s": round(rng.uniform(0.5, 2.0), 3)}
        else:
            params = {}
        out.append(Nemesis(round(t, 3), kind, params))
        t += rng.uniform(*profile.gap_s) + params.get("stall_s", 0.0) + params.get("for_s", 0.0)
    return tuple(out)
