"""Writing a commit log straight from records, for tests of recovery, replay and snapshots."""

from __future__ import annotations

from pathlib import Path

from reference.durability import GroupCommitWriter, LogStore
from reference.log import TxRecord
from spec.policy import Policy


def write_records(path: Path, records: list[TxRecord], *, clean: bool, policy: Policy | None) -> None:
    """A data directory at ``path`` holding ``records`` (and ``policy`` if given), shut down cleanly
    (with the clean-shutdown marker at the last offset) or not."""
    store = LogStore.open(path)
    if policy is not None:
        store.save_policy(policy)
    writer = GroupCommitWriter(store, background=False)
    writer.append(records)
    writer.flush()
    writer.close()
    if clean:
        store.close_clean(records[-1].offset if records else 0)
    else:
        store.close()


def long_log(path: Path, records: int, *, clean: bool = True, policy: bool = True) -> None:
    """A data directory at ``path`` of ``records`` appends (2-byte payloads over 10 streams, no
    snapshot), written through the engine and the group-commit writer as a server writes them;
    ``clean`` leaves the clean-shutdown marker, ``policy=False`` no stored policy.  About 0.8 KB of
    disk per record."""
    from reference.engine import Engine
    from spec.auth import Claims
    from spec.policy import DEFAULT_POLICY

    writer_claims = Claims("b" * 64, frozenset({"sync.append"}), ("*",))
    eng = Engine(DEFAULT_POLICY)
    eng.now = 1_000_000
    store = LogStore.open(path)
    if policy:
        store.save_policy(DEFAULT_POLICY)
    writer = GroupCommitWriter(store, background=False)
    i = 0
    while eng.committed < records:
        i += 1
        eng.now += 1000
        eng.admin_call(writer_claims, "append_sync_event", (f"t.{i % 10}", f"k{i}", "{}", None, None))
        if len(eng.pending_records) >= 1000 or eng.committed == records:
            writer.append(eng.take_records())
            eng.advance_durable(writer.flush())
    writer.close()
    if clean:
        store.close_clean(eng.committed)
    else:
        store.close()
