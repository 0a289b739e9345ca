"""verify-log's faster paths (docs/performance.md, "verify-log, halved?"), each against the plain
code it stands in for.

* ``replay._type_check``: the per-reducer argument predicates against ``value_has_type``, over
  every argument type of every reducer and a table of values of every kind.
* ``db._differ``: the rows' dataclass inequality, over pairs that differ in each field in turn,
  equal pairs, rows of different tables, and objects that are not rows.
* ``durability._json_array``: ``json.loads``'s value or its error (type and message) for texts
  the log writes and texts it never writes (whitespace, trailing data, syntax errors).
* ``replay._delta_text``: ``delta_text(delta_of(tx))`` on transactions of every reducer, with
  updates and an insert deleted again in the same transaction.
* ``snapshot.matches`` and verify-log's lazy snapshot decoding: every status (match, mismatch,
  corrupt, a misnamed file, unreached, a file whose rows are in another order, two files for one
  offset) is what decoding every file first gave; ``stored_records`` is the table's count
  whether replay reads every record or stops early; a record that does not decode stops
  replay at its offset, after every record before it was replayed (the batched read).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from support.edited import edited_module
from support.logfiles import write_records

from reference import durability, replay, snapshot
from reference.db import Db, Txn, _differ
from reference.durability import DB_FILE
from reference.engine import Engine
from reference.log import TxRecord, delta_text
from spec.auth import Claims
from spec.messages import CallReducer
from spec.policy import Policy, StreamClass
from spec.schema import REDUCER_BY_NAME, TABLES
from spec.values import ArrayT, OptionT, SyncStream, value_has_type

POLICY = Policy(classes=(("s.", StreamClass("short", retain_count=5)),))
WRITER = Claims("a" * 64, frozenset({"sync.append", "sync.admin", "presence.write", "sync.checkpoint.write",
                                     "provider.publish"}), ("*",))

VALUES: list[Any] = [None, True, False, 0, 1, -1, 2**32 - 1, 2**32, 2**64 - 1, 2**64, -(2**63), 2**63, 1.0, "",
                     "x", "a" * 64, "sha256:" + "0" * 64, (), (5000,), (1, "x"), [1], {"a": 1}, b"x"]


def test_argument_predicates_are_value_has_type() -> None:
    types = {col.type for rdef in REDUCER_BY_NAME.values() for col in rdef.args}
    types |= {OptionT(t) for t in list(types) if not isinstance(t, OptionT)} | {ArrayT(t) for t in list(types)}
    for t in types:
        check = replay._type_check(t)
        for v in VALUES:
            assert check(v) == value_has_type(v, t), (t, v)
    for name, rdef in REDUCER_BY_NAME.items():
        assert [n for n, _ in replay._arg_checks(name)] == [c.name for c in rdef.args]


def _rows() -> list[Any]:
    """One row of each table, built from made-up values of the right shapes."""
    out = []
    for t in TABLES:
        values: list[Any] = []
        for f in fields(t.row_type):
            kind = str(f.type)
            values.append(() if "tuple" in kind else (None if "None" in kind and "str" not in kind
                                                      else ("v" if "str" in kind else 3)))
        out.append(t.row_type(*values))
    return out


def test_differ_is_row_inequality() -> None:
    rows = _rows()
    for row in rows:
        assert _differ(row, row) is False and _differ(row, replace(row)) is False
        for f in fields(row):
            other = replace(row, **{f.name: ("changed" if isinstance(getattr(row, f.name), str) else 99)})
            assert _differ(row, other) == (row != other) is True
        for other in rows:
            assert _differ(row, other) == (row != other)
        for stranger in (None, 3, "row", (1, 2)):
            assert _differ(row, stranger) == (row != stranger)  # type: ignore[arg-type]
    assert _differ("a", "a") is False and _differ("a", "b") is True  # type: ignore[arg-type]


def _loads_outcome(f: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", f(text)
    except Exception as exc:  # the outcome compared is the exception itself
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("text", [
    '["s.a","k1","{\\"a\\": 1}",null,null]', "[]", '["x",[5001,5002],3,"sha256:00"]', " []", "[] ", "[]x", "[1,]",
    "", "[", "[\"a\"", "nul", "[NaN]", "[1e5,-0,1.5]", "\ufeff[]", '[{"a":1,"a":2}]', "[" * 3000 + "]" * 3000,
    '"just a string"', "7", '[1] [2]',
])
def test_json_array_is_json_loads(text: str) -> None:
    assert _loads_outcome(durability._json_array, text) == _loads_outcome(json.loads, text)


def _history() -> tuple[Engine, list[TxRecord]]:
    """Transactions of every reducer and system action (updates, deletes by retention, a recovery)."""
    eng = Engine(POLICY)
    records: list[TxRecord] = []
    for i in range(40):
        eng.now += 1_000_000
        sid = ("s.a", "s.b", "x.c")[i % 3]
        eng.admin_call(WRITER, "append_sync_event", (sid, f"k{i}", json.dumps({"i": i, "pad": "é" * (i % 4)}),
                                                     None, None))
        if i % 5 == 0:
            eng.admin_call(WRITER, "ack_checkpoint", ("c1", sid, 1, 1))
            eng.admin_call(WRITER, "publish_provider_capability", (f"p{i % 2}", json.dumps({"n": i}), (5001,), i,
                                                                   "active"))
        if i % 7 == 0:
            kept = eng.connect(WRITER, confirmed=False)  # its session expires: the sweep marks it
            eng.handle(kept, CallReducer(i, "upsert_presence", (f"swept{i}", "dev", "node", "online", "", 1000)))
            eng.sweep(eng.now + 3_000_000)
            conn = eng.connect(WRITER, confirmed=False)  # closed: a disconnect transaction
            eng.handle(conn, CallReducer(i, "upsert_presence", (f"sess{i}", "dev", "node", "online", "", 1000)))
            eng.close(conn)
            eng.compact(eng.now)
        if i == 20:
            eng.admin_call(WRITER, "reset_stream_epoch", ("s.b",))
        records += eng.take_records()
        eng.advance_durable(eng.committed)
    eng = Engine.recover(records, clean=False, now=eng.now, policy=POLICY)
    records += eng.take_records()
    return eng, records


def test_delta_text_from_the_transaction_is_the_delta_text() -> None:
    _, records = _history()
    db = Db()
    kinds = set()
    for rec in records:
        tx = Txn(db)
        replay._run(db, tx, rec, POLICY)
        assert replay._delta_text(tx) == delta_text(replay.delta_of(tx)) == rec.delta_json
        kinds.add(rec.kind)
    assert kinds == {"reducer", "sweep", "compact", "disconnect", "recovery"}
    # an insert deleted again in the same transaction leaves an empty list behind: not in the delta
    tx = Txn(db)
    row = SyncStream("s.new", "short", 1, 0, 0, 0, 1, 10, 1, 1)
    tx.insert(row)
    other = replace(row, stream_id="s.other")
    tx.insert(other)
    tx.delete(row)
    assert tx.inserts["sync_stream"] == [other] and "sync_stream" not in tx.deletes
    assert replay._delta_text(tx) == delta_text(replay.delta_of(tx))
    tx.delete(other)
    assert replay._delta_text(tx) == delta_text(replay.delta_of(tx)) == "[]"


def _data(tmp_path: Path) -> tuple[Path, list[TxRecord]]:
    _, records = _history()
    data = tmp_path / "data"
    write_records(data, records, clean=True, policy=POLICY)
    return data, records


def _image_at(records: list[TxRecord], offset: int) -> snapshot.Image:
    eng = Engine.recover(records[:offset], clean=True, now=0, policy=POLICY)
    return snapshot.capture(eng.db, eng.committed, eng.head_hash)


def _statuses(data: Path) -> dict[str, tuple[str, str]]:
    return {c.file: (c.status, c.reason) for c in replay.verify_log(data).snapshots}


def _eager_statuses(data: Path) -> dict[str, tuple[str, str]]:
    """What verify-log said when it decoded every file before replaying: the same replay, each
    file decoded up front (corrupt or misnamed: corrupt; the later of two for an offset stands),
    then compared with ``differs`` at its offset, or unreached."""
    store = durability.LogStore.open(data, readonly=True)
    policy = store.load_policy() or POLICY
    out: dict[str, tuple[str, str]] = {}
    images: dict[int, tuple[str, snapshot.Image]] = {}
    for offset, path in snapshot.listing(data / snapshot.SNAPSHOT_DIR):
        try:
            image = snapshot.read(path)
        except snapshot.SnapshotError as exc:
            out[path.name] = ("corrupt", exc.reason)
            continue
        if image.offset != offset:
            out[path.name] = ("corrupt", f"the file name does not match its offset {image.offset}")
            continue
        images[offset] = (path.name, image)

    def seen(offset: int, db: Db, head: str) -> None:
        if offset in images:
            name, image = images[offset]
            if image.head_hash != head:
                out[name] = ("mismatch", f"chain head at {offset} is {head[:16]}..., the snapshot names "
                                         f"{image.head_hash[:16]}...")
                return
            diff = snapshot.differs(image, db)
            out[name] = ("match" if diff is None else "mismatch", diff or "")

    result = replay.replay(store.iter_records(), policy, seen)
    for _offset, (name, _image) in images.items():
        out.setdefault(name, ("unreached", f"past the {result.records} records replayed"))
    store.close()
    return out


def test_snapshot_statuses_are_what_decoding_every_file_gave(tmp_path: Path) -> None:
    data, records = _data(tmp_path)
    directory = data / snapshot.SNAPSHOT_DIR
    at = len(records) // 2
    image = _image_at(records, at)
    good = b"".join(snapshot.encode(image))
    snapshot.write(directory, image)
    eng = Engine.recover(records[:at], clean=True, now=0, policy=POLICY)
    assert snapshot.matches(good, eng.db, at, image.head_hash)
    assert not snapshot.matches(good[:-2] + b"x\n", eng.db, at, image.head_hash)
    assert not snapshot.matches(good, eng.db, at, "f" * 64)
    assert _statuses(data) == _eager_statuses(data) == {snapshot.file_name(at): ("match", "")}

    # the same state with every table's rows in reverse order: not the bytes this build writes,
    # so it is decoded -- and matches
    flipped = replace(image, tables=tuple((t, rows[::-1]) for t, rows in image.tables))
    assert any(len(rows) > 1 for _, rows in image.tables)
    snapshot.write(directory, flipped)
    assert not snapshot.matches((directory / snapshot.file_name(at)).read_bytes(), eng.db, at, image.head_hash)
    assert _statuses(data) == _eager_statuses(data) == {snapshot.file_name(at): ("match", "")}

    # misnamed, corrupt, past the end of the replay (unreached), forged rows, and two files for one
    # offset.  The replay stops early (the second-to-last record's stored hash tampered with): a
    # snapshot past the log's *head* is refused at the open instead (ADR-0037)
    cases = tmp_path / "cases"
    shutil.copytree(data, cases)
    stop = records[-2].offset
    conn = sqlite3.connect(cases / DB_FILE)
    with conn:
        conn.execute('UPDATE commit_log SET hash = ? WHERE "offset" = ?', ("0" * 64, stop))
    conn.close()
    d = cases / snapshot.SNAPSHOT_DIR
    (d / snapshot.file_name(at - 1)).write_bytes(good)  # names at - 1, says at
    (d / snapshot.file_name(at + 1)).write_bytes(good[:100])  # cut
    beyond = replace(image, offset=records[-1].offset)
    snapshot.write(d, beyond)
    (d / f"snap-{beyond.offset}.json").write_bytes(b"".join(snapshot.encode(beyond)))  # the same offset again
    sid = next(s for s, _, events in image.logs if len(events) > 1)
    forged = replace(image, logs=tuple((s, f, tuple(e)[::-1] if s == sid else e) for s, f, e in image.logs))
    quarter = len(records) // 4
    snapshot.write(d, replace(_image_at(records, quarter), head_hash="e" * 64))  # bound to another log
    at3 = 3 * len(records) // 4
    snapshot.write(d, replace(forged, offset=at3, head_hash=_image_at(records, at3).head_hash))
    got, want = _statuses(cases), _eager_statuses(cases)
    assert got == want
    assert {s for s, _ in got.values()} == {"match", "mismatch", "corrupt", "unreached"}
    assert got[snapshot.file_name(at - 1)] == ("corrupt", f"the file name does not match its offset {at}")

    # a log that stops early: the records before the bad one replayed, the table's count reported
    report = replay.verify_log(cases)
    assert report.ok is False and report.mismatch is not None and report.mismatch.offset == stop
    assert report.records == stop - 1 and report.stored_records == len(records)
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    target = records[len(records) - 7].offset
    conn = sqlite3.connect(broken / DB_FILE)
    with conn:
        conn.execute('UPDATE commit_log SET args_json = ? WHERE "offset" = ?', ("[1,", target))
    conn.close()
    for size in (1, 3, replay.READ_BATCH):
        replay.READ_BATCH = size  # type: ignore[misc]
        try:
            report = replay.verify_log(broken)
        finally:
            replay.READ_BATCH = 1024  # type: ignore[misc]
        assert report.mismatch is not None and report.mismatch.offset == target and report.records == target - 1
        assert report.stored_records == len(records) and not report.ok


# --- fifth session (docs/performance.md "verify-log, fifth session"; ADR-0025) ------------------------------


def _valid_value(t: Any) -> Any:
    """A value of type ``t`` from the table (the first that has it)."""
    return next(v for v in VALUES if value_has_type(v, t))


def _compiled_agrees(args_ok: Any) -> None:
    """``args_ok(name)(*args)`` is ``value_has_type`` of every argument: each position of each
    reducer given each value of the table (the others valid), then every argument wrong at once."""
    for name, rdef in REDUCER_BY_NAME.items():
        types = [col.type for col in rdef.args]
        valid = [_valid_value(t) for t in types]
        check = args_ok(name)
        assert check(*valid) is True, name
        for k, t in enumerate(types):
            for v in VALUES:
                args = [*valid[:k], v, *valid[k + 1:]]
                assert check(*args) == value_has_type(v, t), (name, k, v)
        wrong = [next(v for v in VALUES if not value_has_type(v, t)) for t in types]
        assert check(*wrong) is (not types), name


def test_the_compiled_argument_check_is_value_has_type() -> None:
    _compiled_agrees(replay._args_ok)


PLANTED_ARGS = (
    ("an option admits anything", 'return f"({arg} is None or {_type_expr(t.inner, arg, consts)})"', 'return "True"'),
    ("a u64 checked as a u32", 'return f"is_u64({arg})"', 'return f"is_u32({arg})"'),
    ("any one right argument is enough", 'body = " and ".join(', 'body = " or ".join('),
    ("a string checked as any type", 'return f"isinstance({arg}, str)"', 'return "True"'),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_ARGS, ids=[p[0] for p in PLANTED_ARGS])
def test_planted_bugs_in_the_compiled_argument_check_are_caught(name: str, old: str, new: str) -> None:
    mod = edited_module(replay, [(old, new)], name)
    with pytest.raises(AssertionError):
        _compiled_agrees(mod._args_ok)


def test_an_argument_of_the_wrong_type_stops_replay_by_name() -> None:
    """The compiled check only spares the loop: a wrong argument is still named by it."""
    _, records = _history()
    at = next(i for i, rec in enumerate(records) if rec.name == "append_sync_event" and i > 3)
    for k, bad in ((4, "7"), (0, 7), (3, 5), (4, -1)):
        args = list(records[at].args)
        args[k] = bad
        tampered = [*records[:at], replace(records[at], args=tuple(args), args_json=""), *records[at + 1:]]
        result = replay.replay(tampered, POLICY)
        col = REDUCER_BY_NAME["append_sync_event"].args[k].name
        assert result.records == at and result.mismatch == replay.Mismatch(
            records[at].offset, f"argument {col} of append_sync_event has the wrong type")
    assert replay.replay(records, POLICY).mismatch is None


def _delta_oracle(deletes: dict[str, list[Any]], inserts: dict[str, list[Any]]) -> str:
    """The delta's text written another way: ``json.dumps`` of each row's fields read by name
    (``dataclasses.fields``), tables in the schema's order, a table only if it has a row."""
    def row(r: Any) -> list[Any]:
        return [list(v) if isinstance(v, tuple) else v for v in (getattr(r, f.name) for f in fields(r))]
    return json.dumps([[t.name, [row(r) for r in deletes.get(t.name, [])], [row(r) for r in inserts.get(t.name, [])]]
                       for t in TABLES if deletes.get(t.name) or inserts.get(t.name)],
                      separators=(",", ":"), ensure_ascii=False)


def _delta_text_agrees(delta_text_of: Any) -> None:
    """``delta_text_of`` of per-table row lists (tables added to the dicts in random orders, some
    lists empty, rows with non-ASCII strings and arrays) is the oracle's text."""
    import random
    rng = random.Random(5)
    rows = {TABLES[k].name: r for k, r in enumerate(_rows())}
    odd = {name: replace(r, **{f.name: "é\u2028\"\\" for f in fields(r) if isinstance(getattr(r, f.name), str)})
           for name, r in rows.items()}
    for _ in range(300):
        deletes: dict[str, list[Any]] = {}
        inserts: dict[str, list[Any]] = {}
        for name in rng.sample(sorted(rows), rng.randrange(len(rows) + 1)):
            target = rng.choice((deletes, inserts))
            target[name] = [rng.choice((rows[name], odd[name])) for _ in range(rng.randrange(3))]
        assert delta_text_of(deletes, inserts) == _delta_oracle(deletes, inserts)


def test_the_delta_text_of_per_table_lists_is_the_oracle_text() -> None:
    from reference.log import delta_text_of
    _delta_text_agrees(delta_text_of)


PLANTED_DELTA = (
    ("tables in the dicts' order", "    for t, get in _TABLE_GETTERS:\n",
     "    for t, get in [(t, _table_values(t)) for t in {**deletes, **inserts} if t in TABLE_BY_NAME]:\n"),
    ("an empty list keeps its table", "        if d or i:\n            out.append(",
     "        if d is not None or i is not None:\n            out.append("),
    ("the deletes written as the inserts", "[*map(get, d)] if d else []", "[*map(get, i)] if i else []"),
    ("one getter for every table", "_TABLE_GETTERS = tuple((t, _table_values(t)) for t in TABLE_BY_NAME)",
     "_TABLE_GETTERS = tuple((t, _table_values(next(iter(TABLE_BY_NAME)))) for t in TABLE_BY_NAME)"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_DELTA, ids=[p[0] for p in PLANTED_DELTA])
def test_planted_bugs_in_the_delta_text_are_caught(name: str, old: str, new: str) -> None:
    from reference import log
    mod = edited_module(log, [(old, new)], name)
    with pytest.raises((AssertionError, AttributeError)):
        _delta_text_agrees(mod.delta_text_of)


def _delta_parts_agree(delta_parts: Any) -> None:
    """``delta_parts`` (the engine's sealing: sixth session) of per-table row lists: its text is the
    oracle's, and its changes are the ``RowChange`` values built table by table in the schema's
    order from the lists as they are (a table only if it has a row)."""
    from reference.log import RowChange

    def changes(deletes: dict[str, list[Any]], inserts: dict[str, list[Any]]) -> tuple[Any, ...]:
        return tuple(RowChange(t.name, tuple(deletes.get(t.name, [])), tuple(inserts.get(t.name, [])))
                     for t in TABLES if deletes.get(t.name) or inserts.get(t.name))

    def both(deletes: dict[str, list[Any]], inserts: dict[str, list[Any]]) -> str:
        got, text = delta_parts(deletes, inserts)
        assert got == changes(deletes, inserts)
        assert all(type(c.deletes) is tuple and type(c.inserts) is tuple for c in got)
        return str(text)
    _delta_text_agrees(both)
    # the shapes an append, a first append and a checkpoint take: one table on each side, the same or not
    rows = {TABLES[k].name: r for k, r in enumerate(_rows())}
    for deletes, inserts in (({"sync_stream": [rows["sync_stream"]]},
                              {"sync_stream": [rows["sync_stream"]], "sync_event": [rows["sync_event"]]}),
                             ({}, {"sync_event": [rows["sync_event"]], "sync_stream": [rows["sync_stream"]]}),
                             ({"sync_event": [rows["sync_event"]]}, {"sync_stream": [rows["sync_stream"]]}),
                             ({"sync_checkpoint": [rows["sync_checkpoint"]]},
                              {"sync_checkpoint": [rows["sync_checkpoint"]]}),
                             ({}, {}), ({"sync_stream": []}, {"sync_event": []})):
        assert both(deletes, inserts) == _delta_oracle(deletes, inserts)


def test_the_delta_parts_of_per_table_lists_are_the_oracles() -> None:
    from reference.log import delta_parts
    _delta_parts_agree(delta_parts)


def test_a_sealed_record_carries_the_text_of_its_changes_and_a_wrong_text_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine hands ``make_record`` the text ``delta_parts`` wrote: every record of a history of
    every transaction kind carries ``delta_text`` of its changes, and hashes as the definition says;
    a text that is not the changes' is refused by ``Engine._seal``'s contract (on in the tests)."""
    import icontract

    import reference.engine
    from reference.log import body_json, chain, delta_parts
    _, records = _history()
    for rec in records:
        assert rec.delta_json == delta_text(rec.changes)
        body = body_json(rec.offset, rec.kind, rec.name, rec.caller, rec.args, rec.timestamp, rec.changes)
        assert rec.hash == chain(rec.prev_hash, body)

    def wrong_text(deletes: Any, inserts: Any) -> tuple[Any, str]:
        changes, _ = delta_parts(deletes, inserts)
        return changes, delta_text(changes[1:])  # the text of all but the first table's change

    eng = Engine(POLICY)
    eng.admin_call(WRITER, "append_sync_event", ("s.a", "k0", "{}", None, None))  # creates the stream: 2 tables
    monkeypatch.setattr(reference.engine, "delta_parts", wrong_text)
    with pytest.raises(icontract.ViolationError, match="the record carries the text of its changes"):
        eng.admin_call(WRITER, "append_sync_event", ("s.a", "k1", "{}", None, None))


PLANTED_PARTS = (
    ("tables in the dicts' order", "tables = sorted(deletes.keys() | inserts.keys(), key=position)",
     "tables = list(deletes.keys() | inserts.keys())"),
    ("two tables left unsorted", "if len(deletes) + len(inserts) > 1", "if len(deletes) + len(inserts) > 2"),
    ("an empty list keeps its table", "        if d or i:\n            dt = ",
     "        if d is not None or i is not None:\n            dt = "),
    ("the changes' deletes and inserts swapped", "changes.append(RowChange(t, dt, it))",
     "changes.append(RowChange(t, it, dt))"),
    ("the text's deletes written as the inserts", "out.append([t, [*map(get, dt)], [*map(get, it)]])",
     "out.append([t, [*map(get, it)], [*map(get, it)]])"),
    ("a list kept as it is", "dt = tuple(d) if d else ()", "dt = d if d else ()"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_PARTS, ids=[p[0] for p in PLANTED_PARTS])
def test_planted_bugs_in_the_delta_parts_are_caught(name: str, old: str, new: str) -> None:
    from reference import log
    mod = edited_module(log, [(old, new)], name)
    with pytest.raises((AssertionError, AttributeError)):
        _delta_parts_agree(mod.delta_parts)


def _matches_agrees(matches: Any) -> None:
    """``matches(data, ...)`` is ``data == the joined file`` (the oracle: the lines joined, then
    compared whole) for the file itself and for files one edit away from it."""
    eng, _ = _history()
    image = snapshot.capture(eng.db, eng.committed, eng.head_hash)
    data = b"".join(snapshot.encode(image))
    mid = len(data) // 2
    variants = [data, data + b"x", data + b"\n", data[:-1], data[:mid], b"", data[:mid] + bytes([data[mid] ^ 1]) +
                data[mid + 1:], data.replace(b"\n", b"\r\n", 1), data.replace(b"\n", b"", 1), data[1:], b"\n" + data,
                data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]]  # the trailer's digest
    for v in variants:
        assert matches(v, eng.db, eng.committed, eng.head_hash) == (v == data)
    assert not matches(data, eng.db, eng.committed, "f" * 64)  # another head: another header line
    assert not matches(data, eng.db, eng.committed - 1, eng.head_hash)


def test_a_snapshot_file_matches_exactly_when_it_is_the_joined_file() -> None:
    _matches_agrees(snapshot.matches)


PLANTED_MATCHES = (
    ("bytes after the last line are ignored", "    return pos == len(data)\n", "    return True\n"),
    ("each line looked for at the start", "if not data.startswith(line, pos):", "if not data.startswith(line):"),
    ("the trailer line left out", "        for line in encode(capture(db, offset, head_hash, log_id)):\n",
     "        for line in list(encode(capture(db, offset, head_hash, log_id)))[:-1]:\n"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_MATCHES, ids=[p[0] for p in PLANTED_MATCHES])
def test_planted_bugs_in_the_snapshot_comparison_are_caught(name: str, old: str, new: str) -> None:
    mod = edited_module(snapshot, [(old, new)], name)
    with pytest.raises(AssertionError):
        _matches_agrees(mod.matches)


def test_on_step_sees_the_offsets_asked_for_and_the_heads_there() -> None:
    _, records = _history()
    for at in (None, {3, 7, len(records), len(records) + 5}, set(), range(1, 4)):
        seen: list[tuple[int, str]] = []

        def step(o: int, db: Db, h: str, seen: list[tuple[int, str]] = seen) -> None:
            seen.append((o, h))
        result = replay.replay(records, POLICY, step, at)
        wanted = [o for o in range(1, len(records) + 1) if at is None or o in at]
        assert seen == [(o, records[o - 1].hash) for o in wanted] and result.mismatch is None


def _claims_agree(claims_text: Any) -> None:
    """``claims_text`` of claims objects made and dropped in turn (past the identity table's bound;
    CPython reuses a dropped object's address) is ``json.dumps`` of their fields, every time."""
    kept = []
    for i in range(3000):
        c = Claims(f"{i % 7:064x}", frozenset({"sync.append"} if i % 2 else {"b", "a"}),
                   ("*",) if i % 3 else ("s.", "t."), device_id=None if i % 5 else f"d{i}", schema_version=i % 4)
        want = json.dumps({"identity": c.identity, "scopes": sorted(c.scopes), "streams": list(c.streams),
                           "device_id": c.device_id, "session_id": None, "client_build_id": None,
                           "protocol_version": None, "schema_version": c.schema_version},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert claims_text(c) == want
        assert claims_text(c) == want  # found again
        if i % 10 == 0:
            kept.append((c, want))
    for c, want in kept:
        assert claims_text(c) == want
    assert claims_text(None) == "null"
    # claims equal in Python but not in JSON -- a schema_version of 1, True or 1.0 (1 == True ==
    # 1.0; a stored caller text decodes to whichever it holds, e.g. one tampered with) -- each get
    # their own text, whichever was asked for first: a text of another's made a changed record
    # hash as the original (recovery and verify passed it, or not, by what they had read before)
    for version in (1, True, 1.0, 0, False, 1, 0.0):
        c = Claims("0" * 64, frozenset({"a"}), ("*",), schema_version=version)  # type: ignore[arg-type]
        assert claims_text(c) == json.dumps({
            "identity": c.identity, "scopes": ["a"], "streams": ["*"], "device_id": None, "session_id": None,
            "client_build_id": None, "protocol_version": None, "schema_version": version},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False), version


def test_the_claims_text_by_identity_is_the_canonical_text() -> None:
    from reference import log
    _claims_agree(log._claims_text)


PLANTED_CLAIMS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("an entry that does not hold its object",
     (("    _CLAIMS_SEEN[id(c)] = (c, text)\n", "    _CLAIMS_SEEN[id(c)] = (None, text)\n"),)),
    ("claims keyed by their identity field",
     (("    held = _CLAIMS_SEEN.get(id(c))\n", "    held = _CLAIMS_SEEN.get(hash(c.identity) if c else 0)\n"),
      ("    _CLAIMS_SEEN[id(c)] = (c, text)\n", "    _CLAIMS_SEEN[hash(c.identity) if c else 0] = (c, text)\n"))),
    ("claims texts kept by value alone (1 == True == 1.0)",
     (("type(c.schema_version).__name__ if c is not None else \"\"", "\"\""),)),
)


@pytest.mark.parametrize(("name", "edits"), PLANTED_CLAIMS, ids=[p[0] for p in PLANTED_CLAIMS])
def test_planted_bugs_in_the_claims_text_are_caught(name: str, edits: tuple[tuple[str, str], ...]) -> None:
    from reference import log
    mod = edited_module(log, edits, name)
    with pytest.raises(AssertionError):
        _claims_agree(mod._claims_text)


def _read_all(records: Any) -> tuple[list[TxRecord], str | None]:
    """The records an iterator gives, and the error that ends it (None: it ended; a planted module's
    own ``LogCorruption`` is another class, so its base, ``ValueError``, is caught and named)."""
    out: list[TxRecord] = []
    try:
        for rec in records:
            out.append(rec)
    except ValueError as exc:
        return out, f"{type(exc).__name__}: {exc}"
    return out, None


def _batches_agree(record_batches: Any, data: Path) -> None:
    """``record_batches`` flattened is ``iter_records``: the same records (and texts), then the same
    error, whatever the batch size, for an intact log and for one with a row that does not decode."""
    import itertools
    for rows in (True, False):
        store = durability.LogStore.open(data, readonly=True)
        try:
            want = _read_all(store.iter_records(rows=rows))
            for size in (1, 2, 7, 1024):
                got = _read_all(itertools.chain.from_iterable(record_batches(store, size, rows=rows)))
                assert got == want
                assert [(r.delta_json, r.args_json) for r in got[0]] == [(r.delta_json, r.args_json) for r in want[0]]
            after = _read_all(itertools.chain.from_iterable(record_batches(store, 3, after=5, rows=rows)))
            assert after == _read_all(store.iter_records(after=5, rows=rows))
        finally:
            store.close()


def test_record_batches_read_what_iter_records_reads(tmp_path: Path) -> None:
    data, records = _data(tmp_path)
    _batches_agree(durability.LogStore.record_batches, data)
    target = records[10].offset
    conn = sqlite3.connect(data / DB_FILE)
    with conn:
        conn.execute('UPDATE commit_log SET args_json = ? WHERE "offset" = ?', ("[1,", target))
    conn.close()
    _batches_agree(durability.LogStore.record_batches, data)
    store = durability.LogStore.open(data, readonly=True)
    got, error = _read_all(store.iter_records())
    store.close()
    assert len(got) == target - 1 and error is not None and error.startswith("LogCorruption:")
    assert f"offset {target}" in error


_BAD_ROW = "            except LogCorruption:\n                yield batch\n                raise\n"
PLANTED_BATCHES = (
    ("the batch of a bad row is dropped", _BAD_ROW, "            except LogCorruption:\n                raise\n"),
    ("a bad row is skipped", _BAD_ROW, "            except LogCorruption:\n                pass\n"),
    ("the batches start one past after", '(after,))\n        while True:\n            fetched',
     '(after + 1,))\n        while True:\n            fetched'),
    ("the last short batch is dropped", "            if not fetched:\n                return\n",
     "            if len(fetched) < size:\n                return\n"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_BATCHES, ids=[p[0] for p in PLANTED_BATCHES])
def test_planted_bugs_in_the_batched_read_are_caught(name: str, old: str, new: str, tmp_path: Path) -> None:
    data, records = _data(tmp_path)
    conn = sqlite3.connect(data / DB_FILE)
    with conn:
        conn.execute('UPDATE commit_log SET args_json = ? WHERE "offset" = ?', ("[1,", records[10].offset))
    conn.close()
    mod = edited_module(durability, [(old, new)], name)
    with pytest.raises(AssertionError):
        _batches_agree(mod.LogStore.record_batches, data)


def _decode_changes_before(offset: int, text: str) -> Any:
    """``decode_changes`` as it was (the oracle): ``json.loads``, then ``row_from_json`` per row."""
    from reference.log import RowChange, row_from_json
    try:
        changes = json.loads(text)
        if not isinstance(changes, list):
            raise ValueError("changes must be a JSON array")
        return tuple(RowChange(table, tuple([row_from_json(table, r) for r in deletes]),
                               tuple([row_from_json(table, r) for r in inserts]))
                     for table, deletes, inserts in changes)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise durability.LogCorruption(offset, f"{type(exc).__name__}: {exc}") from exc


DELTA_CASES = [
    "[]", "{}", "[[]]", "[] ", " []", "[]x", "", "[", '[["nope",[],[]]]', '[["nope",[[1]],[]]]', '[["nope",5,[]]]',
    '[["sync_stream","ab",[]]]', '[["sync_stream",[],"ab"]]', '[["sync_stream",5,[]]]', '[["sync_stream",[],[[1,2]]]]',
    '[["sync_stream",[],[{"a":1}]]]', '[["sync_stream",[],[7]]]', '[["sync_stream",[],[]]]', '[[1,[],[]]]',
    '[[["x"],[[1]],[]]]', '[["sync_stream",[],[]],["sync_event",[]]]', '[["sync_stream",[],[],4]]',
    # rows of a table with array columns that are not rows: a text of 12 characters (copied to a list,
    # built), a short list, a dict, an array column holding a scalar, arrays on both sides
    '[["sync_stream",[],["abcdefghijkl"]]]', '[["sync_stream",[["a"]],[]]]', '[["sync_stream",[{"a":1}],[]]]',
    '[["sync_stream",[],[["s","c",1,0,0,2,1,5,7,7,3,4]]]]',
    '[["sync_stream",[["s","c",2,1,4,5,1,5,7,7,[1],[4]]],[["s","c",2,1,4,6,1,5,7,8,[1,2],[4,[5]]]]]]',
]


def _decode_agrees(decode_changes: Any) -> None:
    """``decode_changes`` gives the oracle's rows (and types: arrays as tuples), or its error with the
    same text, for every stored delta of every kind of transaction and a table of broken ones."""
    _, records = _history()
    texts = [rec.delta_json for rec in records] + DELTA_CASES
    assert any('"compute_assignment"' in t or '"provider_capability"' in t for t in texts)  # Vec columns
    for text in texts:
        try:
            want: Any = ("ok", _decode_changes_before(9, text))
        except durability.LogCorruption as exc:
            want = ("error", str(exc))
        try:
            got: Any = ("ok", decode_changes(9, text))
        except ValueError as exc:  # a planted module's own LogCorruption
            got = ("error", str(exc))
        except Exception as exc:  # anything else is a difference too
            got = ("raised", type(exc).__name__)
        assert got == want, text
        if got[0] == "ok":
            assert [type(v) for c in got[1] for r in (*c.deletes, *c.inserts) for v in fields_of(r)] == \
                [type(v) for c in want[1] for r in (*c.deletes, *c.inserts) for v in fields_of(r)]


def fields_of(row: Any) -> list[Any]:
    return [getattr(row, f.name) for f in fields(row)]


def test_decode_changes_is_what_it_was() -> None:
    _decode_agrees(durability.decode_changes)


PLANTED_DECODE = (
    ("rows with array columns built as the others", "                if not arrays:\n", "                if True:\n"),
    ("the deletes built from the inserts", "tuple([make(*r) for r in deletes])", "tuple([make(*r) for r in inserts])"),
    ("the type guard left out",
     "            if type(deletes) is list and type(inserts) is list and (deletes or inserts):",
     "            if deletes or inserts:"),
    ("json.loads's leniency lost", "        changes = _json_array(text)\n",
     "        changes = _scan_json(text, 0)[0]\n"),
    ("an array column left a list", "                r[i] = tuple(v)\n", "                r[i] = v\n"),
    ("a row that is not a list taken as it is", "        if type(r) is not list:\n            r = list(r)\n",
     "        if type(r) is not list:\n            pass\n"),
    ("only the first array column", "        for i in arrays:\n            v = r[i]",
     "        for i in arrays[:1]:\n            v = r[i]"),
    ("the array rows' deletes built from the inserts", "RowChange(table, _array_rows(make, arrays, deletes)",
     "RowChange(table, _array_rows(make, arrays, inserts)"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_DECODE, ids=[p[0] for p in PLANTED_DECODE])
def test_planted_bugs_in_decode_changes_are_caught(name: str, old: str, new: str) -> None:
    mod = edited_module(durability, [(old, new)], name)
    with pytest.raises(AssertionError):
        _decode_agrees(mod.decode_changes)


@pytest.mark.parametrize("args", [
    (), ("s.a", "k1", '{"a": "é\\u2028"}', None, None), ("p", '{"n":1}', (5001, 5002), 7, "active"),
    ("x", (), ("a", "b\"c"), 2**64 - 1, -1), (True, False, None, 0), ((1, (2, 3)),), ["a", ("b",)],
])
def test_args_text_is_the_json_array_of_the_arguments(args: Any) -> None:
    """The arguments go to the encoder as they are (tuples written as arrays): the oracle is
    ``json.dumps`` of the list with every tuple made a list first."""
    from reference.log import args_text

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple | list) else v
    assert args_text(args) == json.dumps(plain(args), separators=(",", ":"), ensure_ascii=False)


def _stored_claims_agree(claims_of_text: Any) -> None:
    """Claims read from stored texts in runs and alternations (the order a log's records give them)
    are those ``claims_from_json`` makes of each text itself."""
    from reference.log import claims_from_json, claims_json
    texts = [json.dumps(claims_json(c), separators=(",", ":"), ensure_ascii=False) for c in (
        Claims("a" * 64, frozenset({"sync.append"}), ("s.*",)),
        Claims("b" * 64, frozenset({"sync.append", "sync.admin"}), ("*",), "dev", "sess", "build-1", 2, 3),
        None)]
    for k in (0, 0, 1, 1, 0, 2, 2, 1, 0, 2, 0):
        got = claims_of_text(texts[k])
        assert got == claims_from_json(json.loads(texts[k])), k


def test_the_claims_of_stored_texts_are_the_texts_claims() -> None:
    _stored_claims_agree(durability._claims)


PLANTED_LAST_CLAIMS = (
    ("the last claims whatever the text", "    if text == last[0]:\n", "    if last[0] is not None:\n"),
    ("the text remembered, not its claims", "    _last_claims = (text, claims)", "    _last_claims = (text, last[1])"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_LAST_CLAIMS, ids=[p[0] for p in PLANTED_LAST_CLAIMS])
def test_planted_bugs_in_the_last_claims_are_caught(name: str, old: str, new: str) -> None:
    mod = edited_module(durability, [(old, new)], name)
    with pytest.raises(AssertionError):
        _stored_claims_agree(mod._claims)
