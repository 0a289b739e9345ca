"""Write the conformance vectors generated from the model into ``tests/conformance/vectors/``.

Usage (from the repository root)::

    .venv/bin/python tests/conformance/generate_vectors.py          # (re)write the files
    .venv/bin/python tests/conformance/generate_vectors.py --check  # exit 1 if they drifted

The vectors themselves are computed by :func:`spec.vectors.canonical_vectors` (pure, no I/O);
this script only writes them, and removes stale ``*.json`` files from the directory it owns.
``tests/conformance/test_vectors.py`` fails when the checked-in files differ from the model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CANONICAL_DIR = Path(__file__).resolve().parent / "vectors" / "canonical"


def _generated() -> dict[str, str]:
    if str(ROOT) not in sys.path:  # run as a script: make the project importable
        sys.path.insert(0, str(ROOT))
    from spec.vectors import canonical_vectors

    return canonical_vectors()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the checked-in vectors differ")
    args = parser.parse_args(argv)

    wanted = _generated()
    present = {p.name: p.read_bytes() for p in sorted(CANONICAL_DIR.glob("*.json"))}
    changed = [name for name, text in sorted(wanted.items())
               if present.get(name) != text.encode("utf-8")]
    stale = sorted(set(present) - set(wanted))
    rel = CANONICAL_DIR.relative_to(ROOT)
    if args.check:
        for name in changed:
            print(f"out of date: {rel / name}")
        for name in stale:
            print(f"stale: {rel / name}")
        return 1 if changed or stale else 0
    CANONICAL_DIR.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (CANONICAL_DIR / name).write_bytes(wanted[name].encode("utf-8"))
        print(f"wrote {rel / name}")
    for name in stale:
        (CANONICAL_DIR / name).unlink()
        print(f"removed {rel / name}")
    if not changed and not stale:
        print(f"{rel}: up to date ({len(wanted)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
