"""The test tree has no ``__init__.py`` files (pytest's default import mode), so two test files
with the same basename in different directories cannot both be collected: the second fails with
"import file mismatch" and its tests do not run.  This happened once (``test_mutation_kills.py``
in ``tests/spec`` and ``tests/reference``); this test keeps it from happening again."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_file_basenames_are_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "node_modules" not in path.parts:
            seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert clashes == {}, f"test files sharing a basename (rename one): {clashes}"
    assert "test_mutation_kills_reference.py" in seen  # the walk reaches the subdirectories
