"""``spec.auth.filter_key``: claims with equal keys for a table see the same rows of it (the fanout
filters once per key, ADR-0014).  Checked against ``can_read`` itself on random claims and rows
of every table: every claims value of a small pool (identities x scope sets x grants) is grouped
by its key and each group must agree on each random row.  Planted wrong keys are caught."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from hypothesis import given, settings
from hypothesis import strategies as st
from support.sats_strategies import row_st_for

import spec.auth as auth
from spec.auth import Claims, can_read, filter_key
from spec.schema import BRIDGE_SCOPES, TABLES, Visibility

IDENTITIES = ["a" * 64, "b" * 64]
GRANTS = [(), ("*",), ("s*",), ("s",), ("x",), ("x", "s")]


def rows_st(table: int) -> st.SearchStrategy[object]:
    """Rows of the table whose stream ids, owners and identities come from the claims' pools."""
    people = st.sampled_from([*IDENTITIES, "c" * 64])
    return st.builds(_retarget, row_st_for(table), st.sampled_from(["s", "sx", "x", "y"]), people, people, people)


def _retarget(row: object, stream: str, owner: str, requester: str, provider: str) -> object:
    from dataclasses import fields, replace
    names = {f.name for f in fields(row)}  # type: ignore[arg-type]
    wanted = {"stream_id": stream, "owner": owner, "requester": requester, "provider_owner": provider}
    changes = {k: v for k, v in wanted.items() if k in names}
    return replace(row, **changes) if changes else row  # type: ignore[type-var]


def _all_claims() -> list[Claims]:
    from itertools import combinations
    pool = sorted({"compute.assign", min(BRIDGE_SCOPES), "sync.append"})
    subsets = [frozenset(c) for n in range(len(pool) + 1) for c in combinations(pool, n)]
    return [Claims(i, sc, g) for i in IDENTITIES for sc in subsets for g in GRANTS]


ALL_CLAIMS = _all_claims()


def violations(key: Callable[[Claims, str], Hashable], table: int, row: object) -> list[tuple[Claims, Claims]]:
    """Every claims pool member grouped by its key: a group whose members disagree on the row."""
    name = TABLES[table].name
    seen: dict[Hashable, tuple[Claims, bool]] = {}
    bad = []
    for c in ALL_CLAIMS:
        verdict = can_read(c, row)  # type: ignore[arg-type]
        first = seen.setdefault(key(c, name), (c, verdict))
        if first[1] != verdict:
            bad.append((first[0], c))
    return bad


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(0, len(TABLES) - 1))
def test_equal_filter_keys_see_the_same_rows(data: st.DataObject, table: int) -> None:
    """Every pair of claims from the pool (identities x scope sets x grants), on rows whose stream
    ids and owners are drawn from what the claims name."""
    row = data.draw(rows_st(table))
    assert not violations(filter_key, table, row), row


def test_a_planted_coarse_key_is_caught() -> None:
    """Negative control: a key that ignores the stream grants (or the identity) is refuted by the
    same check on a hand-picked case."""
    from spec.values import SyncEvent
    wrong = dict(auth._FILTER_KEYS)
    wrong[Visibility.STREAM_GRANT] = lambda c: None

    def coarse(claims: Claims, table: str) -> Hashable:
        return wrong[next(t for t in TABLES if t.name == table).visibility](claims)

    event = SyncEvent("s", 1, 1, "k", "sha256:" + "0" * 64, "{}", IDENTITIES[0], 1, 1)
    table = next(i for i, t in enumerate(TABLES) if t.name == "sync_event")
    assert violations(coarse, table, event)
    assert not violations(filter_key, table, event)
