"""Error vocabulary of the sync module.

Every failure a peer can observe has exactly one code in :class:`ErrorCode`, and every code has
one documented client action (:data:`CLIENT_ACTIONS`).  On the wire a reducer error is the
SpacetimeDB reducer error string ``<code>: <canonical JSON details>`` (see
:meth:`SyncError.render`), so clients can parse it without guessing.

Two exception families split blame, as wsproto and h11 do:

* :class:`LocalProtocolError` -- *this* side misused the API (a caller bug).  It is raised, not
  sent anywhere.
* :class:`RemoteProtocolError` -- the *peer* sent something invalid.  At the single input
  boundary it is turned into a specific error message or close code; it never escapes further.

:class:`SyncError` is the value form: reducers and subscription checks *return* it (a failed
reducer changes nothing and only its caller hears of it); it is an exception only so that code
deep in a validation chain can raise it to the boundary.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any


class ErrorCode(enum.StrEnum):
    # authorization (checked first)
    MISSING_SCOPE = "missing_scope"
    FORBIDDEN_STREAM = "forbidden_stream"
    FORBIDDEN = "forbidden"
    # argument validation (checked second)
    INVALID_ARGUMENT = "invalid_argument"
    NON_CANONICAL_PAYLOAD = "non_canonical_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PAYLOAD_HASH_MISMATCH = "payload_hash_mismatch"
    # state checks (checked last)
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    SEQUENCE_CONFLICT = "sequence_conflict"
    STALE_EPOCH = "stale_epoch"
    CHECKPOINT_AHEAD_OF_HEAD = "checkpoint_ahead_of_head"
    VERSION_CONFLICT = "version_conflict"
    INVALID_TRANSITION = "invalid_transition"
    ASSIGNMENT_MISSING = "assignment_missing"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    POLICY_DENIED = "policy_denied"
    BRIDGE_EVENT_CONFLICT = "bridge_event_conflict"
    BRIDGE_EVENT_MISSING = "bridge_event_missing"
    # subscriptions
    INVALID_QUERY = "invalid_query"
    STALE_CURSOR = "stale_cursor"
    # connection / negotiation
    INVALID_CLIENT_BUILD = "invalid_client_build"
    UNSUPPORTED_PROTOCOL_VERSION = "unsupported_protocol_version"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UPGRADE_REQUIRED = "upgrade_required"
    UNSUPPORTED_CLIENT_BUILD = "unsupported_client_build"
    SLOW_CONSUMER = "slow_consumer"
    NO_SUCH_REDUCER = "no_such_reducer"
    # resource limits of a server (details: {"limit": <Limits field>, "max": n, "actual": m})
    LIMIT_EXCEEDED = "limit_exceeded"


CLIENT_ACTIONS: Mapping[ErrorCode, str] = {
    ErrorCode.MISSING_SCOPE: "Do not retry; obtain a token whose oa_sync_scopes include the scope named in details.",
    ErrorCode.FORBIDDEN_STREAM: "Do not retry; the token has no oa_sync_streams grant for this stream.",
    ErrorCode.FORBIDDEN: "Do not retry; the row belongs to another identity.",
    ErrorCode.INVALID_ARGUMENT: "Do not retry unchanged; fix the argument named in details.",
    ErrorCode.NON_CANONICAL_PAYLOAD: "Do not retry unchanged; the JSON is not representable (see reason).",
    ErrorCode.PAYLOAD_TOO_LARGE: "Do not retry unchanged; shrink or split the payload below limit_bytes.",
    ErrorCode.PAYLOAD_HASH_MISMATCH: "Recompute the hash over the canonical JSON; the payload or hash is corrupt.",
    ErrorCode.IDEMPOTENCY_CONFLICT: "Never retry under this key: it already names a different payload (existing_seq).",
    ErrorCode.SEQUENCE_CONFLICT: "Catch up to actual_next_seq - 1, rebase the write, retry with the new expected seq.",
    ErrorCode.STALE_EPOCH: "The stream was reset: rebootstrap it, then ack in the current epoch.",
    ErrorCode.CHECKPOINT_AHEAD_OF_HEAD: "Client bug: never ack a seq you have not received; clamp to head_seq.",
    ErrorCode.VERSION_CONFLICT: "Re-read the row (actual_version) and retry the update if it still applies.",
    ErrorCode.INVALID_TRANSITION: "Do not retry; the assignment's status does not allow this transition.",
    ErrorCode.ASSIGNMENT_MISSING: "Open the assignment first (open_compute_assignment).",
    ErrorCode.PROVIDER_UNAVAILABLE: "Do not retry unchanged; assign a provider that exists, is active and advertises "
                                    "the job kind (details: job_kind, provider_id, reason).",
    ErrorCode.POLICY_DENIED: ("Do not retry; the bridge policy does not allow this Nostr kind, or the tags/content "
                              "hold a control character relays serialize differently (C0 other than \\b \\t "
                              "\\n \\f \\r)."),
    ErrorCode.BRIDGE_EVENT_CONFLICT: "Do not retry; the outbox row was already sent as another Nostr event.",
    ErrorCode.BRIDGE_EVENT_MISSING: "Enqueue the outbox row before marking it.",
    ErrorCode.INVALID_QUERY: "Fix the query; only the documented subscription SQL subset is accepted.",
    ErrorCode.STALE_CURSOR: "If epoch_changed is the only reason and your epoch is on the continuation chain "
                            "(continues_epoch, then earlier_epochs) with your watermark at or below every bound from "
                            "continues_seq back to your epoch's, resume in the new epoch from the same watermark; "
                            "else rebootstrap the stream (drop local state, rehydrate), then resume from the new "
                            "watermark.",
    ErrorCode.INVALID_CLIENT_BUILD: "Send a non-blank oa_client_build_id (YYYYMMDDTHHMMSSZ).",
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: "Use the protocol version the server names in the window.",
    ErrorCode.UNSUPPORTED_SCHEMA_VERSION: "Upgrade or downgrade to a schema version inside the window.",
    ErrorCode.UPGRADE_REQUIRED: "Upgrade the client to at least min_client_build_id.",
    ErrorCode.UNSUPPORTED_CLIENT_BUILD: "Newer than the server supports; use a build <= max_client_build_id.",
    ErrorCode.SLOW_CONSUMER: "Reconnect and resume from the persisted watermark; consume faster.",
    ErrorCode.NO_SUCH_REDUCER: "Do not retry; call a reducer the module defines.",
    ErrorCode.LIMIT_EXCEEDED: "Do not retry unchanged; stay within the server limit named in details "
                              "(split the request, narrow the query, or consume faster).",
}


def canonical_details(details: Mapping[str, Any]) -> str:
    """Details are canonical JSON (sorted keys, no whitespace), like every JSON the module writes."""
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


class SyncError(Exception):
    """A peer-visible failure: a code plus machine-readable details.

    A plain exception class (not a frozen dataclass), so the interpreter can set its traceback
    and notes wherever it is raised; treat instances as values all the same."""

    __match_args__ = ("code", "details")

    def __init__(self, code: ErrorCode, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, details)
        self.code = code
        self.details: Mapping[str, Any] = dict(details) if details is not None else {}

    def __repr__(self) -> str:
        return f"SyncError({self.code!r}, {dict(self.details)!r})"

    def render(self) -> str:
        """The wire string: ``<code>: <canonical JSON details>``."""
        return f"{self.code.value}: {canonical_details(self.details)}"

    def __str__(self) -> str:
        return self.render()

    @staticmethod
    def parse(text: str) -> SyncError:
        """Inverse of :meth:`render`; raises :class:`RemoteProtocolError` on anything else."""
        code_text, sep, rest = text.partition(": ")
        try:
            code = ErrorCode(code_text)
        except ValueError:
            raise RemoteProtocolError(f"unknown error code in {text[:80]!r}") from None
        if not sep:
            raise RemoteProtocolError(f"error string without details: {text[:80]!r}")
        try:
            details = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise RemoteProtocolError(f"error details are not JSON: {exc}") from None
        if not isinstance(details, dict):
            raise RemoteProtocolError("error details must be a JSON object")
        return SyncError(code, details)

    def __hash__(self) -> int:
        return hash((self.code, canonical_details(self.details)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SyncError):
            return NotImplemented
        return self.code == other.code and dict(self.details) == dict(other.details)


class ProtocolError(Exception):
    """Base of the two blame-assigning exceptions."""


class LocalProtocolError(ProtocolError):
    """The caller on this side misused the API (a programming error, never peer input)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid; the input boundary turns it into an error reply."""
