"""Server policy: the knobs a deployment sets, as one frozen value.

Stream classes are chosen by the longest matching stream-id prefix; each fixes the payload size
limit, retention (count and age) and the replay budget written into ``sync_stream``.

Retention of the other tables (ADR-0003 decision 8), applied by the compaction system transaction:
an offline presence row goes ``retain_offline_presence_us`` after its ``last_seen`` (default 1 day),
a terminal assignment ``retain_terminal_assignment_us`` after its ``updated_at`` (7 days), a sent
outbox row ``retain_sent_outbox_us`` after its ``updated_at`` (7 days), a failed (dead-letter) one
``retain_failed_outbox_us`` after it (30 days).  ``None`` keeps such rows for ever.  A row is
removed once its timestamp is *older* than now minus the window (as events by age).  The window is
also the dedupe horizon of those ids: after it, the id names nothing and can be used again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024

# At most this many epochs (the last hop plus MAX_CONTINUATION_HOPS - 1 earlier ones) a stream's current
# epoch names as continued after unclean restarts; a client further behind rebootstraps (ADR-0010,
# docs/protocol.md "Limits").
MAX_CONTINUATION_HOPS = 16


@dataclass(frozen=True, slots=True)
class StreamClass:
    name: str
    max_payload_bytes: int = 256 * 1024
    retain_count: int | None = None  # keep at most this many newest events
    retain_age_us: int | None = None  # drop events committed longer ago than this
    replay_budget: int = 20000  # head - W above this is `replay_budget_exceeded`


# The C0 controls NIP-01 writes verbatim but JSON encoders escape (in two spellings): an event holding
# one has no id every relay agrees on (docs/bridge.md, ADR-0005), so the outbox refuses them.
NOSTR_NONPORTABLE_CONTROLS: frozenset[str] = frozenset(chr(c) for c in range(0x20)) - frozenset("\n\r\t\b\f")


@dataclass(frozen=True, slots=True)
class Policy:
    classes: tuple[tuple[str, StreamClass], ...] = ()  # (stream id prefix, class)
    default_class: StreamClass = field(default_factory=lambda: StreamClass("default"))
    presence_min_ttl_ms: int = 1_000
    presence_max_ttl_ms: int = 300_000
    bridge_kinds: frozenset[int] = frozenset({30078, 31990})  # NIP-89 provider ads, receipt pointers (DESIGN §6)
    bridge_max_attempts: int = 5
    bridge_max_retry_after_ms: int = 86_400_000
    max_error_text: int = 1024
    retain_offline_presence_us: int | None = 86_400 * 10**6  # 1 day after last_seen
    retain_terminal_assignment_us: int | None = 7 * 86_400 * 10**6  # completed/failed/cancelled, after updated_at
    retain_sent_outbox_us: int | None = 7 * 86_400 * 10**6  # after updated_at
    retain_failed_outbox_us: int | None = 30 * 86_400 * 10**6  # dead letters, after updated_at

    def class_for(self, stream_id: str) -> StreamClass:
        best: tuple[int, StreamClass] | None = None
        for prefix, cls in self.classes:
            if stream_id.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), cls)
        return best[1] if best else self.default_class


def expired(ts: int, now: int, window: int | None) -> bool:
    """A row stamped ``ts`` is past a retention window at ``now`` (never when the window is None)."""
    return window is not None and ts < now - window


DEFAULT_POLICY = Policy()
