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
