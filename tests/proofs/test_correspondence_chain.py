"""The Z3 encodings of proofs/chain.py against the Python rules they stand for (VER-1, CONT-1).

A proof is about its encoding; these tests tie the encoding to the code, on a table of hand-picked
cases plus seeded random ones:

* the client rule: ``proofs.chain.continues``, evaluated by Z3 on concrete values, says exactly
  what ``spec.client.continues`` says (the chain walked newest first with the running minimum);
* the recovery: for random well-formed stream rows, the row ``spec.resume.continued_stream`` (via
  ``spec.reducers.unclean_restart``) writes is one the encoded restart allows; the stream's chain
  meets the encoded shape; and for random provider and assignment rows, the versions
  ``unclean_restart`` writes are ones the encoded crash allows.

Each comparison is shown able to fail: a planted bug in the encoding (or a tampered Python result)
must disagree somewhere.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
import z3

from proofs import chain as CH
from spec.client import continues
from spec.reducers import unclean_restart
from spec.state import DbState
from spec.values import ComputeAssignment, ProviderCapability, SyncStream

Case = tuple[int | None, int, int, int, int, tuple[int, ...], tuple[int, ...]]

TABLE: list[tuple[Case, bool]] = [
    ((1, 3, 11, 6, 5, (1,), (3,)), True),  # two restarts behind, under its bound
    ((1, 4, 11, 6, 5, (1,), (3,)), False),  # past its bound
    ((6, 5, 11, 6, 5, (1,), (3,)), True),  # one restart behind
    ((1, 4, 11, 6, 3, (1,), (5,)), False),  # a chain written hop by hop: the minimum since
    ((2, 0, 11, 6, 5, (1,), (3,)), False),  # not on the chain
    ((11, 0, 11, 6, 5, (1,), (3,)), False),  # the same epoch: nothing to adopt
    ((None, 0, 11, 6, 5, (1,), (3,)), False),  # no epoch yet
    ((1, 0, 11, 0, 0, (), ()), False),  # a fresh epoch continues nothing
    ((1, 2, 11, 6, 5, (4, 1), (4, 2)), True),  # three restarts behind
    ((1, 3, 11, 6, 5, (4, 1), (4, 2)), False),
]


def z3_continues(case: Case, bug: str = "") -> bool:
    epoch, last, new, ce, cs, ee, es = case
    hops = [(ce, cs), *zip(ee, es, strict=True)] if ce else []
    assert len(hops) <= CH.L
    ep = [e for e, _ in hops] + [0] * (CH.L - len(hops))
    bd = [s for _, s in hops] + [0] * (CH.L - len(hops))
    got = z3.simplify(CH.continues(z3.BoolVal(epoch is not None), epoch or 0, last, new, len(hops), ep, bd, bug))
    assert z3.is_true(got) or z3.is_false(got)
    return z3.is_true(got)


def random_cases(n: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out: list[Case] = []
    for _ in range(n):
        k = rng.randint(0, CH.L - 1)
        ee = tuple(rng.randint(1, 8) for _ in range(k))
        es = tuple(rng.randint(0, 6) for _ in range(k))
        epoch = None if rng.random() < 0.1 else rng.randint(1, 9)
        out.append((epoch, rng.randint(0, 7), rng.randint(1, 9), rng.choice([0, *range(1, 9)]), rng.randint(0, 6),
                    ee, es))
    return out


@pytest.mark.parametrize(("case", "want"), TABLE)
def test_the_encoded_rule_on_the_table(case: Case, want: bool) -> None:
    epoch, last, new, ce, cs, ee, es = case
    assert continues(epoch, last, new, ce, cs, ee, es) == want
    assert z3_continues(case) == want


def test_the_encoded_rule_agrees_with_spec_client_continues_on_random_chains() -> None:
    cases = random_cases(800, 10)
    assert sum(continues(*c) for c in cases) >= 50  # the sample reaches the interesting side
    bad = [c for c in cases if continues(*c) != z3_continues(c)]
    assert not bad, bad[:5]


def test_the_rule_comparison_can_fail() -> None:
    cases = [c for c, _ in TABLE] + random_cases(300, 11)
    assert any(continues(*c) != z3_continues(c, "client_ignores_bound") for c in cases)


# --- the recovery -------------------------------------------------------------------------------------------


def chain_state(p: str, s: SyncStream, top: int) -> tuple[CH.Chain, list[z3.BoolRef]]:
    """A symbolic chain state pinned to the row's stream fields (history and view left free)."""
    c = CH.Chain.fresh(p)
    hops = [(s.continues_epoch, s.continues_seq), *zip(s.earlier_epochs, s.earlier_seqs, strict=True)] \
        if s.continues_epoch else []
    pins = [c.en == s.epoch, c.h == s.head_seq, c.nh == len(hops), c.top == top]
    pins += [z3.And(c.ep[i] == e, c.bd[i] == b) for i, (e, b) in enumerate(hops)]
    return c, pins


def random_stream(rng: random.Random) -> SyncStream:
    head = rng.randint(0, 12)
    floor = rng.randint(1, head + 1)
    k = rng.randint(0, CH.L - 2)  # earlier hops: with the last one and the restart's, at most L
    epoch = rng.randint(k + 2, 40)
    epochs = sorted(rng.sample(range(1, epoch), k + 1), reverse=True)
    bounds = sorted((rng.randint(0, head) for _ in range(k + 1)), reverse=True)
    if rng.random() < 0.2:
        return SyncStream("s", "default", epoch, 0, 0, head, floor, 100, 0, 0)
    return SyncStream("s", "default", epoch, epochs[0], bounds[0], head, floor, 100, 0, 0, tuple(epochs[1:]),
                      tuple(bounds[1:]))


def restart_allows(before: SyncStream, after: SyncStream, keep_all: bool) -> bool:
    a, pa = chain_state("pre", before, before.epoch)
    b, pb = chain_state("post", after, after.epoch)
    new = z3.Array("new", z3.IntSort(), z3.IntSort())
    s = z3.Solver()
    s.add(*pa, *pb, CH.chain_struct(a), CH.chain_struct(b),
          CH.t_restart(a, before.head_seq, after.epoch, new, z3.Int("x"), b, keep_all=keep_all))
    return bool(s.check() == z3.sat)


def test_the_encoded_restart_allows_what_unclean_restart_writes() -> None:
    rng = random.Random(12)
    checked = cut = 0
    for _ in range(150):
        s = random_stream(rng)
        (after,) = unclean_restart(DbState(tables={**DbState().tables, "sync_stream": (s,)}), 1, 3).of_type(
            SyncStream)
        assert restart_allows(s, after, keep_all=False), (s, after)
        before_hops = 1 + len(s.earlier_epochs) if s.continues_epoch else 0
        whole = 1 + len(after.earlier_epochs) == before_hops + 1  # nothing cut
        assert restart_allows(s, after, keep_all=True) == whole, (s, after)  # a floor cut is a cut prefix
        checked += 1
        cut += not whole
    assert checked == 150 and 5 <= cut < 150


def test_the_restart_comparison_can_fail() -> None:
    s = SyncStream("s", "default", 20, 12, 4, 6, 1, 100, 0, 0, (7,), (2,))
    (after,) = unclean_restart(DbState(tables={**DbState().tables, "sync_stream": (s,)}), 1, 3).of_type(SyncStream)
    assert restart_allows(s, after, keep_all=True)
    for tampered in (replace(after, earlier_epochs=(), earlier_seqs=()),  # the chain dropped
                     replace(after, earlier_seqs=(4, 3)),  # a bound raised
                     replace(after, continues_seq=5)):  # the last hop past the durable head
        assert not restart_allows(s, tampered, keep_all=True), tampered


def crash_allows(version: int, max_undurable: int, recovered: int) -> bool:
    a, b = CH.Ver.fresh("pre"), CH.Ver.fresh("post")
    s = z3.Solver()
    s.add(a.v == version, a.vd == version, a.u == 0, CH.ver_inv(a, max_undurable, z3.Int("x")),
          CH.t_crash(a, recovered, b, max_undurable))
    return bool(s.check() == z3.sat)


def versioned_state(rng: random.Random) -> DbState:
    rows: dict[str, list[Any]] = {"provider_capability": [], "compute_assignment": []}
    for i in range(rng.randint(1, 3)):
        rows["provider_capability"].append(ProviderCapability(f"p{i}", "a" * 64, "{}", "h", (5000,), 0, "active",
                                                              rng.randint(1, 30), 0))
    for i in range(rng.randint(0, 3)):
        rows["compute_assignment"].append(ComputeAssignment(f"r{i}", "a" * 64, 5000, "{}", "h", None, None, "open",
                                                            None, rng.randint(1, 30), 0, 0))
    return DbState(tables={**DbState().tables, **{t: tuple(r) for t, r in rows.items()}},
                   version_floor=rng.randint(1, 40))


def test_the_encoded_crash_allows_the_versions_unclean_restart_writes() -> None:
    rng = random.Random(13)
    for _ in range(25):
        db = versioned_state(rng)
        m = rng.randint(0, 5)
        after = unclean_restart(db, 1, m)
        new = {getattr(r, "provider_id", None) or getattr(r, "request_id", None): r.version
               for r in (*after.of_type(ProviderCapability), *after.of_type(ComputeAssignment))}
        for r in (*db.of_type(ProviderCapability), *db.of_type(ComputeAssignment)):
            key = getattr(r, "provider_id", None) or getattr(r, "request_id", None)
            assert crash_allows(r.version, m, new[key]), (r, m, new[key])
            assert not crash_allows(r.version, m, r.version)  # the comparison can fail: a kept version
            assert not crash_allows(r.version, m, r.version + m)  # ... or one short
