"""``syncref bench``: syncref measured against Redis and the transport ceiling, in the same run.

Nothing here asserts a timing; it measures, and every figure is printed beside the same figure
of the peers measured minutes apart on the same machine, as a ratio (syncref / peer).  Modules:
:mod:`.main` (the command), :mod:`.workloads` (what runs), :mod:`.client` (the load-generating
processes), :mod:`.proto` (their lean WebSocket and RESP clients), :mod:`.peers` (starting the
servers), :mod:`.echo` (the ceiling), :mod:`.hist` (histograms, medians), :mod:`.report`.

**Processes.**  The server under test runs in its own process (``syncref serve`` with defaults
on a fresh data directory; ``redis-server --appendonly yes --appendfsync always``; the echo
server).  Clients run in other processes (two by default, a third for the fanout writer), each
an asyncio loop with many connections; each reports its CPU time over the measured phase, and a
client process above 90 % of a core is flagged (``client_bound``): its figures are then a floor
for the server, not a measurement of it.  Runs repeat (3 by default); the peers take turns
within a repeat.

**What each side does, workload by workload.**

* ``append_closed`` / ``append_pipelined``: 8 client connections, each appending to its own
  stream, 150-byte payloads (canonical JSON ``{"i":n,"pad":"xx.."}``).  *syncref*: v2 BSATN
  WebSocket, ``compression=None``, confirmed reads (the default), ``CallReducer
  append_sync_event(stream, key, payload, none, none)`` with a unique idempotency key; the call
  is done when its ``ReducerResult`` arrives -- which, with confirmed reads, is after the
  transaction's SQLite group commit has returned (fsync).  *Redis*: ``XADD stream * k <key> p
  <payload>`` (no MAXLEN, so nothing is trimmed) on a RESP connection; with ``appendfsync always``
  the reply comes after the AOF write and fsync.  *echo*: a binary message of the same size as
  syncref's ``CallReducer`` frame, echoed back.  Closed loop: one call in flight per client.
  Pipelined: a window of 32 calls sent in one write, the next window when all 32 are answered.
  Figures: calls/s over the measured phase (after a warm-up), latency per call (send to answer).
  What syncref does and Redis does not: canonicalize and hash the payload, dedupe on the key,
  check scope and stream grant, keep a hash-chained commit log.
* ``fanout_N`` (N = 10, 100, 500): one writer appends to one stream at 500 events/s, open loop
  (event k is sent at t0 + k/500 whatever the answers do); N subscribers of that stream.
  *syncref*: each subscriber subscribes ``SELECT * FROM sync_event WHERE stream_id = S`` (v2,
  ``compression=None``, confirmed reads) and receives one ``TransactionUpdate`` per event.
  *Redis*: the writer sends ``XADD S * k f-<k> p <payload>`` (the key and payload bytes syncref's
  writer sends, as the append clients do); each subscriber is its own connection looping
  ``XREAD BLOCK 0 STREAMS S <last id>`` (one consumer per subscriber; a lagging one gets several
  entries per reply).  *echo*: the writer's payload alone is sent to all N connections with
  ``websockets.broadcast``.  What a delivery carries differs by design: syncref's is the whole
  ``sync_event`` row in a ``TransactionUpdate`` (stream, epoch, seq, key, payload hash, payload,
  producer, ``committed_at``, offset: 368 B for a 150 B payload, v2), Redis's the entry id and
  both fields (245 B of RESP), echo's the payload.  The payload
  carries the writer's send time (``"t"``, µs since the epoch); latency is a subscriber's
  receipt minus that (same machine, same clock), so it includes the commit.  For syncref the
  row's ``committed_at`` also gives commit->delivery (1 event in 8; a sampled delivery that never
  arrived counts as never, as in p50/p99).  After the writer stops the
  subscribers get a grace period to receive everything.  Figures: distinct deliveries/s, p50/p99 (over
  every expected delivery, one that never arrived counted as never; the CDF likewise),
  delivered fraction (distinct events: a duplicate is not counted twice), growth (median latency
  of the last fifth of the run over the first fifth), kept up (every event delivered exactly once
  to every subscriber and growth < 2).
* ``fanout_100_v3`` / ``fanout_500_v3``: ``fanout_N`` with syncref's subscribers negotiating
  ``v3.bsatn.spacetimedb`` (what SpacetimeDB's SDKs offer first); the writer stays on v2 and the
  Redis and echo clients are those of ``fanout_N``, so the v2 workloads' figures stay comparable
  with earlier runs.  A v3 frame holds one or more ``TransactionUpdate`` messages (a subscriber
  that lags gets several per frame, as a lagging Redis consumer gets several entries per
  ``XREAD`` reply); the client marks every event in it with one receipt time, one regex pass over
  the frame and the histograms filled a frame at a time, so its cost per event falls as frames
  grow (``Subscriber.on_syncref_v3``; the v2 and Redis paths are unchanged).  Diagnostics of
  every fanout run: server and subscriber CPU per delivery (whole run, grace included), events
  per frame as the subscribers counted them, and for syncref messages per frame and frames per
  transport write from its counters.
* ``replay_full`` / ``replay_gap``: a stream preloaded with 20,000 events (the default replay
  budget); one client replays it from watermark 0, or the last 100 events.  *syncref*: the resume
  query set of DESIGN §3 (``sync_stream`` row + ``sync_event ... AND epoch = 1 AND seq > W``),
  timed from Subscribe to ``SubscribeApplied`` decoded (the frame parsed, its row list split
  into its rows, which checks every offset) and the rows counted from the list, not decoded
  further; then Unsubscribe.  *Redis*: ``XRANGE S (W-1 +`` (the preload used explicit ids
  ``n-1``), timed to the parsed reply (hiredis builds every entry: id and field strings) and
  its entries counted.  Both clients parse their answer down to each row or entry and no
  further; the syncref client splitting the row list a second time to count (as it did before
  ADR-0020) was work Redis's client did not do.  No compression: the bench's syncref clients ask
  for ``compression=None`` (a client that names no compression gets Brotli, upstream's default:
  ~15-35 ms more per full replay on the bench machine), Redis has none.  Each replay's time is in
  the diagnostics in order (``times_ms``): the first one of a bench meets the server's chunk
  cache empty (ADR-0020).  A run times ``replay_repeats`` full replays (5) but ``gap_repeats`` gap
  replays (200), the figure the median of the run's replays: a gap replay takes ~0.1-0.3 ms, and
  with five the median was one of the peers' first, warming replays (Redis's fell from ~0.4 to
  ~0.07 ms over its first five), not their steady time (ADR-0006 amendment).
* ``reconnect_storm``: N clients (200) start at the same instant; each is *live* when it has
  connected and resumed a 50-event gap (syncref: upgrade + ``InitialConnection`` + resume
  ``SubscribeApplied``; Redis: connect + ``XRANGE``; echo: upgrade + one round trip).  Figure:
  time until the last one is live (none, with the reason, when one never got live: the last live
  client's time is not the time until all are), and the median over every client (a failed one
  counted last), and the failures.
* ``memory``: 100,000 events over 10 streams, after each stream already exists.  Headline
  (``bytes_per_event``, as issue 10 set it): *syncref*: growth of the server process's RSS;
  *Redis*: growth of ``INFO memory`` ``used_memory`` (its allocator's count).  Beside it,
  ``rss_per_event``: both processes' RSS growth read alike from ``/proc/<pid>/statm`` after the
  same settle (0.2 s quick, 1 s full).  ``INFO``'s ``used_memory_rss`` is Redis's cron sample
  (every 100 ms): read at once after the preload, as the bench did before the ninth session, it
  lagged the burst (15.6 MB against 18.8 MB of used_memory); it is now a diagnostic only.  One run
  (the figure barely moves between runs).
* ``restart``: the memory workload's data, restarted.  *syncref*: ``syncref serve`` until it
  prints its listening line, minus the same on an empty data directory, per record;
  ``verify-log`` likewise.  *Redis*: start until ``PING`` answers ``PONG`` (AOF loaded), minus
  an empty start, per record.

**Heap.**  Every client process, whatever peer it drives, reuses freed C heap
(:func:`adapters.heap.keep_freed_heap`, 32 MiB, ADR-0020), so a client copying a multi-megabyte
frame does not pay page faults the other peer's client would not.  The syncref server runs with
glibc's defaults (what users get) unless ``SYNCREF_HEAP_KEEP_MIB`` is set in the bench's
environment (which the clients then follow too).

``--profile DIR`` attaches py-spy to the syncref server during the first run of each
append/fanout/replay workload (``--nonblocking``, 200 Hz, threads shown) and writes an SVG flame graph
and the folded stacks; ``docs/performance.md`` turns the folded stacks into the per-append cost
budget.
"""
