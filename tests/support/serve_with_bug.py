"""Run ``syncref serve`` with a planted engine bug (for the conformance runner's tests).

    PYTHONPATH=tests python -m support.serve_with_bug MUTANT serve --port P --data DIR ...

``MUTANT`` names one of :data:`support.engine_mutants.ENGINE_MUTANTS` (or ``none``); it is applied
before the server module is imported, so the server runs the mutated engine.
"""

from __future__ import annotations

import sys

from support.engine_mutants import ENGINE, ENGINE_MUTANTS
from support.mutants import apply

if __name__ == "__main__":
    name = sys.argv[1]
    if name != "none":
        apply({m.name: m for m in ENGINE_MUTANTS}[name], ENGINE)
    from adapters.cli import main
    sys.exit(main(sys.argv[2:]))
