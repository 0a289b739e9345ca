"""Per-reducer rules as data: who may call, which errors with which detail keys, when a call is a no-op.

This table is the summary of ``spec/reducers.py`` that the documentation and the reach table read;
nothing here is executed by a reducer.  What a reducer *runs* is in ``spec/reducers.py`` itself:
its statement (the reducer's docstring), its checks in order (:data:`spec.reducers.CHECKS`, each
with the error code it refuses with) and its effect.  This table adds what the reducers do not
spell out as data: the detail keys of each error, the caller roles, and when an accepted call
writes nothing.  It is kept honest from three sides:

* ``docs/protocol.md`` ("Per-reducer rules") is generated from it (``tests/spec/test_protocol_doc.py``
  fails when the doc drifts);
* ``tests/spec/test_check_order.py`` fails when the codes listed here differ from the codes of the
  reducer's checks (plus ``invalid_argument``, which ``call`` answers for a wrong arity or type), or
  when a reducer whose checks include a no-op step has no no-op condition here;
* the reach table (``tests/support/reach.py``, printed by ``syncref verify``) counts every
  (reducer, outcome) cell named here over the machines' runs and fails on a listed error no machine
  produces, on an error a reducer returns that is not listed, and on an error whose detail keys are
  not exactly the listed ones.

Roles are the caller's relation to the call, as the reach table classifies it:

==================  ==============================================================================
``missing_scope``   lacks the reducer's scope (``update_compute_assignment``: all three compute scopes)
``missing_grant``   holds the scope, but no ``oa_sync_streams`` grant matches the stream
``first_writer``    the row the call names does not exist yet (the caller would create it)
``owner``           the row exists and the caller owns it (checkpoint owner, session identity,
                    provider owner)
``non_owner``       the row exists and another identity owns it
``requester``       a compute assignment's requester
``dispatcher``      a holder of ``compute.assign``
``provider_owner``  the owner of the provider an assignment is assigned to
``no_role``         holds a compute scope but none of the roles above on the row
``no_row``          ``update_compute_assignment`` of a request id that does not exist
``holder``          holds the scope (and the grant); no row ownership applies
``admin``           holds ``sync.admin``
==================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from spec.errors import ErrorCode

ARG = ("argument", "message")
"""Detail keys of ``invalid_argument`` (every reducer: wrong arity or type is refused by ``call``)."""
NON_CANONICAL = ("argument", "message", "reason")


@dataclass(frozen=True, slots=True)
class ReducerRule:
    reducer: str
    roles: tuple[str, ...]
    errors: Mapping[ErrorCode, tuple[str, ...]]  # code -> its detail keys, sorted
    noop: str | None  # when an accepted call writes nothing; None: every accepted call writes


def _errors(**codes: tuple[str, ...]) -> Mapping[ErrorCode, tuple[str, ...]]:
    return {ErrorCode(k): tuple(sorted(v)) for k, v in codes.items()}


REDUCER_RULES: tuple[ReducerRule, ...] = (
    ReducerRule(
        "append_sync_event",
        ("missing_scope", "missing_grant", "holder"),
        _errors(missing_scope=("scope",), forbidden_stream=("stream_id",), invalid_argument=ARG,
                non_canonical_payload=NON_CANONICAL,
                payload_too_large=("limit_bytes", "payload_bytes", "stream_id"),
                payload_hash_mismatch=("payload_hash", "requested_payload_hash", "stream_id"),
                idempotency_conflict=("existing_payload_hash", "existing_seq", "idempotency_key", "payload_hash",
                                      "stream_id"),
                sequence_conflict=("actual_next_seq", "expected_next_seq", "stream_id")),
        "the key is retained with the same payload hash (returns the original seq, whatever expected_next_seq)"),
    ReducerRule(
        "ack_checkpoint",
        ("missing_scope", "missing_grant", "first_writer", "owner", "non_owner"),
        _errors(missing_scope=("scope",), forbidden_stream=("stream_id",), forbidden=("checkpoint_id",),
                invalid_argument=ARG, stale_epoch=("epoch", "requested_epoch", "stream_id"),
                checkpoint_ahead_of_head=("head_seq", "requested_seq", "stream_id")),
        "the checkpoint is in that epoch at or above the seq"),
    ReducerRule(
        "upsert_presence",
        ("missing_scope", "first_writer", "owner", "non_owner"),
        _errors(missing_scope=("scope",), forbidden=("session_id",), invalid_argument=ARG),
        "the row would not change: same device, node, status and region at the same clock reading"),
    ReducerRule(
        "publish_provider_capability",
        ("missing_scope", "first_writer", "owner", "non_owner"),
        _errors(missing_scope=("scope",), forbidden=("provider_id",), invalid_argument=ARG,
                non_canonical_payload=NON_CANONICAL),
        "the same capability, kinds, price and status as the stored row (version kept)"),
    ReducerRule(
        "open_compute_assignment",
        ("missing_scope", "first_writer", "requester", "non_owner"),
        _errors(missing_scope=("scope",), forbidden=("request_id",), invalid_argument=ARG,
                non_canonical_payload=NON_CANONICAL,
                idempotency_conflict=("existing_request_hash", "request_hash", "request_id")),
        "the request id is open with the same request hash and job kind"),
    ReducerRule(
        "update_compute_assignment",
        ("missing_scope", "no_row", "requester", "dispatcher", "provider_owner", "no_role"),
        _errors(missing_scope=("scope",), invalid_argument=ARG, non_canonical_payload=NON_CANONICAL,
                assignment_missing=("request_id",),
                version_conflict=("actual_version", "expected_version", "request_id"),
                invalid_transition=("request_id", "requested_status", "status"), forbidden=("request_id",),
                provider_unavailable=("job_kind", "provider_id", "reason")),
        None),
    ReducerRule(
        "enqueue_bridge_event",
        ("missing_scope", "holder"),
        _errors(missing_scope=("scope",), invalid_argument=ARG, non_canonical_payload=NON_CANONICAL,
                policy_denied=("nostr_kind", "outbox_id"),
                idempotency_conflict=("content_hash", "existing_content_hash", "outbox_id")),
        "the outbox id holds the same content hash"),
    ReducerRule(
        "mark_bridge_event_sent",
        ("missing_scope", "holder"),
        _errors(missing_scope=("scope",), invalid_argument=ARG, bridge_event_missing=("outbox_id",),
                bridge_event_conflict=("nostr_event_id", "outbox_id", "requested_nostr_event_id")),
        "the row is sent with that event id and every relay is already acknowledged"),
    ReducerRule(
        "record_bridge_failure",
        ("missing_scope", "holder"),
        _errors(missing_scope=("scope",), invalid_argument=ARG, bridge_event_missing=("outbox_id",)),
        "the row is sent or failed"),
    ReducerRule(
        "publish_stream_signal",
        ("missing_scope", "missing_grant", "holder"),
        _errors(missing_scope=("scope",), forbidden_stream=("stream_id",), invalid_argument=ARG,
                non_canonical_payload=NON_CANONICAL, payload_too_large=("limit_bytes", "payload_bytes", "stream_id")),
        None),
    ReducerRule(
        "reset_stream_epoch",
        ("missing_scope", "admin"),
        _errors(missing_scope=("scope",), invalid_argument=ARG),
        None),
)
REDUCER_RULE_BY_NAME: Mapping[str, ReducerRule] = {r.reducer: r for r in REDUCER_RULES}


def outcomes(rule: ReducerRule) -> tuple[str, ...]:
    """The outcome cells of a reducer: ``ok``, ``noop`` when it has one, then each error code."""
    return ("ok", *(("noop",) if rule.noop else ()), *(c.value for c in rule.errors))
