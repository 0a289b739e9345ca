"""Write the conformance vectors generated from the model into ``tests/conformance/vectors/``.

Usage (from the repository root)::

    .venv/bin/python tests/conformance/generate_vectors.py          # (re)write the files
    .venv/bin/python tests/conformance/generate_vectors.py --check  # exit 1 if they drifted

The Nostr vectors are computed by :func:`adapters.nostr.vectors.nostr_vectors` (``nostr/``), pure
and without I/O; this script writes them, removes stale ``*.json`` files from the directories it
owns, and runs the conformance kit's generator (``python -m adapters.conformance.generate``: the
canonical-JSON vectors moved into ``adapters/conformance/vectors/canonical/``).
``tests/conformance/test_vectors.py`` and ``test_nostr_vectors.py`` fail when the checked-in files
differ from what the code generates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VECTORS_DIR = Path(__file__).resolve().parent / "vectors"


def _generated() -> dict[Path, dict[str, str]]:
    if str(ROOT) not in sys.path:  # run as a script: make the project importable
        sys.path.insert(0, str(ROOT))
    from adapters.nostr.vectors import nostr_vectors

    return {VECTORS_DIR / "nostr": nostr_vectors()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the checked-in vectors differ")
    args = parser.parse_args(argv)

    drift = False
    for directory, wanted in _generated().items():
        drift |= _sync(directory, wanted, check=args.check)
    from adapters.conformance import generate as kit  # the conformance kit (canonical/ lives there now)
    drift |= kit.main(["--check"] if args.check else []) != 0
    return 1 if args.check and drift else 0


def _sync(directory: Path, wanted: dict[str, str], *, check: bool) -> bool:
    """Write (or with ``check``, report) the files of one directory; True if anything differed."""
    present = {p.name: p.read_bytes() for p in sorted(directory.glob("*.json"))}
    changed = [name for name, text in sorted(wanted.items())
               if present.get(name) != text.encode("utf-8")]
    stale = sorted(set(present) - set(wanted))
    rel = directory.relative_to(ROOT)
    if check:
        for name in changed:
            print(f"out of date: {rel / name}")
        for name in stale:
            print(f"stale: {rel / name}")
        return bool(changed or stale)
    directory.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (directory / name).write_bytes(wanted[name].encode("utf-8"))
        print(f"wrote {rel / name}")
    for name in stale:
        (directory / name).unlink()
        print(f"removed {rel / name}")
    if not changed and not stale:
        print(f"{rel}: up to date ({len(wanted)} files)")
    return bool(changed or stale)

if __name__ == "__main__":
    sys.exit(main())
