"""The column store of retained events (``reference.eventlog.StreamLog``) against a plain model.

The model is what the store replaced: a list of :class:`SyncEvent` rows whose position is
``seq - floor`` and a dict ``idempotency_key -> seq``.  Random operations -- appends (some of
them rows the columns cannot hold: odd hashes, lone surrogates, integers past 63 bits), retention
drops and their rollbacks, rollbacks of appends, epoch relabels, copies -- go to both, and after
every step every read must agree: the events (as a sequence, by index, by slice), ``get``,
``after``, ``seq_of``, ``by_key`` (its items and order), ``len`` and ``floor``.  Long runs cross
the store's rehash and cut thresholds.  Planted bugs in the store's source must make the same
comparison fail (the check can fail).  The wire's writers are held to ``encode_row`` on the same
rows: per row from ``columns()``, and a run at a time from ``runs()`` through a chunk cache that
lives for the whole random run (``_check_runs``, ADR-0020), each with planted bugs.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Any

import pytest
from support.edited import edited_module

import adapters.bsatn as bsatn
import adapters.wire as wire
import reference.eventlog as eventlog
from reference.eventlog import CHUNK, StreamLog
from reference.log import row_values
from spec.errors import LocalProtocolError
from spec.values import SyncEvent

SID = "s.one"


def _event(rng: random.Random, seq: int, epoch: int, key: str, odd: bool) -> SyncEvent:
    payload = rng.choice([f'{{"i":{seq}}}', f'"é✓ {seq}"', f'{{"pad":"{"x" * rng.randrange(300)}"}}', "[]"])
    h = "sha256:" + hashlib.sha256(payload.encode()).hexdigest()
    producer = rng.choice(["a" * 64, "b" * 64, "c" * 64, "not an identity"] + [f"{i:064x}" for i in range(30)])
    ev = SyncEvent(SID, epoch, seq, key, h, payload, producer, 1_700_000_000_000_000 + seq, 1000 + seq)
    if odd:
        which = rng.randrange(6)
        if which == 0:
            ev = replace(ev, payload_hash=h.upper().replace("SHA256", "sha256"))  # upper-case hex
        elif which == 1:
            ev = replace(ev, payload_hash="not a hash")
        elif which == 2:
            ev = replace(ev, payload="\ud800 lone")
        elif which == 3:
            ev = replace(ev, tx_offset=2**64 - 1)
        elif which == 4:
            ev = replace(ev, committed_at=-(2**70))
        else:
            ev = replace(ev, idempotency_key=key + "\udfff")
    return ev


def _check(log: Any, floor: int, events: list[SyncEvent], rng: random.Random) -> None:
    assert len(log) == len(events)
    assert list(log.events) == events
    # the rows' values read from the columns (what a snapshot writes) are the rows' own values
    assert log.values() == log.events.values() == [row_values(e) for e in events]
    a, b = rng.randrange(-2, len(events) + 3), rng.randrange(0, len(events) + 3)  # positions (not from the end)
    assert log.values(a, b) == [row_values(e) for e in events[max(0, a):b]]
    assert log.floor == floor
    if events:
        assert log.events[0] == events[0] and log.events[-1] == events[-1]
        a, b = sorted(rng.randrange(-2, len(events) + 2) for _ in range(2))
        assert log.events[a:b] == events[a:b]
    for seq in {floor - 1, floor, floor + len(events) - 1, floor + len(events), rng.randrange(floor - 3, floor + 40)}:
        i = seq - floor
        assert log.get(seq) == (events[i] if 0 <= i < len(events) else None)
    w = rng.randrange(floor - 3, floor + len(events) + 3)
    assert log.after(w) == events[max(0, w + 1 - floor):]
    _check_retained(log, floor, events, rng.choice([e.epoch for e in events[-3:]] or [1]), w)
    index = {e.idempotency_key: e.seq for e in events}
    assert list(log.by_key.items()) == list(index.items())  # the same pairs, in seq order
    assert len(log.by_key) == len(index)
    for key in [*rng.sample(sorted(index), min(3, len(index))), "absent", "k-never"]:
        assert log.seq_of(key) == index.get(key)
        assert (key in log.by_key) == (key in index)
    # the key index's own bookkeeping: its fill count (live entries and tombstones, what decides the
    # next rehash) is the number of slots in use, and the columns' live rows hold one entry each
    table = log._table
    assert log._tfill == len(table) - table.count(0)
    assert len(table) - table.count(0) - table.count(eventlog._TOMB) == len(events) - len(log._odd or ())


def _outcome(encode: Any, *args: Any) -> bytes | str:
    try:
        return bytes(encode(*args) if len(args) == 1 else b"".join(encode(*args)))
    except LocalProtocolError as exc:
        return f"error: {exc}"


ENCODER: dict[str, Any] = {"columns": bsatn.encode_event_columns,  # the fast paths under test (planted bugs swap them)
                            "runs": bsatn.encode_event_runs, "cache_type": bsatn.RunCache, "cache": bsatn.RunCache()}


def _runs_outcome(rows: Any) -> tuple[bytes, list[int]] | str:
    try:
        pieces, lengths = ENCODER["runs"](SID, rows.runs(), ENCODER["cache"])
    except LocalProtocolError as exc:
        return f"error: {exc}"
    return b"".join(pieces), list(lengths)


def _rows_outcome(want: list[SyncEvent]) -> tuple[bytes, list[int]] | str:
    """The second opinion: each row through the generic encoder (the first error, if any)."""
    encoded = []
    for ev in want:
        try:
            encoded.append(bsatn.encode_row(ev))
        except LocalProtocolError as exc:
            return f"error: {exc}"
    return b"".join(encoded), [len(b) for b in encoded]


def _check_runs(rows: Any, want: list[SyncEvent]) -> None:
    """The rows written a run at a time, twice (the second time full chunks come from the cache,
    which lives across the whole random run: entries made before a retention drop, a rollback,
    a relabel or a copy are met again after it), against the rows through ``encode_row``; and
    the row list built from them against ``RowList.of`` of the rows."""
    expect = _rows_outcome(want)
    for _ in range(2):
        got = _runs_outcome(rows)
        assert got == expect, want
    if isinstance(expect, tuple):
        assert wire.RowList.joined(*expect) == wire.RowList.of([bsatn.encode_row(ev) for ev in want])


def _check_retained(log: Any, floor: int, events: list[SyncEvent], epoch: int, w: int) -> None:
    """``retained_rows(w, epoch)``: the model's events after ``w`` of that epoch; each row's bytes
    from the columns equal the generic encoder's (or both refuse the row with the same error); the
    size bound from the columns' offsets is the rows' exact size."""
    want = [e for e in events[max(0, w + 1 - floor):] if e.epoch == epoch]
    rows = log.retained_rows(w, epoch)
    assert len(rows) == len(want) and list(rows) == want and rows == tuple(want)
    if want:
        assert rows[0] == want[0] and rows[-1] == want[-1] and rows[1:3] == want[1:3]
    for col, ev in zip(rows.columns(), want, strict=True):
        assert _outcome(ENCODER["columns"], SID, [col]) == _outcome(bsatn.encode_row, ev), ev
    assert bsatn.column_rows_size(rows) == sum(bsatn.row_size(e) for e in want)
    _check_runs(rows, want)


def drive(cls: Any, seed: int, steps: int, odd_share: float = 0.08) -> None:
    """Random operations on ``cls`` (a StreamLog class) and on the model; AssertionError on the
    first read that differs."""
    rng = random.Random(seed)
    ENCODER["cache"] = ENCODER["cache_type"]()  # one cache for the run: its entries meet every later change
    log = cls(SID, 1)
    floor, events = 1, []
    dropped: list[SyncEvent] = []  # retention drops, newest last: what a rollback puts back
    copies: list[tuple[Any, list[SyncEvent]]] = []
    taken: list[tuple[Any, list[SyncEvent]]] = []
    epoch = 1
    key_no = 0
    for _ in range(steps):
        op = rng.choices(["append", "drop", "undrop", "pop", "relabel", "copy"], [50, 18, 8, 6, 3, 2])[0]
        if op == "append":
            key_no += 1
            key = f"k{key_no}" if rng.random() < 0.9 or not events else events[0].idempotency_key
            if key in {e.idempotency_key for e in events}:
                continue  # Db refuses a duplicate key before it reaches the store
            if not events:
                floor = floor if rng.random() < 0.7 else floor + rng.randrange(1, 50)
            if rng.random() < 0.05:
                epoch += 1
            ev = _event(rng, floor + len(events), epoch, key, rng.random() < odd_share)
            log.append(ev)
            events.append(ev)
            dropped.clear()
        elif op == "drop" and events:
            n = rng.randrange(1, max(2, len(events) // 3))
            for _ in range(min(n, len(events))):
                assert log.pop_first() == events[0]
                dropped.append(events.pop(0))
                floor += 1
        elif op == "undrop" and dropped and events:
            for _ in range(rng.randrange(1, len(dropped) + 1)):
                ev = dropped.pop()
                log.push_first(ev)
                events.insert(0, ev)
                floor -= 1
        elif op == "pop" and events:
            assert log.pop_last() == events[-1]
            events.pop()
            dropped.clear()
        elif op == "relabel" and events:
            old = rng.choice(events).epoch
            epoch += 1
            log.relabel(old, epoch)
            events = [replace(e, epoch=epoch) if e.epoch == old else e for e in events]
            dropped.clear()
        elif op == "copy" and rng.random() < 0.5:  # a replay's rows do not follow the log either
            e = rng.choice([ev.epoch for ev in events] or [1])
            taken.append((log.retained_rows(floor - 1, e), [ev for ev in events if ev.epoch == e]))
            w = rng.randrange(floor - 2, floor + len(events) + 1)  # a one-off's view (ADR-0038): every epoch
            taken.append((log.frozen(w), events[max(0, w + 1 - floor):]))
        elif op == "copy":
            copy, then = log.copy(), list(events)
            if events and rng.random() < 0.5:  # a copy is a log of its own: it takes appends too
                ev = _event(rng, floor + len(events), epoch, f"copy-{key_no}", False)
                copy.append(ev)
                then.append(ev)
            copies.append((copy, then))
        _check(log, floor, events, rng)
    for copy, then in copies:  # copies do not follow the original
        assert list(copy.events) == then
    for rows, then in taken:
        assert list(rows) == then and len(rows) == len(then)
        _check_runs(rows, then)  # a replay's rows are encoded as they were when taken


@pytest.mark.parametrize("seed", range(12))
def test_the_column_store_reads_like_a_list_and_a_dict(seed: int) -> None:
    drive(StreamLog, seed, 600)


def test_long_runs_cross_the_rehash_and_cut_thresholds() -> None:
    rng = random.Random(99)
    log = StreamLog(SID, 1)
    events: list[SyncEvent] = []
    for i in range(1, 3001):
        ev = _event(rng, i, 1, f"k{i}", i % 97 == 0)
        log.append(ev)
        events.append(ev)
    assert len(log._table) >= 4096  # grown several times
    assert len(log._data) == len(log._cols) == -(-3000 // CHUNK)
    for _ in range(2500):  # whole chunks of dropped events go
        assert log.pop_first() == events.pop(0)
    assert len(log._data) == len(log._cols) == -(-3000 // CHUNK) - 2500 // CHUNK and log._head == 2500 % CHUNK
    _check(log, events[0].seq, events, rng)
    assert all(log.seq_of(f"k{i}") is None for i in range(1, 2501))


def test_a_row_comes_back_exactly_whatever_its_values() -> None:
    rng = random.Random(5)
    log = StreamLog(SID, 7)
    rows = [_event(rng, 7 + i, 3, f"k{i}", odd=i % 2 == 1) for i in range(12)]
    for ev in rows:
        log.append(ev)
    assert list(log.events) == rows
    assert [type(getattr(e, f)) for e in log.events for f in e.__slots__] == \
        [type(getattr(e, f)) for e in rows for f in e.__slots__]
    assert log._odd is not None and len(log._odd) == 6  # the odd rows are kept whole, the rest as columns
    wide = replace(rows[0], seq=7 + len(rows), idempotency_key="kw", epoch=2**64 - 1, payload="ü" * 1000)
    log.append(wide)
    assert log.get(wide.seq) == wide


def test_of_rebuilds_a_log_and_refuses_rows_out_of_order() -> None:
    rng = random.Random(1)
    rows = [_event(rng, 5 + i, 1, f"k{i}", False) for i in range(5)]
    log = StreamLog.of(SID, 5, rows)
    assert list(log.events) == rows and log.floor == 5 and dict(log.by_key) == {e.idempotency_key: e.seq for e in rows}
    with pytest.raises(LocalProtocolError, match="not the next"):
        StreamLog.of(SID, 4, rows)
    with pytest.raises(LocalProtocolError, match="duplicate"):
        StreamLog.of(SID, 5, [rows[0], replace(rows[1], idempotency_key=rows[0].idempotency_key)])
    with pytest.raises(LocalProtocolError, match="not just before"):
        log.push_first(rows[2])


def test_a_retained_event_costs_little_more_than_its_bytes() -> None:
    """Not a timing: the store's layout, in bytes (the figure itself is docs/performance.md's)."""
    rng = random.Random(2)
    log = StreamLog(SID, 1)
    for i in range(1, 5001):
        log.append(_event(rng, i, 1, f"key-{i:06d}", False))
    payload_and_keys = sum(len(e.payload.encode()) + len(e.idempotency_key) for e in log.events)
    held = sum(map(len, log._data)) + 8 * sum(map(len, log._cols)) + 4 * len(log._table)
    assert held - payload_and_keys <= 32 * 5000 + 32 * 5000 + 4 * 4 * 5000  # hash + 4 ints + the index


PLANTED = (
    ("a dropped chunk still counts", "            self._size -= CHUNK\n", ""),
    ("a rollback that empties the last chunk keeps it",
     "        else:\n            self._data.pop()\n            self._cols.pop()\n", ""),
    ("a write in front leaves the later ends where they were",
     "        for k in range(j + _STRIDE, len(cols), _STRIDE):\n            cols[k] += delta\n", ""),
    ("a rehash leaves the oldest live event out",
     "        p = head\n        while p < size:\n",
     "        p = head + 1\n        while p < size:\n"),
    ("a rehash reads each later key from its own end, not the previous one's",
     "                begin = cols[j] + 32\n",
     "                begin = cols[j + _STRIDE] + 32 if j + _STRIDE < len(cols) else 0\n"),
    ("a rehash sizes its table without the odd rows",
     "        count = size - head - (sum(1 for p in range(head, size) if first + p in odd) if odd else 0)\n",
     "        count = size - head\n"),
    ("a rehash indexes the odd rows' empty slots too",
     "                if odd is None or first + q not in odd:\n", "                if True:\n"),
    ("a revived event keeps the epoch of the run after it",
     "            self._run_seqs[0] = max(self._run_seqs[0], self.floor + 1)\n"
     "            self._run_seqs.insert(0, self.floor)\n"
     "            self._run_epochs.insert(0, ev.epoch)\n",
     "            pass\n"),
    ("relabel does not touch odd rows",
     "                if ev.epoch == old_epoch:\n                    self._odd[seq]",
     "                if False:\n                    self._odd[seq]"),
    ("a probe stops at a tombstone",
     "            if v == _TOMB:\n                if free < 0:\n                    free = i\n",
     "            if v == _TOMB:\n                return -1, i\n"),
    ("the copy shares its last chunk",
     "            other._data[-1], other._cols[-1] = self._data[-1][:], self._cols[-1][:]\n",
     "            pass\n"),
    ("a rollback truncates a chunk a copy shares",
     "            self._data[-1] = self._data[-1][:self._cols[-1][j - _STRIDE]]\n",
     "            del self._data[-1][self._cols[-1][j - _STRIDE]:]\n"),
)


PLANTED_RETAINED = (
    ("retained rows start one late",
     "        first = self._head + max(0, watermark + 1 - self.floor)",
     "        first = self._head + max(0, watermark + 2 - self.floor)"),
    ("retained rows ignore the epoch", "            if e != epoch:\n                continue\n", ""),
    ("retained rows share the run lists",
     "        view._run_seqs, view._run_epochs = self._run_seqs[:], self._run_epochs[:]",
     "        view._run_seqs, view._run_epochs = self._run_seqs, self._run_epochs"),
    ("the column bytes skip a chunk's first row",
     "                total += cols[((stop - 1) & _IN_CHUNK) * _STRIDE] - (cols[j - _STRIDE] if j else 0)",
     "                total += cols[((stop - 1) & _IN_CHUNK) * _STRIDE] - cols[j]"),
)
PLANTED += PLANTED_RETAINED

PLANTED_ENCODER = (
    ("upper-case digest", "digest.hex().encode()", "digest.hex().upper().encode()"),
    ("key length where the payload's belongs", "mid(epoch, seq, len(kb))", "mid(epoch, seq, len(pb))"),
    ("producer bytes not reversed", "raw = _PRODUCERS[producer] = bytes.fromhex(producer)[::-1]",
     "raw = _PRODUCERS[producer] = bytes.fromhex(producer)"),
    ("a producer that is not an identity written anyway",
     "        if not is_identity(producer):\n            return None\n",
     "        if not is_identity(producer):\n            return b'?' * 32\n"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_ENCODER, ids=[p[0] for p in PLANTED_ENCODER])
def test_planted_bugs_in_the_column_encoder_are_caught(name: str, old: str, new: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    mod = edited_module(bsatn, [(old, new)], name)
    monkeypatch.setitem(ENCODER, "columns", mod.encode_event_columns)
    with pytest.raises(AssertionError):
        for seed in range(40):
            drive(_variant("chunks_of_4").StreamLog, seed, 600, odd_share=0.2)


# Planted bugs in the run-at-a-time writer and its cache of full chunks (adapters.bsatn) and in the
# runs the store gives (reference.eventlog): the comparison of _check_runs must fail.
PLANTED_RUNS_ENCODER: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("cache key ignores the epoch (not invalidated by a relabel)",
     (("return (stream_id, run.first_seq - run.offset, run.epoch)",
       "return (stream_id, run.first_seq - run.offset, 0)"),)),
    ("cache entry found by stream, chunk seq and epoch only (a rollback and a new append meet the old bytes)",
     (("if entry is None or entry[0][0] is not token[0] or entry[0][1] is not token[1]:", "if entry is None:"),)),
    ("row lengths one byte long", (("fixed = _RUN_FIXED + len(head) - 4", "fixed = _RUN_FIXED + len(head) - 3"),)),
    ("seq not advanced within a run", (("        s = e\n        seq += 1\n", "        s = e\n"),)),
    ("a run's digest one byte short", (("hexl(d[s:s + 32])", "hexl(d[s:s + 31]) + b'00'"),)),
    # ADR-0024: runs served as slices of a chunk's entry, and entries grown by the rows they lack
    ("a slice starts one row late", (("    start = sum(lens[:a])\n", "    start = sum(lens[:a + 1])\n"),)),
    ("a slice's lengths taken from the entry's first row",
     (("    return data[start:start + sum(lens[a:b])], lens[a:b]",
       "    return data[start:start + sum(lens[a:b])], lens[:b - a]"),)),
    ("a slice that starts at the entry's first row given the whole entry",
     (("    if a == 0 and b == len(lens):\n", "    if a == 0:\n"),)),
    ("a run one row past the entry served from it",
     (("            if lo <= i and k <= hi:\n", "            if lo <= i and k <= hi + 1:\n"),)),
    ("an entry grown across a gap of one row (the row between never written)",
     (("            if i <= hi and lo <= k:", "            if i <= hi + 1 and lo <= k + 1:"),)),
    ("rows written for the front of an entry put after it",
     (("                data = b\"\".join((before[0], data, after[0]))\n",
       "                data = b\"\".join((data, before[0], after[0]))\n"),)),
    ("a grown entry keeps its old first row", (("                lo = min(lo, i)\n", "                lo = lo\n"),)),
    ("the rows after an entry written from the run's start",
     (("_encode_run(head, run.part(hi - i, k - i)) if k > hi", "_encode_run(head, run.part(0, k - hi)) if k > hi"),)),
)
PLANTED_RUNS_STORE = (
    ("a part of a run starts at the run's first row",
     "        return ColumnRun(self.epoch, self.first_seq + a, self.data, self._cols, i + a, i + b, self._producers)",
     "        return ColumnRun(self.epoch, self.first_seq + a, self.data, self._cols, i, i + b - a, self._producers)"),
    ("a run ends one row early at the chunk boundary",
     "i, k = p & _IN_CHUNK, stop - (c << CHUNK_BITS)  # rows i..k-1 of the chunk",
     "i, k = p & _IN_CHUNK, stop - (c << CHUNK_BITS) - 1  # rows i..k-1 of the chunk"),
    ("a run takes the newest epoch", "yield ColumnRun(epochs[0] if len(epochs) == 1 else "
     "epochs[bisect_right(run_seqs, seq) - 1], seq,", "yield ColumnRun(epochs[-1], seq,"),
    ("a rollback truncates the last chunk in place (a run of the same objects meets other rows)",
     "            self._data[-1] = self._data[-1][:self._cols[-1][j - _STRIDE]]\n"
     "            self._cols[-1] = self._cols[-1][:j]\n",
     "            del self._data[-1][self._cols[-1][j - _STRIDE]:]\n"
     "            del self._cols[-1][j:]\n"),
)


def _drive_runs(cls: Any) -> None:
    for seed in range(40):  # with no odd rows (every chunk run whole: the cache is met) and with some
        drive(cls, seed, 600, odd_share=0.0 if seed % 2 else 0.2)


def test_the_cache_is_met_across_retention_rollback_and_relabel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached paths are exercised (not only the one-pass writer): entries are found again,
    runs are served as slices of them, and entries grow by the rows they lack (ADR-0024)."""
    slices = 0
    real = bsatn._rows_slice

    def counted(data: bytes, lens: Any, a: int, b: int) -> Any:
        nonlocal slices
        slices += (a, b) != (0, len(lens))
        return real(data, lens, a, b)

    monkeypatch.setattr(bsatn, "_rows_slice", counted)
    hits = extended = 0
    for seed in range(4):
        drive(_variant("chunks_of_4").StreamLog, seed, 600, odd_share=0.0)
        hits, extended = hits + ENCODER["cache"].hits, extended + ENCODER["cache"].extended
    assert hits > 200 and extended > 50 and slices > 100, (hits, extended, slices)


@pytest.mark.parametrize(("name", "edits"), PLANTED_RUNS_ENCODER, ids=[p[0] for p in PLANTED_RUNS_ENCODER])
def test_planted_bugs_in_the_run_writer_and_its_cache_are_caught(name: str, edits: tuple[tuple[str, str], ...],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mod = edited_module(bsatn, edits, name)
    monkeypatch.setitem(ENCODER, "runs", mod.encode_event_runs)
    monkeypatch.setitem(ENCODER, "cache_type", mod.RunCache)
    with pytest.raises(AssertionError):
        _drive_runs(_variant("chunks_of_4").StreamLog)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_RUNS_STORE, ids=[p[0] for p in PLANTED_RUNS_STORE])
def test_planted_bugs_in_the_store_runs_are_caught(name: str, old: str, new: str) -> None:
    with pytest.raises(AssertionError):
        _drive_runs(_variant(name, (old, new)).StreamLog)


def _variant(name: str, *edits: tuple[str, str]) -> Any:
    """The store's module with chunks of 4 events (so short runs cross chunk boundaries often) and
    ``edits`` applied to its source."""
    return edited_module(eventlog, (("CHUNK_BITS = 8\n", "CHUNK_BITS = 2\n"), *edits), name)


@pytest.mark.parametrize("seed", range(12))
def test_small_chunks_read_like_a_list_and_a_dict(seed: int) -> None:
    mod = _variant("chunks_of_4")
    assert mod.CHUNK == 4
    drive(mod.StreamLog, seed, 600, odd_share=0.15)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bugs_in_the_store_are_caught(name: str, old: str, new: str) -> None:
    mod = _variant(name, (old, new))
    with pytest.raises((AssertionError, IndexError, LocalProtocolError, UnicodeDecodeError, KeyError, ValueError,
                        TypeError)):
        for seed in range(40):
            drive(mod.StreamLog, seed, 600, odd_share=0.2)


def test_a_producer_over_the_limit_is_refused_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer number is the last check of ``append`` that can raise: it is taken before the
    chunk, size or index change, so a refused append leaves the log as it was (found by review:
    it used to be taken after ``_size`` had grown)."""
    monkeypatch.setattr(eventlog, "_PRODUCER_LIMIT", 2)
    log = StreamLog(SID)
    h = "sha256:" + "0" * 64
    for seq, producer in ((1, "a" * 64), (2, "b" * 64), (3, "a" * 64)):
        log.append(SyncEvent(SID, 1, seq, f"k{seq}", h, "{}", producer, 1_000 + seq, seq))
    before = list(log.events)
    with pytest.raises(LocalProtocolError, match="too many producers"):
        log.append(SyncEvent(SID, 1, 4, "k4", h, "{}", "c" * 64, 1_004, 4))
    assert len(log) == 3 and list(log.events) == before and log.seq_of("k4") is None
    log.append(SyncEvent(SID, 1, 4, "k4", h, "{}", "b" * 64, 1_004, 4))  # still appendable at seq 4
    assert [e.seq for e in log.events] == [1, 2, 3, 4] and log.events[-1].producer == "b" * 64
