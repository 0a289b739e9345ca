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
``unexpected_rebootstrap``     a confirmed-read subscriber was told to rebootstrap (ADR-0003 says it
                               continues, ADR-0010 also across several unclean restarts: the stream row
                               carries the continuation chain).  Until ADR-0010 this was a *finding*
                               (a consumer asleep through two or more restarts rebootstrapped,
                               docs/reliability.md); now it is an anomaly like any other
``no_progress``                after the heal, a fresh write was not acknowledged or not seen by everyone
``token_accepted``             an expired token was accepted
``presence_mismatch``          a session's presence row is missing or shows a status never acknowledged
``client_error``               a client failed in a way the workload does not expect (the message says how)

A subscriber's applied log may hold :data:`REBOOTSTRAP` markers (written in the transaction that
drops its state for a stream): the events after one are a rehydration, checked afresh from the floor.

Everything here is plain data in, plain data out (no I/O), so tests feed it planted histories.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

REBOOTSTRAP = -1  # the seq of an applied-log marker: the client dropped the stream's state here
# codes reported apart from the anomalies, not failing a run: none at present (the one there was,
# unexpected_rebootstrap after several unclean restarts, is fixed by the continuation chain, ADR-0010)
FINDINGS: frozenset[str] = frozenset()


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
class FinalState:
    """What the server holds after the heal (read by a fresh, direct client)."""

    events: dict[str, list[tuple[int, str, str]]]  # stream -> [(seq, key, payload hash)]
    floors: dict[str, int]  # stream -> floor_seq
    heads: dict[str, int]  # stream -> head_seq
    assignments: dict[str, str]  # request_id -> request_hash
    outbox: dict[str, str]  # outbox_id -> content_hash
    presence: dict[str, str]  # session_id -> status


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
    rebootstraps: list[tuple[str, str]] = field(default_factory=list)  # (subscriber, stream)
    presence_acked: dict[str, set[str]] = field(default_factory=dict)  # session -> statuses acknowledged
    progress: list[tuple[str, bool]] = field(default_factory=list)  # (what, resumed?)
    expired_tokens: list[bool] = field(default_factory=list)  # refused?
    client_errors: list[str] = field(default_factory=list)


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
        by_seq[stream] = {seq: (key, hsh) for seq, key, hsh in rows}
        key_count.update((stream, key) for _, key, _ in rows)
        hash_count.update((stream, hsh) for _, _, hsh in rows)
    for (stream, key), n in sorted(key_count.items()):
        if n > 1:
            add(Anomaly("duplicate_write", f"{stream}: key {key} appears {n} times"))
    for (stream, hsh), n in sorted(hash_count.items()):
        if n > 1:
            add(Anomaly("duplicate_write", f"{stream}: one write (content {hsh[:20]}...) appears {n} times"))
    # acknowledged writes
    for w in h.writes:
        if w.status != "ok":
            continue
        if w.kind == "append":
            found = [(seq, hsh) for seq, (key, hsh) in by_seq.get(w.stream, {}).items() if key == w.key]
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
        if by_seq.get(a.stream, {}).get(a.seq) != (a.key, a.content_hash):
            add(Anomaly("confirmed_read_of_lost_write",
                        f"{a.client}: applied {a.stream} seq {a.seq} = {a.key}, final log has "
                        f"{by_seq.get(a.stream, {}).get(a.seq)}"))
    for client, streams in sorted(h.views.items()):
        for stream in sorted(final.heads):
            watermark, view = streams.get(stream, (0, {}))
            expected = {seq: kh for seq, kh in by_seq.get(stream, {}).items() if seq <= watermark}
            if watermark != final.heads[stream]:
                add(Anomaly("view_mismatch", f"{client}: {stream} watermark {watermark}, head "
                                             f"{final.heads[stream]} after the heal"))
            if view != expected:
                missing = sorted(set(expected) - set(view))
                extra = sorted(set(view) - set(expected))
                differ = sorted(s for s in set(view) & set(expected) if view[s] != expected[s])
                add(Anomaly("view_mismatch", f"{client}: {stream} at watermark {watermark}: missing {_span(missing)}, "
                                             f"extra {_span(extra)}, different {_span(differ)}"))
    for client, stream in h.rebootstraps:
        add(Anomaly("unexpected_rebootstrap", f"{client}: told to rebootstrap {stream}"))
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
    return out


def _span(seqs: list[int]) -> str:
    if not seqs:
        return "[]"
    if len(seqs) > 6:
        return f"[{seqs[0]}, {seqs[1]}, {seqs[2]} ... {seqs[-1]}] ({len(seqs)})"
    return str(seqs)
