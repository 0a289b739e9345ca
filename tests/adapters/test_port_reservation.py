"""tests/support/ports.py: a reserved loopback port refuses connections, cannot be taken by a plain
bind, and lets the test's own server bind, stop and bind again on it; a stranger listening there makes
the start fail loudly (CI runs two xdist workers: ``free_port()``'s pick-then-bind window is shared)."""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import pytest
from support.ports import PortReservation, reserved_port
from support.server import serve_process


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_reserved_port_refuses_connections_and_a_plain_bind() -> None:
    reservation = PortReservation()
    try:
        assert _refused(reservation.port)  # nothing listens: a relay that is down, a closed port
        intruder = socket.socket()
        with pytest.raises(OSError) as info:
            intruder.bind(("127.0.0.1", reservation.port))
        intruder.close()
        assert info.value.errno == errno.EADDRINUSE
    finally:
        reservation.release()
    assert not reservation.held


def test_syncref_serve_binds_a_reserved_port_twice_and_a_stranger_there_fails_it_loudly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with reserved_port() as port:
        for _ in range(2):  # a start and a restart on the same port
            with serve_process(data, "--port", str(port)) as served:
                assert re.match(rf"syncref listening on http://127\.0\.0\.1:{port} ", served.first_line)
                assert not _refused(port)
            assert _refused(port)  # stopped: refused again, not someone else's
        stranger = socket.socket()  # the only way in: an explicit bind with SO_REUSEADDR, then listen
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        try:
            with pytest.raises(AssertionError, match=f"port {port} on 127.0.0.1 is already in use"), \
                    serve_process(data, "--port", str(port)):
                pass
        finally:
            stranger.close()
