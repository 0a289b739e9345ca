"""Differential: the same random action sequences, faults included, through the model and the
reference engine give the same outcomes, tables, deliveries (in order) and decisions; and the
engine's one-off reads, sliced reads and cross-identity readers give what SQLite selects from the
model's tables (tests/support/reads.py: AUTH-1, DELIV-2, ADR-0038's state at take time)."""

from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from support.machines import DiffMachine


def test_engine_equals_model() -> None:
    base = settings()
    run_state_machine_as_test(DiffMachine, settings=settings(base, max_examples=max(100, base.max_examples),
                                                             stateful_step_count=60))


def test_engine_reducers_equal_model_reducers() -> None:
    from support.machines import DiffModuleMachine
    base = settings()
    run_state_machine_as_test(DiffModuleMachine, settings=settings(base, max_examples=max(150, base.max_examples),
                                                                   stateful_step_count=60))


def _two_sessions_then_close_at_expiry(dt: int) -> dict[str, str | None]:
    """c1 owns two live sessions (sess1 at 5 s, sess1b at 2 s TTL); the clock reaches sess1b's expiry + dt with no
    sweep run, and c1's connection closes: one marks transaction, compared row by row with the model."""
    m = DiffMachine()
    m.start(follows=[])
    m.sys.quiesce()
    m._handled(1, "upsert_presence", ("sess1b", "dev", "node", "online", "eu", 2000))
    m.close_at_expiry(1, dt)
    assert 1 not in m.sys.links
    m.holds()
    from spec.values import SessionPresence
    identity = m.sys.clients[1].claims.identity
    return {r.session_id: r.offline_reason for r in m.sys.server.db.of_type(SessionPresence) if r.identity == identity}


@pytest.mark.parametrize(("dt", "reason"), [(-1, "disconnected"), (0, "ttl_expired"), (1, "ttl_expired")])
def test_a_close_at_a_sessions_expiry_is_compared(dt: int, reason: str) -> None:
    """sess1b's TTL runs out at the expiry itself (expires_at <= now), sess1's has 3 s left: one close, both
    marked, model and engine alike."""
    assert _two_sessions_then_close_at_expiry(dt) == {"sess1": "disconnected", "sess1b": reason}


@pytest.mark.parametrize(("plant", "dt"), [("strict_expiry", 0), ("ttl_sets_now", 1), ("split_marks", -1)])
def test_planted_engine_close_bugs_are_caught(monkeypatch: pytest.MonkeyPatch, plant: str, dt: int) -> None:
    """Engine bugs in a close's marks that the machine never met before it had close_at_expiry and a second
    session per connection: ``ttl_expired`` only past the expiry (not at it), a run-out session's last_seen set
    to the close's time, one close's marks split into a transaction per session."""
    import functools
    from dataclasses import replace

    from support.diff import Divergence

    import reference.engine as eng
    import reference.reducers as rr
    from spec.values import PresenceSignal, SessionPresence

    def marks(tx: Any, now: int, identity: str, sessions: frozenset[str]) -> None:
        for sid in sorted(sessions):
            r = tx.db.get("session_presence", (sid,))
            if isinstance(r, SessionPresence) and r.identity == identity and r.status != "offline":
                expired = r.expires_at < now if plant == "strict_expiry" else r.expires_at <= now
                reason = "ttl_expired" if expired else "disconnected"
                seen = r.last_seen if expired and plant != "ttl_sets_now" else now
                tx.update(r, replace(r, status="offline", offline_reason=reason, last_seen=seen))
                tx.insert(PresenceSignal(r.session_id, r.identity, "offline", reason, now))

    def split_drain(self: Any) -> None:
        self._disconnects.sort(key=lambda d: (d[0], sorted(d[2])))
        while self._disconnects and not self._fanning_out and self.can_commit():
            identity, conn_id, queued = self._disconnects.pop(0)
            sessions = frozenset(s for s in queued if self._last_upsert.get(s) == conn_id)
            for s in sessions:
                del self._last_upsert[s]
            for s in sorted(sessions):
                self._system("disconnect", (identity, (s,)),
                             functools.partial(self._disconnect_body, identity, frozenset({s})))

    if plant == "split_marks":
        monkeypatch.setattr(eng.Engine, "_drain_disconnects", split_drain)
    else:
        monkeypatch.setattr(rr, "disconnect_sessions", marks)
    with pytest.raises(Divergence, match=r"session_presence differs|offsets"):
        _two_sessions_then_close_at_expiry(dt)
