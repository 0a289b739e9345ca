"""The bridge worker's decisions, sans I/O: outbox rows in, publish / mark / failure actions out.

:class:`BridgeCore` holds the worker's view of ``bridge_outbox`` (fed from its subscription with
:meth:`BridgeCore.sync_rows`) and decides, for each row, what to do next.  It never touches a
socket or a clock: the shell passes ``now`` (µs since the Unix epoch, the outbox's own time base),
runs the actions it returns, and reports back:

* :meth:`BridgeCore.poll` -- the rows due now become :class:`Publish` actions (the signed event and
  the relays that still lack it) or, when the row cannot be published at all (its kind is outside
  this bridge's allowlist, its tags are not NIP-01 tags, it holds characters relays serialize
  differently), a :class:`RecordFailure` with the reason;
* :meth:`BridgeCore.published` -- the per-relay outcomes of a publish become a :class:`Mark` (some
  relay has the event: ``mark_bridge_event_sent`` with every relay known to have it), a
  :class:`RecordFailure` (no relay has it and every relay *rejected* it: the durable backoff
  ``retry_after_ms``, one of the row's attempts), or nothing (some relay gave no verdict: the row
  is held in memory, ADR-0033 and its refinement);
* :meth:`BridgeCore.call_done` -- the reducer call finished (``ok``, or the error code).

The row's life, as the worker sees it (``relays`` = the configured relays):

========================================  ===========================================================
row                                       the worker
========================================  ===========================================================
``pending``, ``next_attempt_at`` > now    waits (the backoff is the server's, durable)
``pending``, held after an outage         waits in memory until a relay leaves its backoff
``pending``, due                          publishes to ``relays - relays_acked``
``sent``, ``relays`` ⊆ ``relays_acked``   done
``sent``, a relay missing                 catches that relay up (same event id); backoff in memory
``sent`` under another event id           skipped (logged): the key changed since it was sent
``failed`` (dead letter)                  counted, never touched
========================================  ===========================================================

Outcome rules of one publish: any relay acknowledging (``OK true`` or ``duplicate:``) makes the
row ``sent`` -- the event exists on Nostr under its id -- and the relays that failed are retried
from the ``sent`` row (catch-up, never a second event id); a catch-up relay that *rejects*
``max_rejections`` times is given up for that row (reported by :attr:`BridgeCore.given_up`).  If
no relay has it, only a *verdict* from every relay consumes one of the row's durable attempts
(ADR-0033 and its refinement): when every relay rejected it, the row stays ``pending`` with
``record_bridge_failure`` -- the error lists each relay's one-line reason, ``retry_after_ms`` is
``reject_retry_ms``, clamped to ``[min_retry_ms, max_retry_ms]``; the server dead-letters the row at
its ``bridge_max_attempts``.  When some relay rejected it and another gave no verdict, nothing is
called and the row is held in memory for what a verdict would have waited (``reject_retry_ms`` or,
if larger, the largest ``retry_after`` of the relays that failed), with a warning logged (at most one
every ``HELD_LOG_INTERVAL_S``: such a row is held for good while that relay gives no verdict).  When no
relay gave a verdict (every relay failed: refused, timed out, backing off, queue full -- or had not
answered), nothing is called:
the row is held in :attr:`BridgeCore.hold_until` until the earliest relay leaves its backoff (the
smallest ``retry_after``, at least ``min_retry_ms``; the pool caps it at its ``backoff_cap``), so
an outage of any length dead-letters nothing and the rows go out once a relay is back.

Determinism: the event is a pure function of the row and the key (:func:`build_event`; BIP-340 with
``aux_rand`` = 32 zero bytes), so a worker that crashed between publishing and marking republishes
the *same* signed event, which relays answer with ``duplicate:``.

A row with a call in flight or a publish in flight is *busy* and never acted on twice.  After a
successful call the row is *stale* until the subscription delivers a different version of it (the
update may arrive before or after the call's result), so the worker never republishes a row whose
mark it already sent.  A failed call (connection lost, timeout) holds the row for
``call_retry_ms`` in memory and tries again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from adapters.guard import RateLimitedLog
from adapters.nostr.errors import NostrUsageError, one_line
from adapters.nostr.event import Event, EventTemplate, nonportable_characters, sign_event
from adapters.nostr.keys import SigningKey
from adapters.nostr.pool import OutcomeStatus, RelayOutcome
from spec.values import BridgeOutbox

__all__ = [
    "DETERMINISTIC_AUX",
    "Action",
    "BridgeCore",
    "BridgePolicy",
    "Mark",
    "Publish",
    "RecordFailure",
    "Unpublishable",
    "build_event",
]

log = logging.getLogger("syncref.bridge")
HELD_LOG_INTERVAL_S = 10.0  # at most one "no attempt counted" line this often (the next counts the rest)

DETERMINISTIC_AUX = bytes(32)  # BIP-340 aux_rand for bridge events: the signature is a function of (key, id)
US = 1_000_000


class Unpublishable(ValueError):
    """The row cannot become a NIP-01 event (the reason is one line)."""


@dataclass(frozen=True, slots=True)
class BridgePolicy:
    """What the worker mirrors and how it retries (defaults pinned by tests and docs/bridge.md)."""

    kinds: frozenset[int] = frozenset({30078, 31990})
    reject_retry_ms: int = 60_000  # durable retry after every relay rejected the event
    min_retry_ms: int = 1_000  # floor of any retry_after_ms sent, and of the in-memory hold after an outage
    max_retry_ms: int = 86_400_000  # the server's bridge_max_retry_after_ms
    call_retry_ms: int = 2_000  # in memory: after a reducer call that did not complete
    max_rejections: int = 5  # catch-up: a relay rejecting a sent row this often is given up for it
    max_in_flight: int = 64  # rows being published or marked at once

    def __post_init__(self) -> None:
        if not self.kinds or any(not 0 <= k <= 65535 for k in self.kinds):
            raise NostrUsageError("policy kinds must be a non-empty set of integers in [0, 65535]")
        if not 0 < self.min_retry_ms <= self.max_retry_ms:
            raise NostrUsageError("policy needs 0 < min_retry_ms <= max_retry_ms")
        if not self.min_retry_ms <= self.reject_retry_ms <= self.max_retry_ms:
            raise NostrUsageError("policy reject_retry_ms must lie within [min_retry_ms, max_retry_ms]")
        if self.call_retry_ms <= 0 or self.max_rejections < 1 or self.max_in_flight < 1:
            raise NostrUsageError("policy call_retry_ms, max_rejections and max_in_flight must be positive")


@dataclass(frozen=True, slots=True)
class Publish:
    outbox_id: str
    event: Event
    relays: tuple[str, ...]  # the configured relays that do not have it yet


@dataclass(frozen=True, slots=True)
class Mark:
    outbox_id: str
    event_id: str
    relays: tuple[str, ...]  # every relay known to have the event (sorted)


@dataclass(frozen=True, slots=True)
class RecordFailure:
    outbox_id: str
    error: str
    retry_after_ms: int


Action = Publish | Mark | RecordFailure


def build_event(row: BridgeOutbox, key: SigningKey) -> Event:
    """The row's NIP-01 event: kind, tags and content from the row, ``created_at`` its enqueue second,
    signed deterministically.  :class:`Unpublishable` if the row cannot be an event."""
    try:
        tags = json.loads(row.tags)
    except ValueError:
        raise Unpublishable(f"tags are not JSON: {one_line(row.tags, 80)}") from None
    if not isinstance(tags, list) or any(not isinstance(t, list) or any(not isinstance(s, str) for s in t)
                                         for t in tags):
        raise Unpublishable("tags must be an array of arrays of strings")
    bad = nonportable_characters(tags, row.content)
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:8])
        raise Unpublishable(f"holds control characters ({shown}) that relays serialize differently (NIP-01 "
                            "writes them verbatim); no id every relay agrees on")
    try:
        template = EventTemplate(row.created_at // US, row.nostr_kind, tuple(tuple(t) for t in tags), row.content)
        return sign_event(template, key, aux_rand=DETERMINISTIC_AUX)
    except NostrUsageError as exc:
        raise Unpublishable(str(exc)) from None


def _version(row: BridgeOutbox) -> tuple[object, ...]:
    return (row.status, row.attempts, row.next_attempt_at, row.nostr_event_id, row.relays_acked, row.updated_at)


@dataclass
class _Busy:
    version: tuple[object, ...]  # the row as it was when the worker acted
    event_id: str = ""


@dataclass
class BridgeCore:
    """See the module essay.  ``relays``: the configured relay URLs (already checked)."""

    relays: tuple[str, ...]
    key: SigningKey
    policy: BridgePolicy = field(default_factory=BridgePolicy)
    rows: dict[str, BridgeOutbox] = field(default_factory=dict)
    busy: dict[str, _Busy] = field(default_factory=dict)
    stale: dict[str, tuple[object, ...]] = field(default_factory=dict)  # waiting for a newer version
    hold_until: dict[str, int] = field(default_factory=dict)  # µs; in-memory not-before
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)  # (outbox_id, relay) in catch-up
    given_up: set[tuple[str, str]] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)  # outbox_id -> why it is never touched
    _events: dict[str, tuple[tuple[object, ...], Event | Unpublishable]] = field(default_factory=dict)
    _now: int = field(default=0, init=False, repr=False)  # µs: the latest ``now`` given (the held-row log's clock)
    _held_log: RateLimitedLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.relays:
            raise NostrUsageError("the bridge needs at least one relay")
        self._held_log = RateLimitedLog(log, HELD_LOG_INTERVAL_S, lambda: self._now / 1e6)

    # --- inputs ------------------------------------------------------------------------------------

    def sync_rows(self, rows: Iterable[BridgeOutbox]) -> None:
        """Replace the view with the subscription's current rows."""
        self.rows = {r.outbox_id: r for r in rows}
        for outbox_id, version in list(self.stale.items()):
            row = self.rows.get(outbox_id)
            if row is None or _version(row) != version:
                del self.stale[outbox_id]
        for table in (self.hold_until, self._events, self.skipped):
            for outbox_id in [k for k in table if k not in self.rows]:
                del table[outbox_id]
        self.given_up = {k for k in self.given_up if k[0] in self.rows}
        self.rejections = {k: n for k, n in self.rejections.items() if k[0] in self.rows}

    def poll(self, now: int) -> list[Action]:
        """The actions due at ``now`` (µs); the rows they name become busy."""
        out: list[Action] = []
        for row in sorted(self.rows.values(), key=lambda r: (r.next_attempt_at, r.outbox_id)):
            if len(self.busy) >= self.policy.max_in_flight:
                break
            action = self._decide(row, now)
            if action is not None:
                self.busy[row.outbox_id] = _Busy(_version(row),
                                                 action.event.id if isinstance(action, Publish) else "")
                out.append(action)
        return out

    def published(self, outbox_id: str, outcomes: Sequence[RelayOutcome], now: int) -> list[Action]:
        """A publish finished (every relay settled, or the shell gave up waiting: ``pending``)."""
        busy = self.busy.get(outbox_id)
        row = self.rows.get(outbox_id)
        if busy is None or not busy.event_id:
            raise NostrUsageError(f"no publish of {outbox_id!r} is in flight")
        if row is None:  # removed meanwhile (retention): nothing to record
            del self.busy[outbox_id]
            return []
        acked = {o.relay for o in outcomes if o.status is OutcomeStatus.ACKED}
        have = set(row.relays_acked) if row.nostr_event_id == busy.event_id else set()
        failures = [o for o in outcomes if o.status is not OutcomeStatus.ACKED]
        for o in outcomes:
            if o.status is OutcomeStatus.ACKED:
                self.rejections.pop((outbox_id, o.relay), None)
            elif o.status is OutcomeStatus.REJECTED and (acked or have):  # a catch-up relay refusing
                n = self.rejections.get((outbox_id, o.relay), 0) + 1
                self.rejections[(outbox_id, o.relay)] = n
                if n >= self.policy.max_rejections:
                    self.given_up.add((outbox_id, o.relay))
                    log.warning("giving up relay %s for %s after %d rejections: %s", o.relay, outbox_id, n,
                                o.reason)
        rejected = any(o.status is OutcomeStatus.REJECTED for o in failures)
        verdict = all(o.status is OutcomeStatus.REJECTED for o in failures)  # from every relay it went to
        undelivered = not acked and not have and row.status == "pending" and bool(failures)
        if failures:
            retry_ms = self._retry_ms(failures) if rejected or not undelivered else self._outage_ms(failures)
            self.hold_until[outbox_id] = now + retry_ms * 1000
        actions: list[Action] = []
        if acked - have:
            actions.append(Mark(outbox_id, busy.event_id, tuple(sorted(acked | have))))
        elif undelivered and verdict:  # only every relay's verdict consumes one of the row's durable attempts
            actions.append(RecordFailure(outbox_id, self._error(failures), self._retry_ms(failures)))
        elif undelivered and rejected:  # some relay gave no verdict: held, no attempt (ADR-0033's refinement)
            self._now = max(self._now, now)  # (such a row is held for good while that relay stays silent)
            self._held_log.log("held", logging.WARNING, f"{outbox_id} not delivered, no attempt counted (a relay "
                               f"gave no verdict), retry in {retry_ms / 1000:.1f}s: {self._error(failures)}")
        if actions:
            busy.event_id = ""  # now a call is in flight
        else:
            del self.busy[outbox_id]
        return actions

    def call_done(self, outbox_id: str, now: int, error_code: str | None = None) -> None:
        """The Mark/RecordFailure call for ``outbox_id`` finished: ``error_code`` None on success,
        the reducer's error code, or ``"call_failed"`` when it never completed."""
        busy = self.busy.pop(outbox_id, None)
        if busy is None:
            raise NostrUsageError(f"no call for {outbox_id!r} is in flight")
        if error_code is None:
            row = self.rows.get(outbox_id)
            if row is not None and _version(row) == busy.version:
                self.stale[outbox_id] = busy.version  # the update has not arrived yet
        elif error_code in ("bridge_event_conflict", "bridge_event_missing", "missing_scope"):
            self.skipped[outbox_id] = f"the server refused it: {error_code}"
            log.error("bridge: %s is skipped: the server answered %s", outbox_id, error_code)
        else:
            self.hold_until[outbox_id] = now + self.policy.call_retry_ms * 1000

    # --- queries -----------------------------------------------------------------------------------

    def missing(self, row: BridgeOutbox) -> tuple[str, ...]:
        """The configured relays still to get ``row`` (not acknowledged, not given up)."""
        return tuple(r for r in self.relays if r not in row.relays_acked and (row.outbox_id, r) not in self.given_up)

    def backlog(self) -> int:
        """Rows the bridge still has to deliver somewhere (pending, or sent with a relay missing)."""
        return sum(1 for row in self.rows.values() if self._open(row))

    def dead_letters(self) -> int:
        return sum(1 for row in self.rows.values() if row.status == "failed")

    def next_due(self) -> int | None:
        """The earliest µs time at which :meth:`poll` may act on an idle row (None: nothing waits)."""
        times = [max(row.next_attempt_at if row.status == "pending" else 0, self.hold_until.get(row.outbox_id, 0))
                 for row in self.rows.values()
                 if self._open(row) and row.outbox_id not in self.busy and row.outbox_id not in self.stale]
        return min(times, default=None)

    # --- internals ---------------------------------------------------------------------------------

    def _open(self, row: BridgeOutbox) -> bool:
        if row.outbox_id in self.skipped:
            return False
        if row.status == "pending":
            return True
        return row.status == "sent" and bool(self.missing(row))

    def _event(self, row: BridgeOutbox) -> Event | Unpublishable:
        version = (row.nostr_kind, row.tags, row.content, row.created_at)
        cached = self._events.get(row.outbox_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            result: Event | Unpublishable = build_event(row, self.key)
        except Unpublishable as exc:
            result = exc
        self._events[row.outbox_id] = (version, result)
        return result

    def _decide(self, row: BridgeOutbox, now: int) -> Action | None:
        oid = row.outbox_id
        if oid in self.busy or oid in self.stale or not self._open(row) or self.hold_until.get(oid, 0) > now:
            return None
        if row.status == "pending" and row.next_attempt_at > now:
            return None
        if row.nostr_kind not in self.policy.kinds:
            if row.status == "pending":
                return RecordFailure(oid, f"policy: this bridge does not mirror kind {row.nostr_kind}",
                                     self.policy.reject_retry_ms)
            self.skipped[oid] = f"kind {row.nostr_kind} is not mirrored by this bridge"
            return None
        event = self._event(row)
        if isinstance(event, Unpublishable):
            if row.status == "pending":
                return RecordFailure(oid, f"unpublishable: {event}", self.policy.reject_retry_ms)
            self.skipped[oid] = f"unpublishable: {event}"
            return None
        if row.status == "sent" and row.nostr_event_id != event.id:
            self.skipped[oid] = (f"sent as event {row.nostr_event_id}, this key signs {event.id} "
                                 "(the key changed?)")
            log.warning("bridge: %s: %s", oid, self.skipped[oid])
            return None
        return Publish(oid, event, self.missing(row))

    def _retry_ms(self, failures: Sequence[RelayOutcome]) -> int:
        wanted = [self.policy.reject_retry_ms if o.status is OutcomeStatus.REJECTED
                  else int((o.retry_after or 0.0) * 1000) for o in failures]
        return max(self.policy.min_retry_ms, min(self.policy.max_retry_ms, max(wanted, default=0)))

    def _outage_ms(self, failures: Sequence[RelayOutcome]) -> int:
        """The in-memory hold of a pending row no relay gave a verdict on: until the first relay leaves
        its backoff (the pool's ``retry_after``, at most its ``backoff_cap``); any one relay suffices."""
        soonest = min(math.ceil((o.retry_after or 0.0) * 1000) for o in failures)  # not before it
        return max(self.policy.min_retry_ms, min(self.policy.max_retry_ms, soonest))

    @staticmethod
    def _error(failures: Sequence[RelayOutcome]) -> str:
        parts = [f"{o.relay}: {o.status.value}: {o.reason or 'no answer'}" for o in failures]
        return one_line("; ".join(parts), 1000)
