"""A module rebuilt in memory from its source with one planted edit.

The planted-bug tests of single functions (the bsatn run cache and column writer, the engine's
fanout skip, the server's delivery pass) check their tests against a copy of the real module in
which one exact piece of text is replaced: the text must occur exactly once (so a planted bug can
never silently edit nothing, or the wrong place; a miss raises ``LookupError``, never the
``AssertionError`` a planted-bug test waits for), and the copy is a fresh module object, so the real
one stays untouched for every other test.  The copy is registered in ``sys.modules`` while its body
runs, because ``dataclasses`` looks a class's module up while it builds the class.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import types
from collections.abc import Iterable


def edited_module(module: types.ModuleType, edits: Iterable[tuple[str, str]], label: str = "") -> types.ModuleType:
    """``module`` executed again from its source with, for each ``(old, new)`` of ``edits`` in turn,
    the one occurrence of ``old`` replaced by ``new``."""
    src = inspect.getsource(module)
    for old, new in edits:
        if src.count(old) != 1:  # not an assert: a test expecting AssertionError must not take it for a kill
            raise LookupError(f"a planted edit must match exactly once, matched {src.count(old)}: {old!r}")
        src = src.replace(old, new)
    name = f"planted_{module.__name__.replace('.', '_')}"
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    filename = f"<{label or 'planted edit'} of {module.__name__}>"
    # the edited source where ``inspect`` looks for it: icontract reads a violated condition's
    # source to word its error, which must be the planted bug's AssertionError, not an OSError
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    try:
        exec(compile(src, filename, "exec"), mod.__dict__)
    finally:
        del sys.modules[name]
    return mod
