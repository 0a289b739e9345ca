"""No text file of the project holds a merge's conflict markers.

A merge once committed ``docs/operations.md`` with both sides of a conflict and the markers
between them (the ``[server]`` rows of the configuration table): the page rendered both versions
of two rows, and nothing failed.  This walks the project's own text (not ``.venv`` or
``node_modules``) for a line that starts a conflict (``<<<<<<< ``) or ends one (``>>>>>>> ``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = {".py", ".md", ".toml", ".json", ".ts", ".mjs", ".js", ".cfg", ".txt", ".yml", ".yaml", ".html", ".css"}
SKIP = {".venv", "node_modules", ".git", "build", "dist", ".mypy_cache", ".ruff_cache", ".hypothesis"}


def test_no_conflict_markers_in_the_project_text() -> None:
    found: list[str] = []
    walked = 0
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if SKIP & set(rel.parts) or path.suffix not in TEXT or not path.is_file():
            continue
        walked += 1
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.startswith(("<<<<<<< ", ">>>>>>> ")):
                found.append(f"{rel}:{n}: {line[:60]}")
    assert found == [], "conflict markers left by a merge:\n" + "\n".join(found)
    assert walked > 100  # the walk reaches the project's files
