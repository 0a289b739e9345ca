"""The db's secondary indexes (reference/db.py, branch precise): :class:`SortedKeys` and the prefix
ranges of :func:`count_prefix`, judged against a plain set and a linear ``startswith`` filter (never
the index itself); a misuse of :class:`SortedKeys` refused instead of silently removing another
key; :meth:`Db.secondary_indexes_agree` (the engine's SLOW "indexes agree with the rows"
postcondition) shown able to fail, once per kind of stale index; and an identity whose rows are
all deleted leaves nothing behind in :attr:`Db.by_column` (the indexes do not grow with identities
that once held rows)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from reference.db import Db, SortedKeys, Txn, count_prefix
from spec.errors import LocalProtocolError
from spec.values import ComputeAssignment, SyncCheckpoint, SyncEvent, SyncStream

# keys around the edges of code point order: the last code point, both ends of the surrogates,
# the BMP's last, the first astral, NUL and DEL; and runs of them (a prefix equal to a key, keys
# sharing a prefix with characters below and above the prefix's last)
_CHARS = ("a", "b", "\x00", "\x7f", "\ud7ff", "\ud800", "\udfff", "\uffff", "\U00010000", "\U0010ffff")
POOL = sorted({x + y + z for x in _CHARS for y in ("", *_CHARS[:4], "\U0010ffff") for z in ("", "a", "\U0010ffff")})
PREFIXES = ("", "a", "ab", "\U0010ffff", "a\U0010ffff", "\U0010ffff\U0010ffff", "\ud7ff", "\udfff", "\uffff",
            "b\x00", "\x7f", "zz")


def _ranges_agree(keys: list[str]) -> None:
    for p in PREFIXES:
        lo, hi = count_prefix(keys, p)
        assert keys[lo:hi] == [k for k in keys if k.startswith(p)], (p, keys)


@pytest.mark.parametrize("seed", range(40))
def test_sorted_keys_follow_a_set(seed: int) -> None:
    """Random adds of absent keys and removes of present ones (an update is a remove and an add of the
    same key, a rolled-back insert an add and a remove, with reads between them or not), each read
    compared with the sorted set of the keys held, and every prefix range with a linear filter."""
    rnd = random.Random(seed)
    held = set(rnd.sample(POOL, rnd.randrange(0, 20)))
    index = SortedKeys(iter(held))
    for _ in range(200):
        key, roll = rnd.choice(POOL), rnd.random()
        if roll < 0.35 and key not in held:
            index.add(key)
            held.add(key)
        elif roll < 0.7 and key in held:
            index.remove(key)
            held.discard(key)
        elif roll < 0.8 and key in held:  # an update: delete and insert again
            index.remove(key)
            index.add(key)
        elif roll < 0.85 and key not in held:  # a rolled-back insert
            index.add(key)
            index.remove(key)
        elif roll >= 0.85:
            keys = index.keys()
            assert keys == sorted(held)
            _ranges_agree(keys)
    assert index.keys() == sorted(held)


@pytest.mark.parametrize(("start", "steps", "want"), [
    (("a", "c"), [("remove", "c"), ("add", "c"), ("remove", "c")], ["a"]),  # removed, added back, removed
    ((), [("add", "b"), ("remove", "b"), ("add", "b")], ["b"]),  # added, rolled back, added again
    (("b",), [("remove", "b"), ("read", ""), ("add", "b"), ("remove", "b"), ("add", "b")], ["b"]),
    ((), [("add", k) for k in "qwertyuiopasdfghjklz"], sorted("qwertyuiopasdfghjklz")),  # over 16 at once
    (("m",), [*(("add", k) for k in "qwertyuiopasdfghjklz"), ("remove", "m")], sorted("qwertyuiopasdfghjklz")),
])
def test_sorted_keys_sequences(start: tuple[str, ...], steps: list[tuple[str, str]], want: list[str]) -> None:
    """A table of add/remove/add sequences, read at the end (and between, where a step says so)."""
    index = SortedKeys(iter(start))
    for op, key in steps:
        if op == "read":
            index.keys()
        else:
            getattr(index, op)(key)
    assert index.keys() == want


@pytest.mark.parametrize("steps", [
    [("remove", "b")],  # never held: the next key (c) was deleted in its place
    [("remove", "d")],  # never held, past the last key: an IndexError
    [("add", "a")],  # held already: it was inserted twice
    [("add", "b"), ("add", "b")],  # added twice
])
def test_a_misused_sorted_keys_refuses_instead_of_dropping_another_key(steps: list[tuple[str, str]]) -> None:
    """Removing a key the index does not hold, or adding one it holds, is the caller's bug (the db
    calls them only for a row it has just inserted or deleted): refused with LocalProtocolError by
    the call or by the next read, never answered with another key gone or a key held twice.  (A key
    removed twice is not refused -- it is removed once -- so that an append's removal of its stream
    id costs no lookup more.)"""
    index = SortedKeys(iter(("a", "c")))
    with pytest.raises(LocalProtocolError):
        for op, key in steps:
            getattr(index, op)(key)
        index.keys()


A, B, C = "a" * 64, "b" * 64, "c" * 64


def _filled() -> Db:
    db = Db()
    tx = Txn(db)
    for sid in ("s1", "s2", "t1"):
        tx.insert(SyncStream(sid, "default", 1, 0, 0, 1, 1, 10, 1, 1))
        tx.insert(SyncEvent(sid, 1, 1, "k", "h", "{}", A, 1, 1))
    tx.insert(SyncCheckpoint("c1|s1", "c1", "s1", A, 1, 1, 1))
    tx.insert(SyncCheckpoint("c2|s2", "c2", "s2", B, 1, 1, 1))
    tx.insert(ComputeAssignment("r1", A, 5001, "{}", "h", "p1", C, "assigned", None, 1, 1, 1))
    tx.insert(ComputeAssignment("r2", B, 5001, "{}", "h", None, None, "open", None, 1, 1, 1))
    return db


def _drop_stream_id(db: Db) -> None:
    db.stream_ids.remove("s2")


def _ghost_stream_id(db: Db) -> None:
    db.stream_ids.add("ghost")


def _ghost_log_id(db: Db) -> None:
    db.log_ids()
    db._log_ids.add("ghost")


def _unindexed_log(db: Db) -> None:
    db.log_ids()
    db._log_count -= 1  # the last log is indexed again: held twice
    db._log_ids.keys()


def _owner_lost(db: Db) -> None:
    del db.by_column["sync_checkpoint"].by_value[A][("c1|s1",)]


def _owner_wrong(db: Db) -> None:
    db.by_column["sync_checkpoint"].by_value.setdefault(C, {})[("c1|s1",)] = None


def _empty_entry_left(db: Db) -> None:
    db.by_column["compute_assignment"].by_value["nobody"] = {}


def _provider_owner_lost(db: Db) -> None:
    del db.by_column["compute_assignment"].by_value[C]


STALE: tuple[Callable[[Db], None], ...] = (
    _drop_stream_id, _ghost_stream_id, _ghost_log_id, _unindexed_log, _owner_lost, _owner_wrong, _empty_entry_left,
    _provider_owner_lost)


@pytest.mark.parametrize("stale", STALE, ids=lambda f: f.__name__)
def test_the_agreement_check_fails_on_a_stale_index(stale: Callable[[Db], None]) -> None:
    """``Db.secondary_indexes_agree`` (the engine's SLOW postcondition after every message) holds on
    a db written through its transactions, and fails once any one index is made stale by hand."""
    db = _filled()
    assert db.secondary_indexes_agree()
    try:
        stale(db)
        agrees = db.secondary_indexes_agree()
    except LocalProtocolError:  # (a stale SortedKeys may be refused at its next read instead)
        agrees = False
    assert not agrees


def test_an_identity_whose_rows_are_gone_leaves_no_index_entry() -> None:
    """Deleting every row an identity owns, requested or serves (as compaction deletes terminal
    assignments) and every stream removes them from the indexes: the values left are exactly those
    of the rows left (written by hand), and a rollback brings them back."""
    db = _filled()
    tx = Txn(db)
    for table, key in (("sync_checkpoint", ("c1|s1",)), ("compute_assignment", ("r1",)), ("sync_stream", ("s1",))):
        row = db.get(table, key)
        assert row is not None
        tx.delete(row)
    assert set(db.by_column["sync_checkpoint"].by_value) == {B}
    assert set(db.by_column["compute_assignment"].by_value) == {B}  # r1's requester A and provider owner C gone
    assert db.stream_ids.keys() == ["s2", "t1"]
    assert db.secondary_indexes_agree()
    tx.rollback()
    assert set(db.by_column["sync_checkpoint"].by_value) == {A, B}
    assert set(db.by_column["compute_assignment"].by_value) == {A, B, C}
    assert db.stream_ids.keys() == ["s1", "s2", "t1"]


def _pending(db: Db) -> tuple[object, ...]:
    """Every part of the sorted indexes' state, pending changes included."""
    return (*((list(sk._keys), set(sk._added), set(sk._removed)) for sk in (db.stream_ids, db._log_ids)),
            db._log_count)


def test_the_agreement_check_leaves_pending_changes_pending() -> None:
    """The SLOW check runs after every message in the tests (ICONTRACT_SLOW): if it applied the
    pending changes, no test would see a change left pending from one message to the next, as a
    server without the check does.  So it changes nothing it checks, and still judges the pending
    changes (a stale pending removal fails it)."""
    db = _filled()
    db.log_ids()
    db.stream_ids.keys()
    tx = Txn(db)
    tx.insert(SyncStream("new", "default", 1, 0, 0, 1, 1, 10, 1, 1))  # pending: an added stream id
    tx.insert(SyncEvent("new", 1, 1, "k", "h", "{}", A, 1, 1))  # a log not yet indexed
    old = db.get("sync_stream", ("s1",))
    assert isinstance(old, SyncStream)
    tx.update(old, SyncStream("s1", "default", 1, 0, 0, 1, 1, 10, 1, 2))  # an update: cancelled out
    tx.delete(db.get("sync_stream", ("t1",)))  # type: ignore[arg-type]  # pending: a removed stream id
    before = _pending(db)
    assert db.secondary_indexes_agree()
    assert _pending(db) == before
    db.stream_ids.remove("s2")  # stale: s2's row is still there
    assert not db.secondary_indexes_agree()
