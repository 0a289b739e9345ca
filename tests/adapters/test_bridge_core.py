"""The bridge worker's sans-I/O core, table-driven: rows in, actions out.

The event the core builds is judged by second opinions that share no code with it: the
hand-written NIP-01 byte table (:mod:`support.nostr_oracle`) for the id, and the pure-Python BIP-340
reference signer (:mod:`support.bip340_ref`) with ``aux_rand`` = 32 zero bytes, which must produce
the very same signature (determinism is what makes a republish after a crash byte-identical).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from support import bip340_ref, nostr_oracle

from adapters.bridge.core import (
    BridgeCore,
    BridgePolicy,
    Mark,
    Publish,
    RecordFailure,
    Unpublishable,
    build_event,
)
from adapters.nostr.errors import NostrUsageError
from adapters.nostr.keys import SigningKey
from adapters.nostr.pool import OutcomeStatus, PoolConfig, RelayOutcome
from spec.policy import Policy
from spec.values import BridgeOutbox

A, B = "ws://relay-a.test", "ws://relay-b.test"
SECRET = hashlib.sha256(b"test_bridge_core").digest()
KEY = SigningKey(SECRET)
T0 = 1_767_225_600_000_000  # µs
S = 1_000_000


def row(oid: str = "o1", *, status: str = "pending", attempts: int = 0, due: int = T0, acked: tuple[str, ...] = (),
        event_id: str | None = None, kind: int = 31990, tags: str = '[["d","gpu-1"],["k","5050"]]',
        content: str = '{"name":"gpu-1"}', updated: int = T0) -> BridgeOutbox:
    return BridgeOutbox(oid, "test", kind, tags, content, "sha256:" + "0" * 64, status, attempts, due, None, event_id,
                        acked, T0, updated)


def sent(oid: str = "o1", acked: tuple[str, ...] = (A,), **kw: Any) -> BridgeOutbox:
    base = row(oid, **kw)
    return replace(base, status="sent", nostr_event_id=build_event(base, KEY).id, relays_acked=acked)


def core(*rows: BridgeOutbox, policy: BridgePolicy | None = None) -> BridgeCore:
    c = BridgeCore((A, B), KEY, policy or BridgePolicy())
    c.sync_rows(rows)
    return c


def ok(relay: str, dup: bool = False) -> RelayOutcome:
    return RelayOutcome(relay, OutcomeStatus.ACKED, "duplicate: have it" if dup else "", dup, None, 0.01)


def failed(relay: str, retry: float | None) -> RelayOutcome:
    return RelayOutcome(relay, OutcomeStatus.FAILED, f"{relay}: connect failed", False, retry, None)


def rejected(relay: str) -> RelayOutcome:
    return RelayOutcome(relay, OutcomeStatus.REJECTED, "blocked: not here", False, None, 0.01)


# --- building the event ----------------------------------------------------------------------------


def test_the_event_is_the_row_signed_deterministically_and_agrees_with_independent_checks() -> None:
    r = row(tags='[["d","syncref:receipt:req-42"],["t","receipt"]]',
            content='{"note":"line\\nbreak \\"q\\" \\u00e9 🚀","request_id":"req-42"}', kind=30078)
    event = build_event(r, KEY)
    doc = event.to_json()
    assert (doc["kind"], doc["content"], doc["created_at"]) == (30078, r.content, T0 // S)
    assert doc["tags"] == json.loads(r.tags)
    assert doc["pubkey"] == bip340_ref.public_key(SECRET).hex()
    assert nostr_oracle.event_id(doc) == event.id
    assert bip340_ref.sign(SECRET, bytes.fromhex(event.id), bytes(32)).hex() == event.sig  # same bytes, other code
    assert nostr_oracle.event_is_valid(doc)
    assert build_event(r, KEY) == event  # a rebuild (after a crash) is byte-identical


@pytest.mark.parametrize(("tags", "content", "reason"), [
    ('{"d":"x"}', "{}", "array of arrays of strings"),
    ('[["d",1]]', "{}", "array of arrays of strings"),
    ("not json", "{}", "not JSON"),
    ('[["d","x"]]', "bell \x07", "U+0007"),
    ('[["d","x\\u001f"]]', "{}", "U+001F"),
])
def test_rows_that_cannot_be_events_are_refused_with_the_reason(tags: str, content: str, reason: str) -> None:
    with pytest.raises(Unpublishable, match=re.escape(reason)):
        build_event(row(tags=tags, content=content), KEY)


# --- poll: what a row becomes ----------------------------------------------------------------------

POLL_CASES: list[tuple[str, BridgeOutbox, int, str | None, tuple[str, ...] | str]] = [
    # name, row, now, expected action type, relays (Publish) or error fragment (RecordFailure)
    ("pending and due", row(), T0, "Publish", (A, B)),
    ("pending, due later", row(due=T0 + 5 * S), T0, None, ()),
    ("pending, due exactly now", row(due=T0 + 5 * S), T0 + 5 * S, "Publish", (A, B)),
    ("sent to A only: catch B up", sent(acked=(A,)), T0, "Publish", (B,)),
    ("sent to B only: catch A up", sent(acked=(B,)), T0, "Publish", (A,)),
    ("sent to both: done", sent(acked=(A, B)), T0, None, ()),
    ("sent to both and an old relay", sent(acked=("ws://old.test", A, B)), T0, None, ()),
    ("dead letter", row(status="failed", attempts=5), T0, None, ()),
    ("kind outside the allowlist", row(kind=1), T0, "RecordFailure", "does not mirror kind 1"),
    ("control character", row(content="a\x01b"), T0, "RecordFailure", "U+0001"),
    ("tags not tags", row(tags='[1,2]'), T0, "RecordFailure", "unpublishable"),
    ("sent under another key's id", replace(sent(acked=(A,)), nostr_event_id="ab" * 32), T0, None, ()),
    ("sent, kind no longer allowed", sent(acked=(A,), kind=1), T0, None, ()),
]


@pytest.mark.parametrize(("name", "r", "now", "kind", "expect"), POLL_CASES, ids=[c[0] for c in POLL_CASES])
def test_poll_table(name: str, r: BridgeOutbox, now: int, kind: str | None, expect: Any) -> None:
    c = core(r)
    actions = c.poll(now)
    if kind is None:
        assert actions == []
        assert c.poll(now) == []
        return
    assert len(actions) == 1 and type(actions[0]).__name__ == kind, actions
    action = actions[0]
    if isinstance(action, Publish):
        assert action.relays == expect
        assert action.event == build_event(r, KEY)
    else:
        assert isinstance(action, RecordFailure)
        assert expect in action.error and action.retry_after_ms == BridgePolicy().reject_retry_ms
    assert c.poll(now) == []  # busy: never acted on twice


def test_poll_orders_by_due_time_and_respects_max_in_flight() -> None:
    rows = [row(f"o{i}", due=T0 - i * S) for i in range(5)]
    c = core(*rows, policy=BridgePolicy(max_in_flight=3))
    first = c.poll(T0)
    assert [a.outbox_id for a in first] == ["o4", "o3", "o2"]
    assert c.poll(T0) == []
    c.published("o4", [ok(A), ok(B)], T0)
    c.call_done("o4", T0)
    assert [a.outbox_id for a in c.poll(T0)] == ["o1"]


# --- published: what the relays' outcomes become ---------------------------------------------------

PUBLISHED_CASES: list[tuple[str, BridgeOutbox, list[RelayOutcome], list[Any], int | None]] = [
    # name, row, outcomes, expected actions (with the event id filled in), in-memory hold (s) or None
    ("both ack", row(), [ok(A), ok(B)], [Mark("o1", "*", (A, B))], None),
    ("both answer duplicate (a republish)", row(), [ok(A, True), ok(B, True)], [Mark("o1", "*", (A, B))], None),
    ("A acks, B down: sent now, B caught up later", row(), [ok(A), failed(B, 3.0)], [Mark("o1", "*", (A,))], 3),
    # no verdict from any relay: no call (no attempt consumed), held in memory until the first relay
    # leaves its backoff (ADR-0033)
    ("both down: no call, held until the earliest retry_after", row(), [failed(A, 2.0), failed(B, 7.5)], [], 2),
    ("short retry_after is floored, no call", row(), [failed(A, 0.01), failed(B, None)], [], 1),
    ("no answer in time: no call", row(), [RelayOutcome(A, OutcomeStatus.PENDING),
                                           RelayOutcome(B, OutcomeStatus.PENDING)], [], 1),
    ("a relay backing off 60 s: held 60 s, no call", row(), [failed(A, 60.0), failed(B, 60.0)], [], 60),
    # a verdict: the durable failure, the largest retry wanted
    ("both reject: the policy's retry", row(), [rejected(A), rejected(B)], [RecordFailure("o1", "*", 60_000)], 60),
    # a verdict from some relays only: no call (ADR-0033's refinement), held as a verdict would be
    ("A rejects, B down: no call, held the policy's retry", row(), [rejected(A), failed(B, 2.0)], [], 60),
    ("A rejects, B down longer: no call, the largest retry", row(), [rejected(A), failed(B, 90.0)], [], 90),
    ("A rejects, B no answer in time: no call", row(), [rejected(A), RelayOutcome(B, OutcomeStatus.PENDING)],
     [], 60),
    ("catch-up acked: relays merge", sent(acked=(A,)), [ok(B)], [Mark("o1", "*", (A, B))], None),
    ("catch-up failed: no call, held in memory", sent(acked=(A,)), [failed(B, 4.0)], [], 4),
    ("catch-up rejected: no call, held", sent(acked=(A,)), [rejected(B)], [], 60),
]


@pytest.mark.parametrize(("name", "r", "outcomes", "expect", "hold"), PUBLISHED_CASES,
                         ids=[c[0] for c in PUBLISHED_CASES])
def test_published_table(name: str, r: BridgeOutbox, outcomes: list[RelayOutcome], expect: list[Any],
                         hold: float | None) -> None:
    c = core(r)
    (publish,) = c.poll(T0)
    assert isinstance(publish, Publish)
    actions = c.published("o1", outcomes, T0)
    assert len(actions) == len(expect)
    for got, want in zip(actions, expect, strict=True):
        assert type(got) is type(want)
        if isinstance(want, Mark):
            assert got == Mark("o1", publish.event.id, want.relays)
        else:
            assert isinstance(got, RecordFailure)
            assert got.retry_after_ms == want.retry_after_ms
            for o in outcomes:
                assert o.relay in got.error
    if hold is None:
        assert "o1" not in c.hold_until
    else:
        assert c.hold_until["o1"] == T0 + int(hold * 1000) * 1000
    if not actions:  # nothing to call: free again, but held until the retry time
        assert c.poll(T0) == []
        assert c.next_due() == c.hold_until["o1"]
        assert len(c.poll(c.hold_until["o1"])) == 1


def test_a_relay_that_keeps_rejecting_a_sent_row_is_given_up_after_max_rejections() -> None:
    c = core(sent(acked=(A,)), policy=BridgePolicy(max_rejections=3, reject_retry_ms=1000))
    now = T0
    for _ in range(3):
        (p,) = c.poll(now)
        assert isinstance(p, Publish) and p.relays == (B,)
        assert c.published("o1", [rejected(B)], now) == []
        now += 2 * S
    assert ("o1", B) in c.given_up
    assert c.poll(now) == [] and c.backlog() == 0 and c.next_due() is None


# --- calls -----------------------------------------------------------------------------------------


def test_after_a_mark_the_row_is_not_republished_until_the_update_arrives() -> None:
    r = row()
    c = core(r)
    (p,) = c.poll(T0)
    assert isinstance(p, Publish)
    assert len(c.published("o1", [ok(A), ok(B)], T0)) == 1
    c.call_done("o1", T0)  # the result came before the subscription's update
    assert c.poll(T0 + S) == [] and c.next_due() is None
    c.sync_rows([replace(r, status="sent", nostr_event_id=p.event.id, relays_acked=(A, B), updated_at=T0 + 1)])
    assert c.poll(T0 + S) == [] and c.backlog() == 0


def test_the_update_may_arrive_before_the_call_result() -> None:
    r = row()
    c = core(r)
    (p,) = c.poll(T0)
    c.published("o1", [ok(A), ok(B)], T0)
    c.sync_rows([replace(r, status="sent", nostr_event_id=p.event.id, relays_acked=(A, B), updated_at=T0 + 1)])
    c.call_done("o1", T0)
    assert c.stale == {} and c.poll(T0) == [] and c.backlog() == 0


@pytest.mark.parametrize(("code", "skipped", "held"), [
    ("call_failed", False, True),  # connection lost: try again later
    ("reducer_error", False, True),
    ("bridge_event_conflict", True, False),  # the server will never accept it: stop
    ("bridge_event_missing", True, False),
    ("missing_scope", True, False),
])
def test_failed_calls(code: str, skipped: bool, held: bool) -> None:
    c = core(row())
    c.poll(T0)
    c.published("o1", [ok(A), ok(B)], T0)
    c.call_done("o1", T0, code)
    assert ("o1" in c.skipped) is skipped
    assert ("o1" in c.hold_until) is held
    if held:
        assert c.poll(T0) == []
        assert len(c.poll(T0 + BridgePolicy().call_retry_ms * 1000)) == 1
    else:
        assert c.poll(T0 + 3600 * S) == [] and c.backlog() == 0


def test_misuse_is_refused() -> None:
    c = core(row())
    with pytest.raises(NostrUsageError):
        c.published("o1", [ok(A)], T0)
    with pytest.raises(NostrUsageError):
        c.call_done("o1", T0)
    with pytest.raises(NostrUsageError):
        BridgeCore((), KEY)


def test_backlog_dead_letters_and_next_due() -> None:
    c = core(row("p1", due=T0 + 9 * S), row("p2", due=T0 + 4 * S), sent("s1", acked=(A,)), sent("s2", acked=(A, B)),
             row("f1", status="failed"))
    assert c.backlog() == 3 and c.dead_letters() == 1
    assert c.next_due() == 0  # the sent row missing B is due at once (no time of its own)
    c.sync_rows([row("p1", due=T0 + 9 * S), row("p2", due=T0 + 4 * S)])
    assert c.next_due() == T0 + 4 * S


def test_rows_that_leave_the_view_are_forgotten() -> None:
    c = core(row())
    c.poll(T0)
    assert c.published("o1", [failed(A, 5), failed(B, 5)], T0) == []  # an outage: held in memory, no call
    assert "o1" in c.hold_until
    c.sync_rows([])
    assert c.hold_until == {} and c.backlog() == 0


def test_policy_defaults_are_pinned() -> None:
    p = BridgePolicy()
    assert p.kinds == frozenset({30078, 31990})
    assert (p.reject_retry_ms, p.min_retry_ms, p.max_retry_ms) == (60_000, 1_000, 86_400_000)
    assert (p.call_retry_ms, p.max_rejections, p.max_in_flight) == (2_000, 5, 64)


@pytest.mark.parametrize("kw", [{"kinds": frozenset()}, {"kinds": frozenset({70000})}, {"min_retry_ms": 0},
                                {"reject_retry_ms": 10}, {"max_in_flight": 0}, {"max_rejections": 0}])
def test_bad_policies_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(NostrUsageError):
        BridgePolicy(**kw)


# --- outages: only a relay's verdict consumes a durable attempt (ADR-0033) -------------------------


class SimRelay:
    """One relay as the pool reports it, on a fake clock: ``down`` until ``up_at`` (µs), then
    ``verdict`` ("ack" or "reject"); the pool's default backoff with a seeded jitter, the same rules
    as the pool's relay worker (fail fast while backing off, one failure grows the backoff, one
    answer resets it) -- written here again, not imported."""

    def __init__(self, url: str, up_at: int, verdict: str, seed: int) -> None:
        self.url, self.up_at, self.verdict = url, up_at, verdict
        cfg = PoolConfig().backoff
        self.base, self.cap, self.factor, self.jitter = cfg.base, cfg.cap, cfg.factor, cfg.jitter
        self.rng = random.Random(seed)
        self.failures = 0
        self.retry_at = 0
        self.events: set[str] = set()
        self.tries = 0  # connection attempts (publishes not failed fast by the backoff)

    def publish(self, event_id: str, now: int) -> RelayOutcome:
        if now < self.retry_at:
            return RelayOutcome(self.url, OutcomeStatus.FAILED, "refused (backing off)", False,
                                (self.retry_at - now) / S, 0.0)
        self.tries += 1
        if now < self.up_at:
            ceiling = min(self.cap, self.base * self.factor ** self.failures)
            delay = ceiling * (1 - self.jitter * self.rng.random())
            self.failures += 1
            self.retry_at = now + int(delay * S)
            return RelayOutcome(self.url, OutcomeStatus.FAILED, "connection refused", False, delay, 0.0)
        self.failures, self.retry_at = 0, 0
        if self.verdict == "reject":
            return rejected(self.url)
        self.events.add(event_id)
        return ok(self.url)


@dataclass
class Sim:
    server: dict[str, BridgeOutbox]
    marked: dict[str, int] = field(default_factory=dict)  # outbox_id -> time of its first mark (µs)
    publishes: dict[str, int] = field(default_factory=dict)  # outbox_id -> Publish actions
    recorded: int = 0  # RecordFailure actions


def simulate(n_rows: int, sim: list[SimRelay], end: int) -> Sim:
    """Drive a core against the simulated relays and a server that applies the outbox rules itself
    (attempts + 1 per failure, dead letter at the policy's ``bridge_max_attempts``; a mark makes the
    row sent)."""
    max_attempts = Policy().bridge_max_attempts
    server = {f"o{i}": row(f"o{i}") for i in range(n_rows)}
    c = BridgeCore(tuple(r.url for r in sim), KEY)
    c.sync_rows(server.values())
    by_url = {r.url: r for r in sim}
    out = Sim(server)
    now = T0
    while now <= end:
        for action in c.poll(now):
            assert isinstance(action, Publish)
            out.publishes[action.outbox_id] = out.publishes.get(action.outbox_id, 0) + 1
            outcomes = [by_url[u].publish(action.event.id, now) for u in action.relays]
            for follow in c.published(action.outbox_id, outcomes, now):
                old = server[follow.outbox_id]
                if isinstance(follow, Mark):
                    merged = tuple(sorted(set(old.relays_acked) | set(follow.relays)))
                    server[old.outbox_id] = replace(old, status="sent", nostr_event_id=follow.event_id,
                                                    relays_acked=merged, updated_at=now)
                    out.marked.setdefault(old.outbox_id, now)
                else:
                    assert isinstance(follow, RecordFailure)
                    out.recorded += 1
                    attempts = old.attempts + 1
                    server[old.outbox_id] = replace(old, attempts=attempts, updated_at=now, last_error=follow.error,
                                                    next_attempt_at=now + follow.retry_after_ms * 1000,
                                                    status="failed" if attempts >= max_attempts else "pending")
                c.sync_rows(server.values())
                c.call_done(follow.outbox_id, now)
        due = c.next_due()
        if due is None:
            break
        now = max(now + 1000, due)  # at least 1 ms on: the worker's loop never spins faster
    return out


@pytest.mark.parametrize("outage_s", [10, 300, 3600])
@pytest.mark.parametrize("seed", [1, 2])
def test_an_outage_of_every_relay_longer_than_the_attempts_loses_nothing(outage_s: int, seed: int) -> None:
    """Both relays refuse connections for ``outage_s`` -- far past the ~5 s in which five recorded
    failures would dead-letter a row -- then come back: every row is published to both, none was
    dead-lettered, no failure was recorded (no relay gave a verdict), and each row went out within
    the pool's backoff cap (60 s) plus the 1 s floor of the relays' return.  The hold is paced by the
    pool: no row was published more often than the relays were actually tried."""
    up = T0 + outage_s * S
    sim = [SimRelay(A, up, "ack", seed), SimRelay(B, up, "ack", seed + 100)]
    out = simulate(20, sim, up + 3600 * S)
    assert {r.status for r in out.server.values()} == {"sent"}, [r.attempts for r in out.server.values()]
    assert out.recorded == 0
    assert all(r.attempts == 0 and set(r.relays_acked) == {A, B} for r in out.server.values())
    assert all(r.nostr_event_id in sim[0].events and r.nostr_event_id in sim[1].events for r in out.server.values())
    cap_us = int((PoolConfig().backoff.cap + 1) * S)
    assert all(up <= t <= up + cap_us for t in out.marked.values()), sorted(t - up for t in out.marked.values())
    assert max(out.publishes.values()) <= sum(r.tries for r in sim) + 1, (out.publishes, [r.tries for r in sim])


def test_a_verdict_still_consumes_attempts_and_dead_letters() -> None:
    """A relay's rejection is a verdict: with every relay rejecting, each publish records a failure
    and the row ends a dead letter after the policy's attempts."""
    sim = [SimRelay(A, T0, "reject", 1), SimRelay(B, T0, "reject", 2)]
    out = simulate(3, sim, T0 + 3600 * S)
    assert out.marked == {}
    assert out.recorded == 3 * Policy().bridge_max_attempts
    assert all(r.status == "failed" and r.attempts == Policy().bridge_max_attempts for r in out.server.values())


@pytest.mark.parametrize("b_verdict", ["ack", "reject"])
def test_a_rejection_while_another_relay_is_down_consumes_no_attempt(b_verdict: str) -> None:
    """ADR-0033's refinement: an attempt is counted only when *every* relay gave a verdict.  A
    rejects every row while B is down for 10 minutes (with ``reject_retry_ms`` 60 s the old rule
    dead-lettered each row after ~4 minutes, before B was back): nothing is recorded while B gives
    no verdict.  B back and acknowledging: every row is sent.  B back and rejecting too: now every
    relay gave a verdict, and the rows are dead letters after the policy's attempts, all of them
    counted after B's return."""
    up = T0 + 600 * S
    sim = [SimRelay(A, T0, "reject", 1), SimRelay(B, up, b_verdict, 2)]
    out = simulate(3, sim, up + 3600 * S)
    rows = out.server.values()
    if b_verdict == "ack":
        assert out.recorded == 0 and all(r.status == "sent" and r.attempts == 0 for r in rows)
        assert all(set(r.relays_acked) == {B} for r in rows)
    else:
        assert out.marked == {} and out.recorded == 3 * Policy().bridge_max_attempts
        assert all(r.status == "failed" and r.updated_at >= up for r in rows)


def test_rows_held_by_a_rejection_while_another_relay_gives_no_verdict_log_at_a_bounded_rate(
        caplog: pytest.LogCaptureFixture) -> None:
    """A rejecting relay beside one that never answers (down for good, or up and silent) holds its
    rows for good, each published again every ``reject_retry_ms``: one warning per publish was one
    line per held row per minute, for as long as it lasts (an outage's holds log nothing per row, and
    a verdict's at most ``bridge_max_attempts`` per row).  Now at most one line every
    ``HELD_LOG_INTERVAL_S`` (on the core's own clock, the ``now`` it is given), the next saying how
    many were not logged; every row is still held and published again."""
    from adapters.bridge.core import HELD_LOG_INTERVAL_S

    n = 500
    c = core(*(row(f"o{i:03d}") for i in range(n)), policy=BridgePolicy(max_in_flight=n))
    caplog.set_level("WARNING", logger="syncref.bridge")
    now = T0
    for _ in range(3):  # three rounds, a minute apart: every row is published and held each time
        publishes = [a for a in c.poll(now) if isinstance(a, Publish)]
        assert len(publishes) == n
        for p in publishes:
            assert c.published(p.outbox_id, [rejected(A), RelayOutcome(B, OutcomeStatus.PENDING)], now) == []
        now += 60 * S
    lines = [r.getMessage() for r in caplog.records if "no attempt counted" in r.getMessage()]
    assert HELD_LOG_INTERVAL_S <= 60 and len(lines) == 3, len(lines)
    assert f"{n - 1} more like it" in lines[1] and "blocked: not here" in lines[1]
