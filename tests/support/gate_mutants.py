"""Planted bugs in the connection cap (:class:`adapters.guard.ConnectionGate`), for the hostile
slowloris check (``tests/adapters/test_hostile_planted.py``): each breaks the promise that every
refusal the server counts reaches its client whole as a ``503`` -- and only that.

Applied as source edits by :func:`support.mutants.apply` (each edit's text must occur exactly once in
``adapters/guard.py``, so a change to the module stops the plant loudly instead of planting nothing),
in the server process itself, by ``python -m support.serve_with_gate_bug``.

Tried and left out: closing a refused socket at once after its 503, with the peer's head unread (the
behaviour ``REFUSE_LINGER_S`` replaced).  The kernel then resets the connection, but on loopback the 503
is already in the client's receive queue and is read before the reset is reported, so the check passes
on it: not a bug this check can see here (it loses answers over real networks, where the reset can
overtake them).
"""

from __future__ import annotations

from support.mutants import Mutant

GUARD = "adapters.guard"

_COUNT = "            self._on_refuse()\n"
_ANSWER = "            return _Refuse(self._body)\n"
_WRITE = "        transport = cast(asyncio.Transport, base)\n"

GATE_MUTANTS: tuple[Mutant, ...] = (
    Mutant("refusal_not_counted", GUARD, ((_COUNT, ""),),
           "the cap answers 503 but the refusal counter never moves"),
    Mutant("refusal_counted_twice", GUARD, ((_COUNT, _COUNT + _COUNT),),
           "every refusal is answered 503 once and counted twice"),
    Mutant("refusal_dropped_unanswered", GUARD, ((_WRITE, _WRITE + "        transport.close()\n        return\n"),),
           "every refusal is counted, and its connection closed without the 503"),
    Mutant("every_other_refusal_unanswered", GUARD, (
        (_ANSWER, "            if self.refused % 2 == 0:\n"
                  "                return _Unanswered()\n" + _ANSWER),
        ("class ConnectionGate:\n", "class _Unanswered(asyncio.Protocol):\n"
                                     "    def connection_made(self, base: asyncio.BaseTransport) -> None:\n"
                                     "        base.close()\n\n\n"
                                     "class ConnectionGate:\n")),
           "every refusal is counted; every second one is closed without its 503"),
)
