"""docs/protocol.md "Signals" is checked against the model: every transaction listed there is run
against ``spec.reducers`` and the (signal, transaction, status: reason) triples it emits must be
exactly the ones the table lists."""

from __future__ import annotations

import re

from support import protodoc

import spec.reducers as red
from spec.auth import Claims
from spec.state import DbState, Delta
from spec.values import PresenceSignal, StreamSignal

ME = Claims("me", frozenset({"presence.write", "sync.append"}), ("*",))


def documented() -> set[tuple[str, str, str]]:
    text = protodoc.DOC.read_text(encoding="utf-8")
    section = text.split("### Signals\n", 1)[1].split("\n### ", 1)[0]
    rows = [ln for ln in section.splitlines() if re.match(r"\| `\w+` \| `\w+` \|", ln)]
    out = set()
    for row in rows:
        signal, by, _when, emitted = (c.strip() for c in row.strip("|").split("|"))
        for item in emitted.split(", "):
            out.add((signal.strip("`"), by.strip("`"), item))
    return out


def _emitted(by: str, delta: Delta) -> set[tuple[str, str, str]]:
    out = set()
    for td in delta.tables:
        for r in td.inserts:
            if isinstance(r, PresenceSignal):
                out.add(("presence_signal", by, f"{r.status}: {r.reason or '-'}"))
            elif isinstance(r, StreamSignal):
                out.add(("stream_signal", by, "-"))
    return out


def observed() -> set[tuple[str, str, str]]:
    seen: set[tuple[str, str, str]] = set()
    db = DbState()

    def upsert(db: DbState, session: str, status: str, now: int, ttl_ms: int = 5_000) -> DbState:
        out = red.call(db, red.CallContext(ME, now, 1), "upsert_presence", (session, "d", "n", status, "", ttl_ms))
        assert isinstance(out, red.Ok), red.describe(out)
        seen.update(_emitted("upsert_presence", out.delta))
        return out.state

    db = upsert(db, "s1", "online", 1_000)
    refreshed = red.call(db, red.CallContext(ME, 2_000, 2), "upsert_presence", ("s1", "d", "n", "online", "", 5_000))
    assert isinstance(refreshed, red.Ok) and not _emitted("upsert_presence", refreshed.delta), \
        "a refresh with the same status emits nothing"
    db = upsert(db, "s1", "away", 3_000)
    db = upsert(db, "s2", "online", 3_000)
    db = upsert(db, "s3", "online", 3_000, ttl_ms=1_000)
    upsert(db, "s1", "offline", 4_000)  # explicit offline (a branch; the states below go on from before it)
    swept = red.presence_sweep(db, 3_000 + 1_000 * 1_000)  # s3's TTL ran out exactly now
    seen.update(_emitted("presence_sweep", swept.delta))
    closed = red.disconnect_sessions(db, 3_000 + 1_000 * 1_000, "me", frozenset({"s2", "s3"}))
    seen.update(_emitted("disconnect_sessions", closed.delta))
    sig = red.call(DbState(), red.CallContext(ME, 5_000, 1), "publish_stream_signal", ("s.x", "typing", "{}"))
    assert isinstance(sig, red.Ok)
    seen.update(_emitted("publish_stream_signal", sig.delta))
    return seen


def test_the_signals_table_is_what_the_model_emits() -> None:
    doc, model = documented(), observed()
    assert doc, "docs/protocol.md has no Signals table"
    assert model - doc == set(), f"emitted but not documented: {sorted(model - doc)}"
    assert doc - model == set(), f"documented but never emitted: {sorted(doc - model)}"


def test_a_wrong_row_is_caught() -> None:
    doc = documented()
    assert ("presence_signal", "presence_sweep", "offline: ttl_expired") in doc
    assert ("presence_signal", "presence_sweep", "offline: disconnected") not in observed()
