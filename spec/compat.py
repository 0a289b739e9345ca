"""Compatibility negotiation at connect (DESIGN §4).

The checks run in a fixed order and the first failure wins:

1. blank (or malformed) ``oa_client_build_id``   -> ``invalid_client_build``
2. ``oa_protocol_version`` != the server's         -> ``unsupported_protocol_version``
3. ``oa_schema_version`` outside the window        -> ``unsupported_schema_version``
4. build below ``min_client_build_id``             -> ``upgrade_required``
5. build above ``max_client_build_id``             -> ``unsupported_client_build``

Build ids are fixed-width ``YYYYMMDDTHHMMSSZ`` strings, so string order is time order.
A token without any compatibility claim (``oa_client_build_id`` absent) is not an OpenAgents
client -- e.g. a stock SpacetimeDB SDK with a server-minted identity; it is admitted unless the
window sets ``require_claims``.  A rejection is HTTP 426 with :func:`rejection_body`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import icontract

from spec.errors import ErrorCode, SyncError
from spec.schema import PROTOCOL_VERSION, SCHEMA_VERSION

BUILD_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")


def well_formed_build(build: str) -> bool:
    """``YYYYMMDDTHHMMSSZ`` in ASCII digits: the shape whose string order is time order."""
    return (len(build) == 16 and build[8] == "T" and build[15] == "Z"
            and all(ch in "0123456789" for ch in build[:8] + build[9:15]))


@dataclass(frozen=True, slots=True)
class CompatWindow:
    protocol_version: str = PROTOCOL_VERSION
    min_schema_version: int = SCHEMA_VERSION
    max_schema_version: int = SCHEMA_VERSION
    min_client_build_id: str = "20260101T000000Z"
    max_client_build_id: str = "20991231T235959Z"
    require_claims: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"protocol_version": self.protocol_version,
                "min_schema_version": self.min_schema_version,
                "max_schema_version": self.max_schema_version,
                "min_client_build_id": self.min_client_build_id,
                "max_client_build_id": self.max_client_build_id}


CHECK_ORDER: tuple[ErrorCode, ...] = (
    ErrorCode.INVALID_CLIENT_BUILD, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
    ErrorCode.UPGRADE_REQUIRED, ErrorCode.UNSUPPORTED_CLIENT_BUILD)
"""The documented order of the checks, as data (the module essay's list)."""


def _first_failure(window: CompatWindow, build: str | None, protocol: str | None,
                   schema: int | None) -> ErrorCode | None:
    """The second opinion on :func:`negotiate`, written differently on purpose: it states what each
    check *means* on its own (every code whose condition holds, not only the first), then lets the
    documented rank (:data:`CHECK_ORDER`) pick the one reported.  :func:`negotiate` runs the checks as
    a chain of early returns; a chain in the wrong order, or a check that looks at the wrong claim,
    disagrees with this on some input."""
    if build is None and protocol is None and schema is None and not window.require_claims:
        return None
    ok_build = build is not None and well_formed_build(build)
    failing = {
        ErrorCode.INVALID_CLIENT_BUILD: not ok_build,
        ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: protocol != window.protocol_version,
        ErrorCode.UNSUPPORTED_SCHEMA_VERSION: schema not in range(window.min_schema_version,
                                                                  window.max_schema_version + 1),
        ErrorCode.UPGRADE_REQUIRED: ok_build and build is not None and build < window.min_client_build_id,
        ErrorCode.UNSUPPORTED_CLIENT_BUILD: ok_build and build is not None and build > window.max_client_build_id,
    }
    return min((code for code, failed in failing.items() if failed), key=CHECK_ORDER.index, default=None)


def window_well_formed(window: CompatWindow) -> bool:
    """The schema window is not empty; the build window is two well-formed build ids, in order."""
    return (window.min_schema_version <= window.max_schema_version
            and well_formed_build(window.min_client_build_id) and well_formed_build(window.max_client_build_id)
            and window.min_client_build_id <= window.max_client_build_id)


@icontract.require(lambda window: window_well_formed(window), "the server's window is well formed")
@icontract.ensure(lambda window, build, protocol, schema, result:
                  (result.code if result else None) == _first_failure(window, build, protocol, schema),
                  "COMPAT-1 (the first failing check, in the documented order, decides the code)")
@icontract.ensure(lambda window, result: result is None or result.details["window"] == window.as_json(),
                  "COMPAT-1 (a rejection carries the server's window)")
def negotiate(window: CompatWindow, build: str | None, protocol: str | None,
              schema: int | None) -> SyncError | None:
    """None when the client may connect, else the first failing check's error."""
    if build is None and protocol is None and schema is None and not window.require_claims:
        return None
    w = window.as_json()
    if build is None or not build.strip() or not BUILD_RE.fullmatch(build):
        return SyncError(ErrorCode.INVALID_CLIENT_BUILD, {"client_build_id": build or "", "window": w})
    if protocol != window.protocol_version:
        return SyncError(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION,
                         {"requested_protocol_version": protocol or "", "window": w})
    if schema is None or not window.min_schema_version <= schema <= window.max_schema_version:
        return SyncError(ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
                         {"requested_schema_version": schema, "window": w})
    if build < window.min_client_build_id:
        return SyncError(ErrorCode.UPGRADE_REQUIRED, {"client_build_id": build, "window": w})
    if build > window.max_client_build_id:
        return SyncError(ErrorCode.UNSUPPORTED_CLIENT_BUILD, {"client_build_id": build, "window": w})
    return None


def rejection_body(err: SyncError) -> dict[str, Any]:
    """The JSON body of the HTTP 426 answer."""
    return {"code": err.code.value, "message": err.render(),
            "window": err.details.get("window"),
            "upgrade_required": err.code is ErrorCode.UPGRADE_REQUIRED}
