"""``Engine.take``: one turn of released messages in one call (ADR-0018).

The oracle is the per-message protocol the server used before (and the model's harness still
uses): ``pop`` while ``releasable`` and while the next message's estimated size fits the turn's
byte budget (the first message of an empty turn always goes).  Two engines get the same random
workload -- confirmed and unconfirmed subscribers, rows of random sizes, durability advancing
in random steps -- and one is drained turn by turn with ``take``, the other message by message;
every turn must hold the same messages in the same order and leave the same queue and byte count.
"""

from __future__ import annotations

import random

import pytest

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import CallReducer, Outbound, Subscribe
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))


def by_pops(eng: Engine, conn: int, most: int, max_bytes: int, used: int) -> list[Outbound]:
    out: list[Outbound] = []
    total = used
    while eng.releasable(conn) and len(out) < most:
        size = eng.next_size(conn)
        if total + size > max_bytes and (out or used):
            break
        total += size
        out.append(eng.pop(conn))
    return out


def workload(seed: int) -> tuple[Engine, list[int], random.Random]:
    rng = random.Random(seed)
    eng = Engine(max_queue=10_000)
    subs = [eng.connect(ADMIN, confirmed=confirmed) for confirmed in (True, False, True)]
    for i, sub in enumerate(subs):
        eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
        eng.take(sub, 10, 1 << 30)  # the SubscribeApplied
        assert not eng.conns[sub].outbound, i
    writer = eng.connect(ADMIN, confirmed=False)
    for i in range(rng.randint(5, 40)):
        payload = '{"p":"' + "x" * rng.choice((0, 10, 300, 3000)) + '"}'
        eng.handle(writer, CallReducer(i + 1, "append_sync_event", ("s", f"k{i}", payload, None, None)))
        if rng.random() < 0.3:
            eng.advance_durable(rng.randint(eng.durable, eng.committed))
    return eng, subs, rng


@pytest.mark.parametrize("seed", range(30))
def test_take_is_pop_while_releasable_and_fitting(seed: int) -> None:
    a, subs, rng = workload(seed)
    b, _subs, _rng = workload(seed)
    steps = 0
    while any(a.conns[s].outbound for s in subs) and steps < 200:
        steps += 1
        if rng.random() < 0.3:
            offset = rng.randint(a.durable, a.committed)
            a.advance_durable(offset)
            b.advance_durable(offset)
        sub = rng.choice(subs)
        most = rng.choice((0, 1, 2, 5, 64))
        max_bytes = rng.choice((1, 200, 2000, 10_000, 1 << 20))
        used = rng.choice((0, 0, 100, 5000))
        taken = a.take(sub, most, max_bytes, used)
        popped = by_pops(b, sub, most, max_bytes, used)
        assert [(o.offset, o.message) for o in taken] == [(o.offset, o.message) for o in popped]
        assert list(a.conns[sub].outbound) == list(b.conns[sub].outbound)
        assert a.conns[sub].outbound_bytes == b.conns[sub].outbound_bytes == sum(a.conns[sub].sizes)
    a.advance_durable(a.committed)
    for sub in subs:
        rest = a.take(sub, 1 << 20, 1 << 40)
        assert not a.conns[sub].outbound and a.conns[sub].outbound_bytes == 0
        assert [o.offset for o in rest] == sorted(o.offset for o in rest)


def test_take_holds_back_what_is_not_durable_for_a_confirmed_reader() -> None:
    eng = Engine()
    confirmed, unconfirmed = (eng.connect(ADMIN, confirmed=c) for c in (True, False))
    for sub in (confirmed, unconfirmed):
        eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
        eng.take(sub, 10, 1 << 30)
    writer = eng.connect(ADMIN, confirmed=False)
    for i in range(4):
        eng.handle(writer, CallReducer(i + 1, "append_sync_event", ("s", f"k{i}", "{}", None, None)))
    assert eng.durable < eng.committed - 3
    assert eng.take(confirmed, 100, 1 << 30) == []
    assert len(eng.take(unconfirmed, 100, 1 << 30)) == 4  # not confirmed: everything queued goes
    middle = eng.committed - 2
    eng.advance_durable(middle)
    first = eng.take(confirmed, 100, 1 << 30)
    assert first and all(o.offset <= middle for o in first)
    eng.advance_durable(eng.committed)
    assert len(first) + len(eng.take(confirmed, 100, 1 << 30)) == 4


def test_take_on_a_closed_connection_is_empty() -> None:
    eng, subs, _rng = workload(2)
    eng.close(subs[0])
    assert eng.take(subs[0], 10, 1 << 30) == []


def test_receivers_of_one_update_share_its_queue_entry() -> None:
    """The fanout appends one ``Outbound`` to every receiver of an equal update (not a copy each)."""
    eng = Engine()
    subs = [eng.connect(Claims(f"{i:064x}", frozenset(SCOPES), ("*",)), confirmed=False) for i in range(3)]
    for sub in subs:
        eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
        eng.take(sub, 10, 1 << 30)
    writer = eng.connect(ADMIN, confirmed=False)
    eng.handle(writer, CallReducer(1, "append_sync_event", ("s", "k", "{}", None, None)))
    entries = [eng.conns[sub].outbound[0] for sub in subs]
    assert all(entry is entries[0] for entry in entries)


def test_the_postcondition_refuses_an_unreleased_message() -> None:
    """The contract on ``take`` can fail: a queue that shows one message at its head but hands
    out another, not yet durable, makes ``take`` return an unreleased message -- refused."""
    import collections

    import icontract

    from spec import contracts
    assert contracts.hot_enabled()  # the suite runs the hot-path contracts (tests/conftest.py)
    eng = Engine()
    sub = eng.connect(ADMIN, confirmed=True)
    eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    eng.advance_durable(eng.committed)
    eng.take(sub, 10, 1 << 30)
    writer = eng.connect(ADMIN, confirmed=False)
    eng.handle(writer, CallReducer(1, "append_sync_event", ("s", "k", "{}", None, None)))
    conn = eng.conns[sub]
    (queued,) = conn.outbound
    assert queued.offset > eng.durable

    class Lying(collections.deque[Outbound]):
        def __getitem__(self, i: object) -> Outbound:  # type: ignore[override]
            return Outbound(eng.durable, queued.message)  # looks released

    conn.outbound = Lying(conn.outbound)
    with pytest.raises(icontract.ViolationError, match="only released messages are taken"):
        eng.take(sub, 10, 1 << 30)
