"""``adapters.bsatn.RunCache`` on its own: what it keeps, what it finds, what it costs.

The random comparison of the store against a list (tests/reference/test_eventlog.py,
``_check_runs``) holds the cached bytes to ``encode_row`` across retention, rollbacks, relabels
and copies, slices and grown entries included; here the cache's own rules: an entry per chunk,
found only by the same objects, stream, chunk (the seq of its row 0) and epoch; bounded by
``max_bytes`` (least recently used out first, an entry larger than the bound never kept); the
default bound pinned (docs/protocol.md "Limits"); and, with the store's own chunks, which rows a
gap replay writes (ADR-0024).
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from dataclasses import dataclass, replace
from typing import Any

import pytest
from support.edited import edited_module

import adapters.bsatn as bsatn


@dataclass(frozen=True)
class Run:
    """A stand-in :class:`adapters.bsatn.EventRun` (the cache reads only its token, offset,
    length, first seq and epoch)."""

    epoch: int
    first_seq: int
    data: bytearray
    start: int
    ends: list[int]
    key_lens: list[int]
    producers: list[str]
    committed_at: list[int]
    tx_offset: list[int]
    token: tuple[object, object] | None
    offset: int = 0

    def __len__(self) -> int:
        return len(self.ends)

    def part(self, a: int, b: int) -> Run:
        raise AssertionError("the cache's get and put never ask for a part")


def _run(first_seq: int = 1, epoch: int = 1, size: int = 100, offset: int = 0) -> Run:
    data, cols = bytearray(size), array("q", [0] * 4)
    return Run(epoch, first_seq, data, 0, [size], [0], ["a" * 64], [0], [0], (cols, data), offset)


def _cost(run: Run, encoded: bytes, rows: int) -> int:
    assert run.token is not None
    return len(encoded) + 4 * rows + sys.getsizeof(run.token[0]) + sys.getsizeof(run.token[1]) + 200


def test_found_by_the_same_objects_stream_chunk_and_epoch_only() -> None:
    cache = bsatn.RunCache()
    run = _run(first_seq=11, offset=10)  # row 10 of a chunk whose row 0 has seq 1
    cache.put("s", run, 10, b"rows", [2, 2])
    got = cache.get("s", run)
    assert got is not None and got[0] == 10 and got[1] == b"rows" and list(got[2]) == [2, 2]
    assert cache.get("s", replace(run, first_seq=15, offset=14)) is not None  # another run of the same chunk
    assert cache.get("s", _run(first_seq=1, offset=0)) is None  # the same chunk seq and epoch, other buffers
    assert cache.get("t", run) is None  # another stream
    assert cache.get("s", replace(run, epoch=2)) is None  # a relabelled epoch
    assert cache.get("s", replace(run, first_seq=12)) is None  # another chunk (row 0 at seq 2)
    assert cache.get("s", replace(run, token=(array("q", [0] * 4), run.data))) is None  # other buffers
    assert cache.get("s", replace(run, token=None)) is None
    cache.put("s", replace(run, token=None), 0, b"x", [1])  # a run without a token is never kept
    assert len(cache) == 1
    other = replace(run, token=(array("q", [0] * 4), bytearray(3)))
    cache.put("s", other, 0, b"new", [3])  # one entry per chunk: the same key with other buffers replaces it
    assert len(cache) == 1 and cache.get("s", run) is None
    got = cache.get("s", other)
    assert got is not None and got[:2] == (0, b"new")


def test_bounded_least_recently_used_out_first() -> None:
    runs = [_run(first_seq=i) for i in range(10)]
    one = _cost(runs[0], b"r" * 1000, 10)
    cache = bsatn.RunCache(max_bytes=3 * one)
    for run in runs[:3]:
        cache.put("s", run, 0, b"r" * 1000, [100] * 10)
    assert len(cache) == 3 and cache.size == 3 * one
    assert cache.get("s", runs[0]) is not None  # now the most recently used
    cache.put("s", runs[3], 0, b"r" * 1000, [100] * 10)
    assert cache.size <= cache.max_bytes and len(cache) == 3
    assert cache.get("s", runs[1]) is None  # the least recently used went
    assert all(cache.get("s", r) is not None for r in (runs[0], runs[2], runs[3]))
    cache.put("s", runs[3], 0, b"r" * 1000, [100] * 10)  # put again: replaced, not counted twice
    assert cache.size == 3 * one
    cache.put("s", runs[4], 0, b"r" * (4 * one), [1])  # larger than the bound: not kept, nothing evicted
    assert len(cache) == 3 and cache.get("s", runs[4]) is None
    cache.clear()
    assert len(cache) == 0 and cache.size == 0


def test_the_default_bound_is_32_mib() -> None:
    assert bsatn.RunCache().max_bytes == bsatn.RUN_CACHE.max_bytes == 32 * 1024 * 1024


PLANTED = (
    ("an eviction not subtracted", "self._bytes -= self._entries.popitem(last=False)[1][4]",
     "self._entries.popitem(last=False)"),
    ("a hit not made most recent", "            self._entries.move_to_end(key)\n", ""),
    ("an entry larger than the bound kept", "        if cost > self.max_bytes:\n            return\n", ""),
    ("a put again counted twice", "            if old is not None:\n                self._bytes -= old[4]\n", ""),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bugs_in_the_cache_are_caught(name: str, old: str, new: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = edited_module(bsatn, [(old, new)], name)
    monkeypatch.setattr(bsatn, "RunCache", mod.RunCache)
    with pytest.raises(AssertionError):
        test_bounded_least_recently_used_out_first()


def test_is_column_rows_is_the_protocol_check_remembered_per_type() -> None:
    from reference.eventlog import StreamLog  # tests may cross the layers

    rows = StreamLog("s", 1).retained_rows(0, 1)
    for _ in range(2):  # the second time from the memo
        assert bsatn.is_column_rows(rows) and isinstance(rows, bsatn.ColumnRows)
        assert not bsatn.is_column_rows(()) and not bsatn.is_column_rows([1])
    assert bsatn._COLUMN_ROW_TYPES[type(rows)] is True and bsatn._COLUMN_ROW_TYPES[tuple] is False


def test_a_planted_edit_that_matches_nothing_or_twice_is_an_error_not_a_kill() -> None:
    with pytest.raises(LookupError, match="matched 0"):
        edited_module(bsatn, [("no such text in bsatn\n", "")])
    with pytest.raises(LookupError, match=r"matched [0-9]{2,}"):
        edited_module(bsatn, [("return", "return")])
    copy = edited_module(bsatn, [("RUN_CACHE = RunCache()\n", "RUN_CACHE = RunCache(7)\n")])
    assert copy.RUN_CACHE.max_bytes == 7 and bsatn.RUN_CACHE.max_bytes == 32 * 1024 * 1024  # the real one untouched


def _event(seq: int, epoch: int = 1) -> Any:
    from spec.values import SyncEvent

    payload = f'{{"i":{seq},"pad":"{"x" * (seq % 37)}"}}'
    return SyncEvent("s", epoch, seq, f"k{seq}", "sha256:" + hashlib.sha256(payload.encode()).hexdigest(), payload,
                     f"{seq % 3:064x}", 1_700_000_000_000_000 + seq, 1000 + seq)


def _replay(log: Any, watermark: int, cache: Any, epoch: int = 1, mod: Any = bsatn) -> None:
    """Encode the rows after ``watermark`` through ``cache`` and hold them to ``encode_row``."""
    rows = log.retained_rows(watermark, epoch)
    pieces, lengths = mod.encode_event_runs("s", rows.runs(), cache)
    want = [bsatn.encode_row(ev) for ev in rows]
    assert b"".join(pieces) == b"".join(want) and list(lengths) == [len(w) for w in want]


def check_gap_writes(mod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """ADR-0024 with the store's own chunks (256 rows): a gap that spans the end of a full chunk
    and the last chunk's rows is written once, then served as slices; rows appended later are the
    only ones written; a gap that reaches further back writes only the rows before the entry; a
    rollback puts new buffers in the store, so the old entry is never met.  Each run's bytes are
    held to ``encode_row`` as well."""
    from reference.eventlog import CHUNK, StreamLog

    written: list[int] = []
    real = mod._encode_run

    def counted(head: bytes, run: Any) -> Any:
        written.append(len(run))
        return real(head, run)

    monkeypatch.setattr(mod, "_encode_run", counted)
    n = 3 * CHUNK + 40
    log = StreamLog.of("s", 1, [_event(seq) for seq in range(1, n + 1)])
    cache = mod.RunCache()
    _replay(log, 0, cache, mod=mod)  # the full replay: each chunk written once, whole
    assert written == [CHUNK, CHUNK, CHUNK, 40] and cache.misses == 4
    written.clear()
    for _ in range(2):
        _replay(log, n - 100, cache, mod=mod)  # 60 rows of the third chunk and the last chunk's 40: slices
    assert written == [] and cache.hits == 4
    for seq in range(n + 1, n + 6):  # the last chunk grows in place: the same objects
        log.append(_event(seq))
    _replay(log, n - 100, cache, mod=mod)
    assert written == [5] and cache.extended == 1  # only the new rows
    written.clear()
    cold = mod.RunCache()
    _replay(log, n - 10, cold, mod=mod)
    _replay(log, n - 30, cold, mod=mod)  # reaches 20 rows further back: only those are written
    _replay(log, n - 30, cold, mod=mod)
    assert written == [15, 20] and (cold.misses, cold.extended, cold.hits) == (1, 1, 1)
    (entry,) = cold._entries.values()  # the grown entry, counted once at its grown size
    token, data = entry[0], entry[2]
    assert cold.size == len(data) + 4 * 35 + sys.getsizeof(token[0]) + sys.getsizeof(token[1]) + 200
    written.clear()
    log.pop_last()  # new buffers for the last chunk (a rollback never changes a chunk in place)
    log.append(replace(_event(n + 5), payload='{"other":1}', idempotency_key="k-other"))
    _replay(log, n - 30, cold, mod=mod)
    assert written == [35]  # the old entry is not met: the whole run is written again
    written.clear()
    _replay(log, n - 30, cold, mod=mod)
    assert written == [] and len(cold) == 1  # the entry of the old buffers was replaced


def test_a_small_gap_is_served_from_the_chunks_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    check_gap_writes(bsatn, monkeypatch)


GAP_PLANTED = (
    ("a grown entry not kept", "                self.put(stream_id, run, lo, data, grown)\n", ""),
    ("a written run not kept", "            self.put(stream_id, run, i, *enc)\n", "            pass\n"),
    ("an entry grown only after its rows (a run reaching back written whole)",
     "            if i <= hi and lo <= k:  # overlapping or touching",
     "            if lo <= i <= hi:  # overlapping or touching"),
    ("a grown entry counted at its old size", "                self.put(stream_id, run, lo, data, grown)\n",
     "                self.put(stream_id, run, lo, data, grown)\n                self._bytes -= 4 * len(lens)\n"),
)


@pytest.mark.parametrize(("name", "old", "new"), GAP_PLANTED, ids=[p[0] for p in GAP_PLANTED])
def test_planted_bugs_in_what_a_gap_writes_are_caught(name: str, old: str, new: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mod = edited_module(bsatn, [(old, new)], name)
    with pytest.raises(AssertionError):
        check_gap_writes(mod, monkeypatch)


def test_runs_of_another_epoch_in_one_chunk_have_their_own_entry() -> None:
    """A chunk with rows of two epochs (a reset in the middle): each epoch's rows are served from an
    entry of that epoch, and a relabel makes them runs of an epoch no entry has."""
    from reference.eventlog import StreamLog

    log = StreamLog.of("s", 1, [_event(seq, 1 if seq <= 50 else 2) for seq in range(1, 101)])
    cache = bsatn.RunCache()
    for _ in range(2):
        _replay(log, 0, cache, epoch=1)
        _replay(log, 0, cache, epoch=2)
        _replay(log, 20, cache, epoch=1)
        _replay(log, 70, cache, epoch=2)
    assert len(cache) == 2 and cache.misses == 2 and cache.hits == 6
    log.relabel(1, 3)
    _replay(log, 0, cache, epoch=3)
    _replay(log, 0, cache, epoch=1)  # no rows of epoch 1 are left
    assert cache.misses == 3
