"""Tests written to kill the mutants mutmut's runs left alive (docs/mutation.md, `support.mutate`).

Each group names the module and the behaviour the surviving mutants changed; the expected values
come from an independent source (Python's datetime for timestamps, hand-written tables otherwise).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import icontract
import pytest

from spec import reducers as red
from spec import schema
from spec.auth import Claims, can_read, grant_matches
from spec.canonical import (
    _digest_of,
    _is_clean,
    _is_fixed_point,
    _json_equal,
    _no_raw_control,
    _same_value,
    _utf8_encodable,
    canonical_and_hash,
    canonicalize,
    dumps_canonical,
    parse_strict,
)
from spec.client import Checkpoint, Client, StreamView, _applied_in_order, apply_rule, continues
from spec.compat import CompatWindow, negotiate, well_formed_build, window_well_formed
from spec.errors import ErrorCode, LocalProtocolError, RemoteProtocolError, SyncError, canonical_details
from spec.invariants import _past_window, check_state, layout_ok
from spec.messages import (
    CallReducer,
    QuerySetUpdate,
    ReducerErr,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
)
from spec.outcome import virtual_stream
from spec.policy import DEFAULT_POLICY, Policy, StreamClass, expired
from spec.query import (
    Comparison,
    Op,
    Query,
    _int_lower_bounds,
    evaluate,
    matches,
    parse,
    resume_watermark,
    unsatisfiable,
)
from spec.reducer_contracts import (
    outbox_enqueued,
    outbox_sent,
    provider_versioned,
    signal_only,
    state_violations,
    well_typed,
)
from spec.reducers import (
    CallContext,
    Ok,
    call,
    canonical,
    fits_stream_class,
    needs_grant,
    needs_scope,
    one_of,
    valid_id,
)
from spec.resume import continuation_details, continuation_hops, continued_stream
from spec.rules import REDUCER_RULE_BY_NAME, _errors, outcomes
from spec.schema import (
    PROTOCOL_VERSION,
    SCHEMA_VERSION,
    TABLES,
    Column,
    Table,
    Visibility,
    _t,
    check_schema_matches_rows,
)
from spec.state import (
    DbState,
    Delta,
    TableDelta,
    Tx,
    delta_accounts,
    delta_is_diff,
    row_dict,
    table_of_type,
    with_epoch_floor,
)
from spec.transitions import assignment_edge_allowed, bridge_edge_allowed, has_role
from spec.values import (
    BOOL,
    I64,
    IDENTITY,
    STRING,
    TIMESTAMP,
    U32,
    U64,
    ArrayT,
    BridgeOutbox,
    ComputeAssignment,
    OptionT,
    PresenceSignal,
    Prim,
    ProviderCapability,
    Row,
    SessionPresence,
    StreamSignal,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
    column,
    is_hash,
    is_id,
    is_identity,
    is_u32,
    is_u64,
    row_values,
    value_has_type,
)

# --- spec.query ---------------------------------------------------------------------------------


def _rejection(sql: str) -> str:
    with pytest.raises(SyncError) as e:
        parse(sql)
    assert e.value.code is ErrorCode.INVALID_QUERY
    return str(e.value.details["message"])


def _micros_by_datetime(text: str) -> int | None:
    """The oracle: Python's own ISO 8601 parser (3.11 reads RFC 3339's date-time form), plus RFC 3339's
    grammar for the offset (time-numoffset's minute is 00-59; datetime takes `+00:60` as one hour)."""
    if text[-6] in "+-" and int(text[-2:]) > 59:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    return (dt - datetime.fromisoformat("1970-01-01T00:00:00Z")) // datetime.resolution


# Every clock field at its last valid value and one past it, alone (so a rule that only rejects
# when two fields are out of range, or accepts the last valid value, gives a different answer).
TIMESTAMP_EDGES = [
    "2024-03-01T23:59:59Z", "2024-03-01T24:00:00Z",
    "2024-03-01T00:59:00Z", "2024-03-01T00:60:00Z",
    "2024-03-01T00:00:59Z", "2024-03-01T00:00:60Z",
    "2024-03-01T00:00:00+23:59", "2024-03-01T00:00:00+24:00", "2024-03-01T00:00:00-23:00",
    "2024-03-01T00:00:00+23:60", "2024-03-01T00:00:00+00:60", "2024-03-01T00:00:00-00:59",
    "2024-03-01T10:60:00Z", "2024-03-01T10:00:60Z",
]


@pytest.mark.parametrize("text", TIMESTAMP_EDGES)
def test_timestamp_field_ranges_agree_with_datetime(text: str) -> None:
    expected = _micros_by_datetime(text)
    sql = f"SELECT * FROM sync_event WHERE committed_at >= '{text}'"
    if expected is None:
        assert "is not an RFC 3339 timestamp" in _rejection(sql)
    else:
        (q,) = parse(sql)
        assert q.where[0].value == expected


def test_only_one_statement_message() -> None:
    assert _rejection("SELECT * FROM sync_event; SELECT * FROM sync_stream") == \
        "only one statement per query is supported"


def test_unexpected_token_is_quoted_to_forty_characters() -> None:
    word = "a" * 30 + "b" * 30
    assert _rejection(f"SELECT * FROM sync_event {word}") == \
        f"unexpected {word[:40]!r}, expected WHERE, ';' or the end of the query"


def test_matches_names_the_wrong_row_type_and_the_table() -> None:
    (q,) = parse("SELECT * FROM sync_event")
    row = SyncStream("s", "c", 1, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(LocalProtocolError) as e:
        matches(q, row)
    assert str(e.value) == "SyncStream row given to a query on 'sync_event'"


@pytest.mark.parametrize("query", [
    Query("no_such_table", (), "x"),                                     # unknown table
    Query("sync_event", (Comparison("no_such_column", Op.EQ, 1),), "x"),  # unknown column
    Query("sync_event", (Comparison("seq", Op.EQ, "seven"),), "x"),       # literal of the wrong type
])
def test_evaluate_requires_a_well_typed_query(query: Query) -> None:
    event = SyncEvent("s", 1, 1, "k", "h", "p", "0" * 64, 0, 0)
    with pytest.raises(icontract.ViolationError, match="well typed"):
        evaluate(query, [event])


def test_int_lower_bounds_are_the_integer_greater_than_conjuncts_on_the_column() -> None:
    """The contract helper behind STALE-1 (checked with SYNCREF_PER_ROW_CONTRACTS=1): a table of cases."""
    gt, ge = Comparison("seq", Op.GT, 3), Comparison("seq", Op.GE, 5)
    where = (Comparison("stream_id", Op.EQ, "S"), gt, Comparison("seq", Op.LT, 9), ge,
             Comparison("epoch", Op.GT, 2), Comparison("seq", Op.EQ, 4), Comparison("seq", Op.GT, True))
    q = Query("sync_event", where, "x")
    assert _int_lower_bounds(q, "seq") == [gt, ge]
    assert _int_lower_bounds(q, "epoch") == [Comparison("epoch", Op.GT, 2)]
    assert _int_lower_bounds(q, "stream_id") == []
    assert _int_lower_bounds(Query("sync_event", (Comparison("seq", Op.GT, False),), "x"), "seq") == []



def test_integer_literals_are_read_up_to_forty_characters() -> None:
    """Leading zeros count: a 40-character literal is read as its value, a 41-character one is refused."""
    (q,) = parse("SELECT * FROM sync_event WHERE seq = " + "5".rjust(40, "0"))
    assert q.where[0].value == 5
    assert _rejection("SELECT * FROM sync_event WHERE seq = " + "5".rjust(41, "0")) == \
        f"integer {'0' * 40} is out of range for column 'seq' of table 'sync_event' (U64)"
    assert _rejection("SELECT * FROM sync_event WHERE seq = " + "9" * 60) == \
        f"integer {'9' * 40} is out of range for column 'seq' of table 'sync_event' (U64)"

# --- spec.auth: can_read, the row filter, as a table of cases (docs/protocol.md, ADR-0003) ----------

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _claims(identity: str = C, scopes: tuple[str, ...] = (), streams: tuple[str, ...] = ()) -> Claims:
    return Claims(identity, frozenset(scopes), streams)


def _assignment(requester: str, provider_owner: str | None) -> ComputeAssignment:
    return ComputeAssignment("r", requester, 1, "q", "h", None if provider_owner is None else "p", provider_owner,
                             "open", None, 1, 0, 0)


EVENT = SyncEvent("team.a.x", 1, 1, "k", "h", "p", A, 0, 0)
CAN_READ: list[tuple[Row, Claims, bool]] = [
    # stream-granted tables: an exact id or a prefix ending in *; no claim, no stream
    (EVENT, _claims(streams=("team.a.x",)), True),
    (EVENT, _claims(streams=("team.a.*",)), True),
    (EVENT, _claims(streams=("team.a.x*",)), True),
    (EVENT, _claims(streams=("team.a.y", "team.a.x")), True),
    (EVENT, _claims(streams=("team.a.xy",)), False),
    (EVENT, _claims(streams=("team.a",)), False),
    (EVENT, _claims(streams=("team.b.*",)), False),
    (EVENT, _claims(identity=A, scopes=("compute.assign", "bridge.enqueue")), False),
    (SyncStream("team.a.x", "c", 1, 0, 0, 0, 0, 0, 0, 0), _claims(streams=("*",)), True),
    (SyncStream("team.a.x", "c", 1, 0, 0, 0, 0, 0, 0, 0), _claims(), False),
    (StreamSignal("team.a.x", "typing", "", A, 0), _claims(streams=("team.a.x",)), True),
    (StreamSignal("team.a.x", "typing", "", A, 0), _claims(identity=A), False),
    # checkpoints: the owner only
    (SyncCheckpoint("k", "cl", "team.a.x", A, 1, 0, 0), _claims(identity=A), True),
    (SyncCheckpoint("k", "cl", "team.a.x", A, 1, 0, 0), _claims(identity=B, streams=("*",)), False),
    # assignments: the requester, the assigned provider's owner, or a dispatcher (compute.assign)
    (_assignment(A, B), _claims(identity=A), True),
    (_assignment(A, B), _claims(identity=B), True),
    (_assignment(A, B), _claims(identity=C), False),
    (_assignment(A, B), _claims(identity=C, scopes=("compute.assign",)), True),
    (_assignment(A, B), _claims(identity=C, scopes=("compute.execute",)), False),
    (_assignment(A, None), _claims(identity=B), False),
    (_assignment(A, None), _claims(identity=A), True),
    # the outbox: the bridge's scopes only
    (BridgeOutbox("o", "s", 1, "[]", "", "h", "pending", 0, 0, None, None, (), 0, 0), _claims(), False),
    (BridgeOutbox("o", "s", 1, "[]", "", "h", "pending", 0, 0, None, None, (), 0, 0),
     _claims(scopes=("bridge.enqueue",)), True),
    (BridgeOutbox("o", "s", 1, "[]", "", "h", "pending", 0, 0, None, None, (), 0, 0),
     _claims(scopes=("bridge.mark_sent",)), True),
    (BridgeOutbox("o", "s", 1, "[]", "", "h", "pending", 0, 0, None, None, (), 0, 0),
     _claims(identity=A, scopes=("compute.assign",), streams=("*",)), False),
    # everyone
    (SessionPresence("s", A, "d", "n", "online", "r", 0, 0, None), _claims(), True),
    (ProviderCapability("p", A, "c", "h", (), 0, "active", 1, 0), _claims(), True),
    (PresenceSignal("s", A, "online", "", 0), _claims(), True),
]


@pytest.mark.parametrize(("row", "claims", "expected"), CAN_READ)
def test_can_read_table(row: Row, claims: Claims, expected: bool) -> None:
    assert can_read(claims, row) is expected


def test_can_read_table_covers_every_table() -> None:
    assert {type(row) for row, _, _ in CAN_READ} == {t.row_type for t in TABLES}


# --- spec.policy ----------------------------------------------------------------------------------


def test_class_for_takes_the_longest_matching_prefix_in_any_order() -> None:
    short, long_, other = StreamClass("short"), StreamClass("long"), StreamClass("other")
    classes = (("team.", short), ("team.a.", long_), ("x", other))
    for order in (classes, classes[::-1]):
        policy = Policy(classes=order)
        assert policy.class_for("team.a.b") is long_
        assert policy.class_for("team.a.") is long_
        assert policy.class_for("team.b") is short
        assert policy.class_for("team") is policy.default_class
        assert policy.class_for("xyz") is other
        assert policy.class_for("") is policy.default_class
    assert Policy().class_for("anything") == DEFAULT_POLICY.default_class
    assert Policy().class_for("anything").name == "default"


def test_class_for_the_first_of_equal_prefixes_wins() -> None:
    first, second = StreamClass("first"), StreamClass("second")
    assert Policy(classes=(("a.", first), ("a.", second))).class_for("a.b") is first


@pytest.mark.parametrize(("ts", "now", "window", "expected"), [
    (0, 100, None, False),       # no window: kept for ever
    (10**12, 0, None, False),
    (89, 100, 10, True),         # older than now - window
    (90, 100, 10, False),        # exactly at the edge: kept
    (91, 100, 10, False),
    (100, 100, 0, False),        # a zero window drops only what is older than now
    (99, 100, 0, True),
    (-5, 0, 4, True),
])
def test_expired_table(ts: int, now: int, window: int | None, expected: bool) -> None:
    assert expired(ts, now, window) is expected


# --- spec.transitions: the lifecycles, written out from the module's diagrams ---------------------

ASSIGNMENT_EDGES = {("open", "assigned"), ("assigned", "running"), ("running", "completed"), ("running", "failed"),
                    ("open", "cancelled"), ("assigned", "cancelled"), ("running", "cancelled")}
BRIDGE_EDGES = {("pending", "sent"), ("failed", "sent"), ("sent", "sent"), ("pending", "pending"),
                ("pending", "failed")}


def test_assignment_edges_are_exactly_the_diagram() -> None:
    statuses = ("open", "assigned", "running", "completed", "failed", "cancelled")
    for old in statuses:
        for new in statuses:
            assert assignment_edge_allowed(old, new) is ((old, new) in ASSIGNMENT_EDGES), (old, new)


def test_bridge_edges_are_exactly_the_diagram() -> None:
    for old in ("pending", "sent", "failed"):
        for new in ("pending", "sent", "failed"):
            assert bridge_edge_allowed(old, new) is ((old, new) in BRIDGE_EDGES), (old, new)


@pytest.mark.parametrize(("role", "scopes", "identity", "expected"), [
    ("requester", (), A, True), ("requester", ("compute.assign",), C, False), ("requester", (), B, False),
    ("dispatcher", ("compute.assign",), C, True), ("dispatcher", (), A, False),
    ("dispatcher", ("compute.execute",), B, False),
    ("executor", ("compute.execute",), B, True), ("executor", (), B, False),
    ("executor", ("compute.execute",), A, False), ("executor", ("compute.assign",), B, False),
])
def test_has_role_table(role: str, scopes: tuple[str, ...], identity: str, expected: bool) -> None:
    assert has_role(role, frozenset(scopes), identity, _assignment(A, B)) is expected


# --- spec.compat ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "ok"), [
    ("20260101T000000Z", True), ("20261231T235959Z", True),
    ("2026010XT000000Z", False), ("20260101TX00000Z", False), ("20260101T00000XZ", False),
    ("20260101 000000Z", False), ("20260101T000000z", False), ("20260101T000000", False),
    ("20260101T000000ZZ", False), ("2026-01-01T00:00", False), ("٢٠٢٦0101T000000Z", False), ("", False),
])
def test_well_formed_build_table(build: str, ok: bool) -> None:
    assert well_formed_build(build) is ok


@pytest.mark.parametrize(("window", "ok"), [
    (CompatWindow(), True),
    (CompatWindow(min_schema_version=2, max_schema_version=2), True),
    (CompatWindow(min_schema_version=3, max_schema_version=2), False),
    (CompatWindow(min_client_build_id="20260101T000000Z", max_client_build_id="20260101T000000Z"), True),
    (CompatWindow(min_client_build_id="20270101T000000Z", max_client_build_id="20260101T000000Z"), False),
    (CompatWindow(min_client_build_id="2026", max_client_build_id="20260101T000000Z"), False),
    (CompatWindow(min_client_build_id="20260101T000000Z", max_client_build_id="2099"), False),
    (CompatWindow(min_client_build_id="", max_client_build_id=""), False),
])
def test_window_well_formed_table(window: CompatWindow, ok: bool) -> None:
    assert window_well_formed(window) is ok


def test_window_as_json_names_every_bound() -> None:
    w = CompatWindow("oa.sync.v9", 2, 5, "20260101T000000Z", "20270101T000000Z", require_claims=True)
    assert w.as_json() == {"protocol_version": "oa.sync.v9", "min_schema_version": 2, "max_schema_version": 5,
                           "min_client_build_id": "20260101T000000Z", "max_client_build_id": "20270101T000000Z"}


@pytest.mark.parametrize(("build", "protocol", "schema", "code"), [
    ("20260101T000000Z", None, None, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),   # one claim is enough to check
    (None, "oa.sync.v1", None, ErrorCode.INVALID_CLIENT_BUILD),
    (None, None, 1, ErrorCode.INVALID_CLIENT_BUILD),
    ("20260101T000000Z", "oa.sync.v1", 1, None),                                # both window edges admit
    ("20261231T235959Z", "oa.sync.v1", 2, None),
    ("20261231T235959Z", "oa.sync.v1", 3, ErrorCode.UNSUPPORTED_SCHEMA_VERSION),
    ("20251231T235959Z", "oa.sync.v1", 2, ErrorCode.UPGRADE_REQUIRED),
    ("20270101T000000Z", "oa.sync.v1", 1, ErrorCode.UNSUPPORTED_CLIENT_BUILD),
])
def test_negotiate_edges(build: str | None, protocol: str | None, schema: int | None, code: ErrorCode | None) -> None:
    w = CompatWindow("oa.sync.v1", 1, 2, "20260101T000000Z", "20261231T235959Z")
    err = negotiate(w, build, protocol, schema)
    assert (err.code if err else None) is code


# --- spec.errors: the wire string of an error, written out by hand ---------------------------------


def test_render_is_code_then_canonical_json() -> None:
    err = SyncError(ErrorCode.INVALID_QUERY, {"z": [1, {"b": 2, "a": "é"}], "a": "x: y"})
    assert err.render() == 'invalid_query: {"a":"x: y","z":[1,{"a":"é","b":2}]}'
    assert str(err) == err.render()
    assert canonical_details({}) == "{}"
    with pytest.raises(ValueError):
        canonical_details({"x": float("nan")})


def test_error_value_semantics() -> None:
    err = SyncError(ErrorCode.INVALID_QUERY, {"message": "m"})
    assert err.args == (ErrorCode.INVALID_QUERY, {"message": "m"})
    assert repr(err) == "SyncError(<ErrorCode.INVALID_QUERY: 'invalid_query'>, {'message': 'm'})"
    assert err == SyncError(ErrorCode.INVALID_QUERY, {"message": "m"})
    assert err != SyncError(ErrorCode.INVALID_QUERY, {"message": "n"})
    assert err != SyncError(ErrorCode.NO_SUCH_REDUCER, {"message": "m"})
    assert err != "invalid_query"
    assert SyncError(ErrorCode.NO_SUCH_REDUCER).details == {}
    distinct = {err, SyncError(ErrorCode.INVALID_QUERY, {"message": "n"}), SyncError(ErrorCode.NO_SUCH_REDUCER),
                SyncError(ErrorCode.INVALID_QUERY, {"message": "m"})}
    assert len(distinct) == 3


def test_parse_inverts_render_even_with_the_separator_inside_details() -> None:
    text = 'invalid_query: {"message":"unexpected: \': \'","query":"x"}'
    err = SyncError.parse(text)
    assert err.code is ErrorCode.INVALID_QUERY
    assert dict(err.details) == {"message": "unexpected: ': '", "query": "x"}
    assert err.render() == text


@pytest.mark.parametrize(("text", "message"), [
    ("nonsense: {}", "unknown error code in 'nonsense: {}'"),
    ("x" * 100, f"unknown error code in {'x' * 80!r}"),
    ("invalid_query", "error string without details: 'invalid_query'"),
    ("invalid_query: [1]", "error details must be a JSON object"),
    ("invalid_query: 7", "error details must be a JSON object"),
])
def test_parse_rejections(text: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        SyncError.parse(text)
    assert str(e.value) == message


def test_parse_rejects_details_that_are_not_json() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^error details are not JSON: Expecting property name"):
        SyncError.parse("invalid_query: {oops")


# --- spec.canonical: the rejection messages -------------------------------------------------------


@pytest.mark.parametrize(("text", "reason", "message"), [
    ("1.5", "non_integer_number", "number 1.5 is not an integer"),
    ("[1e3]", "non_integer_number", "number 1e3 is not an integer"),
    ("0." + "1" * 60, "non_integer_number", f"number {('0.' + '1' * 60)[:40]} is not an integer"),
    ("NaN", "nan_or_infinity", "NaN is not a JSON number"),
    ('{"a":-Infinity}', "nan_or_infinity", "-Infinity is not a JSON number"),
])
def test_number_rejections_name_the_number(text: str, reason: str, message: str) -> None:
    with pytest.raises(SyncError) as e:
        parse_strict(text, "payload_json")
    assert dict(e.value.details) == {"argument": "payload_json", "reason": reason, "message": message}


def test_utf8_encodable() -> None:
    """The helper of canonical's output contracts: only a lone surrogate cannot be written as UTF-8."""
    assert _utf8_encodable("") and _utf8_encodable("abc") and _utf8_encodable("é\u2028😀")
    assert not _utf8_encodable("a\ud800") and not _utf8_encodable("\udfff")


def test_dumps_canonical_sorts_keys_and_refuses_nan() -> None:
    assert dumps_canonical({"b": [1, {"d": 1, "c": "é"}], "a": None}) == '{"a":null,"b":[1,{"c":"é","d":1}]}'
    with pytest.raises(ValueError):
        dumps_canonical({"a": float("nan")})


# --- spec.canonical: the helpers of the output contracts (HASH-1, HASH-2), as tables --------------
# A contract whose helper always answers True cannot fail; these pin each helper's answer.


@pytest.mark.parametrize(("a", "b", "equal"), [
    (1, 1, True), (True, True, True), (None, None, True), ("x", "x", True), ([], [], True), ({}, {}, True),
    (True, 1, False), (1, True, False), (False, 0, False), (1, 2, False), ("x", "y", False), (None, 0, False),
    ([1, 2], [1, 2], True), ([1, 2], [2, 1], False), ([1], [1, 2], False), ([1, 2], [1], False),
    ([True], [1], False), ([1], [True], False), ([[1]], [[1]], True), ([[True]], [[1]], False),
    ([1, [2, [3]]], [1, [2, [3]]], True), ([1, [2, [3]]], [1, [2, [4]]], False),
    ({"a": 1}, {"a": 1}, True), ({"a": 1}, {"b": 1}, False), ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"a": 1, "b": 2}, {"a": 1}, False), ({"a": True}, {"a": 1}, False), ({"a": 1}, {"a": True}, False),
    ({"a": {"b": [1]}}, {"a": {"b": [1]}}, True), ({"a": {"b": [1]}}, {"a": {"b": [True]}}, False),
    ([1], {"0": 1}, False), ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True), ([{"a": 1}], [{"a": 2}], False),
])
def test_json_equal_table(a: object, b: object, equal: bool) -> None:
    assert _json_equal(a, b) is equal


@pytest.mark.parametrize(("text", "clean"), [
    ("", True), ("abc", True), (" ", True), ("\x7f", True), ("é😀", True),
    ("\x00", False), ("\x1f", False), ("a\nb", False), ("ab\t", False), ("\rab", False),
])
def test_no_raw_control_table(text: str, clean: bool) -> None:
    assert _no_raw_control(text) is clean


@pytest.mark.parametrize(("result", "fixed"), [
    ('{"a":1,"b":[true,null]}', True), ('"x"', True), ("7", True),
    ('{"b":1,"a":2}', False), ("[1, 2]", False), ('{"a": 1}', False), ('"\\u00e9"', False),
])
def test_is_fixed_point_table(result: str, fixed: bool) -> None:
    assert _is_fixed_point(result) is fixed


@pytest.mark.parametrize(("result", "clean"), [
    ('"ok"', True), ('"é"', True), ('"a\x1fb"', False), ('"\ud801"', False), ('"a\nb"', False),
])
def test_is_clean_table(result: str, clean: bool) -> None:
    assert _is_clean(result) is clean


@pytest.mark.parametrize(("text", "result", "same"), [
    ('{"b": 1, "a": [true]}', '{"a":[true],"b":1}', True), ("[1, 2]", "[1,2]", True),
    ('{"a": 1}', '{"a":true}', False), ("[1,2]", "[2,1]", False), ('{"a": 1}', '{"a":1,"b":1}', False),
])
def test_same_value_table(text: str, result: str, same: bool) -> None:
    assert _same_value(text, result) is same


# SHA-256 test vectors (FIPS 180-2 / NIST): "" and "abc".
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(("text", "result", "ok"), [
    ("", "sha256:" + SHA256_EMPTY, True), ("abc", "sha256:" + SHA256_ABC, True),
    ("abc", "sha256:" + SHA256_EMPTY, False), ("", "sha256:" + SHA256_ABC, False),
    ("abc", "sha256:" + SHA256_ABC[:-1] + "c", False),
])
def test_digest_of_table(text: str, result: str, ok: bool) -> None:
    assert _digest_of(text, result) is ok


@pytest.mark.parametrize(("text", "reason", "message"), [
    ('"\\ud800"', "lone_surrogate", "string contains an unpaired surrogate"),
    ('["ok", "\\udfff"]', "lone_surrogate", "string contains an unpaired surrogate"),
    ('{"\\ud800": 1}', "lone_surrogate", "object key contains an unpaired surrogate"),
    ('{"a": {"\\udc00x": 1}}', "lone_surrogate", "object key contains an unpaired surrogate"),
    ("[" * 65 + "]" * 65, "too_deep", "nesting deeper than 64"),
    ('{"a":' * 65 + "1" + "}" * 65, "too_deep", "nesting deeper than 64"),
])
def test_escaped_rejections_found_after_parsing_name_the_place(text: str, reason: str, message: str) -> None:
    """Surrogates written as escapes and nesting are found by the walk over the parsed value; each
    rejection says what it found (string or key) in words written here."""
    with pytest.raises(SyncError) as e:
        parse_strict(text, "capability_json")
    assert dict(e.value.details) == {"argument": "capability_json", "reason": reason, "message": message}


@pytest.mark.parametrize(("text", "reason", "message"), [
    ('{"a":1,"a":2}', "duplicate_key", "duplicate object key 'a'"),
    ('"\ud800"', "lone_surrogate", "text contains an unpaired surrogate"),  # a raw surrogate, not an escape
    ("1" * 50, "integer_out_of_range", "integer " + "1" * 40 + " is outside +/-(2^53-1)"),
    ("-9007199254740992", "integer_out_of_range", "integer -9007199254740992 is outside +/-(2^53-1)"),
    ("[1,", "invalid_json", "Expecting value: line 1 column 4 (char 3)"),  # Python's json module's words
    # so deep that it is refused before parsing (SCAN_DEPTH_LIMIT)
    ("[" * 100_000 + "]" * 100_000, "too_deep", "nesting deeper than 64"),
])
def test_rejection_details_under_the_default_argument_name(text: str, reason: str, message: str) -> None:
    with pytest.raises(SyncError) as e:
        parse_strict(text)
    assert e.value.code is ErrorCode.NON_CANONICAL_PAYLOAD
    assert dict(e.value.details) == {"argument": "payload_json", "reason": reason, "message": message}


def _at_stack_depth(frames: int, f: Any) -> Any:
    return f() if frames == 0 else _at_stack_depth(frames - 1, f)


def test_a_recursion_error_in_a_deep_caller_is_still_too_deep() -> None:
    # the scan-depth bound keeps the scanner within ~512 levels; a caller already ~800 frames deep
    # still runs out first, and that is too_deep with the same details, never an escaping RecursionError
    def details() -> dict[str, Any]:
        with pytest.raises(SyncError) as e:
            parse_strict("[" * 400 + "]" * 400)
        return dict(e.value.details)
    assert _at_stack_depth(800, details) == {"argument": "payload_json", "reason": "too_deep",
                                              "message": "nesting deeper than 64"}


# --- spec.values: the value predicates as tables (DESIGN section 2: ids, identities, hashes, SATS) ---

HEX64 = "0123456789abcdef" * 4


@pytest.mark.parametrize(("value", "ok"), [
    ("a", True), ("A-z0.9_:x", True), ("x" * 128, True), ("x" * 129, False), ("", False), ("a|b", False),
    ("a b", False), ("é", False), ("a\n", False), (7, False), (None, False), (b"abc", False),
])
def test_is_id_table(value: object, ok: bool) -> None:
    assert is_id(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    (HEX64, True), ("0" * 64, True), (HEX64.upper(), False), (HEX64[:63], False), (HEX64 + "0", False),
    ("g" * 64, False), (int(HEX64, 16), False), (None, False),
])
def test_is_identity_table(value: object, ok: bool) -> None:
    assert is_identity(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("sha256:" + HEX64, True), (HEX64, False), ("sha256:" + HEX64.upper(), False), ("sha256:" + HEX64[:63], False),
    ("SHA256:" + HEX64, False), ("sha256:" + HEX64 + "0", False), (7, False), (None, False),
])
def test_is_hash_table(value: object, ok: bool) -> None:
    assert is_hash(value) is ok


@pytest.mark.parametrize(("value", "u32", "u64"), [
    (0, True, True), (1, True, True), (2**32 - 1, True, True), (2**32, False, True), (2**64 - 1, False, True),
    (2**64, False, False), (-1, False, False), (True, False, False), (False, False, False), (1.0, False, False),
    ("1", False, False), (None, False, False),
])
def test_unsigned_ranges_table(value: object, u32: bool, u64: bool) -> None:
    assert is_u32(value) is u32
    assert is_u64(value) is u64


@pytest.mark.parametrize(("value", "t", "ok"), [
    ("", STRING, True), (1, STRING, False), (True, BOOL, True), (1, BOOL, False),
    (0, U32, True), (2**32, U32, False), (2**64 - 1, U64, True), (-1, U64, False), (True, U64, False),
    (-(2**63), I64, True), (2**63 - 1, I64, True), (-(2**63) - 1, I64, False), (2**63, I64, False),
    (True, I64, False), ("1", I64, False),
    (-(2**63), TIMESTAMP, True), (2**63 - 1, TIMESTAMP, True), (-(2**63) - 1, TIMESTAMP, False),
    (2**63, TIMESTAMP, False), (False, TIMESTAMP, False),
    (HEX64, IDENTITY, True), ("x", IDENTITY, False),
    (None, OptionT(STRING), True), ("s", OptionT(STRING), True), (1, OptionT(STRING), False),
    (None, STRING, False), (None, OptionT(OptionT(U32)), True), (-1, OptionT(U32), False),
    ((), ArrayT(U32), True), ((1, 2), ArrayT(U32), True), ((1, -2), ArrayT(U32), False),
    ([1, 2], ArrayT(U32), False), (("a",), ArrayT(U32), False), ((("a",),), ArrayT(ArrayT(STRING)), True),
    ((None, 3), ArrayT(OptionT(U32)), True), ((None, "3"), ArrayT(OptionT(U32)), False),
    (1.5, Prim("F64"), False), ("x", Prim("Unknown"), False),
])
def test_value_has_type_table(value: object, t: object, ok: bool) -> None:
    assert value_has_type(value, t) is ok  # type: ignore[arg-type]


def test_row_values_and_column_read_the_fields_in_column_order() -> None:
    cp = SyncCheckpoint(checkpoint_id="c|s", client_id="c", stream_id="s", owner=HEX64, epoch=2,
                        last_applied_seq=5, updated_at=9)
    assert row_values(cp) == ("c|s", "c", "s", HEX64, 2, 5, 9)
    assert column(cp, "last_applied_seq") == 5
    assert column(cp, "owner") == HEX64


# --- spec.resume: the continuation chain (ADR-0010), worked examples ---------------------------------


def _stream(epoch: int, head: int, floor: int, continues: tuple[int, int] = (0, 0),
            earlier: tuple[tuple[int, int], ...] = ()) -> SyncStream:
    return SyncStream(stream_id="s", stream_class="default", epoch=epoch, continues_epoch=continues[0],
                      continues_seq=continues[1], head_seq=head, floor_seq=floor, replay_budget=100,
                      created_at=1, updated_at=2, earlier_epochs=tuple(e for e, _ in earlier),
                      earlier_seqs=tuple(q for _, q in earlier))


def test_continuation_details_of_a_missing_stream_and_of_a_chain() -> None:
    assert continuation_details(None) == {"continues_epoch": 0, "continues_seq": 0, "earlier_epochs": [],
                                          "earlier_seqs": []}
    row = _stream(5, 20, 3, continues=(4, 18), earlier=((3, 12), (2, 7)))
    assert continuation_details(row) == {"continues_epoch": 4, "continues_seq": 18, "earlier_epochs": [3, 2],
                                         "earlier_seqs": [12, 7]}


def test_continued_stream_keeps_a_hop_whose_bound_is_exactly_floor_minus_one() -> None:
    """floor 5: a client at watermark 4 (= floor - 1) may still resume, so a hop bounded at 4 is usable;
    a hop bounded at 3 is not, and neither is any hop after it."""
    old = _stream(7, 10, 5, continues=(6, 9), earlier=((5, 4), (4, 3), (3, 9)))
    new = continued_stream(old, fresh=8, now=1234)
    assert (new.epoch, new.continues_epoch, new.continues_seq) == (8, 7, 10)
    assert (new.earlier_epochs, new.earlier_seqs) == ((6, 5), (9, 4))
    assert new.updated_at == 1234 and new.created_at == 1 and new.floor_seq == 5


def test_continuation_hops_of_a_fresh_and_of_a_continued_epoch() -> None:
    assert continuation_hops(_stream(2, 5, 1)) == ()
    assert continuation_hops(_stream(5, 20, 1, continues=(4, 18), earlier=((3, 12),))) == ((4, 18), (3, 12))


# --- spec.rules: the outcome cells, written out --------------------------------------------------


def test_errors_sorts_each_codes_detail_keys() -> None:
    assert _errors(forbidden=("b", "a"), stale_epoch=("z", "y", "x")) == {
        ErrorCode.FORBIDDEN: ("a", "b"), ErrorCode.STALE_EPOCH: ("x", "y", "z")}


def test_outcomes_are_ok_then_noop_when_there_is_one_then_the_errors() -> None:
    assert outcomes(REDUCER_RULE_BY_NAME["record_bridge_failure"]) == (
        "ok", "noop", "missing_scope", "invalid_argument", "bridge_event_missing")
    assert outcomes(REDUCER_RULE_BY_NAME["reset_stream_epoch"]) == ("ok", "missing_scope", "invalid_argument")


# --- spec.outcome ----------------------------------------------------------------------------------


def test_virtual_stream_of_a_stream_not_created_yet() -> None:
    assert virtual_stream(DbState(epoch_floor=4), "nowhere") == (4, 0, 1)


# --- spec.schema: the table constructor and the layout check (they run at import, so test them here) --


def test_t_builds_the_table_with_its_defaults() -> None:
    assert _t("a_table", SyncEvent, [("x", STRING), ("y", OptionT(U64))], None, visibility=Visibility.EVERYONE) == \
        Table("a_table", SyncEvent, (Column("x", STRING), Column("y", OptionT(U64))), None, (), False, True,
              Visibility.EVERYONE)
    assert _t("b", SyncCheckpoint, [("k", U32)], ("k",), (("k",),), event=True, public=False,
              visibility=Visibility.OWNER) == \
        Table("b", SyncCheckpoint, (Column("k", U32),), ("k",), (("k",),), True, False, Visibility.OWNER)


def test_key_of_is_the_primary_key_columns_or_none() -> None:
    cp = SyncCheckpoint(checkpoint_id="c|s", client_id="c", stream_id="s", owner=HEX64, epoch=2,
                        last_applied_seq=5, updated_at=9)
    with_pk = Table("t", SyncCheckpoint, (), ("stream_id", "epoch"), (), False, True, Visibility.OWNER)
    without = Table("t", SyncCheckpoint, (), None, (), False, True, Visibility.OWNER)
    assert with_pk.key_of(cp) == ("s", 2)
    assert without.key_of(cp) is None


def test_check_schema_matches_rows_names_the_table_that_drifts(monkeypatch: pytest.MonkeyPatch) -> None:
    check_schema_matches_rows()  # the real tables agree with their row types
    swapped = Table("drifted", PresenceSignal, (Column("identity", IDENTITY), Column("session_id", STRING),
                                                Column("status", STRING), Column("reason", STRING),
                                                Column("at", TIMESTAMP)), None, (), True, True, Visibility.EVERYONE)
    monkeypatch.setattr(schema, "TABLES", (swapped,))
    fields_ = "('session_id', 'identity', 'status', 'reason', 'at')"
    columns = "('identity', 'session_id', 'status', 'reason', 'at')"
    with pytest.raises(AssertionError) as e:
        check_schema_matches_rows()
    assert str(e.value) == f"drifted: row fields {fields_} != columns {columns}"


# --- spec.state: states, deltas and transactions, as worked examples ---------------------------------


EMPTY_OBJECT_HASH = "sha256:" + hashlib.sha256(b"{}").hexdigest()


def _event(seq: int, key: str = "k") -> SyncEvent:
    return SyncEvent(stream_id="s", epoch=1, seq=seq, idempotency_key=f"{key}{seq}", payload_hash=EMPTY_OBJECT_HASH,
                     payload="{}", producer=HEX64, committed_at=seq, tx_offset=seq)


def _signal() -> PresenceSignal:
    return PresenceSignal(session_id="p", identity=HEX64, status="online", reason="", at=1)


S1, S2 = _stream(1, 0, 1), replace(_stream(1, 0, 1), stream_id="t")
E1, E2, E3 = _event(1), _event(2), _event(3)


def _db(**tables: tuple[Row, ...]) -> DbState:
    base = dict(DbState().tables)
    base.update(tables)
    return DbState(base)


def _d(*parts: TableDelta) -> Delta:
    return Delta(parts)


# (before, after, delta, accounts, is_diff): each False names the one rule it breaks
DELTA_CASES = [
    (_db(), _db(sync_event=(E1,)), _d(TableDelta("sync_event", (), (E1,))), True, True),
    (_db(sync_event=(E1, E2)), _db(sync_event=(E2,)), _d(TableDelta("sync_event", (E1,), ())), True, True),
    # the same table twice in one delta
    (_db(), _db(sync_event=(E1,)), _d(TableDelta("sync_event", (), (E1,)), TableDelta("sync_event")), False, False),
    # an event row left in the state, or deleted from an event table
    (_db(), _db(presence_signal=(_signal(),)), _d(TableDelta("presence_signal", (), (_signal(),))), False, False),
    (_db(), _db(), _d(TableDelta("presence_signal", (_signal(),), ())), False, False),
    # event rows inserted and not kept: accounted for
    (_db(), _db(), _d(TableDelta("presence_signal", (), (_signal(),))), True, True),
    # a size that does not move by inserts - deletes
    (_db(), _db(sync_event=(E1, E2)), _d(TableDelta("sync_event", (), (E1,))), False, False),
    # sizes right, contents wrong: an untouched table that changed, a delete of a row that was not there,
    # rows after that are not before - deletes + inserts
    (_db(sync_stream=(S1,)), _db(sync_stream=(S2,)), _d(), True, False),
    (_db(sync_event=(E1,)), _db(sync_event=(E1,)), _d(TableDelta("sync_event", (E2,), (E1,))), True, False),
    (_db(sync_event=(E1,)), _db(sync_event=(E3,)), _d(TableDelta("sync_event", (E1,), (E2,))), True, False),
    # the untouched sync_stream comes first and is unchanged; the touched sync_event after it is wrong
    (_db(sync_stream=(S1,), sync_event=(E1,)), _db(sync_stream=(S1,), sync_event=(E3,)),
     _d(TableDelta("sync_event", (E1,), (E2,))), True, False),
]


@pytest.mark.parametrize(("before", "after", "delta", "accounts", "is_diff"), DELTA_CASES)
def test_delta_accounts_and_is_diff_table(before: DbState, after: DbState, delta: Delta, accounts: bool,
                                          is_diff: bool) -> None:
    assert delta_accounts(before, after, delta) is accounts
    assert delta_is_diff(before, after, delta) is is_diff


@pytest.mark.parametrize(("db", "ok"), [
    (_db(), True), (_db(sync_stream=(S1, S2), sync_event=(E1, E2)), True),
    (DbState({"no_such_table": ()}), False),  # an unknown table, even empty
    (_db(sync_stream=(E1,)), False),  # a row in another type's table
    (_db(sync_event=("not a row",)), False),  # type: ignore[arg-type]  # not a row at all
    (_db(sync_stream=(S1, replace(S1, head_seq=3))), False),  # two rows with one primary key
])
def test_well_formed_table(db: DbState, ok: bool) -> None:
    assert db.well_formed() is ok


def test_canonical_forgets_row_order_only() -> None:
    assert _db(sync_event=(E2, E1)).canonical() == _db(sync_event=(E1, E2)).canonical()
    assert _db(sync_event=(E1,)).canonical()["sync_event"] == frozenset({E1})
    assert _db(sync_event=(E1,)).canonical() != _db(sync_event=(E2,)).canonical()


def test_for_table_of_an_untouched_table_is_its_empty_delta() -> None:
    assert _d(TableDelta("sync_event", (), (E1,))).for_table("sync_stream") == TableDelta("sync_stream", (), ())


def test_tx_delete_of_an_event_row_and_of_a_row_inserted_in_the_same_tx() -> None:
    tx = Tx(_db(sync_event=(E1,)))
    with pytest.raises(LocalProtocolError, match=r"^event rows cannot be deleted$"):
        tx.delete(_signal())
    tx.insert(E2)
    tx.delete(E2)  # cancels the insert: no trace in the delta
    tx.delete(E1)
    state, delta = tx.finish()
    assert state.rows("sync_event") == ()
    assert delta == Delta((TableDelta("sync_event", (E1,), ()),))


def test_with_epoch_floor_and_row_dict() -> None:
    db = with_epoch_floor(_db(sync_event=(E1,)), 7)
    assert (db.epoch_floor, db.version_floor, db.rows("sync_event")) == (7, 1, (E1,))
    assert row_dict(_signal()) == {"session_id": "p", "identity": HEX64, "status": "online", "reason": "", "at": 1}


def test_rows_of_a_table_the_state_does_not_hold_is_empty_and_table_of_type_names_a_non_row() -> None:
    assert DbState().rows("presence_signal") == ()  # event tables are never in the state
    assert DbState().rows("no_such_table") == ()
    with pytest.raises(LocalProtocolError, match=r"^int is not a row type$"):
        table_of_type(int)  # type: ignore[type-var]


# --- spec.client: the messages a model client sends, written out -------------------------------------

READER = Claims(HEX64, frozenset({"sync.subscribe", "sync.append"}), ("s",))
RESUME_S_1_0 = ("SELECT * FROM sync_stream WHERE stream_id = 's'",
                "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 0")
REHYDRATE_S = ("SELECT * FROM sync_stream WHERE stream_id = 's'", "SELECT * FROM sync_event WHERE stream_id = 's'")


def test_client_numbers_requests_and_query_sets_from_one_and_keeps_calls_and_results() -> None:
    c = Client("c1", READER, confirmed=True)
    assert c.follow("s") == []  # not connected: nothing sent yet
    assert c.on_connect() == [Subscribe(1, 1, RESUME_S_1_0)]
    call = c.call("append_sync_event", ("s", "k", "{}", None, None))
    assert call == CallReducer(2, "append_sync_event", ("s", "k", "{}", None, None))
    assert c.pending == {2: call}
    result = ReducerResult(2, 7, ReducerErr("forbidden_stream: {}"))
    assert c.on_message(result) == []
    assert (c.pending, c.results) == ({}, {2: result})
    # the idle resync drops the old query set (asking for its rows, as the official SDKs do) and resubscribes
    assert c.resync() == [Unsubscribe(3, 1, send_dropped=True), Subscribe(4, 2, RESUME_S_1_0)]


@pytest.mark.parametrize(("chain", "continued"), [
    ({"continues_epoch": 1, "continues_seq": 0}, True),   # the new epoch continues epoch 1 up to seq 0
    ({}, False),                                          # no chain named: a fresh epoch, rebootstrap
    ({"continues_epoch": 1}, True),                       # a missing bound is 0: the watermark 0 is covered
])
def test_stale_epoch_changed_continues_only_along_a_named_chain(chain: dict[str, int], continued: bool) -> None:
    c = Client("c1", READER, confirmed=True)
    c.follow("s")
    c.on_connect()
    error = SyncError(ErrorCode.STALE_CURSOR, {"stream_id": "s", "reasons": ["epoch_changed"], "epoch": 2, **chain})
    sent = c.on_message(SubscriptionError(1, 1, error.render()))
    view = c.streams["s"]
    assert (view.epoch, view.continues, view.rebootstraps) == (2, int(continued), int(not continued))
    queries = ("SELECT * FROM sync_stream WHERE stream_id = 's'",
               "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 2 AND seq > 0")
    assert sent == [Subscribe(2, 2, queries if continued else REHYDRATE_S)]


def test_stale_with_a_chain_missing_its_bound_does_not_cover_watermark_one() -> None:
    c = Client("c1", READER, confirmed=True)
    c.follow("s")
    c.streams["s"].last = 1  # the view holds event 1 (its content does not matter here)
    c.on_connect()
    error = SyncError(ErrorCode.STALE_CURSOR, {"stream_id": "s", "reasons": ["epoch_changed"], "epoch": 2,
                                               "continues_epoch": 1})
    c.on_message(SubscriptionError(1, 1, error.render()))
    assert (c.streams["s"].continues, c.streams["s"].rebootstraps) == (0, 1)


# --- spec.reducers: the check builders (CHECKS is built from them at import, so call them here) -------


def test_needs_grant_builds_the_forbidden_stream_check() -> None:
    check = needs_grant("stream_id")
    assert (check.name, check.code) == ("a stream grant of the token matches `stream_id`", ErrorCode.FORBIDDEN_STREAM)
    assert check.refuse(SimpleNamespace(claims=READER, stream_id="s")) is None
    assert check.refuse(SimpleNamespace(claims=READER, stream_id="t")) == {"stream_id": "t"}


def test_valid_id_and_one_of_build_invalid_argument_checks() -> None:
    ids = valid_id("request_id")
    assert (ids.name, ids.code) == ("`request_id` is an id", ErrorCode.INVALID_ARGUMENT)
    assert ids.refuse(SimpleNamespace(request_id="r-1")) is None
    assert ids.refuse(SimpleNamespace(request_id="r 1")) == {
        "argument": "request_id", "message": "must be 1-128 characters of [A-Za-z0-9._:-]"}
    status = one_of("status", ("online", "away"))
    assert (status.name, status.code) == ("`status` is one of online, away", ErrorCode.INVALID_ARGUMENT)
    assert status.refuse(SimpleNamespace(status="away")) is None
    assert status.refuse(SimpleNamespace(status="offline")) == {
        "argument": "status", "message": "must be one of ['online', 'away']"}


def test_canonical_and_fits_stream_class_build_their_checks() -> None:
    check = canonical("tags_json")
    assert (check.name, check.code) == ("`tags_json` is canonical JSON", ErrorCode.NON_CANONICAL_PAYLOAD)
    assert check.refuse(SimpleNamespace(tags_json='[["p","x"]]')) is None
    assert check.refuse(SimpleNamespace(tags_json=None)) is None  # an absent optional argument
    assert check.refuse(SimpleNamespace(tags_json='{"a":1,"a":2}')) == {
        "argument": "tags_json", "reason": "duplicate_key", "message": "duplicate object key 'a'"}
    size = fits_stream_class()
    assert size.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert size.refuse(SimpleNamespace(size=10, limit=10, stream_id="s")) is None  # the limit itself fits
    assert size.refuse(SimpleNamespace(size=11, limit=10, stream_id="s")) == {
        "limit_bytes": 10, "payload_bytes": 11, "stream_id": "s"}


# --- spec.reducers: rows the effects write, field by field --------------------------------------------

BRIDGE = Claims(HEX64, frozenset({"bridge.enqueue", "bridge.mark_sent", "presence.write"}), ())


def _run(db: DbState, now: int, reducer: str, *args: object) -> Ok:
    out = call(db, CallContext(BRIDGE, now, 1, DEFAULT_POLICY), reducer, tuple(args))
    assert isinstance(out, Ok), out
    return out


def test_enqueue_then_mark_sent_write_the_outbox_row() -> None:
    db = _run(DbState(), 100, "enqueue_bridge_event", "o1", "src", 30078, '[["t","x"]]', "hello").state
    (row,) = db.rows("bridge_outbox")
    assert isinstance(row, BridgeOutbox)
    assert (row.outbox_id, row.source, row.nostr_kind, row.tags, row.content, row.status, row.attempts) == \
        ("o1", "src", 30078, '[["t","x"]]', "hello", "pending", 0)
    assert (row.created_at, row.updated_at) == (100, 100)
    db = _run(db, 250, "mark_bridge_event_sent", "o1", "e" * 64, ("wss://b", "wss://a")).state
    (sent,) = db.rows("bridge_outbox")
    assert isinstance(sent, BridgeOutbox)
    assert (sent.status, sent.nostr_event_id, sent.relays_acked) == ("sent", "e" * 64, ("wss://a", "wss://b"))
    assert (sent.content, sent.created_at, sent.updated_at) == ("hello", 100, 250)


def test_presence_signal_names_the_callers_identity() -> None:
    out = _run(DbState(), 100, "upsert_presence", "p1", "d", "n", "online", "eu", 30_000)
    signals = [r for td in out.delta.tables if td.table == "presence_signal" for r in td.inserts]
    assert signals == [PresenceSignal("p1", HEX64, "online", "", 100)]


# --- spec.reducer_contracts: each postcondition refuses a wrong outcome (negative controls) -----------


def test_well_typed_table() -> None:
    assert well_typed("reset_stream_epoch", ("s",))
    assert not well_typed("no_such_reducer", ("s",))
    assert not well_typed("reset_stream_epoch", (1,))
    assert not well_typed("reset_stream_epoch", ())
    assert not well_typed("reset_stream_epoch", ("s", "t"))


def _outbox_row(status: str = "pending", relays: tuple[str, ...] = ()) -> BridgeOutbox:
    return BridgeOutbox("o1", "src", 30078, "[]", "hi", "sha256:" + HEX64, status, 0, 100, None,
                        "e" * 64 if status == "sent" else None, relays, 100, 100)


def test_outbox_contracts_refuse_wrong_rows() -> None:
    empty, pending = _db(), _db(bridge_outbox=(_outbox_row(),))
    wrote = _d(TableDelta("bridge_outbox", (), (_outbox_row(),)))
    assert outbox_enqueued(empty, "o1", Ok(pending, None, wrote))
    assert not outbox_enqueued(empty, "o1", Ok(_db(bridge_outbox=(_outbox_row("sent"),)), None, wrote))
    assert not outbox_enqueued(pending, "o1", Ok(pending, None, wrote))  # "enqueued" over an existing row
    sent = _db(bridge_outbox=(_outbox_row("sent", ("wss://a",)),))
    moved = _d(TableDelta("bridge_outbox", (_outbox_row(),), (_outbox_row("sent", ("wss://a",)),)))
    assert outbox_sent(pending, "o1", "e" * 64, ("wss://a",), Ok(sent, None, moved))
    assert not outbox_sent(pending, "o1", "e" * 64, ("wss://a", "wss://b"), Ok(sent, None, moved))  # a relay lost
    assert not outbox_sent(pending, "o1", "e" * 64, ("wss://a",), Ok(empty, None, moved))  # the row vanished


def test_provider_noop_needs_the_provider() -> None:
    assert not provider_versioned(_db(), "p1", Ok(_db(), None, Delta()))


def test_signal_only_is_one_stream_signal_row() -> None:
    signal = StreamSignal("s", "typing", "{}", HEX64, 5)
    assert signal_only(_db(), "s", Ok(_db(), None, _d(TableDelta("stream_signal", (), (signal,)))))
    assert not signal_only(_db(), "s", Ok(_db(), None, _d(TableDelta("sync_event", (), (E1,)))))
    assert not signal_only(_db(), "t", Ok(_db(), None, _d(TableDelta("stream_signal", (), (signal,)))))


def test_state_violations_reports_a_step_that_breaks_a_good_state() -> None:
    ctx = CallContext(BRIDGE, 100, 1, DEFAULT_POLICY)
    broken = _db(sync_stream=(_stream(1, 0, 5),))  # empty stream whose floor is not head + 1
    step = Ok(broken, None, _d(TableDelta("sync_stream", (), (_stream(1, 0, 5),))))
    assert state_violations(_db(), ctx, step) != []
    assert state_violations(broken, ctx, step) == []  # broken before: not this step's fault


# --- spec.invariants: check_state finds each planted break, with its words (negative controls) --------


def _cp(epoch: int, last: int) -> SyncCheckpoint:
    return SyncCheckpoint("c|s", "c", "s", HEX64, epoch, last, 1)


def _outbox(status: str, attempts: int, event_id: str | None) -> BridgeOutbox:
    return BridgeOutbox("o", "src", 30078, "[]", "hi", "sha256:" + HEX64, status, attempts, 100, None, event_id, (),
                        100, 100)


def _provider(capability: str, digest: str) -> ProviderCapability:
    return ProviderCapability("p", HEX64, capability, digest, (5000,), 0, "active", 1, 1)


NON_CANONICAL_CAP = '{"b": 1}'
NON_CANONICAL_CAP_HASH = "sha256:" + hashlib.sha256(NON_CANONICAL_CAP.encode()).hexdigest()


@pytest.mark.parametrize(("db", "violations"), [
    (_db(sync_event=(E1,)), [("SEQ-1", "event s/1 has no stream or a future epoch")]),
    (DbState({**_db().tables, "presence_signal": (_signal(),)}), [("EVT-1", "event table presence_signal holds rows")]),
    # checkpoints: ahead of the head in the stream's epoch is a break; in an older epoch it is not
    (_db(sync_stream=(_stream(2, 0, 1),), sync_checkpoint=(_cp(2, 3),)), [("CKPT-1", "c|s: 3 > head 0")]),
    (_db(sync_stream=(_stream(2, 0, 1),), sync_checkpoint=(_cp(1, 3),)), []),
    (_db(sync_checkpoint=(_cp(1, 3),)), [("CKPT-1", "c|s: 3 > head 0")]),  # no stream yet: epoch floor 1
    # outbox rows: each status with the wrong attempts / event id
    (_db(bridge_outbox=(_outbox("pending", 0, None),)), []),
    (_db(bridge_outbox=(_outbox("failed", 4, None),)), [("BRIDGE-1", "outbox o: failed attempts 4")]),
    (_db(bridge_outbox=(_outbox("failed", 5, None),)), []),
    (_db(bridge_outbox=(_outbox("pending", 5, None),)), [("BRIDGE-1", "outbox o: pending attempts 5")]),
    (_db(bridge_outbox=(_outbox("sent", 1, None),)), [("BRIDGE-1", "outbox o: sent attempts 1")]),
    (_db(bridge_outbox=(_outbox("pending", 0, "e" * 64),)), [("BRIDGE-1", "outbox o: pending attempts 0")]),
    (_db(sync_stream=(_stream(1, 1, 1),), sync_event=(replace(E1, payload_hash="sha256:" + HEX64),)),
     [("HASH-1", "event s/1 payload/hash")]),
    (_db(sync_checkpoint=(replace(_cp(1, 0), checkpoint_id="c|t"),)), [("KEY-1", "checkpoint id c|t")]),
    # a stream whose head is one short of its ten events: the message lists the first eight seqs
    (_db(sync_stream=(_stream(1, 9, 1),), sync_event=tuple(_event(q) for q in range(1, 11))),
     [("SEQ-1", "s: seqs [1, 2, 3, 4, 5, 6, 7, 8]... floor 1 head 9 epoch 1")]),
    # a provider whose capability text is not canonical, even with the matching hash of that text
    (_db(provider_capability=(_provider(NON_CANONICAL_CAP, NON_CANONICAL_CAP_HASH),)), [("HASH-1", "provider p")]),
])
def test_check_state_finds_each_planted_break(db: DbState, violations: list[tuple[str, str]]) -> None:
    assert check_state(db, 5) == violations


WINDOWS = Policy(retain_offline_presence_us=10, retain_terminal_assignment_us=20, retain_sent_outbox_us=100,
                 retain_failed_outbox_us=1000)


def _presence(status: str) -> SessionPresence:
    reason = "explicit_offline" if status == "offline" else None
    return SessionPresence("p", HEX64, "d", "n", status, "eu", 0, 0, reason)


def _assignment_row(status: str) -> ComputeAssignment:
    return ComputeAssignment("r", HEX64, 5000, "{}", EMPTY_OBJECT_HASH, None, None, status, None, 1, 0, 0)


@pytest.mark.parametrize(("row", "now", "gone"), [
    (_presence("offline"), 10, False), (_presence("offline"), 11, True), (_presence("online"), 10**9, False),
    (_assignment_row("failed"), 21, True), (_assignment_row("completed"), 21, True),
    (_assignment_row("cancelled"), 21, True), (_assignment_row("failed"), 20, False),
    (_assignment_row("running"), 10**9, False),
    (_outbox("sent", 1, "e" * 64), 201, True), (_outbox("sent", 1, "e" * 64), 200, False),
    (_outbox("failed", 5, None), 500, False), (_outbox("failed", 5, None), 1101, True),
    (_outbox("pending", 0, None), 10**9, False),
    (E1, 10**9, False),  # events are not under these windows
])
def test_past_window_reads_each_table_with_its_own_window(row: Row, now: int, gone: bool) -> None:
    """RET-1's second opinion: the outbox rows are stamped 100 (updated_at), the others 0."""
    assert _past_window(row, now, WINDOWS) is gone


def test_layout_ok_refuses_a_continuation_that_does_not_go_back() -> None:
    assert layout_ok(_stream(3, 0, 1, continues=(2, 0)), [])
    assert not layout_ok(_stream(3, 0, 1, continues=(3, 0)), [])  # continues itself
    assert not layout_ok(_stream(3, 0, 1, continues=(2, 1)), [])  # shares a seq past the head


# --- spec.query (the sampled part of the second session) ---------------------------------------------


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT * FROM sync_event WHERE seq = 1." + "5" * 50,
     "malformed number '1." + "5" * 38 + "' (only integer literals are supported)"),  # quoted to 40 characters
    ("SELECT * FROM 5", "unexpected '5', expected a table name"),
    ("SELECT * FROM * WHERE seq = 1", "SELECT * FROM * takes no WHERE clause"),
])
def test_query_rejection_messages(sql: str, message: str) -> None:
    assert _rejection(sql) == message


def test_a_forty_character_integer_literal_is_read_as_its_value() -> None:
    """Leading zeros are allowed: 39 zeros and a 1 is 1, in range (only longer literals stand in as too big)."""
    (q,) = parse("SELECT * FROM sync_event WHERE seq = " + "0" * 39 + "1")
    assert q.where == (Comparison("seq", Op.EQ, 1),)


# --- spec.client: the rest of the full run --------------------------------------------------------


def _stale(c: Client, qs: int, **details: object) -> list[object]:
    error = SyncError(ErrorCode.STALE_CURSOR, {"stream_id": "s", **details})
    return list(c.on_message(SubscriptionError(None, qs, error.render())))


def test_continues_table() -> None:
    assert continues(1, 3, 2, 1, 5)            # epoch 2 continues epoch 1 up to 5 >= 3
    assert not continues(2, 0, 2, 2, 5)        # the view's own epoch is not a new one
    assert not continues(None, 0, 2, 1, 5)     # a view with no epoch continues nothing
    assert not continues(1, 0, 2, 0, 0)        # a fresh epoch continues nothing


def test_client_counts_continues_and_rebootstraps_and_restarts_its_numbering_after_a_crash() -> None:
    c = Client("c1", READER, confirmed=True)
    c.follow("s")
    c.on_connect()  # qs 1
    _stale(c, 1, reasons=["epoch_changed"], epoch=2, continues_epoch=1, continues_seq=0)  # continue: qs 2
    _stale(c, 2, reasons=["epoch_changed"], epoch=3, continues_epoch=2, continues_seq=0)  # continue: qs 3
    assert (c.streams["s"].epoch, c.streams["s"].continues, c.streams["s"].rebootstraps) == (3, 2, 0)
    _stale(c, 3, reasons=["epoch_changed"], epoch=4)  # no chain: rebootstrap, qs 4
    _stale(c, 4, reasons=["epoch_changed"], epoch=5)  # again, qs 5
    view = c.streams["s"]
    assert (view.epoch, view.last, view.base, view.rebootstraps, view.rehydrating) == (5, 0, 0, 2, True)
    # a stale error without reasons (and an error for a query set the client no longer has) is no crash
    assert _stale(c, 5, epoch=6) == [Subscribe(6, 6, REHYDRATE_S)]  # one request id per subscription so far
    assert _stale(c, 99, epoch=6) == []
    assert c.on_message(ReducerResult(77, 1, ReducerErr("x: {}"))) == []  # a result nobody waits for
    c.crash()
    assert c.on_connect() == [Subscribe(1, 1, REHYDRATE_S)]


def test_rehydrate_of_a_stream_with_floor_one_starts_at_zero() -> None:
    c = Client("c1", READER, confirmed=True)
    c.follow("s")
    c.on_connect()
    _stale(c, 1, reasons=["epoch_changed"], epoch=2)  # rebootstrap: rehydrate on qs 2
    row = _stream(2, 0, 1)
    c.on_message(SubscribeApplied(3, 2, (TableRows("sync_stream", (row,)),)))
    view = c.streams["s"]
    assert (view.epoch, view.last, view.base, view.rehydrating) == (2, 0, 0, False)


def test_stream_view_restore_reads_every_field() -> None:
    cp = Checkpoint(epoch=4, last=9, base=2, applied=((9, "h"),), rehydrating=True, rebootstraps=3, continues=5)
    view = StreamView.restore(cp)
    assert (view.epoch, view.last, view.applied, view.base, view.rehydrating, view.rebootstraps, view.continues) \
        == (4, 9, [(9, "h")], 2, True, 3, 5)


def test_applied_in_order_refuses_a_skipped_seq() -> None:
    c = Client("c1", READER, confirmed=True)
    c.streams["s"] = StreamView(epoch=1, last=3, applied=[(1, "h"), (3, "h")])
    assert not _applied_in_order(c, "s", (1, 1, 1, 0, False))  # from watermark 1, seq 3 was applied: a gap
    c.streams["s"] = StreamView(epoch=1, last=2, applied=[(1, "h"), (2, "h")])
    assert _applied_in_order(c, "s", (1, 1, 1, 0, False))


def test_stale_naming_the_views_own_epoch_is_no_continuation() -> None:
    c = Client("c1", READER, confirmed=True)
    c.follow("s")
    c.on_connect()
    _stale(c, 1, reasons=["epoch_changed"], epoch=1, continues_epoch=1, continues_seq=5)
    assert (c.streams["s"].continues, c.streams["s"].rebootstraps) == (0, 1)



def test_needs_scope_and_the_size_check_names() -> None:
    check = needs_scope("sync.append")
    assert (check.name, check.code) == ("the caller holds `sync.append`", ErrorCode.MISSING_SCOPE)
    assert check.refuse(SimpleNamespace(claims=READER)) is None
    assert check.refuse(SimpleNamespace(claims=BRIDGE)) == {"scope": "sync.append"}
    assert fits_stream_class().name == "the canonical payload fits the stream class's `max_payload_bytes`"


EVERYTHING = Claims(HEX64, frozenset({"compute.request", "sync.admin", "sync.append", "presence.write"}), ("s",))


def _run_as(claims: Claims, db: DbState, now: int, reducer: str, *args: object) -> Ok:
    out = call(db, CallContext(claims, now, 1, DEFAULT_POLICY), reducer, tuple(args))
    assert isinstance(out, Ok), out
    return out


def test_rows_stamp_the_clock_and_keep_every_argument() -> None:
    db = _run_as(EVERYTHING, DbState(), 100, "open_compute_assignment", "r1", 5000, '{"b": 1}').state
    (a,) = db.rows("compute_assignment")
    assert isinstance(a, ComputeAssignment)
    assert (a.request, a.status, a.opened_at, a.updated_at) == ('{"b":1}', "open", 100, 100)
    db = _run_as(EVERYTHING, DbState(), 100, "append_sync_event", "s", "k", "{}", None, None).state
    db = _run_as(EVERYTHING, db, 300, "reset_stream_epoch", "s").state
    (stream,) = db.rows("sync_stream")
    assert isinstance(stream, SyncStream)
    assert (stream.created_at, stream.updated_at) == (100, 300)
    out = _run_as(EVERYTHING, DbState(), 100, "publish_stream_signal", "s", "typing", '{ "x" : 1 }')
    signals = [r for td in out.delta.tables if td.table == "stream_signal" for r in td.inserts]
    assert signals == [StreamSignal("s", "typing", '{"x":1}', HEX64, 100)]
    db = _run_as(EVERYTHING, DbState(), 100, "upsert_presence", "p1", "d", "n", "online", "eu-west", 30_000).state
    (p,) = db.rows("session_presence")
    assert isinstance(p, SessionPresence)
    assert (p.device_id, p.node_id, p.status, p.region, p.last_seen) == ("d", "n", "online", "eu-west", 100)


@pytest.mark.parametrize(("epochs", "seqs", "ok"), [
    ((), (), True),
    ((3, 1), (9, 4), True),
    ((3,), (), False),  # an epoch without its bound
    ((), (4,), False),  # a bound without its epoch
    ((3, 1), (9,), False),
])
def test_well_formed_pairs_each_earlier_epoch_with_its_bound(epochs: tuple[int, ...], seqs: tuple[int, ...],
                                                             ok: bool) -> None:
    # CrossHair found unclean_restart's postcondition raising on a stream whose two chain lists
    # differed in length: such a state is not one the reducers make, and well_formed now says so.
    stream = SyncStream("s", "durable", 5, 4, 9, 9, 1, 100, 0, 0, earlier_epochs=epochs, earlier_seqs=seqs)
    assert DbState({"sync_stream": (stream,)}).well_formed() is ok


# --- spec/reducers.py, decorated functions (`./run mutate --icontract --decorated-only`, docs/mutation.md
# "Decorated functions (--icontract)"): the reducers and system transactions that carry contracts

_ADMIN = Claims("a" * 64, frozenset({"sync.append", "sync.admin", "presence.write"}), ("s*",))


def _red_ok(db: DbState, now: int, reducer: str, *args: object, policy: Policy = DEFAULT_POLICY) -> DbState:
    out = call(db, CallContext(_ADMIN, now, 1, policy), reducer, tuple(args))
    assert isinstance(out, Ok), out
    return out.state


def test_call_names_the_unknown_reducer_and_the_expected_arity() -> None:
    ctx = CallContext(_ADMIN, 10, 1)
    assert call(DbState(), ctx, "no_such", ()) == red.Err(SyncError(ErrorCode.NO_SUCH_REDUCER, {"reducer": "no_such"}))
    assert call(DbState(), ctx, "append_sync_event", ("s", "k")) == red.Err(SyncError(
        ErrorCode.INVALID_ARGUMENT, {"argument": "*", "message": "append_sync_event takes 5 arguments, got 2"}))


def _presence(db: DbState, now: int, session: str, ttl_ms: int) -> DbState:
    return _red_ok(db, now, "upsert_presence", session, "d", "n", "online", "", ttl_ms)


def test_presence_signals_carry_the_session_and_the_time_of_the_transition() -> None:
    db = _presence(_presence(DbState(), 1_000, "s1", 1_000), 1_000, "s2", 5_000)  # s1 expires at 1_001_000 (TTL in ms)
    now = 2_000_000
    swept = red.presence_sweep(db, now)
    assert swept.delta.for_table("presence_signal").inserts == (
        PresenceSignal("s1", "a" * 64, "offline", "ttl_expired", now),)  # s2 lives until 5_001_000
    # a connection closing after s1's TTL ran out (not swept yet) and before s2's
    closed = red.disconnect_sessions(db, 3_000_000, "a" * 64, frozenset({"s1", "s2"}))
    assert set(closed.delta.for_table("presence_signal").inserts) == {
        PresenceSignal("s1", "a" * 64, "offline", "ttl_expired", 3_000_000),
        PresenceSignal("s2", "a" * 64, "offline", "disconnected", 3_000_000)}
    rows = {r.session_id: r for r in closed.state.of_type(SessionPresence)}
    assert (rows["s1"].status, rows["s1"].offline_reason, rows["s1"].last_seen) == ("offline", "ttl_expired", 1_000)
    assert (rows["s2"].status, rows["s2"].offline_reason, rows["s2"].last_seen) \
        == ("offline", "disconnected", 3_000_000)  # last seen when its connection closed


def test_disconnecting_a_session_already_offline_changes_nothing() -> None:
    db = red.presence_sweep(_presence(DbState(), 1_000, "s1", 1_000), 2_000_000).state
    row = next(iter(db.of_type(SessionPresence)))
    assert (row.status, row.offline_reason, row.last_seen) == ("offline", "ttl_expired", 1_000)
    closed = red.disconnect_sessions(db, 3_000_000, "a" * 64, frozenset({"s1"}))
    assert list(closed.state.of_type(SessionPresence)) == [row]
    assert not closed.delta.for_table("presence_signal").inserts
    assert not closed.delta.for_table("session_presence").inserts


def _events(db: DbState, stream: str) -> list[tuple[int, int]]:
    return sorted((e.seq, e.committed_at) for e in db.of_type(SyncEvent) if e.stream_id == stream)


def test_compaction_by_age_keeps_an_event_exactly_at_the_window_and_everything_younger() -> None:
    policy = Policy(default_class=StreamClass("aged", retain_age_us=100))
    db = DbState()
    for t, key in ((1_000, "a"), (1_050, "b"), (1_100, "c"), (1_200, "d")):
        db = _red_ok(db, t, "append_sync_event", "s1", key, "{}", None, None, policy=policy)
    out = red.compact(db, 1_150, policy)  # window: older than 1_050 goes; 1_050 (exactly 100 ago) stays
    assert _events(out.state, "s1") == [(2, 1_050), (3, 1_100), (4, 1_200)]
    stream = next(iter(out.state.of_type(SyncStream)))
    assert (stream.floor_seq, stream.updated_at) == (2, 1_150)


def test_an_unclean_restart_stamps_every_stream_with_the_restart_time() -> None:
    db = _red_ok(DbState(), 1_000, "append_sync_event", "s1", "a", "{}", None, None)
    db = _red_ok(db, 2_000, "append_sync_event", "s2", "a", "{}", None, None)
    after = red.unclean_restart(db, 9_000, 2)
    assert {(s.stream_id, s.epoch, s.continues_epoch, s.continues_seq, s.updated_at)
            for s in after.of_type(SyncStream)} == {("s1", 4, 1, 1, 9_000), ("s2", 4, 1, 1, 9_000)}


def test_compaction_drops_only_a_prefix_and_goes_on_to_the_next_stream() -> None:
    # the server clock went back between two appends to s1: its second event is older than its first,
    # so the aged-out set is not a prefix and nothing of s1 may go (retained seqs stay contiguous);
    # s2, after it, is still compacted
    policy = Policy(default_class=StreamClass("aged", retain_age_us=100))
    db = _red_ok(DbState(), 1_000, "append_sync_event", "s1", "a", "{}", None, None, policy=policy)
    db = _red_ok(db, 500, "append_sync_event", "s1", "b", "{}", None, None, policy=policy)
    db = _red_ok(db, 500, "append_sync_event", "s2", "a", "{}", None, None, policy=policy)
    db = _red_ok(db, 1_000, "append_sync_event", "s2", "b", "{}", None, None, policy=policy)
    out = red.compact(db, 1_050, policy)
    assert _events(out.state, "s1") == [(1, 1_000), (2, 500)]
    assert _events(out.state, "s2") == [(2, 1_000)]
    assert {s.stream_id: s.floor_seq for s in out.state.of_type(SyncStream)} == {"s1": 1, "s2": 2}


def test_a_wrongly_typed_argument_is_named_in_the_error() -> None:
    # INVALID_ARGUMENT's details name the offending argument (the arity error names "*")
    ctx = CallContext(_ADMIN, 10, 1)
    assert call(DbState(), ctx, "append_sync_event", (5, "k", "{}", None, None)) == red.Err(SyncError(
        ErrorCode.INVALID_ARGUMENT, {"argument": "stream_id", "message": "wrong type"}))
    assert call(DbState(), ctx, "append_sync_event", ("s", "k", "{}", None, "7")) == red.Err(SyncError(
        ErrorCode.INVALID_ARGUMENT, {"argument": "expected_next_seq", "message": "wrong type"}))


def _appended(policy: Policy, *events: tuple[str, int]) -> DbState:
    db = DbState()
    for n, (stream, t) in enumerate(events):
        db = _red_ok(db, t, "append_sync_event", stream, f"k{n}", "{}", None, None, policy=policy)
    return db


def test_compaction_applies_each_streams_own_class() -> None:
    # the class is chosen per stream by its id's prefix: "s.chat." keeps one event, the default all
    policy = Policy(classes=(("s.chat.", StreamClass("chat", retain_count=1)),))
    db = _appended(policy, ("s.chat.1", 1_000), ("s.chat.1", 1_001), ("s.log.1", 1_002), ("s.log.1", 1_003))
    out = red.compact(db, 2_000, policy)
    assert _events(out.state, "s.chat.1") == [(2, 1_001)]
    assert _events(out.state, "s.log.1") == [(1, 1_002), (2, 1_003)]
    assert {s.stream_id: s.floor_seq for s in out.state.of_type(SyncStream)} == {"s.chat.1": 2, "s.log.1": 1}


def test_compaction_drops_what_either_the_count_or_the_age_limit_drops() -> None:
    policy = Policy(default_class=StreamClass("both", retain_count=2, retain_age_us=100))
    db = _appended(policy, *(("s", t) for t in (1_000, 1_100, 1_200, 1_210)))
    # at 1_150 the age limit drops only seq 1 (older than 1_050), the count limit seqs 1 and 2
    assert _events(red.compact(db, 1_150, policy).state, "s") == [(3, 1_200), (4, 1_210)]
    # at 1_305 the age limit drops seqs 1-3 (older than 1_205), the count limit seqs 1 and 2
    assert _events(red.compact(db, 1_305, policy).state, "s") == [(4, 1_210)]


def test_compaction_goes_past_a_stream_with_nothing_to_drop() -> None:
    # "sa.kept" (no limits) comes first, by insertion and by id; "sb" after it is still compacted
    policy = Policy(classes=(("sa.", StreamClass("kept")),), default_class=StreamClass("aged", retain_age_us=100))
    db = _appended(policy, ("sa.kept", 1_000), ("sb", 1_000), ("sb", 1_200))
    out = red.compact(db, 1_250, policy)
    assert _events(out.state, "sa.kept") == [(1, 1_000)]
    assert _events(out.state, "sb") == [(2, 1_200)]
    assert {s.stream_id: s.floor_seq for s in out.state.of_type(SyncStream)} == {"sa.kept": 1, "sb": 2}


# --- spec/client.py, spec/query.py, spec/compat.py, decorated functions (`--icontract --decorated-only`)

def _client_at(epoch: int, last: int) -> Client:
    c = Client("c1", READER, confirmed=True)
    c.follow("s")
    c.on_connect()  # query set 1
    view = c.streams["s"]
    view.epoch, view.last, view.applied = epoch, last, [(s, "h") for s in range(1, last + 1)]
    return c


def _stream_applied(row: SyncStream) -> SubscribeApplied:
    return SubscribeApplied(9, 1, (TableRows("sync_stream", (row,)),))


def _view(c: Client) -> tuple[int | None, int, int, int, bool]:
    v = c.streams["s"]
    return v.epoch, v.last, v.continues, v.rebootstraps, v.rehydrating


def test_a_stream_row_continuing_the_view_with_its_floor_just_above_the_watermark_is_adopted() -> None:
    c = _client_at(1, 3)
    # epoch 2 continues epoch 1 up to 3, and retention kept from seq 4: nothing the view needs is gone
    c.on_message(_stream_applied(_stream(2, 5, 4, continues=(1, 3))))
    assert _view(c) == (2, 3, 1, 0, False)


def test_a_stream_row_whose_head_is_the_watermark_changes_nothing() -> None:
    c = _client_at(1, 3)
    assert c.on_message(_stream_applied(_stream(1, 3, 2))) == []
    assert _view(c) == (1, 3, 0, 0, False)


def test_a_stream_row_behind_the_watermark_or_of_a_fresh_epoch_rebootstraps() -> None:
    c = _client_at(1, 3)  # the same epoch, but its head went back below what the view holds
    sent = c.on_message(_stream_applied(_stream(1, 2, 1)))
    assert _view(c) == (1, 0, 0, 1, True) and sent[-1] == Subscribe(3, 2, REHYDRATE_S)
    c = _client_at(1, 3)  # a fresh epoch (no chain) from seq 1
    sent = c.on_message(_stream_applied(_stream(2, 5, 1)))
    assert _view(c) == (2, 0, 0, 1, True) and sent[-1] == Subscribe(3, 2, REHYDRATE_S)


@pytest.mark.parametrize(("sql", "watermark"), [
    ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 5", 5),
    ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq >= 5", 4),
    ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq >= 0", 0),   # clamped: seqs start at 1
    ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1", None),
])
def test_resume_watermark_table(sql: str, watermark: int | None) -> None:
    (q,) = parse(sql)
    assert resume_watermark(q) == watermark


def test_a_malformed_build_is_quoted_back_as_sent_and_a_missing_one_as_empty() -> None:
    w = CompatWindow()
    bad = negotiate(w, "2026-01-01", PROTOCOL_VERSION, SCHEMA_VERSION)
    assert bad == SyncError(ErrorCode.INVALID_CLIENT_BUILD, {"client_build_id": "2026-01-01", "window": w.as_json()})
    missing = negotiate(w, None, PROTOCOL_VERSION, SCHEMA_VERSION)
    assert missing == SyncError(ErrorCode.INVALID_CLIENT_BUILD, {"client_build_id": "", "window": w.as_json()})


def test_canonicalize_names_the_payload_argument_by_default() -> None:
    with pytest.raises(SyncError) as caught:
        canonicalize("{")
    assert (caught.value.code, caught.value.details["argument"], caught.value.details["reason"]) \
        == (ErrorCode.NON_CANONICAL_PAYLOAD, "payload_json", "invalid_json")
    with pytest.raises(SyncError) as other:
        canonicalize("{", "args")
    assert other.value.details["argument"] == "args"


def test_canonical_and_hash_passes_the_argument_name_on() -> None:
    with pytest.raises(SyncError) as hashed:
        canonical_and_hash("{", "args")
    assert hashed.value.details["argument"] == "args"
    with pytest.raises(SyncError) as default:
        canonical_and_hash("{")
    assert default.value.details["argument"] == "payload_json"


def test_an_unsupported_protocol_is_quoted_back_and_a_missing_one_as_empty() -> None:
    w = CompatWindow()
    for sent, quoted in (("oa.sync.v0", "oa.sync.v0"), (None, "")):
        assert negotiate(w, "20260601T000000Z", sent, SCHEMA_VERSION) == SyncError(
            ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, {"requested_protocol_version": quoted, "window": w.as_json()})


# --- spec/client.py, decorated functions measured whole (`--icontract --decorated-only`, 96 mutants)

@pytest.mark.parametrize(("last", "seq", "rule"), [
    (3, 1, "duplicate"), (3, 3, "duplicate"), (3, 4, "apply"), (3, 5, "gap"), (0, 1, "apply"), (0, 9, "gap"),
])
def test_apply_rule_table_REPLAY_1(last: int, seq: int, rule: str) -> None:
    assert apply_rule(last, seq) == rule


def _event(seq: int, epoch: int = 1) -> SyncEvent:
    return SyncEvent("s", epoch, seq, f"k{seq}", f"h{seq}", "{}", HEX64, 0, seq)


def _update(*events: SyncEvent, qs: int = 1) -> TransactionUpdate:
    return TransactionUpdate(7, (QuerySetUpdate(qs, (TableRows("sync_event", events),)),))


def test_duplicates_are_skipped_and_the_events_after_them_applied() -> None:
    c = _client_at(1, 2)
    assert c.on_message(_update(_event(1), _event(2), _event(3), _event(4))) == []
    assert c.streams["s"].last == 4 and c.streams["s"].applied == [(1, "h"), (2, "h"), (3, "h3"), (4, "h4")]


def test_every_gap_is_counted() -> None:
    c = _client_at(1, 2)
    c.on_message(_update(_event(5)))
    c.on_message(_update(_event(6), qs=2))  # after the resubscription, on its new query set
    assert c.gaps_detected == 2 and c.streams["s"].last == 2


def test_a_rehydrating_view_ignores_updates_before_its_snapshot_and_a_snapshot_without_a_stream_row() -> None:
    c = _client_at(1, 2)
    c.on_message(_stream_applied(_stream(2, 5, 1)))  # a fresh epoch: rebootstrap, rehydrate on query set 2
    assert c.on_message(_update(_event(1, epoch=2), qs=2)) == [] and _view(c) == (2, 0, 0, 1, True)
    c.on_message(SubscribeApplied(10, 2, ()))  # the snapshot names no stream row: nothing to hold yet
    assert _view(c) == (2, 0, 0, 1, False)


def test_a_continuation_past_a_compacted_event_or_of_the_views_own_epoch_is_not_adopted() -> None:
    c = _client_at(1, 3)  # epoch 2 continues epoch 1 up to 3, but its floor is 5: event 4 is gone
    c.on_message(_stream_applied(_stream(2, 6, 5, continues=(1, 3))))
    assert _view(c) == (2, 0, 0, 1, True)
    c = _client_at(1, 3)  # the same epoch, floor 5: event 4 is gone too
    c.on_message(_stream_applied(_stream(1, 6, 5)))
    assert _view(c) == (1, 0, 0, 1, True)
    c = _client_at(1, 3)  # a row of the view's own epoch naming that epoch in its chain continues nothing
    assert c.on_message(_stream_applied(_stream(1, 5, 1, continues=(1, 5)))) == []
    assert _view(c) == (1, 3, 0, 0, False)


def test_a_continuation_through_an_earlier_hop_is_adopted() -> None:
    c = _client_at(1, 3)  # epoch 3 continues epoch 2 up to 10, and through it epoch 1 up to 5
    c.on_message(_stream_applied(_stream(3, 12, 2, continues=(2, 10), earlier=((1, 5),))))
    assert _view(c) == (3, 3, 1, 0, False)


@pytest.mark.parametrize(("build", "schema", "code", "details"), [
    ("20260601T000000Z", 99, ErrorCode.UNSUPPORTED_SCHEMA_VERSION, {"requested_schema_version": 99}),
    ("20251231T235959Z", SCHEMA_VERSION, ErrorCode.UPGRADE_REQUIRED, {"client_build_id": "20251231T235959Z"}),
    ("21000101T000000Z", SCHEMA_VERSION, ErrorCode.UNSUPPORTED_CLIENT_BUILD, {"client_build_id": "21000101T000000Z"}),
])
def test_negotiate_rejections_name_what_was_refused(build: str, schema: int, code: ErrorCode,
                                                     details: dict[str, object]) -> None:
    w = CompatWindow()
    assert negotiate(w, build, PROTOCOL_VERSION, schema) == SyncError(code, {**details, "window": w.as_json()})


@pytest.mark.parametrize(("grant", "stream_id", "covered"), [
    ("a.own*", "a.owner", True),   # a plain string prefix
    ("a.own*", "a.own", True),
    ("a.own*", "a.ow", False),     # one character short of the prefix
    ("a.own*", "a.owx", False),
    ("ab*", "ac", False),
    ("*", "anything", True),
    ("a.x", "a.x", True), ("a.x", "a.xy", False),
])
def test_grant_matches_table_AUTH_1(grant: str, stream_id: str, covered: bool) -> None:
    assert grant_matches(grant, stream_id) is covered


_PINS = ["stream_id = 's'", "epoch = 1", "idempotency_key = 'k'", "payload_hash = 'h'", "payload = '{}'",
         "tx_offset = 3"]


def test_an_empty_seq_range_is_unsatisfiable_whatever_else_is_pinned() -> None:
    # unsatisfiable walks a *set* of columns: a satisfied pin must not end the walk (the columns come in
    # string-hash order, so every pin alone, and all of them, are tried with the empty range on seq)
    for pins in [*([p] for p in _PINS), _PINS]:
        (q,) = parse("SELECT * FROM sync_event WHERE " + " AND ".join([*pins, "seq > 5", "seq < 3"]))
        assert unsatisfiable(q), pins
        (ok,) = parse("SELECT * FROM sync_event WHERE " + " AND ".join([*pins, "seq > 2", "seq < 5"]))
        assert not unsatisfiable(ok), pins
