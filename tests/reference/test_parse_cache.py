"""``reference.parsecache.ParseCache`` against a hand-written table of cases, and planted bugs.

The second opinion is ``spec.query.parse`` called fresh (the cache must return what parsing again
returns, or raise the same ``SyncError``); the literals that must tell entries apart, the eviction
order and the bounds are written out per case, not derived from the cache.  Each planted bug
below is a ``ParseCache`` subclass with one mistake; ``test_planted_bugs_are_killed`` shows the
checks fail on every one (which check kills which is in ``MUTANTS``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reference.engine import Engine
from reference.parsecache import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TEXT, ParseCache
from spec import query as q
from spec.auth import Claims
from spec.errors import SyncError
from spec.messages import Subscribe, SubscribeApplied, SubscriptionError
from spec.schema import SCOPES

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))

# texts that differ only in a literal (each pair must give different queries)
VALID = (
    "SELECT * FROM sync_stream WHERE stream_id = 'a'",
    "SELECT * FROM sync_stream WHERE stream_id = 'b'",
    "SELECT * FROM sync_event WHERE stream_id = 'a' AND epoch = 1 AND seq > 19900",
    "SELECT * FROM sync_event WHERE stream_id = 'a' AND epoch = 1 AND seq > 19901",
    "SELECT * FROM sync_event WHERE stream_id = 'a' AND epoch = 2 AND seq > 19900",
    "SELECT * FROM sync_event WHERE stream_id = 'a' AND epoch = 1 AND seq >= 19900",
    "select * from sync_event where stream_id = 'it''s' and seq > 0",
    "SELECT * FROM sync_stream",
    "SELECT * FROM *",
)
INVALID = (
    "",
    "SELECT",
    "SELECT * FROM nowhere",
    "SELECT * FROM sync_event WHERE seq > 'x'",
    "SELECT * FROM sync_event WHERE seq > 1.5",
    "SELECT * FROM sync_event WHERE stream_id = 'unterminated",
    "SELECT * FROM sync_event WHERE seq != 3",
    "SELECT * FROM sync_event ORDER BY seq",
)


def _error(text: str) -> tuple[str, object]:
    with pytest.raises(SyncError) as info:
        q.parse(text)
    return info.value.code.value, info.value.details


def check_same_as_parse(make: Callable[[], ParseCache]) -> None:
    cache = make()
    first = {t: cache.parse(t) for t in VALID}
    for t in VALID:  # misses, then hits: equal to a fresh parse every time
        assert first[t] == q.parse(t), t
        again = cache.parse(t)
        assert again == q.parse(t), t
        assert all(x.text == t for x in again), t
    # different literals are different entries
    assert len({first[t] for t in VALID}) == len(VALID)


def check_hits(make: Callable[[], ParseCache]) -> None:
    cache = make()
    t = VALID[2]
    a = cache.parse(t)
    b = cache.parse(t)
    assert a is b  # a hit returns the kept tuple
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.parse(VALID[3]) != a and (cache.hits, cache.misses) == (1, 2)


def check_invalid(make: Callable[[], ParseCache]) -> None:
    cache = make()
    for t in INVALID:
        expected = _error(t)
        for _ in range(2):  # the second time too: failures are never kept
            with pytest.raises(SyncError) as info:
                cache.parse(t)
            assert (info.value.code.value, info.value.details) == expected, t
        assert t not in cache
    assert len(cache) == 0


def check_lru_bound(make: Callable[[int, int], ParseCache]) -> None:
    cache = make(2, DEFAULT_MAX_TEXT)
    a, b, c = VALID[0], VALID[1], VALID[2]
    cache.parse(a)
    cache.parse(b)
    cache.parse(a)  # a is now the most recently used
    cache.parse(c)  # evicts b, not a
    assert a in cache and c in cache and b not in cache and len(cache) == 2
    misses = cache.misses
    assert cache.parse(b) == q.parse(b) and cache.misses == misses + 1


def check_text_bound(make: Callable[[int, int], ParseCache]) -> None:
    short, long_ = VALID[0], VALID[2]
    cache = make(8, len(short))
    assert cache.parse(long_) == q.parse(long_)
    assert long_ not in cache
    cache.parse(short)
    assert short in cache


CHECKS: dict[str, Callable[[Callable[..., ParseCache]], None]] = {
    "same_as_parse": check_same_as_parse, "hits": check_hits, "invalid": check_invalid,
    "lru_bound": check_lru_bound, "text_bound": check_text_bound}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_cache(name: str) -> None:
    CHECKS[name](ParseCache)


def test_defaults_and_bad_bounds() -> None:
    cache = ParseCache()
    assert (cache.max_entries, cache.max_text) == (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TEXT) == (1024, 512)
    for bad in ((0, 10), (10, 0), (0, 0), (-1, 10)):
        with pytest.raises(ValueError, match=r"^ParseCache bounds must be positive$"):
            ParseCache(*bad)
    tiny = ParseCache(1, 1)  # 1 is a bound: one entry of a one-character text (no query is that short)
    assert (tiny.max_entries, tiny.max_text) == (1, 1)
    one = ParseCache(max_entries=1)
    one.parse(VALID[0])
    one.parse(VALID[1])
    assert VALID[1] in one and VALID[0] not in one and len(one) == 1


# --- planted bugs ---------------------------------------------------------------------------------


class KeyWithoutLiterals(ParseCache):
    """keys by shape only (digits and quoted strings dropped) but returns the kept parse"""

    def parse(self, text: str) -> tuple[q.Query, ...]:
        import re
        key = re.sub(r"'[^']*'|[0-9]+", "?", text)
        found = self._entries.get(key)
        if found is not None:
            return found
        result = q.parse(text)
        self._entries[key] = result
        return result


class NoEviction(ParseCache):
    def parse(self, text: str) -> tuple[q.Query, ...]:
        found = self._entries.get(text)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        result = q.parse(text)
        if len(text) <= self.max_text:
            self._entries[text] = result
        return result


class FifoNotLru(ParseCache):
    def parse(self, text: str) -> tuple[q.Query, ...]:
        found = self._entries.get(text)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        result = q.parse(text)
        if len(text) <= self.max_text:
            self._entries[text] = result
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return result


class KeepsFailuresEmpty(ParseCache):
    """an invalid text kept as 'no queries' (the second subscribe would silently succeed)"""

    def parse(self, text: str) -> tuple[q.Query, ...]:
        if text in self._entries:
            return self._entries[text]
        try:
            return super().parse(text)
        except SyncError:
            self._entries[text] = ()
            raise


class KeepsLongTexts(ParseCache):
    def parse(self, text: str) -> tuple[q.Query, ...]:
        result = super().parse(text)
        self._entries.setdefault(text, result)
        return result


class NoCounters(ParseCache):
    """hits counted as misses"""

    def parse(self, text: str) -> tuple[q.Query, ...]:
        result = super().parse(text)
        self.hits, self.misses = 0, self.hits + self.misses
        return result


MUTANTS: dict[type[ParseCache], str] = {  # the planted bug -> the check that kills it
    KeyWithoutLiterals: "same_as_parse", NoEviction: "lru_bound", FifoNotLru: "lru_bound",
    KeepsFailuresEmpty: "invalid", KeepsLongTexts: "text_bound", NoCounters: "hits"}


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=lambda m: m.__name__)
def test_planted_bugs_are_killed(mutant: type[ParseCache]) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):  # an assert, or pytest.raises' DID NOT RAISE
        CHECKS[MUTANTS[mutant]](mutant)


# --- through the engine ----------------------------------------------------------------------------


def test_engine_subscribe_uses_the_cache_and_keeps_errors() -> None:
    eng = Engine()
    texts = ("SELECT * FROM sync_stream WHERE stream_id = 's'",
             "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 0")
    c = eng.connect(ALL, confirmed=False)
    for k in range(3):
        eng.handle(c, Subscribe(10 + k, 1 + k, texts))
        out = eng.pop(c).message
        assert isinstance(out, SubscribeApplied), out
    assert (eng.parse_cache.misses, eng.parse_cache.hits) == (2, 4)
    bad = "SELECT * FROM sync_event WHERE seq > 'x'"
    replies = []
    for k in range(2):
        eng.handle(c, Subscribe(20 + k, 20 + k, (bad,)))
        out = eng.pop(c).message
        assert isinstance(out, SubscriptionError), out
        replies.append(out.error)
    assert replies[0] == replies[1]
    assert bad not in eng.parse_cache


# --- the facts of a query, read once per query object (ADR-0024) ------------------------------------

S = "SELECT * FROM sync_event WHERE "
FACTS = (  # text -> (stream_id, epoch, seq bound, resume form): written out, not computed
    (S + "stream_id = 's' AND epoch = 2 AND seq > 7", ("s", 2, 7, True)),
    (S + "stream_id = 's' AND epoch = 2 AND seq >= 7", ("s", 2, 6, True)),
    (S + "seq > 9 AND epoch = 2 AND stream_id = 's' AND seq > 7", ("s", 2, 9, True)),
    (S + "stream_id = 's' AND epoch = 2 AND seq > 7 AND tx_offset = 3", ("s", 2, 7, False)),
    (S + "stream_id = 's' AND seq > 3", ("s", None, 3, False)),
    (S + "epoch = 1 AND seq > 3", (None, 1, 3, False)),
    (S + "stream_id = 's' AND epoch = 1 AND stream_id = 't' AND seq > 0", ("s", 1, 0, False)),
    (S + "stream_id = 's' AND epoch = 1 AND seq > 0 AND epoch = 2", ("s", 1, 0, False)),
    (S + "stream_id = 's' AND epoch = 1 AND seq < 5", ("s", 1, None, False)),
    (S + "stream_id = 's' AND epoch = 1 AND seq < 5 AND seq > 1", ("s", 1, 1, False)),
    (S + "stream_id = 's' AND epoch = 1", ("s", 1, None, False)),
    ("SELECT * FROM sync_stream WHERE stream_id = 's'", ("s", None, None, False)),
    ("SELECT * FROM sync_stream", (None, None, None, False)),
)


def check_facts(cache: ParseCache) -> None:
    """Each text's facts are the table's; the shape is the same for the same conjuncts in another
    order and differs when a literal does."""
    for text, (sid, epoch, bound, resume) in FACTS:
        (query,) = q.parse(text)
        f = cache.facts(query)
        assert (f.stream_id, f.epoch, f.seq_bound, f.resume) == (sid, epoch, bound, resume), text
    a, b, c = (cache.facts(q.parse(S + t)[0]).shape for t in (
        "stream_id = 's' AND epoch = 2 AND seq > 7", "seq > 7 AND stream_id = 's' AND epoch = 2",
        "stream_id = 's' AND epoch = 2 AND seq > 8"))
    assert a == b != c


def check_facts_by_identity(cache: ParseCache) -> None:
    """Transient query objects (parsed, read, dropped: CPython soon gives a new one the same
    address) each get their own facts; the same object twice is read once; the bound holds."""
    parsed = [q.parse(S + f"stream_id = 's{w % 7}' AND epoch = {w % 5} AND seq > {w}")[0]
              for w in range(3 * cache.max_entries)]
    conjuncts = [(p.table, p.where, p.text) for p in parsed]  # built first: the loop allocates only the query
    del parsed
    for w, (table, where, text) in enumerate(conjuncts):
        query = q.Query(table, where, text)
        f = cache.facts(query)
        assert (f.stream_id, f.epoch, f.seq_bound) == (f"s{w % 7}", w % 5, w), w
        assert cache.facts(query) is f
        del query
    assert len(cache._facts) == 2 * cache.max_entries  # 3 * max_entries objects, each kept: full, never over


def test_the_facts_of_a_query() -> None:
    check_facts(ParseCache())
    check_facts_by_identity(ParseCache(max_entries=8))


def test_the_facts_are_read_once_per_query_object(monkeypatch: pytest.MonkeyPatch) -> None:
    import reference.parsecache as parsecache

    reads: list[q.Query] = []
    real = parsecache.query_facts
    monkeypatch.setattr(parsecache, "query_facts", lambda query: reads.append(query) or real(query))
    cache = ParseCache()
    (one,) = cache.parse(FACTS[0][0])
    (equal,) = q.parse(FACTS[0][0])  # equal, another object
    for _ in range(3):
        cache.facts(one)
        cache.facts(equal)
    assert reads == [one, equal] and reads[1] is equal


FACTS_PLANTED = (
    ("facts found by id without the query (an address reused meets another query's facts)",
     (("if found is not None and found[0] is query:", "if found is not None:"),
      ("memo[id(query)] = (query, facts)", "memo[id(query)] = (None, facts)  # type: ignore")),
     check_facts_by_identity),
    ("facts kept without a bound", (("        if len(memo) > 2 * self.max_entries:\n", "        if False:\n"),),
     check_facts_by_identity),
    ("a seq upper bound taken for the resume form",
     (("or (c.column == \"seq\" and c.op in (q.Op.GT, q.Op.GE) and type(c.value) is int)",
       "or (c.column == \"seq\" and type(c.value) is int)"),), check_facts),
    ("a second stream_id conjunct let through the resume form",
     (("(c.column == \"stream_id\" and c.op is q.Op.EQ and c.value == sid)",
       "(c.column == \"stream_id\" and c.op is q.Op.EQ)"),), check_facts),
)


@pytest.mark.parametrize(("name", "edits", "check"), FACTS_PLANTED, ids=[p[0] for p in FACTS_PLANTED])
def test_planted_bugs_in_the_facts_are_killed(name: str, edits: tuple[tuple[str, str], ...],
                                              check: Callable[[ParseCache], None]) -> None:
    from support.edited import edited_module

    import reference.parsecache as parsecache

    mod = edited_module(parsecache, edits, name)
    with pytest.raises(AssertionError):
        check(mod.ParseCache(max_entries=8))


def test_the_engine_reads_a_resume_query_s_facts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subscribe (scope, grant, stale check, snapshot, register) and unsubscribe of a resume set
    read each query's facts once, and the second subscribe of the same texts not at all."""
    import reference.parsecache as parsecache
    from spec.messages import Unsubscribe, UnsubscribeApplied

    reads: list[str] = []
    real = parsecache.query_facts
    monkeypatch.setattr(parsecache, "query_facts", lambda query: reads.append(query.table) or real(query))
    eng = Engine()
    texts = ("SELECT * FROM sync_stream WHERE stream_id = 's'",
             "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 0")
    c = eng.connect(ALL, confirmed=False)
    for k in range(2):
        eng.handle(c, Subscribe(10 + k, 1, texts))
        assert isinstance(eng.pop(c).message, SubscribeApplied)
        eng.handle(c, Unsubscribe(20 + k, 1))
        assert isinstance(eng.pop(c).message, UnsubscribeApplied)
    assert sorted(reads) == ["sync_event", "sync_stream"]
    assert not eng.shapes.get("sync_event") and not eng.shapes.get("sync_stream")  # dropped by the facts' shape
