"""Run ``syncref serve`` with planted bugs (for the conformance runner's tests).

    PYTHONPATH=tests python -m support.serve_with_bug MUTANT[+MUTANT...] serve --port P --data DIR ...

Each ``MUTANT`` names one of :data:`support.engine_mutants.ENGINE_MUTANTS` or of
:data:`support.kit_variants.KIT_VARIANTS` (server-layer plants), or is ``none``; they are applied
(engine ones first) before the server module is imported, so the server runs the mutated code.
"""

from __future__ import annotations

import sys

from support.engine_mutants import ENGINE, ENGINE_MUTANTS
from support.kit_variants import KIT_VARIANTS, SERVER
from support.mutants import apply

if __name__ == "__main__":
    names = [n for n in sys.argv[1].split("+") if n != "none"]
    engine = {m.name: m for m in ENGINE_MUTANTS}
    server = {m.name: m for m in KIT_VARIANTS}
    unknown = [n for n in names if n not in engine and n not in server]
    if unknown:
        sys.exit(f"serve_with_bug: no planted bug named {', '.join(unknown)}")
    for name in (n for n in names if n in engine):
        apply(engine[name], ENGINE)
    for name in (n for n in names if n in server):
        apply(server[name], (*ENGINE, SERVER) if server[name].module in ENGINE else (SERVER,))
    from adapters.cli import main
    sys.exit(main(sys.argv[2:]))
