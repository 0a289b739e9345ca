"""Hostile input over a real socket: random and mutated frames from one client never take the
server down or disturb another client; each is answered (an error reply) or closed with 1011 and
a specific reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.server import ServerThread, WireClient, running_server
from websockets.exceptions import ConnectionClosed

from adapters import bsatn, wire

VALID = [
    wire.encode_client(wire.Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 'demo.f'",))),
    wire.encode_client(wire.CallReducer(2, 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", ("demo.f", "k", '{"a":1}', None, None)))),
    wire.encode_client(wire.Unsubscribe(3, 1, True)),
    wire.encode_client(wire.OneOffQuery(4, "SELECT * FROM sync_stream")),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(Path(tmp_path_factory.mktemp("fuzz"))) as st:
        yield st


def mutated() -> st.SearchStrategy[bytes]:
    def mutate(data: bytes, pos: int, byte: int, cut: int) -> bytes:
        b = bytearray(data)
        b[pos % len(b)] = byte
        return bytes(b[: max(1, len(b) - cut)])
    return st.builds(mutate, st.sampled_from(VALID), st.integers(0, 400), st.integers(0, 255), st.integers(0, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(frame=st.one_of(st.binary(min_size=1, max_size=64), mutated()), version=st.sampled_from([2, 3]))
def test_hostile_frames(server: ServerThread, frame: bytes, version: int) -> None:
    victim = WireClient(server, server.token(), version=version)
    bystander = WireClient(server, server.token())
    try:
        victim.ws.send(frame)
        try:
            reply = victim.recv(timeout=5)
            # accepted: it decoded to a real message and got a real answer
            assert isinstance(reply, wire.SubscribeApplied | wire.SubscriptionError | wire.ReducerResult
                              | wire.UnsubscribeApplied | wire.OneOffQueryResult | wire.ProcedureResult)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1011 and exc.rcvd.reason, exc
        got = bystander.subscribe(9, "SELECT * FROM sync_stream")
        assert isinstance(got, wire.SubscribeApplied)
    finally:
        victim.close()
        bystander.close()
