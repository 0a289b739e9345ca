"""Server policy: the knobs a deployment sets, as one frozen value.

Stream classes are chosen by the longest matching stream-id prefix; each fixes the payload size
limit, retention (count and age) and the replay budget written into ``sync_stream``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamClass:
    name: str
    max_payload_bytes: int = 256 * 1024
    retain_count: int | None = None  # keep at most this many newest events
    retain_age_us: int | None = None  # drop events committed longer ago than this
    replay_budget: int = 20000  # head - W above this is `replay_budget_exceeded`


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

    def class_for(self, stream_id: str) -> StreamClass:
        best: tuple[int, StreamClass] | None = None
        for prefix, cls in self.classes:
            if stream_id.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), cls)
        return best[1] if best else self.default_class


DEFAULT_POLICY = Policy()
