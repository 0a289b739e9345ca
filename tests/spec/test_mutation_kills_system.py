"""Killer tests for the third mutation session: spec/vectors.py, spec/trace.py, spec/system.py
(docs/mutation.md, "Third session").

Each test states what the module must do, written from the spec's meaning and checked against a
second source (the checked-in vectors, published hashes, tables written out by hand, concrete bad
traces with the violation they must produce) -- never by calling the code under test for the answer.

*Vectors.*  ``spec.vectors`` builds its case tables (``_khala_cases``, ``_control_cases``, ``_nest``,
``_r``) when it is imported, before a mutant is active, so the drift test cannot see a mutant in a
builder; the tests below call the builders themselves and compare with the checked-in vector files
(a builder that changed would change a vector) and with what the cases mean (the published Khala
hashes, the 32 control characters and their names, the nesting written out).

*Trace.*  The suite only ever ran ``spec.trace.Trace`` on correct runs; here each check gets a concrete
bad observation, built by hand, with the exact violation (invariant id and message) it must report, next
to the correct observation it must pass.

*System.*  ``spec.system.System``'s own checks (DELIV-3/4 per call, PRES-3, SLOW-1, and RET-1 through its
``compact``) are shown failing on a planted server fault driven through the real flow (a wrapped
``Server.handle``, a hand-made commit, a patched compaction), and its fault and healing actions are shown
doing what their docstrings say.  Last, a short derandomized run of the system machine.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from support.machines import SystemMachine

import spec.delivery
import spec.harness
import spec.system
import spec.vectors as vectors
from spec.auth import Claims
from spec.canonical import MAX_DEPTH, REASONS
from spec.client import Client, StreamView
from spec.errors import ErrorCode, SyncError
from spec.messages import (
    SLOW_CONSUMER_REASON,
    CallReducer,
    Outbound,
    QuerySetUpdate,
    ReducerErr,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
)
from spec.outcome import Ok
from spec.policy import Policy
from spec.state import DbState, Delta, TableDelta
from spec.system import Link, System
from spec.trace import Mirror, Trace, _shares
from spec.values import (
    BridgeOutbox,
    ProviderCapability,
    Row,
    SessionPresence,
    StreamSignal,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)
from spec.vectors import (
    ACCEPT_FORMAT,
    REJECT_FORMAT,
    Accept,
    Reject,
    VectorError,
    _check_names,
    _control_cases,
    _khala_cases,
    _nest,
    _printable_ascii,
    _r,
    _utf16_hex,
    _valid_unicode,
    accept_document,
    reject_document,
    render,
)

CANONICAL_VECTORS = Path(__file__).resolve().parents[2] / "adapters" / "conformance" / "vectors" / "canonical"

# ------------------------------------------------------------------------------------------------ vectors


def _checked_in_input(handler: str, name: str) -> Any:
    path = CANONICAL_VECTORS / handler / name / "ops.json"
    assert path.exists(), f"no checked-in vector {handler}/{name}: the builder made a case that is not in the kit"
    return json.loads(path.read_text("ascii"))["input"]


# Published in OpenAgentsInc/openagents docs/protocol/testdata/khala_payload_hash_vectors.v1.json
# (the same table as tests/conformance/test_vectors.py's, where it checks the files).
KHALA = {
    "khala_v1_sorted_flat_object": "43258cff783fe7036d8a43033f830adfc60ec037382473548ac742b888292777",
    "khala_v1_nested_sync_payload": "bf367b161129295cb3fab72a7eae88f8602207d4fc8fcf4510c4d5fa0bcb5317",
    "khala_v1_bool_null_array": "b5ef670c5e47639c44a0ed4ba6901df6b0e7f59e41e4102bb26e76fb1f4af946",
    "khala_v1_string_escaping": "5da82c8c6bf15cceb33ae20ba89c0adb33d030c5d65824d138936fae7a1ab3d8",
    "khala_v1_array_of_objects": "700bae9e6bc89b1810ee4cc08c459cc2a02ccb13fcde1949b10adfa031e8212d",
}


def test_the_khala_cases_are_the_published_payloads_pretty_printed() -> None:
    cases = _khala_cases()
    assert [c.name for c in cases] == list(KHALA)
    for case in cases:
        # the payload's canonical form, by a serializer written here (keys sorted, no whitespace),
        # hashes to the published value: the case is the published payload
        value = json.loads(case.text)
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == KHALA[case.name], case.name
        # and its input is spelled as in the kit: indented by two spaces, in the payload's own key order
        assert case.text == _checked_in_input("accept", case.name)
        assert case.text.startswith('{\n  "') and "\n" + " " * 2 + '"' in case.text


_NAMES = {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r"}  # JSON's named escapes (RFC 8259 section 7)


def test_the_control_cases_cover_each_control_character_by_name() -> None:
    cases = _control_cases()
    singles = cases[:32]
    for cp, case in enumerate(singles):
        suffix = f"_{_NAMES[cp]}" if cp in _NAMES else ""
        assert case.name == f"control_u{cp:04x}{suffix}"
        assert case.text == '"\\u' + format(cp, "04X") + '"' and json.loads(case.text) == chr(cp)
    assert [c.name for c in cases[32:]] == ["control_all_in_one_string", "control_named_escapes_in_input",
                                            "control_in_object_key"]
    all_in_one, named, in_key = cases[32:]
    assert json.loads(all_in_one.text) == "".join(map(chr, range(32)))
    assert all_in_one.text == '"' + "".join("\\u00" + format(cp, "02x") for cp in range(32)) + '"'
    assert named.text == '"\\b\\f\\n\\r\\t"'
    assert json.loads(in_key.text) == {"\x00": 0, "\x1f": 31, "\n": 10}
    assert in_key.text == '{"\\u0000":0,"\\u001F":31,"\\n":10}'
    for case in cases:
        assert _checked_in_input("accept", case.name) == case.text


@pytest.mark.parametrize(("depth", "inner", "text"), [
    (0, "null", "null"),
    (1, "1", "[1]"),
    (2, "null", '[{"k":null}]'),
    (3, "null", '[{"k":[null]}]'),
    (4, "0", '[{"k":[{"k":0}]}]'),
])
def test_nest_alternates_arrays_and_objects_arrays_outermost(depth: int, inner: str, text: str) -> None:
    assert _nest(depth, inner) == text


def test_nest_builds_the_kits_deepest_mixed_cases() -> None:
    assert _nest(MAX_DEPTH, "null") == _checked_in_input("accept", f"nesting_{MAX_DEPTH}_mixed")
    assert _nest(MAX_DEPTH + 1, "null") == _checked_in_input("reject", f"nesting_{MAX_DEPTH + 1}_mixed")
    deep = json.loads(_nest(MAX_DEPTH, "null"))
    for level in range(MAX_DEPTH - 1):  # depth counted by walking the value, not the text
        deep = deep[0] if level % 2 == 0 else deep["k"]
    assert deep == [None] or deep == {"k": None}


def test_r_keeps_each_cases_name_text_and_reason() -> None:
    assert _r("too_deep", ("a", "[["), ("b", "x")) == [Reject("a", "[[", "too_deep"), Reject("b", "x", "too_deep")]
    assert _r("invalid_json") == []


@pytest.mark.parametrize(("names", "error"), [
    (["a", "b_2", "Z9"], None),
    (["a", "a"], "duplicate case name 'a'"),
    ([""], "case name '' is not [A-Za-z0-9_]+"),
    (["a-b"], "case name 'a-b' is not [A-Za-z0-9_]+"),
    (["a b"], "case name 'a b' is not [A-Za-z0-9_]+"),
    (["caf\u00e9"], "case name 'caf\u00e9' is not [A-Za-z0-9_]+"),  # alphanumeric, but not ASCII
    (["\u0661"], "case name '\u0661' is not [A-Za-z0-9_]+"),  # ARABIC-INDIC DIGIT ONE: a digit, not ASCII
])
def test_case_names_are_unique_ascii_words(names: list[str], error: str | None) -> None:
    if error is None:
        _check_names(names)
        return
    with pytest.raises(VectorError) as caught:
        _check_names(names)
    assert str(caught.value) == error


@pytest.mark.parametrize(("text", "valid"), [
    ("abc", True), ("\ud7ff", True), ("\ud800", False), ("\udbff", False), ("\udc00", False),
    ("a\udfffb", False), ("\ue000", True), ("\U0001f600", True), ("", True),
])
def test_valid_unicode_means_no_surrogate_code_point(text: str, valid: bool) -> None:
    assert _valid_unicode(text) is valid


@pytest.mark.parametrize(("text", "printable"), [
    (" ", True), ("~", True), ("a b", True), ("\x1f", False), ("\x7f", False), ("\u00e9", False), ("", True),
])
def test_printable_ascii_is_u0020_to_u007e(text: str, printable: bool) -> None:
    assert _printable_ascii(text) is printable


def test_utf16_hex_is_big_endian_code_units_and_refuses_a_pair_that_would_merge() -> None:
    assert _utf16_hex("\ud800") == "d800"
    assert _utf16_hex("a\udc00b") == "0061dc000062"
    with pytest.raises(VectorError) as caught:
        _utf16_hex("\ud83d\ude00")  # two raw surrogates that pair up: read back as one U+1F600
    assert str(caught.value) == "input '\\ud83d\\ude00' does not survive a UTF-16 round trip"


def test_the_documents_have_the_readme_layout() -> None:
    accept, reject = accept_document(), reject_document()
    assert set(accept) == {"description", "format", "count", "cases"}
    assert set(reject) == {"description", "format", "reasons", "count", "cases"}
    assert accept["format"] == ACCEPT_FORMAT == "syncref.canonical_json.accept.v1"
    assert reject["format"] == REJECT_FORMAT == "syncref.canonical_json.reject.v1"
    for doc in (accept, reject):
        assert doc["count"] == len(doc["cases"]) > 0
        assert isinstance(doc["description"], list) and all(isinstance(p, str) and p for p in doc["description"])
    assert list(reject["reasons"]) == list(REASONS)


def test_a_curated_reject_case_the_model_accepts_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "REJECT_CASES", (Reject("one_is_fine", "1", "invalid_json"),))
    with pytest.raises(VectorError) as caught:
        reject_document()
    assert str(caught.value) == "reject case 'one_is_fine' is accepted by the model"


def test_a_reason_without_a_meaning_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    meanings = dict(vectors.REASON_MEANINGS)
    del meanings["too_deep"]
    monkeypatch.setattr(vectors, "REASON_MEANINGS", meanings)
    with pytest.raises(VectorError) as caught:
        reject_document()
    assert str(caught.value) == "REASON_MEANINGS does not describe exactly spec.canonical.REASONS"


def test_a_reason_without_a_reject_case_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "REJECT_CASES", tuple(_r("invalid_json", ("bare_word", "hello"))))
    with pytest.raises(VectorError) as caught:
        reject_document()
    assert str(caught.value) == ("no reject case for reasons ['duplicate_key', 'integer_out_of_range', "
                                 "'lone_surrogate', 'nan_or_infinity', 'non_integer_number', 'too_deep']")


def test_a_curated_reason_the_model_does_not_give_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "REJECT_CASES", (Reject("bare_word", "hello", "too_deep"),))
    with pytest.raises(VectorError) as caught:
        reject_document()
    assert str(caught.value) == "reject case 'bare_word': model says 'invalid_json', curated 'too_deep'"


def test_a_reject_case_failing_with_another_code_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuses(text: str) -> str:
        raise SyncError(ErrorCode.PAYLOAD_TOO_LARGE)

    monkeypatch.setattr(vectors, "canonicalize", refuses)
    with pytest.raises(VectorError) as caught:
        reject_document()
    assert str(caught.value) == "reject case 'empty_text' failed with payload_too_large"


def test_a_canonical_text_that_is_not_a_fixed_point_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "canonicalize", lambda text: text + " ")  # a model whose output moves again
    with pytest.raises(VectorError) as caught:
        accept_document()
    assert str(caught.value) == "accept case 'top_null': canonical text is not a fixed point"


def test_a_curated_accept_case_the_model_rejects_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "ACCEPT_CASES", (Accept("duplicate", '{"a":1,"a":2}'),))
    with pytest.raises(VectorError, match=r"^accept case 'duplicate' is rejected by the model: "):
        accept_document()


def test_render_refuses_what_is_not_json() -> None:
    assert render({"b": [1], "a": "\u00e9"}) == '{\n  "b": [\n    1\n  ],\n  "a": "\\u00e9"\n}\n'
    with pytest.raises(ValueError):
        render({"x": float("nan")})  # NaN is not JSON: a vector file must never hold it


# ------------------------------------------------------------------------------------------------- trace
# Hand-made observations fed to spec.trace.Trace: a correct one it must pass, and broken ones, each with
# the exact violation (invariant id and message) it must report.

READER = Claims("a" * 64, frozenset({"sync.subscribe"}), ("s*",))
H1, H2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
EMPTY_HASH = "sha256:" + hashlib.sha256(b"{}").hexdigest()


def _event(seq: int, epoch: int = 1, h: str = H1, stream: str = "s") -> SyncEvent:
    return SyncEvent(stream, epoch, seq, f"k{seq}", h, "{}", "b" * 64, 0, seq)


def _stream_row(epoch: int = 1, head: int = 0, floor: int = 1, cont: tuple[int, int] = (0, 0),
                earlier: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())) -> SyncStream:
    return SyncStream("s", "default", epoch, cont[0], cont[1], head, floor, 100, 0, 0, earlier[0], earlier[1])


def _db(**tables: tuple[Row, ...]) -> DbState:
    base = dict(DbState().tables)
    base.update(tables)
    return DbState(base)


def _reader(epoch: int | None = 1, last: int = 5, qs: int = 7, confirmed: bool = False, **view: Any) -> Client:
    c = Client("c0", READER, confirmed)
    c.streams["s"] = StreamView(epoch=epoch, last=last, applied=[(k, H1) for k in range(1, last + 1)], **view)
    c.qs_stream[qs] = "s"
    return c


def _stale(**details: Any) -> SubscriptionError:
    return SubscriptionError(3, 7, SyncError(ErrorCode.STALE_CURSOR, {"stream_id": "s", **details}).render())


@pytest.mark.parametrize(("epoch", "last", "cont_epoch", "cont_seq", "epochs", "seqs", "shares"), [
    (None, 0, 2, 3, [], [], False),         # the view has no epoch: nothing to continue
    (1, 3, 0, 0, [], [], False),            # the new epoch started fresh
    (1, 3, 1, 5, [], [], True),             # continues epoch 1 up to 5, the view is at 3
    (1, 5, 1, 5, [], [], True),             # ... at exactly 5
    (1, 6, 1, 5, [], [], False),            # ... past 5: events 6.. may be lost
    (1, 3, 2, 5, [1], [4], True),           # two hops: 1 is reached through 2, bounded by 5 and 4
    (1, 5, 2, 5, [1], [4], False),          # ... the second hop's bound is below the view
    (1, 4, 2, 3, [1], [9], False),          # ... the first hop's bound is below the view
    (2, 5, 2, 5, [1], [4], True),           # the view's epoch is the newest hop
    (3, 0, 2, 5, [1], [4], False),          # an epoch not in the chain
    (1, 3, 2, 5, [1], None, False),         # malformed details: not lists
    (1, 3, 2, 5, None, [4], False),
    (1, 3, 2, 5, [1], [4, 3], False),       # ... or lists of different lengths
])
def test_shares_reads_the_continuation_chain(epoch: int | None, last: int, cont_epoch: int, cont_seq: int,
                                             epochs: Any, seqs: Any, shares: bool) -> None:
    assert _shares(epoch, last, cont_epoch, cont_seq, epochs, seqs) is shares


def test_trace_seq_2_one_name_per_stream_epoch_seq() -> None:
    t = Trace()
    t.record_ledger([_event(1), _event(2)])
    assert t.violations == []
    t.record_ledger([_event(2, h=H2)])
    assert t.violations == [("SEQ-2", f"('s', 1, 2) named {H1[:15]} and {H2[:15]} (ledger)")]


def test_trace_slow_1_flags_a_queue_past_the_bound() -> None:
    server = SimpleNamespace(max_queue=2, conns={4: SimpleNamespace(conn_id=4, outbound=[None] * 2),
                                                 5: SimpleNamespace(conn_id=5, outbound=[None] * 3)})
    t = Trace()
    t.check_queues(server)  # type: ignore[arg-type]
    assert t.violations == [("SLOW-1", "conn 5 queue 3 > 2")]


def test_trace_replay_3_a_rebootstrap_needs_a_stale_signal() -> None:
    c = _reader(rebootstraps=1)
    t = Trace()
    t.signals[(0, "s")] = 1
    t.check_rebootstraps(0, c)
    assert t.violations == []
    t.signals[(0, "s")] = 0
    t.check_rebootstraps(0, c)
    assert t.violations == [("REPLAY-3", "client 0 s: 1 rebootstraps and 0 continues after 0 stale signals")]


def test_trace_retention_is_judged_with_the_trace_policy() -> None:
    gone = SessionPresence("p", "b" * 64, "d", "n", "offline", "eu", 0, 0, "explicit_offline")
    before, after = _db(session_presence=(gone,)), _db()
    short = Trace(policy=Policy(retain_offline_presence_us=10))
    short.record_state(0, before)
    short.record_state(1, after, compact_now=11)  # past its 10 us window: removing it is right
    assert short.violations == []
    plain = Trace(policy=Policy(retain_offline_presence_us=10))
    plain.record_state(0, before)
    plain.record_state(1, _db(session_presence=(gone,)))  # not a compaction: retention is not judged
    assert plain.violations == []
    default = Trace()
    default.record_state(0, before)
    default.record_state(1, after, compact_now=11)  # a day's window: removed too early
    assert default.violations == [("RET-1", "session_presence p: removed at 11")]


def test_trace_state_checks_use_the_policys_bridge_attempts() -> None:
    dead = BridgeOutbox("o1", "src", 30078, '[["t","x"]]', "hello", H1, "failed", 2, 0, "relay down", None, (), 0, 0)
    t = Trace(policy=Policy(bridge_max_attempts=2))
    t.record_state(0, _db(bridge_outbox=(dead,)))  # failed after its 2 attempts: right
    assert t.violations == []
    t = Trace()
    t.record_state(0, _db(bridge_outbox=(dead,)))  # the default allows 5: failed too early
    assert t.violations == [("BRIDGE-1", "outbox o1: failed attempts 2")]


def test_trace_ver_1_a_version_first_seen_is_not_a_violation() -> None:
    row = ProviderCapability("p", "b" * 64, "{}", EMPTY_HASH, (5000,), 0, "active", 1, 0)
    t = Trace()
    t.record_state(0, _db(provider_capability=(row,)))
    assert t.violations == []


def test_trace_on_crash_dur_1_compares_what_recovery_keeps() -> None:
    cp = SyncCheckpoint("c|s", "c", "s", "b" * 64, 1, 2, 0)
    prov = ProviderCapability("p", "b" * 64, "{}", EMPTY_HASH, (5000,), 0, "active", 1, 0)
    prior = _db(sync_checkpoint=(cp,), provider_capability=(prov,))
    # recovery raises epochs and versions (ADR-0003): the same state for DUR-1
    raised = _db(sync_checkpoint=(replace(cp, epoch=2),), provider_capability=(replace(prov, version=2),))
    t = Trace()
    t.states[3] = prior
    t.on_crash(3, raised, [])
    assert t.violations == []
    t = Trace()
    t.states[3] = prior
    t.on_crash(3, _db(provider_capability=(prov,)), [])  # the checkpoint is lost
    assert t.violations == [("DUR-1", "state after crash differs from the durable state at 3")]
    t = Trace()
    t.states[3] = prior
    t.on_crash(3, _db(sync_checkpoint=(cp,)), [])  # the provider is lost
    assert t.violations == [("DUR-1", "state after crash differs from the durable state at 3")]
    t = Trace()
    t.states[3] = _db(sync_stream=(_stream_row(head=3, floor=1),), sync_event=tuple(_event(k) for k in (1, 2, 3)))
    t.on_crash(3, _db(sync_stream=(_stream_row(epoch=2, head=3, floor=2),),
                      sync_event=tuple(_event(k, 2) for k in (1, 2, 3))), [])  # the same events, the floor moved
    assert t.violations == [("DUR-1", "state after crash differs from the durable state at 3")]


def test_trace_on_crash_dur_1_tells_rows_apart_by_their_keys() -> None:
    """DUR-1 compares rows, not contents: two providers with the same ad are two rows, and a recovered
    stream keeps its class and budget (only epochs, the chain, versions and updated_at may move)."""
    prov = ProviderCapability("p", "b" * 64, "{}", EMPTY_HASH, (5000,), 0, "active", 1, 0)
    twin = replace(prov, provider_id="q")
    cases = {
        "a provider lost": (_db(provider_capability=(prov, twin)),
                            _db(provider_capability=(replace(prov, version=3),))),
        "a provider renamed": (_db(provider_capability=(prov,)),
                               _db(provider_capability=(replace(twin, version=3),))),
        "a budget changed": (_db(sync_stream=(_stream_row(head=0),)),
                             _db(sync_stream=(replace(_stream_row(epoch=2, head=0, cont=(1, 0)), replay_budget=7),))),
    }
    for name, (prior, recovered) in cases.items():
        t = Trace()
        t.states[3] = prior
        t.on_crash(3, recovered, [])
        assert t.violations == [("DUR-1", "state after crash differs from the durable state at 3")], name
    t = Trace()  # what recovery may move: epochs, the chain, updated_at, versions
    t.states[3] = _db(sync_stream=(_stream_row(head=0),), provider_capability=(prov, twin))
    t.on_crash(3, _db(sync_stream=(replace(_stream_row(epoch=2, head=0, cont=(1, 0)), updated_at=9),),
                      provider_capability=(replace(prov, version=3), replace(twin, version=3))), [])
    assert t.violations == []


def test_trace_conf_2_a_crash_must_keep_what_a_confirmed_reader_saw() -> None:
    t = Trace()
    t.confirmed_seen.add(("s", 1, 1, H1))
    t.on_crash(0, DbState(), [])
    assert t.violations == [("CONF-2", "a confirmed-read client saw ('s', 1, 1) and the crash lost it")]


def test_trace_observe_deliv_1_offsets_never_go_back() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    t.observe(0, c, link, Outbound(1, TransactionUpdate(1, ())), 9, {})  # the first message: after -1
    t.observe(0, c, link, Outbound(3, ReducerResult(1, 3, ReducerErr("x"))), 9, {})
    assert t.violations == []
    t.observe(0, c, link, Outbound(2, ReducerResult(2, 2, ReducerErr("x"))), 9, {})
    assert t.violations == [("DELIV-1", "client 0 got offset 2 after 3")]


def test_trace_observe_deliv_1_an_update_after_a_message_of_its_offset() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    t.observe(0, c, link, Outbound(3, ReducerResult(1, 3, ReducerErr("x"))), 9, {})
    t.observe(0, c, link, Outbound(3, TransactionUpdate(3, ())), 9, {})
    assert t.violations == [("DELIV-1", "client 0 got TransactionUpdate 3 after offset 3")]


def test_trace_observe_evt_2_an_update_flags_its_tables_as_the_schema_does() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    row = _stream_row(head=1, floor=1)
    update = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("sync_stream", (row,), event=True),)),))
    t.observe(0, c, link, Outbound(1, update), 9, {1: _db(sync_stream=(row,))})
    assert t.violations == [("EVT-2", "client 0 got sync_stream rows flagged event=True")]


def test_trace_observe_evt_2_checks_every_table_of_an_update_without_a_mirror() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    row, signal = _stream_row(head=1, floor=1), StreamSignal("s", "typing", "{}", "b" * 64, 0)
    update = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("sync_stream", (row,)),
                                                      TableRows("stream_signal", (signal,), event=False))),))
    t.observe(0, c, link, Outbound(1, update), 9, {1: _db(sync_stream=(row,))})
    assert t.violations == [("EVT-2", "client 0 got stream_signal rows flagged event=False")]


def test_trace_observe_stale_1_a_refusal_without_a_budget_is_judged_with_none() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    link.asked[7] = ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 2",)
    db = _db(sync_stream=(_stream_row(head=9, floor=5),), sync_event=tuple(_event(k) for k in range(5, 10)))
    no_budget = _stale(reasons=["retention_floor_breach", "replay_budget_exceeded"], epoch=1)  # budget 0: 7 > 0
    t.observe(0, c, link, Outbound(0, no_budget), 9, {0: db})
    assert t.violations == []


def test_trace_observe_deliv_2_names_at_most_two_missing_rows() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    rows = tuple(replace(_stream_row(head=1, floor=1), stream_id=f"s{k}") for k in range(3))
    link.subscribed[7] = ("SELECT * FROM sync_stream",)
    link.mirrors[7] = Mirror()
    t.observe(0, c, link, Outbound(1, TransactionUpdate(1, ())), 9, {1: _db(sync_stream=rows)})
    assert t.violations == [("DELIV-2", f"client 0 qs 7 at 1: missing {list(rows[:2])} extra []")]


def test_trace_observe_deliv_3_an_update_and_a_result_for_one_offset() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    t.observe(0, c, link, Outbound(3, TransactionUpdate(3, ())), 9, {})
    t.observe(0, c, link, Outbound(3, ReducerResult(1, 3, ReducerOk(None, ()))), 9, {})  # no rows: fine
    assert t.violations == []
    t.observe(0, c, link, Outbound(3, ReducerResult(2, 3, ReducerOk(None, (QuerySetUpdate(7, ()),)))), 9, {})
    assert t.violations == [("DELIV-3", "client 0 got both an update and a result for offset 3")]


def test_trace_observe_deliv_2_a_delete_of_a_row_never_had() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    row = _stream_row(head=1, floor=1)
    link.subscribed[7] = ("SELECT * FROM sync_stream",)
    link.mirrors[7] = Mirror()
    update = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("sync_stream", (), (row,)),)),))
    t.observe(0, c, link, Outbound(1, update), 9, {1: DbState()})
    assert t.violations == [("DELIV-2", f"client 0 got a delete of a row it never had: {row}")]


def test_trace_observe_a_stale_refusal_of_a_query_set_never_asked_is_not_judged() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    t.observe(0, c, link, Outbound(0, _stale(reasons=["epoch_changed"], replay_budget=100, epoch=2)), 9,
              {0: DbState()})
    assert t.violations == []


def test_trace_observe_client_seq_2_an_applied_event_named_twice() -> None:
    t, c = Trace(), _reader(last=1)
    t.seen[("s", 1, 1)] = H2
    t.observe_client(0, c)
    assert t.violations == [("SEQ-2", f"client 0 applied ('s', 1, 1) as {H1[:15]}, elsewhere {H2[:15]}")]


def test_trace_dur_2_epochs_after_recovery_are_above_every_epoch_seen() -> None:
    t = Trace()
    t.seen[("s", 3, 1)] = H1
    t.check_epochs_above(_db(sync_stream=(_stream_row(epoch=4, head=7, floor=8),)))
    assert t.violations == []
    t.check_epochs_above(_db(sync_stream=(_stream_row(epoch=3, head=7, floor=8),)))
    assert t.violations == [("DUR-2", "s: epoch after recovery 3 <= seen 3")]


def test_trace_observe_auth_1_a_row_the_client_may_not_read() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    foreign = SyncCheckpoint("x|s", "x", "s", "c" * 64, 1, 1, 0)  # another identity's checkpoint
    db = _db(sync_checkpoint=(foreign,))
    t.observe(0, c, link, Outbound(1, TransactionUpdate(1, (QuerySetUpdate(7, (TableRows(
        "sync_checkpoint", (foreign,)),)),))), 9, {1: db})
    assert t.violations == [("AUTH-1", "client 0 received SyncCheckpoint it may not read")]


def test_trace_observe_evt_2_no_event_rows_in_a_snapshot() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    signal = StreamSignal("s", "typing", "{}", "b" * 64, 0)
    t.observe(0, c, link, Outbound(0, SubscribeApplied(1, 7, (TableRows("stream_signal", (signal,), event=True),))),
              9, {0: DbState()})
    assert t.violations == [("EVT-2", "client 0 got event rows in a snapshot")]


def test_trace_observe_stale_3_a_resume_must_pin_stream_and_epoch() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    text = "SELECT * FROM sync_event WHERE seq > 2"
    link.asked[7] = (text,)
    t.observe(0, c, link, Outbound(0, SubscribeApplied(1, 7, ())), 9, {0: DbState()})
    assert t.violations == [("STALE-3", f"client 0 was subscribed to {text!r}, a resume without stream and epoch")]


def test_trace_observe_stale_1_a_resume_in_an_old_epoch() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    link.asked[7] = ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 2",)
    db = _db(sync_stream=(_stream_row(epoch=2, head=9, floor=1),), sync_event=tuple(_event(k, 2) for k in range(1, 10)))
    t.observe(0, c, link, Outbound(0, SubscribeApplied(1, 7, ())), 9, {0: db})
    assert t.violations == [("STALE-1", "client 0 resumed s from 2 though ('epoch_changed',)")]


@pytest.mark.parametrize("floor", [3, 4, 5])
def test_trace_observe_stale_1_and_2_a_resume_past_the_floor(floor: int) -> None:
    """Resuming after seq 2 needs seq 3 retained: a floor of 3 is fine, 4 or more is past it."""
    t, c, link = Trace(), _reader(), Link(1)
    link.asked[7] = ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 2",)
    db = _db(sync_stream=(_stream_row(head=9, floor=floor),), sync_event=tuple(_event(k) for k in range(floor, 10)))
    t.observe(0, c, link, Outbound(0, SubscribeApplied(1, 7, ())), 9, {0: db})
    assert t.violations == ([] if floor == 3 else [
        ("STALE-1", "client 0 resumed s from 2 though ('retention_floor_breach',)"),
        ("STALE-2", f"client 0 resumed s from 2 past floor {floor}")])


def test_trace_observe_stale_1_a_stale_cursor_must_give_the_right_reasons() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    link.asked[7] = ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 2",)
    db = _db(sync_stream=(_stream_row(head=9, floor=5),), sync_event=tuple(_event(k) for k in range(5, 10)))
    right = _stale(reasons=["retention_floor_breach"], replay_budget=100, epoch=1)
    t.observe(0, c, link, Outbound(0, right), 9, {0: db})
    assert t.violations == []
    wrong = _stale(reasons=["epoch_changed"], replay_budget=100, epoch=1)
    t.observe(0, c, link, Outbound(0, wrong), 9, {0: db})
    assert t.violations == [("STALE-1", "client 0 stale s reasons ('epoch_changed',), expected "
                                        "('retention_floor_breach',)")]


def test_trace_observe_deliv_2_mirrors_follow_updates_past_event_tables() -> None:
    """An update's event-table rows are skipped for the mirror (they are transient), the tables after them
    are not; a mirror that does not match the query set on the server's state is DELIV-2."""
    t, c, link = Trace(), _reader(), Link(1)
    row = _stream_row(head=1, floor=1)
    link.subscribed[7] = ("SELECT * FROM sync_stream",)
    link.mirrors[7] = Mirror()
    signal = StreamSignal("s", "typing", "{}", "b" * 64, 0)
    update = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("stream_signal", (signal,), event=True),
                                                      TableRows("sync_stream", (row,)))),))
    t.observe(0, c, link, Outbound(1, update), 9, {1: _db(sync_stream=(row,))})
    assert t.violations == []
    assert link.mirrors[7].rows == Counter({row: 1})
    t.observe(0, c, link, Outbound(2, TransactionUpdate(2, ())), 9, {2: DbState()})  # the row is gone, not told
    assert t.violations == [("DELIV-2", f"client 0 qs 7 at 2: missing [] extra {[row]}")]


def test_trace_observe_client_replay_1_applied_runs_have_no_holes() -> None:
    t = Trace()
    c = _reader(last=3)
    c.streams["s"].applied = [(1, H1), (3, H1)]
    t.observe_client(0, c)
    assert t.violations == [("REPLAY-1", "client 0 s applied [1, 3]")]


@pytest.mark.parametrize("rebootstraps", [0, 1])
def test_trace_observe_client_replay_1_a_watermark_never_goes_back(rebootstraps: int) -> None:
    t, c = Trace(), _reader(last=5, rebootstraps=rebootstraps)
    t.signals[(0, "s")] = rebootstraps
    t.observe_client(0, c)
    t.observe_client(0, c)  # nothing new: fine
    assert t.violations == []
    c.streams["s"].last = 3
    c.streams["s"].applied = c.streams["s"].applied[:3]
    t.observe_client(0, c)
    assert t.violations == [("REPLAY-1", "client 0 s went from 5 to 3 applying []")]


def test_trace_observe_client_cont_1_judges_this_clients_meetings_only() -> None:
    t, c = Trace(), _reader(last=5)
    c.streams["s"].continues = 1  # it continued ...
    t.signals[(0, "s")] = 1  # (on a stale signal: REPLAY-3 is content)
    t.meets[(1, "s")] = ((1, 5, 5, 0, 0), 2, True)  # (another client's meeting, left alone)
    t.meets[(0, "s")] = ((1, 5, 5, 0, 0), 2, False)  # ... into an epoch that does not continue it far enough
    t.observe_client(0, c)
    assert t.violations == [("CONT-1", "client 0 at (1, 5) continued s into epoch 2, which does not continue it "
                                       "far enough")]
    assert list(t.meets) == [(1, "s")]


def test_trace_observe_client_cont_1_a_view_that_should_have_continued() -> None:
    t, c = Trace(), _reader(epoch=2, last=5)  # in the new epoch with its watermark and events ...
    t.signals[(0, "s")] = 1
    t.meets[(0, "s")] = ((1, 5, 5, 0, 0), 2, True)
    t.observe_client(0, c)  # ... but not counted as a continue
    assert t.violations == [("CONT-1", "client 0 at (1, 5) did not continue s into epoch 2 (rebootstraps 0 -> 0)")]
    t, c = Trace(), _reader(epoch=2, last=5, continues=1)
    t.signals[(0, "s")] = 1
    t.meets[(0, "s")] = ((1, 5, 5, 0, 0), 2, True)
    t.observe_client(0, c)
    assert t.violations == []
    t, c = Trace(), _reader(epoch=1, last=5, continues=1)  # counted a continue but stayed in epoch 1
    t.signals[(0, "s")] = 1
    t.meets[(0, "s")] = ((1, 5, 5, 0, 0), 2, True)
    t.observe_client(0, c)
    assert t.violations == [("CONT-1", "client 0 at (1, 5) did not continue s into epoch 2 (rebootstraps 0 -> 0)")]


def test_trace_meet_is_taken_once_and_only_for_a_new_epoch() -> None:
    t, c = Trace(), _reader(epoch=1, last=5)
    t._meet(0, c, "s", 1, True)  # the view's own epoch: no meeting
    assert t.meets == {}
    t._meet(0, c, "s", 2, True)
    t._meet(0, c, "s", 3, False)  # the first meeting stands
    assert t.meets == {(0, "s"): ((1, 5, 5, 0, 0), 2, True)}


@pytest.mark.parametrize(("row", "ok"), [
    (_stream_row(epoch=2, cont=(1, 5), head=7, floor=6), True),   # floor = watermark + 1: nothing missed
    (_stream_row(epoch=2, cont=(1, 5), head=7, floor=7), False),  # seq 6 is gone
    (_stream_row(epoch=2, cont=(1, 4), head=7, floor=1), False),  # continues only up to 4
    (_stream_row(epoch=2, cont=(3, 9), head=9, floor=1, earlier=((1,), (5,))), True),  # through a chain
])
def test_trace_meetings_from_a_stream_row_of_a_new_epoch(row: SyncStream, ok: bool) -> None:
    t, c = Trace(), _reader(epoch=1, last=5)
    update = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("sync_stream", (row,)),)),))
    t.before_message(0, c, update)
    assert t.meets == {(0, "s"): ((1, 5, 5, 0, 0), 2, ok)}


def test_trace_meetings_from_a_stale_cursor_refusal() -> None:
    t, c = Trace(), _reader(epoch=1, last=5)
    t.before_message(0, c, _stale(reasons=["epoch_changed"], epoch=2, continues_epoch=1, continues_seq=6))
    assert t.meets == {(0, "s"): ((1, 5, 5, 0, 0), 2, True)}  # no earlier hops in the details: none needed
    t, c = Trace(), _reader(epoch=1, last=5)
    t.before_message(0, c, _stale(epoch=2, continues_epoch=1, continues_seq=6))  # no reasons given: not ok
    assert t.meets == {(0, "s"): ((1, 5, 5, 0, 0), 2, False)}
    t, c = Trace(), _reader(epoch=1, last=5)
    del c.streams["s"]  # a query set of a stream the client no longer follows
    t.before_message(0, c, _stale(reasons=["epoch_changed"], epoch=2, continues_epoch=1, continues_seq=6))
    assert t.meets == {}


def test_trace_stale_signals_are_counted_per_stream_not_for_a_rehydrating_view() -> None:
    stale_row = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("sync_stream", (_stream_row(head=9, floor=8),)),)),))
    t, c = Trace(), _reader(epoch=1, last=5)
    t.before_message(0, c, stale_row)  # floor 8 > watermark 5 + 1: a stale signal
    assert t.signals == Counter({(0, "s"): 1})
    t, c = Trace(), _reader(epoch=1, last=5, rehydrating=True)
    t.before_message(0, c, stale_row)  # a rehydrating view has no cursor to be stale
    assert t.signals == Counter()


def test_trace_stale_signals_read_every_query_set_of_a_message() -> None:
    t, c = Trace(), _reader(epoch=1, last=5)
    stale_row = TableRows("sync_stream", (_stream_row(head=9, floor=8),))
    t.before_message(0, c, TransactionUpdate(1, (QuerySetUpdate(5, (stale_row,)), QuerySetUpdate(7, (stale_row,)))))
    assert t.signals == Counter({(0, "s"): 1})  # query set 5 is not the client's: skipped, not the end


def test_trace_an_answer_to_a_message_that_showed_nothing_is_fine() -> None:
    t = Trace()
    t.after_message(0, _reader(), [])
    assert t.violations == []


def test_trace_observe_an_error_that_is_not_a_sync_error_is_not_judged() -> None:
    t, c, link = Trace(), _reader(), Link(1)
    link.asked[7] = ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 2",)
    t.observe(0, c, link, Outbound(0, SubscriptionError(3, 7, "internal error")), 9, {0: DbState()})
    assert t.violations == []


def test_trace_no_stale_signal_for_a_fresh_row_or_another_refusal() -> None:
    t, c = Trace(), _reader(epoch=1, last=5)
    fresh = TableRows("sync_stream", (_stream_row(head=9, floor=3),))  # same epoch, seq 6 retained
    t.before_message(0, c, TransactionUpdate(1, (QuerySetUpdate(7, (fresh,)),)))
    refused = SubscriptionError(3, 7, SyncError(ErrorCode.FORBIDDEN_STREAM, {"stream_id": "s"}).render())
    t.before_message(0, c, refused)
    assert t.signals == Counter()


def test_trace_meetings_skip_a_stream_row_of_a_stream_not_followed() -> None:
    t, c = Trace(), _reader(epoch=1, last=5)
    del c.streams["s"]
    t.before_message(0, c, TransactionUpdate(1, (QuerySetUpdate(7, (TableRows(
        "sync_stream", (_stream_row(epoch=2, cont=(1, 5), head=7, floor=6),)),)),)))
    assert t.meets == {}


def test_trace_replay_1_a_gap_shown_needs_a_resubscribe() -> None:
    gap = TransactionUpdate(1, (QuerySetUpdate(7, (TableRows("sync_event", (_event(7),)),)),))
    t, c = Trace(), _reader(epoch=1, last=5)
    t.before_message(0, c, gap)
    c.qs_stream[8] = "s"
    t.after_message(0, c, [Subscribe(4, 8, ("SELECT * FROM sync_stream WHERE stream_id = 's'",))])
    assert t.violations == []
    t, c = Trace(), _reader(epoch=1, last=5)
    t.before_message(0, c, gap)
    t.after_message(0, c, [])
    assert t.violations == [("REPLAY-1", "client 0 was shown a gap in s and did not resubscribe")]


# ------------------------------------------------------------------------------------------------ system
# spec.system.System's own checks (DELIV-3/4 per call, PRES-3, SLOW-1) shown failing on a planted server
# fault, and its actions (faults, healing) shown doing what their docstrings say.

WRITER = Claims("a" * 64, frozenset({"sync.append", "sync.subscribe", "presence.write"}), ("s*",))
UPSERT = ("sess0", "dev", "node", "online", "eu", 5000)


def _system(n: int = 2, policy: Policy | None = None, confirmed: bool = True, **kw: Any) -> System:
    sysm = System(policy or Policy(), [(f"c{k}", WRITER, confirmed) for k in range(n)], **kw)
    for k in range(n):
        sysm.connect(k)
    return sysm


def _pump(sysm: System) -> None:
    """Everything in flight handled and delivered, durability keeping up (no quiesce: no resync)."""
    moved = True
    while moved:
        moved = False
        sysm.advance_durable(sysm.server.committed)
        for i in list(sysm.links):
            while sysm.server_step(i) or sysm.deliver(i):
                moved = True


def _presence(sysm: System) -> SessionPresence:
    row = sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess0")
    assert row is not None
    return row


def test_system_remembers_the_connection_of_the_last_upsert_that_took_PRES_3() -> None:
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    assert sysm.last_upsert == {"sess0": sysm.links[0].conn_id}
    sysm.call(1, "upsert_presence", ("sess0", "dev", "node", "away", "eu", 7000))  # the same identity, elsewhere
    _pump(sysm)
    assert sysm.last_upsert == {"sess0": sysm.links[1].conn_id}
    sysm.call(0, "upsert_presence", ("sess0", "dev", "node", "sleeping", "eu", 5000))  # refused: not a status
    _pump(sysm)
    assert sysm.last_upsert == {"sess0": sysm.links[1].conn_id}
    assert sysm.trace.violations == []


def _marked(before: SessionPresence, status: str = "offline", reason: str | None = "disconnected") -> SessionPresence:
    return replace(before, status=status, offline_reason=reason)


ONLINE = SessionPresence("sess0", "a" * 64, "dev", "node", "online", "eu", 0, 5, None)


@pytest.mark.parametrize(("before", "after", "owner_open", "flagged"), [
    (ONLINE, _marked(ONLINE), True, True),                       # marked while its connection is open
    (ONLINE, _marked(ONLINE), False, False),                     # ... after it closed: right
    (ONLINE, _marked(ONLINE, reason="ttl_expired"), True, False),  # swept by TTL: not a disconnect mark
    (ONLINE, _marked(ONLINE, reason="explicit_offline"), True, False),
    (_marked(ONLINE, reason="ttl_expired"), _marked(ONLINE), True, False),  # already offline: no new mark
    (None, _marked(ONLINE), True, False),                        # a new row, not a mark
])
def test_system_check_marks_PRES_3(before: SessionPresence | None, after: SessionPresence, owner_open: bool,
                                   flagged: bool) -> None:
    sysm = _system()
    owner = sysm.links[0].conn_id if owner_open else 99
    sysm.last_upsert["sess0"] = owner
    sysm._check_marks(_db(session_presence=(before,) if before else ()), _db(session_presence=(after,)))
    expected = [("PRES-3", f"sess0 marked disconnected while connection {owner}, which upserted it last, is open")]
    assert sysm.trace.violations == (expected if flagged else [])


def test_system_check_marks_unknown_session_is_not_judged_PRES_3() -> None:
    sysm = _system()
    sysm._check_marks(_db(session_presence=(ONLINE,)), _db(session_presence=(_marked(ONLINE),)))
    assert sysm.trace.violations == []  # no upsert seen for it (e.g. before a restart): TTLs take over


def test_system_flags_a_committed_mark_while_the_upserting_connection_is_open_PRES_3() -> None:
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    row = _presence(sysm)
    bad = _marked(row)  # a planted server fault: marks the session though connection 0 is open
    db = DbState({**sysm.server.db.tables, "session_presence": (bad,)})
    assert sysm.server.system_tx(Ok(db, None, Delta((TableDelta("session_presence", (row,), (bad,)),))))
    sysm._after_server_step()
    conn = sysm.links[0].conn_id
    assert ("PRES-3", f"sess0 marked disconnected while connection {conn}, which upserted it last, is open") \
        in sysm.trace.violations


def test_system_after_heal_a_closed_connections_session_is_offline_PRES_3() -> None:
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    conn = sysm.links[0].conn_id
    sysm.disconnect(0)
    _pump(sysm)
    sysm.check_marks_after_heal()
    assert _presence(sysm).status == "offline" and sysm.trace.violations == []
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    conn = sysm.links[0].conn_id
    del sysm.server.conns[conn]  # a planted server fault: the connection is forgotten, its session not marked
    sysm.check_marks_after_heal()
    assert sysm.trace.violations == [("PRES-3", f"sess0: its connection {conn} closed, the session is still online")]


def test_system_a_server_close_that_is_not_a_slow_consumer_is_SLOW_1() -> None:
    sysm = _system()
    conn = sysm.links[0].conn_id
    sysm.server.close(conn)  # the server drops a connection with nothing queued
    sysm._after_server_step()
    assert 0 not in sysm.links
    assert sysm.trace.violations == [("SLOW-1", f"client 0's connection {conn} closed by the server (closed) with "
                                                f"0 queued, bound 64")]
    sysm = _system()
    sysm.clean_restart()  # a restart closes every connection: not SLOW-1
    assert sysm.links == {} and sysm.trace.violations == []


def _tamper(monkeypatch: pytest.MonkeyPatch, sysm: System, after: Any) -> None:
    real = sysm.server.handle

    def handle(conn_id: int, msg: Any) -> None:
        real(conn_id, msg)
        if isinstance(msg, CallReducer):
            after(sysm.server)

    monkeypatch.setattr(sysm.server, "handle", handle)


def test_system_a_correct_call_is_heard_once_by_each_follower_DELIV_3() -> None:
    sysm = _system(3)
    for i in range(3):
        sysm.follow(i, "s")
    _pump(sysm)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    _pump(sysm)
    assert [sysm.clients[i].streams["s"].last for i in range(3)] == [1, 1, 1]
    assert sysm.trace.violations == []


@pytest.mark.parametrize("who", ["other", "caller"])
def test_system_a_failed_call_heard_beyond_its_result_is_DELIV_4(monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    sysm = _system()
    _pump(sysm)
    target = sysm.links[1 if who == "other" else 0].conn_id
    offset = sysm.server.committed
    _tamper(monkeypatch, sysm, lambda server: server.conns[target].outbound.append(
        Outbound(offset, TransactionUpdate(offset, ()))))
    sysm.call(0, "append_sync_event", ("x", "k1", "{}", None, None))  # stream x is not granted: refused
    sysm.server_step(0)
    assert sysm.trace.violations == [("DELIV-4", f"failed append_sync_event: state changed False, offset {offset} -> "
                                                 f"{offset}, 1 other messages")]


def test_system_a_caller_that_also_gets_the_update_is_DELIV_3(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = _system()
    _pump(sysm)
    caller = sysm.links[0].conn_id
    offset = sysm.server.committed + 1
    _tamper(monkeypatch, sysm, lambda server: server.conns[caller].outbound.append(
        Outbound(offset, TransactionUpdate(offset, ()))))
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.server_step(0)
    assert sysm.trace.violations == [("DELIV-3", f"append_sync_event committed at {offset}: the caller's result has "
                                                 f"offset {offset} or it also got the TransactionUpdate")]


def test_system_another_client_hearing_a_call_twice_is_DELIV_3(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = _system()
    _pump(sysm)
    other = sysm.links[1].conn_id
    offset = sysm.server.committed + 1
    _tamper(monkeypatch, sysm, lambda server: server.conns[other].outbound.extend(
        [Outbound(offset, TransactionUpdate(offset, ()))] * 2))
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.server_step(0)
    assert sysm.trace.violations == [("DELIV-3", f"connection {other} heard of offset {offset} as "
                                                 f"['TransactionUpdate', 'TransactionUpdate']")]


def test_system_a_no_op_call_heard_by_others_is_DELIV_4(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = _system()
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    _pump(sysm)
    other = sysm.links[1].conn_id
    offset = sysm.server.committed
    _tamper(monkeypatch, sysm, lambda server: server.conns[other].outbound.append(
        Outbound(offset, TransactionUpdate(offset, ()))))
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))  # a retry: deduplicated, writes nothing
    sysm.server_step(0)
    assert sysm.server.committed == offset
    assert sysm.trace.violations == [("DELIV-4", "no-op append_sync_event was heard by others or wrote")]


def test_system_reconnect_leaving_old_open_then_reap() -> None:
    sysm = _system()
    old = sysm.links[0].conn_id
    assert sysm.reconnect_leaving_old_open(0)
    assert sysm.zombies == [old] and old in sysm.server.conns and sysm.links[0].conn_id != old
    sysm.reap()
    assert sysm.zombies == [] and old not in sysm.server.conns and sysm.links[0].conn_id in sysm.server.conns
    sysm.disconnect(0)
    assert not sysm.reconnect_leaving_old_open(0)  # nothing to leave open
    assert 0 not in sysm.links and sysm.trace.violations == []


def test_system_defaults_queue_bound_64_and_8_undurable_transactions() -> None:
    sysm = System(Policy(), [])
    assert (sysm.server.max_queue, sysm.server.max_undurable) == (64, 8)


def test_system_server_step_waits_for_durability() -> None:
    sysm = _system(max_undurable=1)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.call(0, "append_sync_event", ("s", "k2", "{}", None, None))
    assert sysm.server_step(0)
    assert not sysm.server_step(0)  # one undurable transaction: the next call waits in the inbox
    assert len(sysm.links[0].inbox) == 1 and len(sysm.ledger_events()) == 1
    sysm.advance_durable(sysm.server.committed)
    assert sysm.server_step(0) and len(sysm.ledger_events()) == 2
    assert not sysm.server_step(0)  # nothing left
    assert sysm.trace.violations == []


def _closing_step(monkeypatch: pytest.MonkeyPatch, fault: Any = None, failing: bool = False,
                  before: Any = None, sessions: tuple[str, ...] = ("sess1",),
                  call: tuple[str, tuple[Any, ...]] | None = None) -> tuple[System, int]:
    """A call step in which a connection closes: c1 follows ``s`` and owns a live session but reads nothing
    (queue bound 3); c2 follows ``s`` and watches presence.  c0 appends three times (c1's queue is full),
    then the step: c0's fourth append (its fanout closes c1 as a slow consumer) or, ``failing``, c1's own
    refused append (its result closes it).  c1's session mark commits after the call, in the same step,
    and c2 hears of it.  ``fault(system, c1's connection)`` is planted in that step only, after the server
    handled the call.  ``before(system)`` runs just before the step; ``sessions``: those c1 owns; ``call``:
    c1's own call in the step instead (its result closes it).  Returns the system (nothing delivered since
    the step) and c1's connection."""
    sysm = _system(3, max_queue=3)
    for i in range(3):
        sysm.follow(i, "s")
    sysm._send(2, [Subscribe(900, 900, ("SELECT * FROM session_presence",))])
    for session in sessions:
        sysm.call(1, "upsert_presence", (session, "dev", "node", "online", "eu", 5000))
    _pump(sysm)
    slow = sysm.links[1].conn_id
    for k in range(3):
        sysm.call(0, "append_sync_event", ("s", f"k{k}", "{}", None, None))
        sysm.server_step(0)
        sysm.advance_durable(sysm.server.committed)
        for i in (0, 2):
            while sysm.deliver(i):
                pass
    assert slow in sysm.server.conns and sysm.trace.violations == []
    if fault is not None:
        _tamper(monkeypatch, sysm, lambda server: fault(sysm, slow))
    if before is not None:
        before(sysm)
    caller = 1 if failing or call else 0
    reducer, args = call or ("append_sync_event", ("x" if failing else "s", "k9", "{}", None, None))  # x: not granted
    sysm.call(caller, reducer, args)
    sysm.server_step(caller)
    assert slow not in sysm.server.conns and 1 not in sysm.links
    return sysm, slow


@pytest.mark.parametrize("failing", [False, True])
def test_system_a_call_step_that_closes_a_slow_consumer_is_judged_not_skipped(monkeypatch: pytest.MonkeyPatch,
                                                                               failing: bool) -> None:
    """The step closes c1 and commits its session mark after the call: both are modelled, nothing flagged."""
    sysm, _slow = _closing_step(monkeypatch, failing=failing)
    marked = sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess1")
    assert marked is not None and (marked.status, marked.offline_reason) == ("offline", "disconnected")
    assert sysm.server.committed == (5 if failing else 6)  # the upsert, the appends, the mark
    assert sysm.trace.violations == []


def _watcher(sysm: System) -> list[Outbound]:
    return sysm.server.conns[sysm.links[2].conn_id].outbound


PLANTED_IN_A_CLOSING_STEP: dict[str, tuple[Any, bool, str]] = {
    # name: (the fault, planted after the server handled the step's call; the call fails; what flags it)
    "another client hears the call twice": (lambda sysm, slow: _watcher(sysm).append(
        next(o for o in _watcher(sysm) if o.offset == sysm.server.committed - 1)), False, "DELIV-3"),
    "a client hears the presence marks twice": (lambda sysm, slow: _watcher(sysm).append(_watcher(sysm)[-1]),
                                                False, "DELIV-3"),
    "the closed connection is queued more": (lambda sysm, slow: sysm.conn_objs[slow].outbound.append(
        Outbound(sysm.server.committed, TransactionUpdate(sysm.server.committed, ()))), False, "SLOW-1"),
    "the step also commits a write no close explains": (lambda sysm, slow: sysm.server.call_detached(
        WRITER, "upsert_presence", ("sess7", "dev", "node", "online", "eu", 5000)), False, "DELIV-3"),
    "the failed call is heard by another client": (lambda sysm, slow: _watcher(sysm).append(
        Outbound(sysm.server.committed - 1, TransactionUpdate(sysm.server.committed - 1, ()))), True, "DELIV-4"),
    "the failed call takes an offset": (lambda sysm, slow: setattr(sysm.server, "log", replace(
        sysm.server.log, committed=sysm.server.log.committed + 1)), True, "DELIV-4"),
}
"""Faults a closing step could hide: the check used to return at once when a connection closed in the step
(a slow consumer's marks commit in a transaction of their own), so it flagged none of them."""


@pytest.mark.parametrize("name", sorted(PLANTED_IN_A_CLOSING_STEP))
def test_system_a_fault_in_a_closing_step_is_flagged(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    fault, failing, inv = PLANTED_IN_A_CLOSING_STEP[name]
    sysm, _slow = _closing_step(monkeypatch, fault, failing=failing)
    assert {v[0] for v in sysm.trace.violations} == {inv}, sysm.trace.violations


def _at_expiry(dt: int) -> Any:
    def before(sysm: System) -> None:  # the clock at sess1's expiry + dt, no sweep run: the close finds it
        row = sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess1")
        assert row is not None
        sysm.server.now = row.expires_at + dt
    return before


LEGAL_CLOSING_STEPS: dict[str, dict[str, Any]] = {
    # name: _closing_step's arguments (all three clients share one identity)
    "the closed connection owns two sessions": {"sessions": ("sess1", "sess1b")},
    "two sessions, the call fails": {"sessions": ("sess1", "sess1b"), "failing": True},
    "the close finds its session's TTL run out exactly now": {"before": _at_expiry(0)},
    "the close comes 1 us before the expiry": {"before": _at_expiry(-1)},
    "the close comes after the expiry, the call fails": {"before": _at_expiry(1), "failing": True},
    "the closed connection's own upsert closes it": {"call": ("upsert_presence",
                                                             ("sess1c", "dev", "node", "online", "eu", 5000))},
}


@pytest.mark.parametrize("name", sorted(LEGAL_CLOSING_STEPS))
def test_system_a_legal_closing_step_is_not_flagged(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """What a close may legally do in a call step: mark several sessions at once, ``ttl_expired`` at the very
    expiry (last_seen kept), ``disconnected`` just before it, after a failed call, or take offline the session
    the closed caller's own call just upserted."""
    sysm, _slow = _closing_step(monkeypatch, **LEGAL_CLOSING_STEPS[name])
    marked = {r.session_id: (r.status, r.offline_reason) for r in sysm.server.db.of_type(SessionPresence)}
    assert set(marked.values()) <= {("offline", "disconnected"), ("offline", "ttl_expired")}, marked
    assert sysm.trace.violations == []


def _split_marks(monkeypatch: pytest.MonkeyPatch) -> Any:
    def before(sysm: System) -> None:  # a close's marks: the first session now, the rest as if another close's
        real = spec.harness.d.mark_disconnected

        def mark(db: DbState, now: int, owners: Any, identity: str, conn_id: int, sessions: frozenset[str]) -> Any:
            still = sorted(s for s in sessions if owners.get(s) == conn_id)
            if len(still) > 1:
                sysm.server._disconnects.append((identity, conn_id, frozenset(still[1:])))
                sessions = frozenset(still[:1])
            return real(db, now, owners, identity, conn_id, sessions)
        monkeypatch.setattr(spec.harness.d, "mark_disconnected", mark)
    return before


def _marks_unowned(monkeypatch: pytest.MonkeyPatch) -> Any:
    def before(sysm: System) -> None:  # sess7, upserted over HTTP (no connection owns it), taken offline too
        sysm.server.call_detached(WRITER, "upsert_presence", ("sess7", "dev", "node", "online", "eu", 5000))
        sysm.advance_durable(sysm.server.committed)
        for i in (0, 2):
            while sysm.deliver(i):
                pass
        real = spec.delivery.disconnect_sessions
        monkeypatch.setattr(spec.delivery, "disconnect_sessions",
                            lambda db, now, identity, sessions: real(db, now, identity, sessions | {"sess7"}))
    return before


@pytest.mark.parametrize(("plant", "inv"), [(_split_marks, "DELIV-3"), (_marks_unowned, "PRES-3")])
def test_system_marks_no_close_explains_are_flagged(monkeypatch: pytest.MonkeyPatch, plant: Any, inv: str) -> None:
    """A close's marks are one transaction, over the sessions that connection upserted last: one close's marks
    split in two is flagged as DELIV-3 (a transaction no close explains); a session no connection owns (an
    HTTP upsert, ADR-0003 decision 4) taken offline under cover of a close as PRES-3 (a close marked a
    session its connection did not upsert last)."""
    sysm, _slow = _closing_step(monkeypatch, before=plant(monkeypatch), sessions=("sess1", "sess1b"))
    assert {v[0] for v in sysm.trace.violations} == {inv}, sysm.trace.violations


def test_system_call_delivery_is_not_judged_for_a_caller_that_was_not_live() -> None:
    sysm = _system()
    msg = CallReducer(5, "append_sync_event", ("s", "k1", "{}", None, None))
    queues = {cid: (conn, len(conn.outbound)) for cid, conn in sysm.server.conns.items()}
    sysm._check_call_delivery(99, msg, sysm.server.db, sysm.server.committed, queues)
    assert sysm.trace.violations == []
    del queues[sysm.links[0].conn_id]
    sysm._check_call_delivery(sysm.links[0].conn_id, msg, sysm.server.db, sysm.server.committed, queues)
    assert sysm.trace.violations == []


@pytest.mark.parametrize(("queued", "flagged"), [(2, True), (3, False)])
def test_system_a_slow_consumer_close_only_past_the_bound_SLOW_1(queued: int, flagged: bool) -> None:
    sysm = _system(max_queue=2)
    conn = sysm.links[0].conn_id
    sysm.server.conns[conn].outbound.extend([Outbound(0, TransactionUpdate(0, ()))] * queued)
    sysm.server.close(conn, SLOW_CONSUMER_REASON)
    sysm._drop_dead_links()
    expected = [("SLOW-1", f"client 0's connection {conn} closed by the server (slow_consumer) with {queued} queued, "
                           f"bound 2")]
    assert sysm.trace.violations == (expected if flagged else [])


def test_system_a_sweep_that_leaves_an_expired_session_live_is_PRES_2(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)  # ttl 5000 ms
    _pump(sysm)
    row = _presence(sysm)

    def lazy(db: DbState, now: int) -> Ok:  # a planted sweep: touches the row, leaves it online
        touched = replace(row, region="us")
        return Ok(DbState({**db.tables, "session_presence": (touched,)}), None,
                  Delta((TableDelta("session_presence", (row,), (touched,)),)))

    monkeypatch.setattr(spec.system, "presence_sweep", lazy)
    sysm.tick(6_000_000)
    assert ("PRES-2", "presence sess0 live past expiry") in sysm.trace.violations


def test_system_drain_delivers_a_disconnect_mark_that_waited_for_durability() -> None:
    """A drain's first round makes the waiting mark durable-eligible and commits it; the confirmed watcher
    can take it only in the next round (after the next advance): deliveries alone are progress."""
    sysm = System(Policy(), [("c0", WRITER, False), ("c1", WRITER, True), ("c2", WRITER, True)], max_undurable=1)
    for k in range(3):
        sysm.connect(k)
    sysm._send(1, [Subscribe(900, 900, ("SELECT * FROM session_presence",))])
    sysm.call(2, "upsert_presence", ("sess2", "dev", "node", "online", "eu", 5000))
    _pump(sysm)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    assert sysm.server_step(0)  # one undurable transaction: the bound
    sysm.disconnect(2)  # its mark waits for durability
    sysm._drain(100)
    assert {cid: conn.outbound for cid, conn in sysm.server.conns.items()} == {
        sysm.links[k].conn_id: [] for k in range(3)}
    assert sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess2").status == "offline"  # type: ignore[union-attr]
    assert sysm.trace.violations == []


def test_system_a_crash_that_keeps_an_undurable_commit_is_DUR_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """The initial state (offset 0) is the durable state a crash falls back to when nothing else is durable."""
    sysm = _system(confirmed=False)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    assert sysm.server_step(0) and sysm.server.durable == 0  # offset 1 committed, only offset 0 durable
    server, real = sysm.server, sysm.server.crash
    ghost = replace(ONLINE, session_id="ghost")

    def haunted() -> None:  # a planted recovery that brings back a row the durable state never had
        real()
        server.log = replace(server.log, db=DbState({**server.db.tables, "session_presence": (ghost,)}))

    monkeypatch.setattr(server, "crash", haunted)
    sysm.crash()
    assert ("DUR-1", "state after crash differs from the durable state at 0") in sysm.trace.violations


def test_system_a_client_that_forgets_its_watermarks_on_a_drop_is_SLOW_1(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = _system()
    sysm.follow(1, "s")
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    _pump(sysm)
    client = sysm.clients[1]
    assert client.streams["s"].last == 1
    real = client.on_disconnect

    def forgetful() -> None:  # a planted client bug: a drop resets its views
        real()
        client.streams["s"] = StreamView(epoch=client.streams["s"].epoch)

    monkeypatch.setattr(client, "on_disconnect", forgetful)
    sysm.server.close(sysm.links[1].conn_id, "server restart")  # (a restart's close: not itself SLOW-1)
    sysm._drop_dead_links()
    assert sysm.trace.violations == [("SLOW-1", "client 1 lost its watermarks on a disconnect")]


def test_system_tracks_the_snapshot_at_offset_0() -> None:
    sysm = _system()
    sysm.follow(1, "s")
    _pump(sysm)  # the stream's snapshot answers at offset 0, before any commit
    assert sysm.server.committed == 0 and set(sysm.links[1].mirrors) == set(sysm.links[1].subscribed) != set()


def test_system_a_query_set_id_reused_after_an_unsubscribe_starts_a_new_mirror() -> None:
    sysm = _system()
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    _pump(sysm)
    sysm._send(1, [Subscribe(900, 900, ("SELECT * FROM sync_stream",))])
    _pump(sysm)
    assert sysm.links[1].mirrors[900].rows != Counter()
    sysm._send(1, [Unsubscribe(901, 900), Subscribe(902, 900, ("SELECT * FROM session_presence",))])
    _pump(sysm)
    assert sysm.links[1].mirrors[900].rows == Counter() and sysm.trace.violations == []


def test_system_drain_leaves_nothing_in_flight() -> None:
    sysm = _system(confirmed=False)
    _pump(sysm)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm._drain(100)
    assert sysm.links[0].inbox == [] and sysm.clients[0].pending == {}
    assert len(sysm.ledger_events()) == 1
    with pytest.raises(AssertionError, match=r"^the system did not quiesce$"):
        sysm.quiesce(max_steps=0)


def test_system_quiesce_heals_a_lost_frame() -> None:
    sysm = _system()
    sysm.follow(1, "s")
    _pump(sysm)
    for k in ("k1", "k2"):
        sysm.call(0, "append_sync_event", ("s", k, "{}", None, None))
        sysm.server_step(0)
    sysm.advance_durable(sysm.server.committed)
    assert sysm.lose_frame(1)
    sysm.quiesce()
    assert sysm.clients[1].streams["s"].last == 2 and sysm.trace.violations == []


def test_system_lose_frame_drops_the_next_update_only() -> None:
    sysm = _system()
    sysm.follow(1, "s")
    _pump(sysm)
    assert not sysm.lose_frame(1)  # nothing queued
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.server_step(0)
    queue = sysm.server.conns[sysm.links[1].conn_id].outbound
    assert [type(o.message) for o in queue] == [TransactionUpdate]
    qs = queue[0].message.query_sets[0].query_set_id  # type: ignore[union-attr]
    assert sysm.lose_frame(1)
    assert queue == [] and sysm.links[1].lost_qs == {qs} and qs not in sysm.links[1].mirrors
    sysm.disconnect(1)
    assert not sysm.lose_frame(1)  # no link


def test_system_duplicate_frame_delivers_the_next_update_twice() -> None:
    sysm = _system()
    sysm.follow(1, "s")
    _pump(sysm)
    assert not sysm.duplicate_frame(1)  # nothing queued
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.server_step(0)
    assert not sysm.duplicate_frame(1)  # not released yet: not durable (a confirmed reader)
    sysm.advance_durable(sysm.server.committed)
    assert not sysm.duplicate_frame(0)  # the caller's next message is its ReducerResult, not an update
    assert sysm.duplicate_frame(1)
    assert sysm.clients[1].streams["s"].last == 1  # applied once ...
    assert sysm.deliver(1)
    assert sysm.clients[1].streams["s"].last == 1  # ... the second copy dropped
    assert sysm.trace.violations == []
    sysm.disconnect(1)
    assert not sysm.duplicate_frame(1)  # no link


@pytest.mark.parametrize("deaf", [False, True])
def test_system_a_duplicated_frame_that_shows_a_gap_must_be_answered_REPLAY_1(
        monkeypatch: pytest.MonkeyPatch, deaf: bool) -> None:
    """The first copy is the one the client acts on: a gap it shows is answered by a resubscribe (a
    planted deaf client drops it: REPLAY-1)."""
    sysm = _system()
    sysm.follow(1, "s")
    _pump(sysm)
    for k in ("k1", "k2"):
        sysm.call(0, "append_sync_event", ("s", k, "{}", None, None))
        sysm.server_step(0)
    sysm.advance_durable(sysm.server.committed)
    assert sysm.lose_frame(1)  # seq 1 lost: the next update shows a gap
    if deaf:
        client = sysm.clients[1]
        real = client.on_message
        monkeypatch.setattr(client, "on_message", lambda msg: [m for m in real(msg) if not isinstance(m, Subscribe)])
    assert sysm.duplicate_frame(1)
    if deaf:
        assert sysm.trace.violations == [("REPLAY-1", "client 1 was shown a gap in s and did not resubscribe")]
    else:
        assert any(isinstance(m, Subscribe) for m in sysm.links[1].inbox) and sysm.trace.violations == []
        sysm.quiesce()
        assert sysm.clients[1].streams["s"].last == 2 and sysm.trace.violations == []


def test_system_resend_repeats_the_oldest_unanswered_call() -> None:
    sysm = _system()
    _pump(sysm)
    assert not sysm.resend(0)  # nothing pending
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.call(0, "append_sync_event", ("s", "k2", "{}", None, None))
    first, second = sysm.links[0].inbox
    assert sysm.resend(0)
    assert sysm.links[0].inbox == [first, second, first]
    _pump(sysm)  # the duplicate is answered from the idempotency key
    assert [e.idempotency_key for e in sysm.ledger_events()] == ["k1", "k2"] and sysm.trace.violations == []
    sysm.call(0, "append_sync_event", ("s", "k3", "{}", None, None))
    sysm.disconnect(0)
    assert sysm.clients[0].pending and not sysm.resend(0)  # not connected


def test_system_disconnect_and_crash_client() -> None:
    sysm = _system()
    conn = sysm.links[0].conn_id
    sysm.disconnect(0)
    assert conn not in sysm.server.conns and 0 not in sysm.links
    sysm.disconnect(0)  # again: nothing to do
    sysm.follow(1, "s")
    _pump(sysm)
    conn = sysm.links[1].conn_id
    sysm.crash_client(1)
    assert conn not in sysm.server.conns and 1 not in sysm.links
    sysm.crash_client(1)  # a crash while disconnected: restarts from the store all the same
    assert sysm.clients[1].streams["s"].epoch == 1 and sysm.trace.violations == []


def test_system_an_unclean_restart_loses_only_the_undurable_suffix() -> None:
    sysm = _system(confirmed=False)
    sysm.follow(1, "s")
    _pump(sysm)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.server_step(0)
    sysm.advance_durable(sysm.server.committed)
    for k in ("k2", "k3"):
        sysm.call(0, "append_sync_event", ("s", k, "{}", None, None))
        sysm.server_step(0)
    sysm.crash()
    assert [e.idempotency_key for e in sysm.ledger_events()] == ["k1"]
    sysm.quiesce()
    assert sysm.trace.violations == []


def test_system_reset_epoch_as_admin_waits_for_durability() -> None:
    sysm = _system(max_undurable=1)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))
    sysm.server_step(0)
    epoch = sysm.server.db.find(SyncStream, lambda r: r.stream_id == "s").epoch  # type: ignore[union-attr]
    sysm.reset_epoch("s")  # one undurable transaction already: the admin call waits
    assert sysm.server.db.find(SyncStream, lambda r: r.stream_id == "s").epoch == epoch  # type: ignore[union-attr]
    sysm.advance_durable(sysm.server.committed)
    sysm.reset_epoch("s")
    assert sysm.server.db.find(SyncStream, lambda r: r.stream_id == "s").epoch > epoch  # type: ignore[union-attr]
    assert sysm.trace.violations == []


def test_system_tick_sweeps_expired_sessions() -> None:
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)  # ttl 5000 ms
    _pump(sysm)
    sysm.tick(4_000_000)
    assert _presence(sysm).status == "online"
    sysm.tick(2_000_000)
    assert (_presence(sysm).status, _presence(sysm).offline_reason) == ("offline", "ttl_expired")
    assert sysm.trace.violations == []


def test_system_compact_uses_the_systems_policy() -> None:
    sysm = _system(policy=Policy(retain_offline_presence_us=1_000))
    sysm.call(0, "upsert_presence", ("sess0", "dev", "node", "offline", "eu", 5000))
    _pump(sysm)
    sysm.tick(500)
    sysm.compact()  # 500 us since last seen: kept
    assert _presence(sysm).status == "offline"
    sysm.tick(1_000)
    sysm.compact()  # 1500 us: past the system's 1 ms window (the default keeps it a day)
    assert sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess0") is None
    assert sysm.trace.violations == []


def test_system_a_compaction_that_takes_too_much_is_RET_1(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = _system()
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    row = _presence(sysm)

    def greedy(db: DbState, now: int, policy: Policy) -> Ok:  # a planted compaction: drops a live session
        return Ok(DbState({**db.tables, "session_presence": ()}), None,
                  Delta((TableDelta("session_presence", (row,), ()),)))

    monkeypatch.setattr(spec.system, "compact", greedy)
    sysm.compact()
    assert ("RET-1", f"session_presence sess0: removed at {sysm.server.now}") in sysm.trace.violations


def test_system_an_unsubscribed_query_sets_rows_are_no_longer_judged_DELIV_2() -> None:
    sysm = _system()
    _pump(sysm)
    sysm._send(1, [Subscribe(900, 900, ("SELECT * FROM sync_stream",)), Unsubscribe(901, 900)])
    _pump(sysm)
    sysm.follow(1, "s")  # (so client 1 hears of the next transaction)
    sysm.call(0, "append_sync_event", ("s", "k1", "{}", None, None))  # stream s's row appears
    _pump(sysm)
    assert sysm.clients[1].streams["s"].last == 1
    assert 900 not in sysm.links[1].subscribed
    assert sysm.trace.violations == []


def test_a_short_derandomized_system_machine_run_sees_no_violation() -> None:
    """The system machine (tests/spec/test_machines.py runs it long), briefly and the same every time:
    every fault, every client action, the convergence check after each heal -- a correct system
    raises no violation and quiesces."""
    run_state_machine_as_test(SystemMachine, settings=settings(
        max_examples=30, stateful_step_count=50, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck)))


def _first_upserter_keeps(monkeypatch: pytest.MonkeyPatch) -> Any:
    def before(sysm: System) -> None:  # c2 re-upserts sess1 and closes; the server keeps c1 as its owner
        monkeypatch.setattr(spec.delivery, "upserted", lambda owners, session, conn_id: (
            {session: conn_id, **owners} if conn_id is not None else dict(owners)))  # the first upserter wins
        sysm.call(2, "upsert_presence", ("sess1", "dev", "node", "online", "eu", 5000))
        sysm.server_step(2)
        sysm.advance_durable(sysm.server.committed)
        for i in (0, 2):  # not c1: it stays full
            while sysm.deliver(i):
                pass
        sysm.disconnect(2)  # its close marks nothing: the server thinks c1 owns sess1
    return before


def test_system_the_reconnect_flap_without_the_plant_is_legal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same steps with the real ownership: c2's close takes sess1 offline, c1's close marks nothing."""
    def before(sysm: System) -> None:
        sysm.call(2, "upsert_presence", ("sess1", "dev", "node", "online", "eu", 5000))
        sysm.server_step(2)
        sysm.advance_durable(sysm.server.committed)
        sysm.disconnect(2)
        assert sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess1").status == "offline"  # type: ignore[union-attr]
    sysm, _slow = _closing_step(monkeypatch, before=before)
    assert sysm.trace.violations == []


def test_system_a_close_marking_a_session_it_did_not_upsert_last_is_PRES_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconnect flap (the mutant ``first_upserter_marks``): c1 upserted sess1, c2 re-upserted it and
    closed, then c1 closes in a call step and takes sess1 offline.  The connection that made its last
    upsert (c2) is closed already, so the open-owner check has nothing to flag; the step's mark transaction
    is the marks of a connection that did not upsert sess1 last: PRES-3's first clause, not a delivery
    fault (it was cited as DELIV-3, a transaction no close explains)."""
    sysm, _slow = _closing_step(monkeypatch, before=_first_upserter_keeps(monkeypatch))
    marked = sysm.server.db.find(SessionPresence, lambda r: r.session_id == "sess1")
    assert marked is not None and (marked.status, marked.offline_reason) == ("offline", "disconnected")
    assert {v[0] for v in sysm.trace.violations} == {"PRES-3"}, sysm.trace.violations


def test_system_the_usurped_marks_name_exactly_the_sessions_taken_PRES_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flap with more around it: c1 upserted sess1 and sess1b, c2 re-upserted sess1 and closed (the plant:
    the server keeps c1 as its owner), sess7 was upserted over HTTP (no owner; the plant takes it offline under
    c1's close too), and c0 holds sess0, live and untouched.  c1's close in a call step marks sess1, sess1b and
    sess7: the PRES-3 it is flagged as names the sessions c1 did not upsert last -- sess1 (c2's) and sess7
    (nobody's), not sess1b (c1's own) nor sess0 (unchanged) -- and their last upserters, c2's connection and
    None.  (Kills the message mutants of ``System._usurped_marks``: support.mutation_verdicts.)"""
    watched: dict[str, int] = {}

    def before(sysm: System) -> None:
        sysm.call(0, "upsert_presence", ("sess0", "dev", "node", "online", "eu", 5000))
        sysm.server_step(0)
        watched["c2"] = sysm.links[2].conn_id
        _marks_unowned(monkeypatch)(sysm)
        _first_upserter_keeps(monkeypatch)(sysm)
    sysm, slow = _closing_step(monkeypatch, before=before, sessions=("sess1", "sess1b"))
    rows = {r.session_id: (r.status, r.offline_reason) for r in sysm.server.db.of_type(SessionPresence)}
    marked = ("offline", "disconnected")
    assert rows == {"sess0": ("online", None), "sess1": marked, "sess1b": marked, "sess7": marked}
    usurped = [v for v in sysm.trace.violations if "closed in a" in v[1]]
    assert usurped == [("PRES-3", f"connection {slow}, closed in a append_sync_event step, marked ['sess1', 'sess7'] "
                                  f"offline, whose last upsert was made by connection(s) [{watched['c2']}, None]")]


def _flap_in_close_steps(monkeypatch: pytest.MonkeyPatch, plant: bool) -> tuple[System, list[str]]:
    """The reconnect flap as close steps, not a call step: c0 upserts sess0 on connection A, reconnects leaving
    A open (half-open), upserts sess0 again on B (B made the last upsert), then B is closed (disconnect) and
    later A (reap).  ``plant``: the server keeps the first upserter (``first_upserter_marks``).  Returns the
    system and the status of sess0 after each close."""
    if plant:
        monkeypatch.setattr(spec.delivery, "upserted", lambda owners, session, conn_id: (
            {session: conn_id, **owners} if conn_id is not None else dict(owners)))
    sysm = _system(1)
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    assert sysm.reconnect_leaving_old_open(0)
    sysm.call(0, "upsert_presence", UPSERT)
    _pump(sysm)
    seen = []
    sysm.disconnect(0)
    seen.append(_presence(sysm).status)
    sysm.reap()
    seen.append(_presence(sysm).status)
    sysm.check_marks_after_heal()
    return sysm, seen


def test_system_a_close_after_the_last_upserters_close_marks_nothing_PRES_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRES-3's blind spot (twelfth session): with the plant, B's close marks nothing and A's close -- A did not
    make the last upsert -- takes sess0 offline a step later.  The open-owner check sees nothing (B is closed by
    then) and neither does the after-heal check (sess0 is offline by then); but at B's close the marks could
    commit (the server can commit: none wait), so sess0, whose last upserting connection is closed, must be
    offline already -- flagged as PRES-3 at that step.  Without the plant the same steps are legal: B's close
    takes sess0 offline, A's marks nothing."""
    sysm, seen = _flap_in_close_steps(monkeypatch, plant=False)
    assert seen == ["offline", "offline"] and sysm.trace.violations == []
    monkeypatch.undo()
    sysm, seen = _flap_in_close_steps(monkeypatch, plant=True)
    assert seen == ["online", "offline"]
    assert [v[0] for v in sysm.trace.violations][:1] == ["PRES-3"], sysm.trace.violations


def test_system_marks_held_by_the_durability_bound_are_not_due_yet_PRES_3() -> None:
    """The other side of ``System._check_marks_due``: c0 upserts sess0 (one undurable transaction: the bound,
    max_undurable 1, is reached) and its connection closes; its marks wait for durability, so sess0 stays
    online with its last upserting connection closed -- legal, nothing flagged -- until durability moves and
    the marks commit."""
    sysm = _system(1, max_undurable=1)
    sysm.call(0, "upsert_presence", UPSERT)
    assert sysm.server_step(0) and not sysm.server.can_commit()
    sysm.disconnect(0)
    assert (_presence(sysm).status, sysm.trace.violations) == ("online", [])
    sysm.advance_durable(1)
    assert (_presence(sysm).status, _presence(sysm).offline_reason, sysm.trace.violations) == (
        "offline", "disconnected", [])
