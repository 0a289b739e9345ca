"""Planted bugs in the engine's isolation guarantees, which tests/reference/test_engine_isolation.py
must catch (the differential machines cannot: the model has no resource limits and no failing
record builder).  Same mechanism as ``support/engine_mutants.py``; a mutant is killed when that
test file fails with it applied.  Run one::

    PYTHONPATH=tests python -m support.isolation_mutants NAME
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support.mutants import Mutant, apply

TARGET = str(Path(__file__).resolve().parents[1] / "reference" / "test_engine_isolation.py")

ISOLATION_MUTANTS: tuple[Mutant, ...] = (
    Mutant("offset_before_record", "reference.engine",
           (("            return make_record(self.committed + 1, kind, name, caller, args, self.now, changes, "
             "self.head_hash, delta)",
             "            self.committed += 1\n"
             "            return make_record(self.committed, kind, name, caller, args, self.now, changes, "
             "self.head_hash, delta)"),),
           "the attack run's freeze: the offset is taken before the record is built"),
    Mutant("seal_without_rollback", "reference.engine",
           (("        except Exception as exc:\n            tx.rollback()\n            raise InternalError(name, exc) "
             "from exc",
             "        except Exception as exc:\n            raise InternalError(name, exc) from exc"),),
           "a record that cannot be built leaves the reducer's writes in place"),
    Mutant("pins_ignored", "reference.engine",
           (("        self.pin = _pin(self.query)", "        self.pin = None"),),
           "every shape is matched against every stream's rows"),
    Mutant("conjuncts_unbounded", "reference.engine",
           (("            if most is not None and len(query.where) > most:",
             "            if most is not None and len(query.where) > most + 1:"),),
           "the conjunct bound is enforced one late"),
    Mutant("message_size_unchecked", "reference.engine",
           (("        if most is not None and size > most:", "        if most is not None and size > most * 2:"),),
           "a snapshot twice the frame bound is queued"),
)
ISOLATION_MUTANT_BY_NAME = {m.name: m for m in ISOLATION_MUTANTS}


def run(name: str) -> dict[str, object]:
    import pytest
    apply(ISOLATION_MUTANT_BY_NAME[name], ("reference.engine",))
    code = pytest.main(["-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-x", TARGET, "-k", "not planted"])
    return {"mutant": name, "killed": code == 1}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
