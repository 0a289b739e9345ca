"""The SDK numbers each connection's ids from a random u32, so an answer meant for an earlier
client process of the same identity matches nothing pending (found by the chaos long run: a
replayed stale answer for the previous process's query set 1 made the restarted one rebootstrap)."""

from __future__ import annotations

import pytest

from adapters import wire
from adapters.sdk import connection as sdk_connection
from adapters.sdk.connection import Connection
from adapters.sdk.session import Subscription
from spec.errors import ErrorCode, LocalProtocolError, SyncError

URL = "http://127.0.0.1:9"  # never dialled: these tests drive the session only
STALE = SyncError(ErrorCode.STALE_CURSOR, {"epoch": 7, "floor_seq": 1, "head_seq": 9, "reasons": ["epoch_changed"]})


def _subscribe(conn: Connection, errors: list[object]) -> wire.Subscribe:
    sub = Subscription(("SELECT * FROM sync_event WHERE stream_id = 's'",), cached=False,
                       on_error=lambda s, e: errors.append(e))
    assert conn.session.connected() == []
    (msg,) = conn.session.subscribe(sub)
    assert isinstance(msg, wire.Subscribe)
    return msg


def test_the_default_first_id_is_drawn_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []

    def randbelow(n: int) -> int:
        drawn.append(n)
        return 4_000_000_000

    monkeypatch.setattr(sdk_connection.secrets, "randbelow", randbelow)
    conn = Connection(URL)
    assert drawn == [2**32] and conn.first_id == 4_000_000_000
    msg = _subscribe(conn, [])
    assert (msg.request_id, msg.query_set_id) == (4_000_000_000, 4_000_000_000)
    assert conn.session.call("ack_checkpoint", b"").request_id == 4_000_000_001


def test_two_connections_do_not_start_at_the_same_id() -> None:
    # 2^-32 chance of a false failure per run; the old behaviour (both at 1) fails every time.
    firsts = {Connection(URL).first_id for _ in range(8)}
    assert len(firsts) == 8 and 1 not in firsts


def test_first_id_is_a_u32_and_wraps() -> None:
    for bad in (-1, 2**32):
        with pytest.raises(LocalProtocolError, match="first_id must be a u32"):
            Connection(URL, first_id=bad)
    conn = Connection(URL, first_id=2**32 - 1)
    assert [conn.session.request_id() for _ in range(3)] == [2**32 - 1, 0, 1]


@pytest.mark.parametrize("same_first_id", [False, True])
def test_a_stale_answer_for_an_earlier_process_is_not_taken(same_first_id: bool) -> None:
    earlier = Connection(URL, first_id=1)
    now = Connection(URL, first_id=1 if same_first_id else 123_456)
    old = _subscribe(earlier, [])
    errors: list[object] = []
    _subscribe(now, errors)
    # The earlier process's subscribe is answered late, on the new process's socket.
    now.session.receive(wire.SubscriptionError(old.request_id, old.query_set_id, STALE.render()))
    if same_first_id:  # the negative control: ids from 1 in both processes collide
        assert len(errors) == 1
    else:
        assert errors == []
