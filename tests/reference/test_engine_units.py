"""Engine unit cases the machines reach only by chance."""

from reference.engine import Engine
from spec.auth import Claims
from spec.compat import CompatWindow
from spec.errors import ErrorCode


def test_admission_runs_the_compatibility_negotiation_COMPAT_1() -> None:
    eng = Engine()
    old = Claims("a" * 64, frozenset(), (), client_build_id="20250101T000000Z", protocol_version="oa.sync.v1",
                 schema_version=3)
    err = eng.admit(old, CompatWindow())
    assert err is not None and err.code is ErrorCode.UPGRADE_REQUIRED
    fine = Claims("a" * 64, frozenset(), (), client_build_id="20260601T000000Z", protocol_version="oa.sync.v1",
                  schema_version=3)
    assert eng.admit(fine, CompatWindow()) is None
    assert eng.admit(Claims("a" * 64, frozenset()), CompatWindow(require_claims=True)) is not None
