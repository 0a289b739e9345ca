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

*Not done:* a cache by query *shape* (literals as parameters), which would also hit the
``sync_event`` resume query whose ``seq > W`` literal changes from one resume to the next; its
tokenizer pass is most of what it would save, so it would need a second, cheaper lexer kept
exactly in step with the parser's errors.
"""

from __future__ import annotations

from collections import OrderedDict

from spec import query as q

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_TEXT = 512  # characters; a resume query set's texts are ~60-130


class ParseCache:
    """``parse(text)`` -- the same result (or the same error) as ``spec.query.parse(text)``."""

    __slots__ = ("_entries", "hits", "max_entries", "max_text", "misses")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_text: int = DEFAULT_MAX_TEXT) -> None:
        if max_entries < 1 or max_text < 1:
            raise ValueError("ParseCache bounds must be positive")
        self.max_entries = max_entries
        self.max_text = max_text
        self._entries: OrderedDict[str, tuple[q.Query, ...]] = OrderedDict()
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
