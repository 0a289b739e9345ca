"""A bounded cache of parsed query texts (issue 10, the small-gap replay).

Every ``Subscribe`` parses each of its query texts (``spec.query.parse``: a regex tokenizer, a
recursive-descent parser, three always-on postconditions). For a resume of a small gap that was
about a sixth of the server's CPU (docs/performance.md, "Replay of a small gap"), and the same
texts come back again and again: the stream row query of a resume set
(``SELECT * FROM sync_stream WHERE stream_id = 'S'``) is identical on every resume of ``S``, many
clients subscribe the same live query, and a reconnecting client re-sends its query set.

:class:`ParseCache` keeps the result of ``parse`` for a text, keyed by the **exact text** (the
literals are part of the key, so a different literal is a different entry): ``parse`` is a pure
function of its argument and its result is immutable (frozen dataclasses of ``str``/``int``/
``bool``), so a hit returns exactly what parsing again would return -- ``Query.text`` included.
Failures are never kept: an invalid text is parsed again each time and raises the same
``SyncError`` as before. Bounded: at most ``max_entries`` texts of at most ``max_text`` characters
each (longer texts are parsed and not kept); least recently used out first.

:class:`QueryFacts` are what the engine reads of a parsed query on every subscribe and unsubscribe
(the pinned stream and epoch, the seq bounds, the shape key, whether it has the resume form): read
once per query object by :meth:`ParseCache.facts` and kept beside it (ADR-0024), where they used
to be read again by each step -- the scope and grant checks, the stale check, the snapshot's fast
path, registering the shape and dropping it -- about a dozen scans of the conjuncts a resume.

*Not done:* a cache by query *shape* (literals as parameters), which would also hit the
``sync_event`` resume query whose ``seq > W`` literal changes from one resume to the next; its
tokenizer pass is most of what it would save, so it would need a second, cheaper lexer kept
exactly in step with the parser's errors.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from spec import query as q

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_TEXT = 512  # characters; a resume query set's texts are ~60-130


@dataclass(frozen=True, slots=True)
class QueryFacts:
    """What the engine reads of a parsed query, read once (:func:`query_facts`)."""

    stream_id: int | str | bool | None  # the value of the first ``stream_id = v`` conjunct (None: none)
    epoch: int | str | bool | None  # the value of the first ``epoch = v`` conjunct
    seq_bound: int | None  # ``spec.query.lower_bound_exclusive(query, "seq")``: the largest W with seq > W implied
    shape: tuple[object, ...]  # ``spec.query.shape_key(query)``
    resume: bool  # a sync_event query of only stream_id = S (str), epoch = E (int), seq > / >= W (int) conjuncts
    seq_upper: int | None = None  # ``spec.query.upper_bound_inclusive(query, "seq")``: a page's B (ADR-0042)


def query_facts(query: q.Query) -> QueryFacts:
    """The facts of ``query``, read from its conjuncts."""
    sid = q.pinned_value(query, "stream_id")
    epoch = q.pinned_value(query, "epoch")
    w = q.lower_bound_exclusive(query, "seq")
    resume = (query.table == "sync_event" and isinstance(sid, str) and type(epoch) is int and w is not None
              and all((c.column == "stream_id" and c.op is q.Op.EQ and c.value == sid)
                      or (c.column == "epoch" and c.op is q.Op.EQ and c.value == epoch)
                      or (c.column == "seq" and c.op in (q.Op.GT, q.Op.GE) and type(c.value) is int)
                      for c in query.where))
    return QueryFacts(sid, epoch, w, q.shape_key(query), resume, q.upper_bound_inclusive(query, "seq"))


class ParseCache:
    """``parse(text)`` -- the same result (or the same error) as ``spec.query.parse(text)``."""

    __slots__ = ("_entries", "_facts", "hits", "max_entries", "max_text", "misses")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_text: int = DEFAULT_MAX_TEXT) -> None:
        if max_entries < 1 or max_text < 1:
            raise ValueError("ParseCache bounds must be positive")
        self.max_entries = max_entries
        self.max_text = max_text
        self._entries: OrderedDict[str, tuple[q.Query, ...]] = OrderedDict()
        self._facts: dict[int, tuple[q.Query, QueryFacts]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, text: object) -> bool:
        return text in self._entries

    def parse(self, text: str) -> tuple[q.Query, ...]:
        """:raises SyncError: ``invalid_query``, exactly as ``spec.query.parse``"""
        entries = self._entries
        found = entries.get(text)
        if found is not None:
            entries.move_to_end(text)
            self.hits += 1
            return found
        self.misses += 1
        result = q.parse(text)  # raises before anything is kept
        if len(text) <= self.max_text:
            entries[text] = result
            if len(entries) > self.max_entries:
                entries.popitem(last=False)
        return result

    def facts(self, query: q.Query) -> QueryFacts:
        """``query_facts(query)``, kept for the query object (found by its identity: the entry holds
        the query, so its ``id`` cannot be reused while the entry lives); at most ``2 *
        max_entries`` kept, the oldest out first."""
        memo = self._facts
        found = memo.get(id(query))
        if found is not None and found[0] is query:
            return found[1]
        facts = query_facts(query)
        memo[id(query)] = (query, facts)
        if len(memo) > 2 * self.max_entries:
            del memo[next(iter(memo))]
        return facts
