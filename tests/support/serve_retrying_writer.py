"""``syncref serve`` with a planted "fsyncgate" bug, for the negative control of the EIO tests.

    python tests/support/serve_retrying_writer.py serve --data DIR ...

The commit log's batch write is retried once when it fails: the retry's fsync succeeds, so the
writer reports the batch durable and the server acknowledges calls whose first fsync failed --
what PostgreSQL did before 2018 (retrying fsync after EIO and trusting the second answer).
``tests/adapters/test_storage_faults.py`` shows its one-shot fsync test catches this writer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from reference import durability
from reference.log import TxRecord

_write_batch = durability.LogStore.write_batch


def _retrying_write_batch(self: durability.LogStore, records: Sequence[TxRecord]) -> int:
    try:
        return _write_batch(self, records)
    except Exception:
        return _write_batch(self, records)  # the bug: a failed fsync is retried and the retry trusted


durability.LogStore.write_batch = _retrying_write_batch  # type: ignore[method-assign]

if __name__ == "__main__":
    from adapters.cli import main
    sys.exit(main(sys.argv[1:]))
