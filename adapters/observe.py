"""Delivery and durability metrics for ``GET /metrics`` that cost the hot path next to nothing.

``prometheus_client``'s ``Histogram.observe`` takes a lock and walks every bucket (a few µs); a
fanout to 100 subscribers at 500 events/s observes 50,000 times a second.  :class:`FastHistogram`
is a bisect into fixed bounds on the event-loop thread, read by the registry at scrape time.
Everything that is a *state* rather than an event -- how far each subscriber is behind, the
durability lag, the outbox backlog -- is computed when ``/metrics`` is scraped
(:class:`StateCollector`), never maintained per message.

What each metric means (docs/operations.md, "Metrics"):

* ``syncref_fanout_latency_seconds`` (histogram): from the moment a transaction committed (the
  I/O layer saw the engine's committed offset move) to the moment a message derived from it
  was handed to a subscriber's socket -- confirmed reads included, so it contains the wait for
  durability; a frame that waited for its compression is observed when it is written;
* ``syncref_subscriber_lag_offsets{conn}``: per connection, the committed offset minus the
  offset of the state it has been brought up to (0 when nothing is queued for it; an update taken
  off the queue whose frame is still being compressed is not delivered yet);
  ``syncref_subscriber_lag_max_offsets`` the largest;
* ``syncref_replay_gap_events`` (histogram): for each accepted resume query, how many events it
  replays (head seq - the watermark), observed when its ``Subscribe`` is accepted;
* ``syncref_group_commit_batch_records`` (histogram): records per COMMIT of the writer;
* ``syncref_durability_lag_offsets``: committed minus durable offset;
* ``syncref_wal_checkpoints_total``, ``syncref_wal_checkpoint_errors_total``: the WAL checkpoints the
  commit-log writer ran, and how many failed;
* ``syncref_head_marks_total``, ``syncref_head_mark_errors_total``: head marks (``DIR/syncref.head``,
  ADR-0039) written, and writes that failed; ``syncref_head_mark_offset``: the offset the mark
  written last holds (0: none yet since the start) -- the durable offset minus it is how far the
  mark's check lags.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNT_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class FastHistogram(Collector):
    """A Prometheus histogram observed from one thread (the event loop) without a lock."""

    def __init__(self, name: str, documentation: str, bounds: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(bounds)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """Count ``n`` observations of ``value`` (a fanout observes one value per commit offset,
        weighted by its receivers)."""
        self.counts[bisect_left(self.bounds, value)] += n  # bucket i holds bounds[i-1] < v <= bounds[i]
        self.total += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.total)
        yield family


class CommitClock:
    """When each recent offset committed (a ring of ``size`` slots; older offsets are unknown)."""

    def __init__(self, size: int = 1 << 17) -> None:
        self.size = size
        self.times = array("d", bytes(8 * size))
        self.last = 0  # the newest offset stamped

    def stamp(self, committed: int, now: float) -> None:
        """Offsets up to ``committed`` not stamped yet committed at ``now``."""
        if committed <= self.last:
            return
        start = max(self.last + 1, committed - self.size + 1)
        for offset in range(start, committed + 1):
            self.times[offset % self.size] = now
        self.last = committed

    def at(self, offset: int) -> float | None:
        if offset <= 0 or offset > self.last or offset <= self.last - self.size:
            return None
        return self.times[offset % self.size]


class StateCollector(Collector):
    """Gauges computed when ``/metrics`` is scraped, from ``state()``: a dict with
    ``lags`` (conn id -> offsets behind), ``durability_lag`` and ``outbox_pending``; the counters
    ``wal_checkpoints`` and ``wal_checkpoint_errors`` (the commit-log writer's, ADR-0029), ``head_marks``
    and ``head_mark_errors``, and the gauge ``head_mark_offset`` (the head mark's, ADR-0039)."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self.state()
        lags: dict[int, int] = now["lags"]
        per = GaugeMetricFamily("syncref_subscriber_lag_offsets",
                                "Per connection: committed offset minus the offset it has been brought up to",
                                labels=["conn"])
        for conn, lag in sorted(lags.items()):
            per.add_metric([str(conn)], lag)
        yield per
        yield GaugeMetricFamily("syncref_subscriber_lag_max_offsets", "The largest per-connection lag",
                                value=max(lags.values(), default=0))
        yield GaugeMetricFamily("syncref_durability_lag_offsets", "Committed offset minus durable offset",
                                value=now["durability_lag"])
        yield GaugeMetricFamily("syncref_bridge_outbox_pending", "Bridge outbox rows waiting to be sent (pending)",
                                value=now["outbox_pending"])
        yield CounterMetricFamily("syncref_wal_checkpoints", "WAL checkpoints the commit-log writer ran",
                                  value=now.get("wal_checkpoints", 0))
        yield CounterMetricFamily("syncref_wal_checkpoint_errors", "Of them, failed (the WAL keeps growing until "
                                  "one succeeds)", value=now.get("wal_checkpoint_errors", 0))
        yield CounterMetricFamily("syncref_head_marks", "Head marks (DIR/syncref.head) written",
                                  value=now.get("head_marks", 0))
        yield CounterMetricFamily("syncref_head_mark_errors", "Head mark writes that failed (the older mark stays; "
                                  "retried each second)", value=now.get("head_mark_errors", 0))
        yield GaugeMetricFamily("syncref_head_mark_offset", "The offset the head mark written last holds (0: none "
                                "since the start)", value=now.get("head_mark_offset", 0))


class SendCounts(Collector):
    """Per-message counters of the send path as plain integers (an ``inc`` of a
    ``prometheus_client`` counter takes a lock: a measurable share of a fanout), exposed with
    the names the counters had: ``syncref_server_messages_total{kind}``,
    ``syncref_encode_cache_hits_total``, ``syncref_frames_sent_total``, ``syncref_bytes_sent_total``,
    and ``syncref_socket_writes_total`` (transport writes: a lagging subscriber's frames share one)."""

    def __init__(self) -> None:
        self.messages: dict[str, int] = {}
        self.encode_hits = 0
        self.frames = 0
        self.bytes = 0
        self.writes = 0

    def message(self, kind: str) -> None:
        self.messages[kind] = self.messages.get(kind, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        out = CounterMetricFamily("syncref_server_messages", "Server messages by kind", labels=["kind"])
        for kind, n in sorted(self.messages.items()):
            out.add_metric([kind], n)
        yield out
        yield CounterMetricFamily("syncref_encode_cache_hits", "Messages whose bytes were shared",
                                  value=self.encode_hits)
        yield CounterMetricFamily("syncref_frames_sent", "WebSocket frames sent", value=self.frames)
        yield CounterMetricFamily("syncref_bytes_sent", "Bytes of frames sent", value=self.bytes)
        yield CounterMetricFamily("syncref_socket_writes", "Transport writes of data frames (one per turn: "
                                  "a turn's frames share a write)", value=self.writes)
