"""Planted server and bridge bugs, for showing that a chaos run catches them.

``python -m adapters.chaos.planted PLANT[,PLANT...] serve|bridge ARGS...`` patches the named bugs into
this process and then runs ``syncref ARGS...`` (``adapters.cli.main``).  The chaos runner starts the
server and the bridge worker this way when ``syncref chaos --plant`` names one of :data:`SERVER` or
:data:`BRIDGE`; nothing else imports this module, so the production code carries no switch for them.

=====================  ======================================================================
``reset-keeps-epoch``  ``reset_stream_epoch`` drops the events and moves the floor but keeps the
                       epoch: subscribers are not told ``epoch_changed``
``unsignalled-floor``  the server's stale check forgets ``retention_floor_breach``: a resume
                       below the retention floor is answered with the retained window instead of
                       ``stale_cursor`` (the SDK's own row check still catches it)
``bridge-drops-retry`` the bridge worker counts a catch-up publish (a retry to a relay that missed
                       a ``sent`` row) as acknowledged without sending it
=====================  ======================================================================
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

SERVER: tuple[str, ...] = ("reset-keeps-epoch", "unsignalled-floor")
BRIDGE: tuple[str, ...] = ("bridge-drops-retry",)


def _reset_keeps_epoch() -> None:
    from reference import reducers

    real = reducers.reset_stream_epoch

    def reset(tx: Any, x: Any, stream_id: str) -> None:
        stream = tx.db.get("sync_stream", (stream_id,))
        real(tx, x, stream_id)
        after = tx.db.get("sync_stream", (stream_id,))
        if stream is not None and after is not None:
            tx.update(after, dataclasses.replace(after, epoch=stream.epoch))

    reducers.REDUCERS["reset_stream_epoch"] = reset  # type: ignore[index]


def _unsignalled_floor() -> None:
    from reference import engine

    # the name the engine calls (`contracts.hot(stale_reasons)`, bound when the module is imported):
    # patching `stale_reasons` itself would plant nothing; a missing name raises KeyError here
    real = engine.__dict__["_stale_reasons"]

    def reasons(*args: Any) -> tuple[str, ...]:
        return tuple(r for r in real(*args) if r != "retention_floor_breach")

    setattr(engine, "_stale_reasons", reasons)  # noqa: B010 (not an export of the module: patched by name)


def _bridge_drops_retry() -> None:
    from adapters.bridge import worker
    from adapters.bridge.core import Publish
    from adapters.nostr.pool import OutcomeStatus, RelayOutcome

    real = worker.BridgeWorker._run_action

    async def run_action(self: worker.BridgeWorker, action: Any) -> None:
        row = self.core.rows.get(action.outbox_id) if isinstance(action, Publish) else None
        if row is not None and row.status == "sent":  # a catch-up: claim it went out
            outcomes = [RelayOutcome(relay, OutcomeStatus.ACKED) for relay in action.relays]
            for follow in self.core.published(action.outbox_id, outcomes, worker._now_us()):
                await real(self, follow)
            self._wake.set()
            return
        await real(self, action)

    worker.BridgeWorker._run_action = run_action  # type: ignore[method-assign]


PATCHES = {"reset-keeps-epoch": _reset_keeps_epoch, "unsignalled-floor": _unsignalled_floor,
           "bridge-drops-retry": _bridge_drops_retry}


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m adapters.chaos.planted PLANT[,PLANT...] serve|bridge ARGS...", file=sys.stderr)
        return 2
    for plant in filter(None, argv[0].split(",")):
        if plant not in PATCHES:
            print(f"unknown plant {plant!r}; known: {', '.join(PATCHES)}", file=sys.stderr)
            return 2
        PATCHES[plant]()
    from adapters.cli import main as cli_main

    return cli_main(list(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
