"""COMPAT-1: compatibility negotiation applies its checks in the documented order."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from spec.compat import CompatWindow, negotiate, rejection_body
from spec.errors import ErrorCode

W = CompatWindow(protocol_version="oa.sync.v1", min_schema_version=1, max_schema_version=2,
                 min_client_build_id="20260101T000000Z", max_client_build_id="20261231T235959Z")

BUILDS = ["", "  ", "garbage", "20251231T235959Z", "20260101T000000Z", "20260601T120000Z",
          "20261231T235959Z", "20270101T000000Z", None]
PROTOCOLS = ["oa.sync.v1", "oa.sync.v0", "", None]
SCHEMAS = [0, 1, 2, 3, None]
builds, protocols, schemas = st.sampled_from(BUILDS), st.sampled_from(PROTOCOLS), st.sampled_from(SCHEMAS)


def oracle(build: str | None, protocol: str | None, schema: int | None) -> ErrorCode | None:
    """The order of DESIGN §4, written independently of spec.compat."""
    if build is None and protocol is None and schema is None:
        return None
    if not build or not build.strip() or len(build) != 16 or build[8] != "T" or not build.endswith("Z"):
        return ErrorCode.INVALID_CLIENT_BUILD
    if protocol != "oa.sync.v1":
        return ErrorCode.UNSUPPORTED_PROTOCOL_VERSION
    if schema not in (1, 2):
        return ErrorCode.UNSUPPORTED_SCHEMA_VERSION
    if build < "20260101T000000Z":
        return ErrorCode.UPGRADE_REQUIRED
    if build > "20261231T235959Z":
        return ErrorCode.UNSUPPORTED_CLIENT_BUILD
    return None


@given(builds, protocols, schemas)
def test_negotiation_order_matches_the_documented_order(build: str | None, protocol: str | None,
                                                        schema: int | None) -> None:
    err = negotiate(W, build, protocol, schema)
    assert (err.code if err else None) == oracle(build, protocol, schema)


def test_negotiation_order_on_every_combination() -> None:
    """The same, exhaustively over the 180 combinations (Hypothesis samples only some of them per run)."""
    for build, protocol, schema in itertools.product(BUILDS, PROTOCOLS, SCHEMAS):
        err = negotiate(W, build, protocol, schema)
        assert (err.code if err else None) == oracle(build, protocol, schema), (build, protocol, schema)


def test_rejection_body_is_the_426_payload() -> None:
    err = negotiate(W, "20251231T235959Z", "oa.sync.v1", 1)
    assert err is not None
    body = rejection_body(err)
    assert body["code"] == "upgrade_required"
    assert body["upgrade_required"] is True
    assert body["window"]["min_client_build_id"] == "20260101T000000Z"
    assert body["message"].startswith("upgrade_required: {")


def test_claims_required_when_the_window_says_so() -> None:
    strict = CompatWindow(require_claims=True)
    err = negotiate(strict, None, None, None)
    assert err is not None and err.code is ErrorCode.INVALID_CLIENT_BUILD
