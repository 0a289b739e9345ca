"""Client histories and the checker: Jepsen-style anomaly checks over plain data.

The runner records what every client *did* and *saw*; after the heal it reads what the server
holds.  :func:`check` compares them and returns every :class:`Anomaly` it finds -- it never stops
at the first, so a report shows the whole damage.  The checks, by code:

``lost_write``                 an acknowledged write (append, assignment, outbox) is missing from the
                               final state, or holds other content than was acknowledged
``acked_seq_changed``          an acknowledged append sits at another seq than its acknowledgement said
``duplicate_write``            one logical write appears more than once (its key, or its content: every
                               write of the workload has distinct content)
``non_contiguous``             a stream's final seqs are not exactly ``floor..head``
``duplicate_apply``            a subscriber applied the same (stream, seq) twice (across restarts too)
``skipped_event``              a subscriber went from seq n to a seq > n + 1
``non_monotonic_read``         a subscriber went from seq n to a seq < n
``confirmed_read_of_lost_write``  a subscriber applied an event that the final log does not hold
                               (another key or content at that seq, or no such seq)
``view_mismatch``              a subscriber's materialized view differs from the server's rows at the
                               same watermark (or the watermark is not the head after the heal)
``unexpected_rebootstrap``     a confirmed-read subscriber was told to rebootstrap and nothing the run did
                               explains it (ADR-0003 says it continues after crashes, ADR-0010 also across
                               several unclean restarts).  Explained, and counted as *expected*: an
                               ``epoch_changed`` rebootstrap across a recorded epoch reset of that stream
                               (``local_epoch <= old epoch < new epoch <= epoch``), and a
                               ``retention_floor_breach`` on a small-retention stream whose floor is within
                               what the policy allows (``floor <= head - retain_count + 1``), with or
                               without an ``epoch_changed`` of an unclean restart beside it
``missing_rebootstrap``        a subscriber did not rebootstrap a stream after an epoch reset of it
``reset_not_applied``          the admin's answer to ``reset_stream_epoch`` shows no new epoch, or no reset
``retention_overreach``        a stream's floor is above what its resets and its retention policy allow
                               (the events below it are exempt from ``lost_write`` only up to that bound)
``stale_not_signalled``        a subscriber paused until compaction passed its watermark was not answered
                               ``stale_cursor`` (``retention_floor_breach``) by the server on resume
``bridge_*``                   the Nostr bridge: ``bridge_missing`` (an enqueued event is not on a relay,
                               or its row is not ``sent`` to every relay after the heal),
                               ``bridge_duplicate`` (a relay holds an event twice, or one outbox row is
                               on the relays under two ids: signed twice), ``bridge_wrong_id`` (a relay's
                               copy has another id than the row's ``nostr_event_id``), ``bridge_unknown``
                               (a relay holds an event of ours no outbox row explains),
                               ``bridge_dead_letter`` (a row failed before ``bridge_max_attempts`` attempts,
                               or its last error does not name every relay rejecting it: the policy
                               dead-letters only after that many attempts, each meaning every relay
                               refused the event -- an outage, or a rejection while another relay gives
                               no verdict, consumes no attempt, ADR-0033 and its refinement).  A dead
                               letter *by the policy* (every relay rejected it that many times) is the finding
                               ``bridge_dead_letter_by_policy``, and the relays are not expected to hold it
``no_progress``                after the heal, a fresh write was not acknowledged or not seen by everyone
``token_accepted``             an expired token was accepted
``presence_mismatch``          a session's presence row is missing or shows a status never acknowledged
``client_error``               a client failed in a way the workload does not expect (the message says how)

A subscriber's applied log may hold :data:`REBOOTSTRAP` markers (written in the transaction that
drops its state for a stream): the events after one are a rehydration, checked afresh from the floor.

Events removed *by design* -- by an epoch reset (everything up to the head at the reset) or by
retention on a small-retention stream (everything below the floor, as long as the floor is within
what the policy allows) -- are not in the final state.  An acknowledged append below the final floor
is then exempt from ``lost_write``; an applied event below the floor is checked against what its
writer sent under that key (every key has one content) instead of the final log.  A subscriber's view
must equal the server's rows from the floor to its watermark, and hold nothing from before the last
reset of the stream (it rebootstrapped); below the floor it may keep what it applied.

Everything here is plain data in, plain data out (no I/O), so tests feed it planted histories.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

REBOOTSTRAP = -1  # the seq of an applied-log marker: the client dropped the stream's state here
# codes reported apart from the anomalies, not failing a run.  The one there was (unexpected_rebootstrap
# after several unclean restarts) is fixed by the continuation chain, ADR-0010.  beyond_dedupe_horizon:
# a write appended twice because its first copy had been compacted away before a retry (or a replayed
# frame) arrived -- the documented dedupe horizon (ADR-0001: retained events), not a bug.
FINDINGS: frozenset[str] = frozenset({"beyond_dedupe_horizon", "bridge_dead_letter_by_policy"})


@dataclass(frozen=True, slots=True)
class Write:
    """One logical write as its client saw it: ``ok`` (acknowledged), ``failed`` (refused with a
    reducer error, nothing written) or ``unknown`` (never answered: it may or may not have run)."""

    client: str
    kind: str  # append, open, enqueue
    key: str  # idempotency key / request_id / outbox_id
    content_hash: str
    status: str
    stream: str = ""
    seq: int | None = None  # the acknowledged seq (appends)
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Applied:
    """One event a subscriber applied, in the order it applied them (persisted with the apply)."""

    client: str
    stream: str
    seq: int
    key: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class Reset:
    """An admin's ``reset_stream_epoch``, as its answer (the caller's own update of the stream row) showed it."""

    stream: str
    old_epoch: int
    head: int  # the head at the reset: every event up to it is gone by design
    new_epoch: int


@dataclass(frozen=True, slots=True)
class Rebootstrap:
    """One rebootstrap callback: the :class:`adapters.sdk.Stale` the subscriber was handed."""

    client: str
    stream: str
    reasons: tuple[str, ...]
    epoch: int
    floor: int
    head: int
    local_epoch: int
    local_watermark: int
    from_server: bool


@dataclass(frozen=True, slots=True)
class Overtaken:
    """A ``compaction`` nemesis: ``client`` was paused at ``watermark`` until ``stream``'s floor passed it."""

    client: str
    stream: str
    watermark: int
    floor: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    status: str
    attempts: int
    event_id: str | None
    relays_acked: tuple[str, ...]
    content: str
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class BridgeFinal:
    """The bridge after the heal: the outbox rows and what each relay holds from our key (id, content)."""

    relays: tuple[str, ...]
    rows: dict[str, OutboxRow]  # outbox_id -> row
    held: dict[str, list[tuple[str, str]]]  # relay -> [(event id, content)]
    max_attempts: int


@dataclass(frozen=True, slots=True)
class FinalState:
    """What the server holds after the heal (read by a fresh, direct client)."""

    events: dict[str, list[tuple[int, str, str]]]  # stream -> [(seq, key, payload hash)]
    floors: dict[str, int]  # stream -> floor_seq
    heads: dict[str, int]  # stream -> head_seq
    assignments: dict[str, str]  # request_id -> request_hash
    outbox: dict[str, str]  # outbox_id -> content_hash
    presence: dict[str, str]  # session_id -> status
    bridge: BridgeFinal | None = None  # None: the run had no bridge


@dataclass(frozen=True, slots=True)
class Anomaly:
    code: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass
class History:
    writes: list[Write] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    # subscriber -> stream -> (watermark, {seq: (key, hash)}): the materialized view after the heal
    views: dict[str, dict[str, tuple[int, dict[int, tuple[str, str]]]]] = field(default_factory=dict)
    rebootstraps: list[Rebootstrap] = field(default_factory=list)
    resets: list[Reset] = field(default_factory=list)
    overtaken: list[Overtaken] = field(default_factory=list)
    retention: dict[str, int] = field(default_factory=dict)  # stream -> retain_count (small-retention streams)
    presence_acked: dict[str, set[str]] = field(default_factory=dict)  # session -> statuses acknowledged
    progress: list[tuple[str, bool]] = field(default_factory=list)  # (what, resumed?)
    expired_tokens: list[bool] = field(default_factory=list)  # refused?
    client_errors: list[str] = field(default_factory=list)


def allowed_floor(h: History, final: FinalState, stream: str) -> int:
    """The highest floor ``stream`` may have: past its last reset's head, and for a small-retention
    stream past all but its ``retain_count`` newest events."""
    bound = max([1, *(r.head + 1 for r in h.resets if r.stream == stream)])
    keep = h.retention.get(stream)
    if keep is not None:
        bound = max(bound, final.heads.get(stream, 0) - keep + 1)
    return bound


def check(h: History, final: FinalState) -> list[Anomaly]:
    out: list[Anomaly] = []
    add = out.append
    by_seq: dict[str, dict[int, tuple[str, str]]] = {}
    key_count: Counter[tuple[str, str]] = Counter()
    hash_count: Counter[tuple[str, str]] = Counter()  # every logical write has its own content
    for stream, rows in final.events.items():
        seqs = sorted(seq for seq, _, _ in rows)
        floor, head = final.floors.get(stream, 1), final.heads.get(stream, 0)
        if seqs != list(range(floor, head + 1)):
            add(Anomaly("non_contiguous", f"{stream}: seqs {_span(seqs)} but floor {floor} head {head}"))
        if floor > allowed_floor(h, final, stream):
            add(Anomaly("retention_overreach", f"{stream}: floor {floor}, but resets and retention allow at most "
                                               f"{allowed_floor(h, final, stream)} (head {head})"))
        by_seq[stream] = {seq: (key, hsh) for seq, key, hsh in rows}
        key_count.update((stream, key) for _, key, _ in rows)
        hash_count.update((stream, hsh) for _, _, hsh in rows)
    for (stream, key), n in sorted(key_count.items()):
        if n > 1:
            add(Anomaly("duplicate_write", f"{stream}: key {key} appears {n} times"))
    for (stream, hsh), n in sorted(hash_count.items()):
        if n > 1:
            add(Anomaly("duplicate_write", f"{stream}: one write (content {hsh[:20]}...) appears {n} times"))
    # what each writer sent under each key (one content per key), and the acknowledged seqs
    sent: dict[tuple[str, str], str] = {(w.stream, w.key): w.content_hash for w in h.writes if w.kind == "append"}
    acked_at: dict[tuple[str, int], str] = {(w.stream, w.seq): w.key for w in h.writes
                                             if w.kind == "append" and w.status == "ok" and w.seq is not None}
    # acknowledged writes
    for w in h.writes:
        if w.status != "ok":
            continue
        if w.kind == "append":
            floor = min(final.floors.get(w.stream, 1), allowed_floor(h, final, w.stream))
            found = [(seq, hsh) for seq, (key, hsh) in by_seq.get(w.stream, {}).items() if key == w.key]
            if w.seq is not None and w.seq < floor:  # removed by design (a reset, or retention)
                if found:
                    add(Anomaly("beyond_dedupe_horizon", f"{w.client}: append {w.stream}/{w.key} acknowledged at "
                                                         f"seq {w.seq} (since removed), again at seq {found[0][0]}"))
                continue
            if not found:
                add(Anomaly("lost_write", f"{w.client}: append {w.stream}/{w.key} acknowledged at seq {w.seq}, "
                                          "not in the final log"))
                continue
            seq, hsh = found[0]
            if hsh != w.content_hash:
                add(Anomaly("lost_write", f"{w.client}: append {w.stream}/{w.key} holds {hsh}, "
                                          f"acknowledged {w.content_hash}"))
            if w.seq is not None and seq != w.seq:
                add(Anomaly("acked_seq_changed", f"{w.client}: append {w.stream}/{w.key} acknowledged at seq "
                                                 f"{w.seq}, final seq {seq}"))
        else:
            table = final.assignments if w.kind == "open" else final.outbox
            have = table.get(w.key)
            if have is None:
                add(Anomaly("lost_write", f"{w.client}: {w.kind} {w.key} acknowledged, not in the final state"))
            elif have != w.content_hash:
                add(Anomaly("lost_write", f"{w.client}: {w.kind} {w.key} holds {have}, acknowledged {w.content_hash}"))
    # subscriber histories
    last: dict[tuple[str, str], int] = {}
    seen: set[tuple[str, str, int]] = set()
    for a in h.applied:
        if a.seq == REBOOTSTRAP:
            last.pop((a.client, a.stream), None)
            seen = {x for x in seen if x[:2] != (a.client, a.stream)}
            continue
        prev = last.get((a.client, a.stream))
        if prev is not None and a.seq < prev:
            add(Anomaly("non_monotonic_read", f"{a.client}: {a.stream} seq {a.seq} after {prev}"))
        elif (a.client, a.stream, a.seq) in seen:
            add(Anomaly("duplicate_apply", f"{a.client}: {a.stream} seq {a.seq} applied again"))
        elif prev is not None and a.seq > prev + 1:
            add(Anomaly("skipped_event", f"{a.client}: {a.stream} seq {prev} then {a.seq}"))
        elif prev is None and a.seq > final.floors.get(a.stream, 1):
            add(Anomaly("skipped_event", f"{a.client}: {a.stream} first applied seq {a.seq}, floor "
                                         f"{final.floors.get(a.stream, 1)}"))
        seen.add((a.client, a.stream, a.seq))
        last[(a.client, a.stream)] = max(a.seq, prev or 0)
        if a.seq >= final.floors.get(a.stream, 1):
            if by_seq.get(a.stream, {}).get(a.seq) != (a.key, a.content_hash):
                add(Anomaly("confirmed_read_of_lost_write",
                            f"{a.client}: applied {a.stream} seq {a.seq} = {a.key}, final log has "
                            f"{by_seq.get(a.stream, {}).get(a.seq)}"))
        elif sent.get((a.stream, a.key)) != a.content_hash or acked_at.get((a.stream, a.seq), a.key) != a.key:
            add(Anomaly("confirmed_read_of_lost_write",
                        f"{a.client}: applied {a.stream} seq {a.seq} = {a.key} (since removed), but that key was "
                        f"sent as {sent.get((a.stream, a.key))} and seq {a.seq} acknowledged to "
                        f"{acked_at.get((a.stream, a.seq))}"))
    for client, streams in sorted(h.views.items()):
        for stream in sorted(final.heads):
            watermark, view = streams.get(stream, (0, {}))
            floor = final.floors.get(stream, 1)
            expected = {seq: kh for seq, kh in by_seq.get(stream, {}).items() if seq <= watermark}
            if watermark != final.heads[stream]:
                add(Anomaly("view_mismatch", f"{client}: {stream} watermark {watermark}, head "
                                             f"{final.heads[stream]} after the heal"))
            upper = {seq: kh for seq, kh in view.items() if seq >= floor}
            if upper != expected:
                missing = sorted(set(expected) - set(upper))
                extra = sorted(set(upper) - set(expected))
                differ = sorted(s for s in set(upper) & set(expected) if upper[s] != expected[s])
                add(Anomaly("view_mismatch", f"{client}: {stream} at watermark {watermark}: missing {_span(missing)}, "
                                             f"extra {_span(extra)}, different {_span(differ)}"))
            reset_head = max([0, *(r.head for r in h.resets if r.stream == stream)])
            stale = sorted(seq for seq in view if seq <= reset_head)
            if stale:
                add(Anomaly("view_mismatch", f"{client}: {stream} still holds {_span(stale)}, removed by the epoch "
                                             f"reset at head {reset_head} (no rebootstrap)"))
            wrong = sorted(seq for seq, (key, hsh) in view.items() if reset_head < seq < floor
                           and (sent.get((stream, key)) != hsh or acked_at.get((stream, seq), key) != key))
            if wrong:
                add(Anomaly("view_mismatch", f"{client}: {stream} below the floor holds {_span(wrong)} that no "
                                             "writer sent there"))
    out.extend(_rebootstraps(h))
    for session, statuses in sorted(h.presence_acked.items()):
        status = final.presence.get(session)
        if status is None:
            add(Anomaly("presence_mismatch", f"{session}: no presence row"))
        elif status != "offline" and status not in statuses:
            add(Anomaly("presence_mismatch", f"{session}: status {status}, acknowledged {sorted(statuses)}"))
    for what, resumed in h.progress:
        if not resumed:
            add(Anomaly("no_progress", what))
    for i, refused in enumerate(h.expired_tokens):
        if not refused:
            add(Anomaly("token_accepted", f"expired token #{i} was accepted"))
    for msg in h.client_errors:
        add(Anomaly("client_error", msg))
    if final.bridge is not None:
        out.extend(_bridge(h, final.bridge))
    return out


def explained(h: History, r: Rebootstrap) -> str | None:
    """Why ``r`` is expected (``epoch_reset`` or ``retention``), or None: unexpected."""
    if "epoch_changed" in r.reasons and any(x.stream == r.stream and r.local_epoch <= x.old_epoch < x.new_epoch
                                            <= r.epoch for x in h.resets):
        return "epoch_reset"
    keep = h.retention.get(r.stream)
    # a retention breach needs a rebootstrap whatever else: an epoch change beside it is an unclean
    # restart's (which alone the consumer would have continued, ADR-0010)
    if ("retention_floor_breach" in r.reasons and set(r.reasons) <= {"epoch_changed", "retention_floor_breach"}
            and keep is not None and r.local_watermark < r.floor - 1
            and r.floor <= max(r.head - keep + 1, 1 + max([0, *(x.head for x in h.resets if x.stream == r.stream)]))):
        return "retention"
    return None


def _rebootstraps(h: History) -> list[Anomaly]:
    out: list[Anomaly] = []
    for r in h.rebootstraps:
        if explained(h, r) is None:
            out.append(Anomaly("unexpected_rebootstrap", f"{r.client}: told to rebootstrap {r.stream} ({r})"))
    subscribers = sorted(h.views)
    for x in h.resets:
        if x.new_epoch <= x.old_epoch:
            out.append(Anomaly("reset_not_applied", f"reset of {x.stream}: epoch {x.old_epoch} -> {x.new_epoch}"))
            continue
        for client in subscribers:
            if not any(r.client == client and r.stream == x.stream and "epoch_changed" in r.reasons
                       and r.local_epoch <= x.old_epoch and r.epoch >= x.new_epoch for r in h.rebootstraps):
                out.append(Anomaly("missing_rebootstrap", f"{client}: no rebootstrap of {x.stream} after its reset "
                                                          f"(epoch {x.old_epoch} -> {x.new_epoch} at head {x.head})"))
    for o in h.overtaken:
        if not any(r.client == o.client and r.stream == o.stream and r.from_server and r.local_watermark == o.watermark
                   and "retention_floor_breach" in r.reasons for r in h.rebootstraps):
            out.append(Anomaly("stale_not_signalled", f"{o.client}: paused at {o.stream} watermark {o.watermark}, "
                                                      f"floor {o.floor}: the resume was not answered stale_cursor "
                                                      "(retention_floor_breach)"))
    return out


def _bridge(h: History, b: BridgeFinal) -> list[Anomaly]:
    out: list[Anomaly] = []
    add = out.append
    enqueued = {w.key for w in h.writes if w.kind == "enqueue" and w.status == "ok"}
    by_policy = {oid for oid, row in b.rows.items() if row.status == "failed" and row.attempts >= b.max_attempts
                 and all(f"{relay}: rejected: " in (row.last_error or "") for relay in b.relays)}
    # only a verdict from every relay consumes an attempt (ADR-0033 and its refinement)
    by_content: dict[str, str] = {row.content: oid for oid, row in b.rows.items()}
    ids_of: dict[str, set[str]] = {}
    for relay in b.relays:
        held = b.held.get(relay, [])
        for eid, n in sorted(Counter(e for e, _ in held).items()):
            if n > 1:
                add(Anomaly("bridge_duplicate", f"{relay} holds event {eid} {n} times"))
        for eid, content in held:
            oid = by_content.get(content)
            if oid is None:
                add(Anomaly("bridge_unknown", f"{relay} holds event {eid} ({content[:60]!r}) no outbox row explains"))
                continue
            ids_of.setdefault(oid, set()).add(eid)
            if b.rows[oid].event_id is not None and b.rows[oid].event_id != eid:
                add(Anomaly("bridge_wrong_id", f"{relay} holds {oid} as {eid}, the row says {b.rows[oid].event_id}"))
        have = {content for _, content in held}
        for oid in sorted(enqueued):
            row = b.rows.get(oid)
            if row is not None and row.content not in have and oid not in by_policy:
                add(Anomaly("bridge_missing", f"{oid} ({row.status}, attempts {row.attempts}) is not on {relay}"))
    for oid, ids in sorted(ids_of.items()):
        if len(ids) > 1:
            add(Anomaly("bridge_duplicate", f"{oid} is on the relays under {len(ids)} ids (signed twice): "
                                            f"{sorted(ids)}"))
    for oid in sorted(enqueued):
        row = b.rows.get(oid)
        if row is None:
            continue  # lost_write reports it
        if oid in by_policy:
            add(Anomaly("bridge_dead_letter_by_policy", f"{oid}: dead letter after {row.attempts} attempts, every "
                                                        f"relay rejecting it: {(row.last_error or '')[:300]}"))
        elif row.status == "failed":
            add(Anomaly("bridge_dead_letter", f"{oid}: dead letter after {row.attempts} attempts (max "
                                              f"{b.max_attempts}), last error {row.last_error!r}"))
        elif row.status != "sent" or set(row.relays_acked) != set(b.relays):
            add(Anomaly("bridge_missing", f"{oid}: {row.status}, relays_acked {list(row.relays_acked)} after the heal"))
    return out


def _span(seqs: list[int]) -> str:
    if not seqs:
        return "[]"
    if len(seqs) > 6:
        return f"[{seqs[0]}, {seqs[1]}, {seqs[2]} ... {seqs[-1]}] ({len(seqs)})"
    return str(seqs)
