"""Engine unit cases the machines reach only by chance."""

from reference.engine import Engine
from spec.auth import Claims
from spec.compat import CompatWindow
from spec.errors import ErrorCode


def test_admission_runs_the_compatibility_negotiation_COMPAT_1() -> None:
    eng = Engine()
    old = Claims("a" * 64, frozenset(), (), client_build_id="20250101T000000Z", protocol_version="oa.sync.v1",
                 schema_version=3)
    err = eng.admit(old, CompatWindow())
    assert err is not None and err.code is ErrorCode.UPGRADE_REQUIRED
    fine = Claims("a" * 64, frozenset(), (), client_build_id="20260601T000000Z", protocol_version="oa.sync.v1",
                  schema_version=3)
    assert eng.admit(fine, CompatWindow()) is None
    assert eng.admit(Claims("a" * 64, frozenset()), CompatWindow(require_claims=True)) is not None


def test_an_append_moves_only_the_head_of_its_stream_row() -> None:
    """``append_sync_event`` builds the stream's new row field by field (not ``dataclasses.replace``):
    every column but head_seq, floor_seq and updated_at -- the continuation chain included -- must
    come through unchanged, and a new column must not be dropped silently."""
    import dataclasses

    from reference import reducers as r
    from reference.db import Txn
    from spec.policy import DEFAULT_POLICY
    from spec.values import SyncStream

    assert [f.name for f in dataclasses.fields(SyncStream)] == [
        "stream_id", "stream_class", "epoch", "continues_epoch", "continues_seq", "head_seq", "floor_seq",
        "replay_budget", "created_at", "updated_at", "earlier_epochs", "earlier_seqs"], \
        "SyncStream changed: update the row built in reference.reducers.append_sync_event"
    claims = Claims("a" * 64, frozenset({"sync.append"}), ("*",))
    eng = Engine()
    old = SyncStream("s.u", "default", 7, 6, 4, 9, 3, 500, 11, 12, (5, 2), (3, 1))
    tx = Txn(eng.db)
    tx.insert(old)
    tx = Txn(eng.db)
    seq = r.append_sync_event(tx, r.Ctx(claims, 99, 1, DEFAULT_POLICY), "s.u", "k", "{}", None, None)
    assert seq == 10
    new = eng.db.get("sync_stream", ("s.u",))
    assert new == dataclasses.replace(old, head_seq=10, floor_seq=3, updated_at=99)
    assert tx.deletes == {"sync_stream": [old]} and tx.inserts["sync_stream"] == [new]
