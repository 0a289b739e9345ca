"""The server's encode-once cache (``SyncServer._encode``), tested on its own.

Shared messages (``TransactionUpdate``) are found by *identity*: the engine hands every subscriber
of the same rows the same object, so its rows are never hashed.  A ``SubscribeApplied`` is made for
one subscribe and sent once: it is encoded and not kept (its rows, a replay's built only when read,
are never hashed either).
Each case below is one rule of that cache; the expected bodies come from ``wire.encode_server``
of a message built separately, not from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import server as srv
from adapters import wire
from spec import messages as m
from spec.errors import ErrorCode, SyncError
from spec.values import SyncEvent


class Unhashable(tuple):  # type: ignore[type-arg]
    """Rows that refuse to be hashed: a stand-in for rows built only when read."""

    def __hash__(self) -> int:
        raise AssertionError("the cache hashed a shared message's rows")


def _event(seq: int, payload: str = '{"n":1}') -> SyncEvent:
    return SyncEvent("s", 1, seq, f"k{seq}", "sha256:" + "0" * 64, payload, "a" * 64, 1_000, seq)


def _applied(rows: tuple[SyncEvent, ...]) -> m.SubscribeApplied:
    return m.SubscribeApplied(7, 3, (m.TableRows("sync_event", Unhashable(rows)),))


def _update(rows: tuple[SyncEvent, ...]) -> m.TransactionUpdate:
    return m.TransactionUpdate(5, (m.QuerySetUpdate(3, (m.TableRows("sync_event", Unhashable(rows)),)),))


def _server() -> srv.SyncServer:
    return srv.SyncServer(srv.ServerConfig(data_dir=Path("unused")))  # never started: no directory made


def _expected(message: m.ServerMessage) -> bytes:
    return wire.encode_server(wire.to_wire(message, cache=wire.RowCache()))


def test_a_shared_message_is_found_by_identity_and_never_hashed() -> None:
    server = _server()
    msg = _update((_event(1), _event(2)))
    body, entry = server._encode(None, msg)  # type: ignore[arg-type]  # the session is read for ReducerResult only
    assert body == _expected(msg) and entry is not None
    again, entry2 = server._encode(None, msg)  # type: ignore[arg-type]
    assert again is body and entry2 is entry and server.metrics.sends.encode_hits == 1


def test_an_equal_but_distinct_message_is_encoded_on_its_own() -> None:
    server = _server()
    a, b = _update((_event(1),)), _update((_event(1),))
    body_a, _ = server._encode(None, a)  # type: ignore[arg-type]
    body_b, _ = server._encode(None, b)  # type: ignore[arg-type]
    assert body_a == body_b and body_a is not body_b and server.metrics.sends.encode_hits == 0


def test_an_entry_under_a_reused_id_is_not_served_for_another_message() -> None:
    server = _server()
    old, new = _update((_event(1),)), _update((_event(2, '{"n":2}'),))
    server._encode(None, old)  # type: ignore[arg-type]
    server._bodies[id(new)] = server._bodies.pop(id(old))  # as if new had been given old's id
    body, entry = server._encode(None, new)  # type: ignore[arg-type]
    assert body == _expected(new) and entry is not None and entry.message is new
    assert server.metrics.sends.encode_hits == 0
    assert server._body_bytes == sum(e.nbytes for e in server._bodies.values())  # the stale entry's bytes left


def test_a_snapshot_is_encoded_for_its_one_receiver_and_not_kept() -> None:
    server = _server()
    shared = _update((_event(9),))
    server._encode(None, shared)  # type: ignore[arg-type]
    kept = dict(server._bodies)
    msg = _applied((_event(1), _event(2)))
    body, entry = server._encode(None, msg)  # type: ignore[arg-type]
    assert body == _expected(msg) and entry is None
    assert server._bodies == kept and server._body_bytes == sum(e.nbytes for e in kept.values())
    again, entry2 = server._encode(None, msg)  # type: ignore[arg-type]  # (never asked twice; made again if it were)
    assert again == body and entry2 is None and server.metrics.sends.encode_hits == 0
    assert server.metrics.sends.messages == {"TransactionUpdate": 1, "SubscribeApplied": 2}


def test_dropped_rows_are_encoded_for_their_one_receiver_never_hashed_nor_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``UnsubscribeApplied`` with rows is made for one receiver, as a snapshot: a value key
    would hash every row in one piece on the loop (ADR-0041)."""
    server = _server()
    msg = m.UnsubscribeApplied(1, 2, (m.TableRows("sync_event", (_event(1), _event(2))),))
    want = _expected(msg)

    def unhashable(self: object) -> int:
        raise AssertionError("the dropped rows were hashed")
    monkeypatch.setattr(m.TableRows, "__hash__", unhashable)
    body, entry = server._encode(None, msg)  # type: ignore[arg-type]
    assert body == want and entry is None and not server._bodies


def test_unshared_messages_are_found_by_value() -> None:
    server = _server()
    err = SyncError(ErrorCode.INVALID_QUERY, {"message": "x"}).render()
    a, b = m.SubscriptionError(1, 2, err), m.SubscriptionError(1, 2, err)
    body_a, _ = server._encode(None, a)  # type: ignore[arg-type]
    body_b, _ = server._encode(None, b)  # type: ignore[arg-type]
    assert body_b is body_a and server.metrics.sends.encode_hits == 1


def test_a_body_over_the_item_bound_is_not_kept() -> None:
    server = _server()
    big = _applied((_event(1, '"' + "x" * (srv.BODY_CACHE_ITEM_BYTES + 10) + '"'),))
    body, entry = server._encode(None, big)  # type: ignore[arg-type]
    assert entry is None and not server._bodies
    # nor joined: kept as the parts the writer built, the row data uncopied (ADR-0020 addendum)
    assert isinstance(body, tuple) and len(body) > 1 and b"".join(body) == _expected(big)
    assert sum(map(len, body)) > srv.BODY_CACHE_ITEM_BYTES


def test_the_cache_keeps_at_most_its_item_bound_least_recently_used_first() -> None:
    server = _server()
    messages = [_update((_event(i),)) for i in range(1, srv.BODY_CACHE_ITEMS + 3)]
    for msg in messages:
        server._encode(None, msg)  # type: ignore[arg-type]
    assert len(server._bodies) == srv.BODY_CACHE_ITEMS
    assert id(messages[0]) not in server._bodies and id(messages[1]) not in server._bodies
    assert id(messages[-1]) in server._bodies
    assert server._body_bytes == sum(e.nbytes for e in server._bodies.values())
