"""``adapters.bsatn.RunCache`` on its own: what it keeps, what it finds, what it costs.

The random comparison of the store against a list (tests/reference/test_eventlog.py,
``_check_runs``) holds the cached bytes to ``encode_row`` across retention, rollbacks, relabels
and copies; here the cache's own rules: found only by the same objects, stream, first seq and
epoch; bounded by ``max_bytes`` (least recently used out first, an entry larger than the bound
never kept); the default bound pinned (docs/protocol.md "Limits").
"""

from __future__ import annotations

import sys
from array import array
from typing import NamedTuple

import pytest
from support.edited import edited_module

import adapters.bsatn as bsatn


class Run(NamedTuple):
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


def _run(first_seq: int = 1, epoch: int = 1, size: int = 100) -> Run:
    data, cols = bytearray(size), array("q", [0] * 4)
    return Run(epoch, first_seq, data, 0, [size], [0], ["a" * 64], [0], [0], (cols, data))


def _cost(run: Run, encoded: bytes, rows: int) -> int:
    assert run.token is not None
    return len(encoded) + 4 * rows + sys.getsizeof(run.token[0]) + sys.getsizeof(run.token[1]) + 200


def test_found_by_the_same_objects_stream_seq_and_epoch_only() -> None:
    cache = bsatn.RunCache()
    run = _run()
    cache.put("s", run, b"rows", [2, 2])
    got = cache.get("s", run)
    assert got is not None and got[0] == b"rows" and list(got[1]) == [2, 2]
    assert cache.get("t", run) is None  # another stream
    assert cache.get("s", run._replace(epoch=2)) is None  # a relabelled epoch
    assert cache.get("s", run._replace(first_seq=2)) is None
    assert cache.get("s", run._replace(token=(array("q", [0] * 4), run.data))) is None  # other buffers
    assert cache.get("s", run._replace(token=None)) is None
    assert (cache.hits, cache.misses) == (1, 4)
    cache.put("s", run._replace(token=None), b"x", [1])  # a run that may change is never kept
    assert len(cache) == 1


def test_bounded_least_recently_used_out_first() -> None:
    runs = [_run(first_seq=i) for i in range(10)]
    one = _cost(runs[0], b"r" * 1000, 10)
    cache = bsatn.RunCache(max_bytes=3 * one)
    for run in runs[:3]:
        cache.put("s", run, b"r" * 1000, [100] * 10)
    assert len(cache) == 3 and cache.size == 3 * one
    assert cache.get("s", runs[0]) is not None  # now the most recently used
    cache.put("s", runs[3], b"r" * 1000, [100] * 10)
    assert cache.size <= cache.max_bytes and len(cache) == 3
    assert cache.get("s", runs[1]) is None  # the least recently used went
    assert all(cache.get("s", r) is not None for r in (runs[0], runs[2], runs[3]))
    cache.put("s", runs[3], b"r" * 1000, [100] * 10)  # put again: replaced, not counted twice
    assert cache.size == 3 * one
    cache.put("s", runs[4], b"r" * (4 * one), [1])  # larger than the bound: not kept, nothing evicted
    assert len(cache) == 3 and cache.get("s", runs[4]) is None
    cache.clear()
    assert len(cache) == 0 and cache.size == 0


def test_the_default_bound_is_32_mib() -> None:
    assert bsatn.RunCache().max_bytes == bsatn.RUN_CACHE.max_bytes == 32 * 1024 * 1024


PLANTED = (
    ("an eviction not subtracted", "self._bytes -= self._entries.popitem(last=False)[1][3]",
     "self._entries.popitem(last=False)"),
    ("a hit not made most recent", "            self._entries.move_to_end(key)\n", ""),
    ("an entry larger than the bound kept", "        if cost > self.max_bytes:\n            return\n", ""),
    ("a put again counted twice", "            if old is not None:\n                self._bytes -= old[3]\n", ""),
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
