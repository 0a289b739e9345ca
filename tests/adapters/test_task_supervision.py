"""A connection's own task that raises -- a bug of ours in its sender, processor, keepalive or
reader, never the peer's input -- closes THAT connection 1011 ``internal error: <type>``, counted in
``syncref_internal_errors_total{where=<task>}``, and the server goes on serving everyone else.
Before, such a task died silently: the connection stayed open, reading but never answering (or the
reverse), and nothing counted it (``SyncServer._supervised`` / ``_task_failed``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from support.server import WireClient, call_http, http, running_server

from adapters import wire
from adapters.server import SyncServer

QUERY = "SELECT * FROM sync_event WHERE stream_id = 'sup.a'"
NONE: dict[str, list[Any]] = {"none": []}


def internal_errors(base: str, where: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    text = http("GET", f"{base}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "syncref_internal_errors_total" and s.labels.get("where") == where)


def fail_once(real: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Coroutine[Any, Any, None]]:
    """The first connection's task raises at once; every later connection's runs as it is."""
    armed = [True]

    async def task(self: SyncServer, s: Any, *rest: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise RuntimeError("planted: a bug in a connection's task")
        await real(self, s, *rest)

    return task


@pytest.mark.parametrize("where", ["sender", "processor", "keepalive", "reader"])
@pytest.mark.parametrize("version", [2, 3])
def test_a_task_that_raises_closes_its_connection_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, version: int) -> None:
    monkeypatch.setattr(SyncServer, f"_{where}", fail_once(getattr(SyncServer, f"_{where}")))
    with running_server(tmp_path) as st:
        tok = st.token()
        victim = WireClient(st, tok, version=version)
        assert victim.closed(timeout=5) == (1011, "internal error: RuntimeError")
        assert internal_errors(st.base, where) == 1
        # everyone else is served: a new connection subscribes, writes and hears its write
        other = WireClient(st, tok, version=version)
        assert isinstance(other.subscribe(1, QUERY), wire.SubscribeApplied)
        assert isinstance(other.call("append_sync_event", "sup.a", "k1", '{"n":1}', None, None).outcome, wire.ReducerOk)
        assert call_http(st, tok, "append_sync_event", ["sup.a", "k2", '{"n":2}', NONE, NONE]).status == 200
        update = other.recv_until(wire.TransactionUpdate)
        assert isinstance(update, wire.TransactionUpdate)
        other.close()
        assert internal_errors(st.base, where) == 1
