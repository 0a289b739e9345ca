"""Run ``syncref serve`` with a planted bug in the connection cap (``support.gate_mutants``).

    PYTHONPATH=tests python -m support.serve_with_gate_bug MUTANT SYNCREF serve --port P --data DIR ...

``MUTANT`` names one of :data:`support.gate_mutants.GATE_MUTANTS` (or ``none``); it is applied to
``adapters.guard`` before the server module is imported, so the server's gate is the mutated one.
``SYNCREF`` (the ``syncref`` program, as ``support.server.serve_process`` puts it after its
``prefix``) is dropped: the arguments after it go to the command line's ``main``.
"""

from __future__ import annotations

import sys

from support.gate_mutants import GATE_MUTANTS, GUARD
from support.mutants import apply

if __name__ == "__main__":
    name = sys.argv[1]
    if name != "none":
        apply({m.name: m for m in GATE_MUTANTS}[name], (GUARD,))
    from adapters.cli import main
    sys.exit(main(sys.argv[3:]))
