"""Replay parity: re-execute the commit log from empty state (``syncref verify-log``).

Recovery (:meth:`Engine.recover`) trusts the recorded deltas: it applies them and checks only
that the hash chain over them is intact.  Replay trusts nothing but the *calls*.  Starting from
an empty :class:`~reference.db.Db`, each record's transaction is run again -- the reducer from
:data:`reference.reducers.REDUCERS` with the recorded caller claims, timestamp and offset, or the
system action (``sweep``, ``compact``, ``disconnect``, ``recovery``) with its recorded arguments
-- and the delta it produces must equal the recorded delta, row for row; the chain is then
recomputed over the recorded call and the *re-executed* delta and must give the stored hash at
every offset, so the final digest is reached only if every transaction is reproducible.  A
tampered argument, a delta that no call produces, a reordered or missing record and a reducer
whose behaviour has drifted since the log was written all stop replay at the offset concerned.

The comparison is of texts: the re-executed delta's canonical JSON against the stored delta text
(equal texts are equal deltas -- the encoding is injective on row values -- and a stored text that
is not canonical is a difference too); the stored rows are decoded only to say what differs.  The
hash is then recomputed over that re-executed text.  Likewise each snapshot file is first compared,
byte for byte, with the file this build writes of the replayed state at its offset, and decoded
(and compared row by row) only if it is not that file.

Reducers need the stream policy (payload limits, retention, bridge kinds); replay uses the one
stored in the data directory, else :data:`spec.policy.DEFAULT_POLICY`.  The recovery action's
margin (``max_undurable + 1``) is not in the log, so replay checks that a recovery record moves
every epoch strictly past all existing ones, that its version floor is past every version by the same
margin, and re-runs the bump with the margin they imply.  The floors (``epoch_floor``,
``version_floor``) are state but not rows: replay re-creates them by re-executing, and its final
check compares them with what recovery (:func:`reference.engine.apply_record`) derives from the log.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass

from reference import reducers as r
from reference import snapshot
from reference.db import Db, Txn
from reference.durability import FORMAT, HEAD_FILE, LogCorruption, LogStore, decode_changes, read_head_mark
from reference.log import GENESIS, RowChange, TxRecord, args_text, chain_hash, delta_text, delta_text_of, floors_after
from spec.errors import SyncError
from spec.policy import DEFAULT_POLICY, Policy
from spec.schema import REDUCER_BY_NAME, TABLE_BY_NAME
from spec.values import STRING, U32, U64, OptionT, SatsType, SyncStream, is_u32, is_u64, value_has_type


@dataclass(frozen=True, slots=True)
class Mismatch:
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReplayResult:
    records: int  # records re-executed and matched
    digest: str  # the recomputed chain head after them
    mismatch: Mismatch | None


class UnreadableLog(ValueError):
    """The data directory's database holds no commit log this build can read (another log format,
    no format marker, a stored policy that does not decode): :func:`verify_log` checked nothing."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    digest: str
    stored_records: int
    stored_digest: str
    policy: str  # "stored" or "default"
    clean_shutdown: bool
    mismatch: Mismatch | None
    snapshots: tuple[SnapshotCheck, ...] = ()
    log_id: str | None = None  # meta.log_id (ADR-0039); None: a log made before ids, not yet served
    head_mark: SnapshotCheck | None = None  # DIR/syncref.head's record against the replay (None: no mark)

    @property
    def ok(self) -> bool:
        return (self.mismatch is None and self.digest == self.stored_digest and self.records == self.stored_records
                and all(s.ok for s in self.snapshots) and (self.head_mark is None or self.head_mark.ok))


@dataclass(frozen=True, slots=True)
class SnapshotCheck:
    """One snapshot file against the replay: ``status`` is ``match`` (the re-executed state and
    chain head at its offset equal the image), ``mismatch``, ``corrupt`` (unreadable, checksum),
    or ``unreached`` (its offset is past what was replayed)."""

    file: str
    offset: int
    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "match"


class _Diverged(Exception):
    pass


def delta_of(tx: Txn) -> tuple[RowChange, ...]:
    """The persistent-table delta of a transaction, in the engine's order (schema table order)."""
    tables = [t for t in TABLE_BY_NAME if tx.deletes.get(t) or tx.inserts.get(t)]
    return tuple(RowChange(t, tuple(tx.deletes.get(t, ())), tuple(tx.inserts.get(t, ()))) for t in tables)


def _delta_text(tx: Txn) -> str:
    """``delta_text(delta_of(tx))``, written from the transaction's lists without building the
    :class:`RowChange` values (they are needed only to explain a difference)."""
    return delta_text_of(tx.deletes, tx.inserts)


def _type_check(t: SatsType) -> Callable[[object], bool]:
    """A predicate equal to ``value_has_type(value, t)`` for the argument types the reducers take
    most (strings, u64, options of them), without its chain of type comparisons per call."""
    if isinstance(t, OptionT):
        inner = _type_check(t.inner)
        return lambda v: v is None or inner(v)
    if t == STRING:
        return lambda v: isinstance(v, str)
    if t == U64:
        return is_u64
    if t == U32:
        return is_u32
    return lambda v: value_has_type(v, t)


@functools.cache
def _arg_checks(reducer: str) -> tuple[tuple[str, Callable[[object], bool]], ...]:
    return tuple((col.name, _type_check(col.type)) for col in REDUCER_BY_NAME[reducer].args)


def _type_expr(t: SatsType, arg: str, consts: dict[str, object]) -> str:
    """A Python expression over the variable ``arg`` equal to ``value_has_type(arg, t)`` (what
    :func:`_type_check` tests, written inline); a type it has no form for is left to
    ``value_has_type`` itself, the type bound in ``consts``."""
    if isinstance(t, OptionT):
        return f"({arg} is None or {_type_expr(t.inner, arg, consts)})"
    if t == STRING:
        return f"isinstance({arg}, str)"
    if t == U64:
        return f"is_u64({arg})"
    if t == U32:
        return f"is_u32({arg})"
    name = f"T{len(consts)}"
    consts[name] = t
    return f"value_has_type({arg}, {name})"


@functools.cache
def _args_ok(reducer: str) -> Callable[..., bool]:
    """One predicate over a reducer's whole argument list, equal to every ``_arg_checks`` predicate
    holding (and so to ``value_has_type`` of each argument), compiled once from the argument types:
    replay tests a record's arguments with one call instead of a loop of calls per argument.  It
    takes the arguments as positional parameters, so the caller checks their number first.  Only a
    yes is taken from it: on a no, the loop over ``_arg_checks`` decides, as before, and names the
    first argument that is wrong."""
    cols = REDUCER_BY_NAME[reducer].args
    consts: dict[str, object] = {}
    params = [f"a{k}" for k in range(len(cols))]
    body = " and ".join(_type_expr(col.type, a, consts) for col, a in zip(cols, params, strict=True)) or "True"
    namespace: dict[str, object] = {"is_u64": is_u64, "is_u32": is_u32, "value_has_type": value_has_type, **consts}
    exec(f"def ok({', '.join(params)}):\n    return {body}\n", namespace)  # code built from the schema
    ok = namespace["ok"]
    assert callable(ok)
    return ok


def _run(db: Db, tx: Txn, rec: TxRecord, policy: Policy) -> None:
    args = rec.args
    if rec.kind == "reducer":
        rdef = REDUCER_BY_NAME.get(rec.name)
        if rdef is None:
            raise _Diverged(f"unknown reducer {rec.name!r}")
        if rec.caller is None:
            raise _Diverged("a reducer record without a caller")
        if len(args) != len(rdef.args):
            raise _Diverged(f"{rec.name} takes {len(rdef.args)} arguments, the record has {len(args)}")
        if not _args_ok(rec.name)(*args):  # the per-argument checks name the argument
            for (col, has_type), value in zip(_arg_checks(rec.name), args, strict=True):
                if not has_type(value):
                    raise _Diverged(f"argument {col} of {rec.name} has the wrong type")
        r.REDUCERS[rec.name](tx, r.Ctx(rec.caller, rec.timestamp, rec.offset, policy), *args)
    elif rec.kind == "sweep" and len(args) == 1 and isinstance(args[0], int):
        r.sweep_presence(tx, args[0])
    elif rec.kind == "compact" and len(args) == 1 and isinstance(args[0], int):
        r.compact(tx, args[0], policy)
    elif rec.kind == "disconnect" and len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], tuple):
        r.disconnect_sessions(tx, rec.timestamp, args[0], frozenset(args[1]))
    elif rec.kind == "recovery" and len(args) == 2 and all(isinstance(a, int) for a in args):
        top = max([db.epoch_floor, *(s.epoch for s in db.pk["sync_stream"].values() if isinstance(s, SyncStream))])
        if args[0] <= top:
            raise _Diverged(f"recovery epoch {args[0]} does not exceed every existing epoch ({top})")
        margin = args[0] - top - 1
        if args[1] != r.top_version(db) + margin + 1:
            raise _Diverged(f"recovery version {args[1]} is not the largest version {r.top_version(db)} + "
                            f"the margin {margin} + 1 its epoch implies")
        r.recovery_bump(tx, rec.timestamp, margin)
    else:
        raise _Diverged(f"unknown or malformed {rec.kind!r} record")
    if rec.kind != rec.name and rec.kind != "reducer":
        raise _Diverged(f"system record {rec.kind!r} named {rec.name!r}")


def _describe(recorded: tuple[RowChange, ...], replayed: tuple[RowChange, ...]) -> str:
    rec_t = {c.table: c for c in recorded}
    rep_t = {c.table: c for c in replayed}
    for table in TABLE_BY_NAME:
        a, b = rec_t.get(table), rep_t.get(table)
        if a != b:
            def show(c: RowChange | None) -> str:
                return "nothing" if c is None else f"-{list(c.deletes)!r} +{list(c.inserts)!r}"
            return f"table {table}: recorded {show(a)[:300]}, re-executed {show(b)[:300]}"
    return "the stored delta text is not the canonical encoding of its rows (or its tables are out of order)"


def replay_step(db: Db, rec: TxRecord, head: str, expected_offset: int, policy: Policy) -> str:
    """Re-execute one record on ``db`` (committing it) and return the new chain head; raise
    :class:`_Diverged` if it does not reproduce the record."""
    if rec.offset != expected_offset:
        raise _Diverged(f"expected offset {expected_offset}, found {rec.offset}")
    if rec.prev_hash != head:
        raise _Diverged("prev_hash does not match the recomputed chain")
    tx = Txn(db)
    try:
        _run(db, tx, rec, policy)
    except _Diverged:
        tx.rollback()
        raise
    except SyncError as err:
        tx.rollback()
        raise _Diverged(f"re-execution failed with {err.code.value}: {err.details}") from err
    except Exception as exc:
        tx.rollback()
        raise _Diverged(f"re-execution raised {type(exc).__name__}: {exc}") from exc
    if not tx.wrote:
        raise _Diverged("re-execution wrote nothing, but only writing transactions are logged")
    # A stored record carries its delta's stored text: equal canonical texts are equal deltas (the
    # encoding is injective on row values), so the stored rows need decoding only to explain a
    # difference, and the re-executed rows need collecting into RowChange values only then, or
    # for the floors of a record that deletes an assignment.  A record without the text (built in
    # memory) is compared row by row.
    changes: tuple[RowChange, ...] | None = None
    if rec.delta_json:
        text = delta_text_of(tx.deletes, tx.inserts)  # _delta_text(tx), without the call
        if text != rec.delta_json:
            changes = delta_of(tx)
            try:
                recorded = decode_changes(rec.offset, rec.delta_json)
            except LogCorruption as exc:
                raise _Diverged(str(exc)) from exc
            raise _Diverged("re-executed delta differs: " + _describe(recorded, changes))
    else:
        changes = delta_of(tx)
        text = delta_text(changes)
        if changes != rec.changes:
            raise _Diverged("re-executed delta differs: " + _describe(rec.changes, changes))
    if rec.kind == "recovery" or tx.deletes.get("compute_assignment"):
        floors = floors_after(rec.kind, rec.args, delta_of(tx) if changes is None else changes,
                              tx.old_epoch_floor, tx.old_version_floor)  # = record_floors
    else:  # floors_after's common case: nothing that moves a floor
        floors = (tx.old_epoch_floor, tx.old_version_floor)
    if floors != (db.epoch_floor, db.version_floor):
        raise _Diverged(f"re-executed floors (epoch, version) {(db.epoch_floor, db.version_floor)}, recovery would "
                        f"derive {floors} from the record")
    # The chain hash over the call and the *re-executed* delta's text, with the arguments in their
    # canonical encoding -- what restart hashes (``record_hash`` of a decoded record), so a record
    # hashed over a stored arguments text that is not canonical is refused here as there (the
    # stored text was hashed first until the seventh session, which accepted it; ~0.5 µs a record).
    digest = chain_hash(head, rec.offset, rec.kind, rec.name, rec.caller, args_text(rec.args), rec.timestamp, text)
    if digest != rec.hash:
        raise _Diverged(f"hash differs: recorded {rec.hash}, recomputed {digest}")
    return digest


def replay(records: Iterable[TxRecord], policy: Policy = DEFAULT_POLICY,
           on_step: Callable[[int, Db, str], None] | None = None, at: Container[int] | None = None) -> ReplayResult:
    """Re-execute ``records`` from empty state; stop at the first record that does not reproduce.
    ``on_step(offset, db, head)`` sees the re-executed state after each record (only after those
    whose offsets are in ``at``, if given).

    The cyclic garbage collector is off meanwhile, as in :func:`reference.durability.restart`: the
    state only grows, and rows and records are acyclic, so its passes over the growing heap would
    find nothing."""
    db = Db()
    head = GENESIS
    count = 0
    it = iter(records)
    collecting = gc.isenabled()
    gc.disable()
    try:
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return ReplayResult(count, head, None)
            except LogCorruption as exc:
                return ReplayResult(count, head, Mismatch(exc.offset, str(exc)))
            try:
                head = replay_step(db, rec, head, count + 1, policy)
            except _Diverged as exc:
                return ReplayResult(count, head, Mismatch(rec.offset, str(exc)))
            count += 1
            if on_step is not None and (at is None or count in at):
                on_step(count, db, head)
    finally:
        if collecting:
            gc.enable()


READ_BATCH = 1024
"""Records :func:`verify_log` reads from the log at a time before replaying them
(:meth:`~reference.durability.LogStore.record_batches`): reading and re-executing in turns of one
record each kept neither SQLite's nor the reducers' working set in the CPU caches (measured: batches
of 256-2048 took 10-12 % off the CPU time per record)."""


def _told(records: Iterable[TxRecord], total: int, on_record: Callable[[int, int], None]) -> Iterator[TxRecord]:
    for n, rec in enumerate(records, 1):
        on_record(n, total)
        yield rec


def verify_log(data_dir: str | os.PathLike[str],
               on_record: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Replay the data directory's whole log (read-only: the clean marker is left alone).
    ``on_record(n, total)`` is told after each record is read (progress for the CLI)."""
    store = LogStore.open(data_dir, readonly=True)
    try:
        # The snapshot files and the head mark are read *before* the read transaction starts: a
        # server beside it renames a snapshot in, and rewrites the mark, only once their record is
        # durable, so the transaction's head is at or past each of them.  Read inside it, a newer one
        # (the mark, within a second) could name a record past the transaction's head: "unreached",
        # and verify-log failed a healthy log (ADR-0039 review).
        checks: dict[str, SnapshotCheck] = {}
        # Each snapshot file is read now, but decoded only if it is not, byte for byte, the
        # file this build writes of the replayed state at its offset (snapshot.matches): a
        # file that is decodes to an image equal to that state, so decoding it would say
        # "match" too.  Files that share an offset are decoded now, in listing order, as
        # before (the later one stands for the offset).
        files: list[tuple[int, str, bytes]] = []
        for offset, path in snapshot.listing(store.path.parent / snapshot.SNAPSHOT_DIR):
            try:
                files.append((offset, path.name, snapshot.read_bytes(path)))
            except snapshot.SnapshotError as exc:
                if not path.exists():  # pruned since the listing (a server beside it): no longer in the directory
                    continue
                checks[path.name] = SnapshotCheck(path.name, offset, "corrupt", exc.reason)
        mark = read_head_mark(store.path.parent)  # the open checked its id and that it is within the log
        with store.read_snapshot():  # safe against a server that is still committing
            form = store.get_meta("format")  # what restart() refuses, verify-log does not call intact
            if form != FORMAT and (form is not None or store.count() > 0):
                raise UnreadableLog(f"log format {form}, this build reads {FORMAT}" if form is not None
                                    else "a commit log without a format marker")
            try:
                stored = store.load_policy()
            except (ValueError, KeyError, TypeError) as exc:
                raise UnreadableLog(f"its stored policy (meta.policy) does not decode ({exc!r:.200})") from None
            policy = stored if stored is not None else DEFAULT_POLICY
            # the progress report needs the count first; else a replay that reads every record has
            # counted them (the same read transaction), and the table is counted only if it stops
            stored_records = store.count() if on_record is not None else -1
            # deltas as text, READ_BATCH records at a time, the lists flattened in C
            records: Iterable[TxRecord] = itertools.chain.from_iterable(store.record_batches(READ_BATCH, rows=False))
            if on_record is not None:
                records = _told(records, stored_records, on_record)
            shared = {offset for offset, _, _ in files if sum(1 for o, _, _ in files if o == offset) > 1}
            images: dict[int, tuple[str, snapshot.Image | bytes]] = {}

            def decoded(offset: int, name: str, data: bytes) -> snapshot.Image | None:
                """The file's image, or None with its "corrupt" check written."""
                try:
                    image = snapshot.decode(data, name)
                except snapshot.SnapshotError as exc:
                    checks[name] = SnapshotCheck(name, offset, "corrupt", exc.reason)
                    return None
                if image.offset != offset:
                    checks[name] = SnapshotCheck(name, offset, "corrupt",
                                                 f"the file name does not match its offset {image.offset}")
                    return None
                return image

            for offset, name, data in files:
                if offset in shared:
                    image = decoded(offset, name, data)
                    if image is not None:
                        images[offset] = (name, image)
                else:
                    images[offset] = (name, data)

            marked: list[SnapshotCheck] = []

            def at_snapshot(offset: int, db: Db, head: str) -> None:
                if mark is not None and offset == mark.offset:
                    marked.append(SnapshotCheck(HEAD_FILE, offset, "match") if head == mark.hash else SnapshotCheck(
                        HEAD_FILE, offset, "mismatch", f"chain head at {offset} is {head[:16]}..., the head mark "
                                                       f"names {mark.hash[:16]}... (another history, ADR-0039)"))
                found = images.get(offset)
                if found is None:
                    return
                name, held = found
                if isinstance(held, bytes):
                    if snapshot.matches(held, db, offset, head, store.log_id):
                        checks[name] = SnapshotCheck(name, offset, "match")
                        return
                    image = decoded(offset, name, held)
                    if image is None:
                        return
                else:
                    image = held
                if image.head_hash != head:
                    checks[name] = SnapshotCheck(name, offset, "mismatch",
                                                 f"chain head at {offset} is {head[:16]}..., the snapshot names "
                                                 f"{image.head_hash[:16]}...")
                    return
                diff = snapshot.differs(image, db)
                checks[name] = SnapshotCheck(name, offset, "match" if diff is None else "mismatch", diff or "")

            at = set(images) | ({mark.offset} if mark is not None else set())
            result = replay(records, policy, at_snapshot if at else None, at)
            for offset, (name, held) in images.items():
                if name not in checks and (not isinstance(held, bytes) or decoded(offset, name, held) is not None):
                    checks[name] = SnapshotCheck(name, offset, "unreached",
                                                 f"past the {result.records} records replayed")
            if stored_records < 0:
                stored_records = result.records if result.mismatch is None else store.count()
            _, stored_digest = store.last()
            return VerifyReport(result.records, result.digest, stored_records, stored_digest,
                                "stored" if stored is not None else "default", store.clean_at_open,
                                result.mismatch, tuple(sorted(checks.values(), key=lambda c: c.offset)), store.log_id,
                                marked[0] if marked else None if mark is None else SnapshotCheck(
                                    HEAD_FILE, mark.offset, "unreached", f"past the {result.records} records replayed"))
    finally:
        store.close()
