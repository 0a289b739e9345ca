"""The head mark (ADR-0039) in a running server: its thread ends with the server, whichever way the
server stops."""

from __future__ import annotations

from pathlib import Path

from support.server import call_http, running_server

S = "mark.s"


def test_a_server_whose_writer_failed_stops_the_head_mark_thread(tmp_path: Path) -> None:
    """The commit-log writer fails (a full disk), the server stops: the writer's head-mark thread must
    end with it -- it belongs to a store that is closed.  Failed before (review of ADR-0039): ``stop``
    closed the store without the writer when the writer had failed, so the ``syncref-head-mark``
    thread kept ticking after the stop (in a process that starts servers again -- tests, an embedding
    -- one more thread per failed server, each still holding its closed store)."""
    with running_server(tmp_path) as st:
        tok = st.token()
        assert call_http(st, tok, "append_sync_event", [S, "k0", "0", {"none": []}, {"none": []}]).status == 200
        store, writer = st.server._store, st.server._writer
        assert store is not None and writer is not None
        marker = writer._marker
        assert marker is not None and marker.is_alive()

        def broken(records: object) -> int:
            raise OSError(28, "No space left on device")

        st.call(lambda: setattr(store, "write_batch", broken))
        assert call_http(st, tok, "append_sync_event", [S, "k1", "1", {"none": []}, {"none": []}]).status == 503
        assert writer.error is not None
    marker.join(5)
    assert not marker.is_alive()
