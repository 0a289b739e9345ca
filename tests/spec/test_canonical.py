"""HASH-2: properties of canonical JSON (spec/canonical.py, DESIGN §2 "Canonical JSON").

The reference point is the rule's own definition: the canonical text of any JSON value within
the rules is ``json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, however
the input spelled it (layout, key order, escapes); anything else is rejected with
``non_canonical_payload`` and exactly the reason for its one defect.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from spec import canonical
from spec.canonical import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    REASONS,
    SCAN_DEPTH_LIMIT,
    canonical_and_hash,
    canonicalize,
    is_canonical,
    parse_strict,
    payload_hash,
)
from spec.errors import ErrorCode, SyncError

HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
NAMED = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}

# ------------------------------------------------------------------------------ strategies

safe_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | safe_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(safe_text, children, max_size=5),
    max_leaves=25,
)
small_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(safe_text, children, max_size=3),
    max_leaves=5,
)
whitespace = st.text(" \t\n\r", max_size=3)


def expected_canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _u_escape(draw: st.DrawFn, ch: str) -> str:
    """``\\uXXXX`` (a surrogate pair beyond U+FFFF), hex case chosen at random."""
    units = ch.encode("utf-16-be")
    spec = draw(st.sampled_from(["04x", "04X"]))
    return "".join("\\u" + format(int.from_bytes(units[i:i + 2], "big"), spec)
                   for i in range(0, len(units), 2))


def _encode_string(draw: st.DrawFn, s: str) -> str:
    out = []
    for ch in s:
        if ch in NAMED:
            out.append(draw(st.sampled_from([NAMED[ch], _u_escape(draw, ch)])))
        elif ord(ch) < 0x20:
            out.append(_u_escape(draw, ch))
        else:
            options = [ch, _u_escape(draw, ch)] + (["\\/"] if ch == "/" else [])
            out.append(draw(st.sampled_from(options)))
    return '"' + "".join(out) + '"'


def _encode(draw: st.DrawFn, value: Any) -> str:
    """Any legal JSON spelling of ``value``: whitespace, key order, escapes, ``-0``."""
    ws = draw(whitespace)
    if value is None or isinstance(value, bool):
        body = json.dumps(value)
    elif isinstance(value, int):
        body = draw(st.sampled_from(["0", "-0"])) if value == 0 else str(value)
    elif isinstance(value, str):
        body = _encode_string(draw, value)
    elif isinstance(value, list):
        body = "[" + (",".join(_encode(draw, v) for v in value) if value else draw(whitespace)) + "]"
    else:
        items = draw(st.permutations(list(value.items())))
        body = "{" + (",".join(draw(whitespace) + _encode_string(draw, k) + draw(whitespace) + ":"
                               + _encode(draw, v) for k, v in items)
                      if items else draw(whitespace)) + "}"
    return ws + body + draw(whitespace)


@st.composite
def value_and_spelling(draw: st.DrawFn) -> tuple[Any, str]:
    value = draw(json_values)
    return value, _encode(draw, value)


def _shuffled(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@st.composite
def value_and_dumps(draw: st.DrawFn) -> tuple[Any, str]:
    """A value and what json.dumps writes for it with arbitrary layout options and key order."""
    value = draw(json_values)
    text = json.dumps(
        _shuffled(value, draw(st.randoms(use_true_random=False))),
        indent=draw(st.sampled_from([None, 0, 2, "\t", " \r"])),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", "\n:\r")])),
        ensure_ascii=draw(st.booleans()),
        sort_keys=draw(st.booleans()),
    )
    return value, text


any_spelling = value_and_spelling() | value_and_dumps()


@st.composite
def wrapped(draw: st.DrawFn, inner: str) -> str:
    """``inner`` (one JSON value's text) at a random depth (<= 6) among valid siblings."""
    text = inner
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            before = draw(st.lists(small_values, max_size=2))
            after = draw(st.lists(small_values, max_size=2))
            text = "[" + ",".join([*map(json.dumps, before), text, *map(json.dumps, after)]) + "]"
        else:
            siblings = draw(st.dictionaries(safe_text, small_values, max_size=3))
            key = draw(safe_text.filter(lambda k, s=siblings: k not in s))
            items = [json.dumps(k) + ":" + json.dumps(v) for k, v in siblings.items()]
            items.insert(draw(st.integers(0, len(items))), json.dumps(key) + ":" + text)
            text = "{" + ",".join(items) + "}"
    return text


def assert_rejected(text: str, reason: str, argument: str = "details_json") -> None:
    try:
        result = canonicalize(text, argument)
    except SyncError as exc:
        assert exc.code is ErrorCode.NON_CANONICAL_PAYLOAD
        assert exc.details["reason"] == reason, exc.details
        assert exc.details["argument"] == argument
    else:
        raise AssertionError(f"accepted as {result[:80]!r}, expected rejection {reason!r}")
    assert not is_canonical(text)


# ------------------------------------------------------------------- canonical text and hash

@given(value_and_dumps())
def test_any_json_dumps_layout_canonicalizes_to_the_rule(pair: tuple[Any, str]) -> None:
    value, text = pair
    assert canonicalize(text) == expected_canonical(value)


@given(value_and_spelling())
def test_any_spelling_canonicalizes_to_the_rule(pair: tuple[Any, str]) -> None:
    value, text = pair
    assert canonicalize(text) == expected_canonical(value)


@given(any_spelling)
def test_canonicalize_is_idempotent(pair: tuple[Any, str]) -> None:
    _, text = pair
    canon = canonicalize(text)
    assert canonicalize(canon) == canon


@given(any_spelling)
def test_is_canonical_exactly_when_text_is_its_canonical_form(pair: tuple[Any, str]) -> None:
    value, text = pair
    canon = expected_canonical(value)
    assert is_canonical(canon)
    assert is_canonical(text) == (text == canon)


@given(any_spelling)
def test_hash_is_sha256_of_canonical_utf8(pair: tuple[Any, str]) -> None:
    value, text = pair
    canon, digest = canonical_and_hash(text)
    assert HASH_RE.fullmatch(digest)
    assert digest == "sha256:" + hashlib.sha256(expected_canonical(value).encode("utf-8")).hexdigest()
    assert digest == payload_hash(canon)


@st.composite
def two_spellings(draw: st.DrawFn) -> tuple[str, str]:
    value = draw(json_values)
    return _encode(draw, value), _encode(draw, value)


@given(two_spellings())
def test_every_spelling_of_a_value_has_one_canonical_text_and_hash(pair: tuple[str, str]) -> None:
    first, second = pair
    assert canonical_and_hash(first) == canonical_and_hash(second)


# ------------------------------------------------------------------------------ rejections

json_alphabet = st.text(st.sampled_from([*'[]{}",:-+.0123456789eEtrufalsnNIiy \t\n\\u/aF',
                                         "\ud800", "\udc00", "\x00", "\ufeff", "é"]),
                        max_size=30)


@st.composite
def mutated_json(draw: st.DrawFn) -> str:
    """Valid JSON text with a few characters deleted, duplicated or replaced."""
    _, text = draw(any_spelling)
    chars = list(text)
    for _ in range(draw(st.integers(1, 3))):
        if not chars:
            break
        i = draw(st.integers(0, len(chars) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "replace"]))
        if op == "delete":
            del chars[i]
        elif op == "duplicate":
            chars.insert(i, chars[i])
        else:
            chars[i] = draw(st.sampled_from([*'[]{}",:.e-0\\', "\ud800"]))
    return "".join(chars)


@given(st.text() | json_alphabet | mutated_json(), st.sampled_from(["payload_json", "details_json"]))
def test_arbitrary_text_is_accepted_canonically_or_rejected_with_a_reason(text: str, argument: str) -> None:
    try:
        canon = canonicalize(text, argument)
    except SyncError as exc:
        assert exc.code is ErrorCode.NON_CANONICAL_PAYLOAD
        assert set(exc.details) == {"argument", "reason", "message"}
        assert exc.details["argument"] == argument
        assert exc.details["reason"] in REASONS
        assert isinstance(exc.details["message"], str) and exc.details["message"]
        assert not is_canonical(text)
    else:
        assert canonicalize(canon) == canon
        assert canon == expected_canonical(json.loads(text))


@given(st.floats(allow_nan=False, allow_infinity=False).flatmap(lambda f: wrapped(json.dumps(f))))
def test_floats_are_rejected_even_when_integral(text: str) -> None:
    assert_rejected(text, "non_integer_number")


@given(st.integers(), st.sampled_from(["{}.0", "{}e0", "{}E+2", "{}e-1", "{}.5", "{}.000"]),
       st.data())
def test_integers_spelled_with_fraction_or_exponent_are_rejected(n: int, form: str,
                                                                  data: st.DataObject) -> None:
    assert_rejected(data.draw(wrapped(form.format(n))), "non_integer_number")


@given(st.sampled_from(["NaN", "Infinity", "-Infinity"]).flatmap(wrapped))
def test_nan_and_infinity_are_rejected(text: str) -> None:
    assert_rejected(text, "nan_or_infinity")


# 17+ digits, up to well past Python's 4300-digit int() limit (which must not turn into invalid_json)
digits_beyond_range = st.builds(lambda first, zeros, rest: first + "0" * zeros + rest,
                                st.sampled_from("123456789"), st.integers(0, 40) | st.integers(4280, 6000),
                                st.text("0123456789", min_size=16, max_size=20))
out_of_range = (st.integers(min_value=MAX_SAFE_INTEGER + 1).map(str)
                | st.integers(max_value=-MAX_SAFE_INTEGER - 1).map(str)
                | digits_beyond_range
                | digits_beyond_range.map(lambda d: "-" + d))


@given(out_of_range.flatmap(wrapped))
@example("9" * 4301)
def test_integers_out_of_range_are_rejected(text: str) -> None:
    assert_rejected(text, "integer_out_of_range")


@given(st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER))
def test_integers_in_range_are_accepted(n: int) -> None:
    assert canonicalize(str(n)) == str(n)
    assert canonicalize(f"[{n}]") == f"[{n}]"


@st.composite
def duplicate_key_object(draw: st.DrawFn) -> str:
    """An object naming one key twice (perhaps spelled differently), among distinct keys."""
    key = draw(safe_text)
    others = draw(st.dictionaries(safe_text.filter(lambda k: k != key), small_values, max_size=3))
    items = [_encode_string(draw, k) + ":" + json.dumps(v) for k, v in others.items()]
    for _ in range(2):
        items.insert(draw(st.integers(0, len(items))),
                     _encode_string(draw, key) + ":" + json.dumps(draw(small_values)))
    return "{" + ",".join(items) + "}"


@given(duplicate_key_object().flatmap(wrapped))
def test_duplicate_keys_are_rejected_at_any_depth(text: str) -> None:
    assert_rejected(text, "duplicate_key")


@st.composite
def lone_surrogate_text(draw: st.DrawFn) -> str:
    """A string or key holding one surrogate among non-surrogates (raw or \\u-escaped)."""
    s = draw(safe_text)
    i = draw(st.integers(0, len(s)))
    surrogate = chr(draw(st.integers(0xD800, 0xDFFF)))
    spelled = draw(st.sampled_from([surrogate, f"\\u{ord(surrogate):04x}"]))
    string = _encode_string(draw, s[:i])[:-1] + spelled + _encode_string(draw, s[i:])[1:]
    return draw(st.sampled_from([string, "{" + string + ":0}"]))


@given(lone_surrogate_text().flatmap(wrapped))
def test_lone_surrogates_are_rejected(text: str) -> None:
    assert_rejected(text, "lone_surrogate")


@st.composite
def nested(draw: st.DrawFn, depth: int) -> str:
    kinds = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    inner = draw(st.sampled_from(["", "0", '"x"', "null"]))
    opens = "".join("[" if is_array else '{"k":' for is_array in kinds)
    closes = "".join("]" if is_array else "}" for is_array in reversed(kinds))
    if not inner and kinds and not kinds[-1]:
        inner = "0"  # an object needs a value after its key
    return opens + inner + closes


@given(st.integers(1, MAX_DEPTH).flatmap(nested))
@example("[" * MAX_DEPTH + "]" * MAX_DEPTH)
@example('{"k":' * MAX_DEPTH + "0" + "}" * MAX_DEPTH)
def test_nesting_up_to_the_limit_is_accepted(text: str) -> None:
    assert canonicalize(text) == expected_canonical(json.loads(text))


@given(st.integers(MAX_DEPTH + 1, 3 * MAX_DEPTH).flatmap(nested))
@example("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))  # the limit counts containers, not values
@example("[" * MAX_DEPTH + "{}" + "]" * MAX_DEPTH)
def test_nesting_beyond_the_limit_is_rejected(text: str) -> None:
    assert_rejected(text, "too_deep")


def _at_stack_depth(frames: int, f: Any) -> Any:
    return f() if frames == 0 else _at_stack_depth(frames - 1, f)


def _reason(text: str) -> str | None:
    try:
        parse_strict(text)
    except SyncError as exc:
        return str(exc.details["reason"])
    return None


# Unbalanced texts nested far past MAX_DEPTH: Python's json scanner recurses once per level, so
# without a bound of its own the reason was invalid_json (or the later defect) near the top of the
# stack and too_deep (RecursionError) deep in it -- the same text, two answers.
@pytest.mark.parametrize("text", ["[" * 950, "[" * 700 + "x", '{"a":' * 600, "[" * 513 + "1.5", "x" + "[" * 600])
def test_the_reason_for_a_deep_text_does_not_depend_on_the_callers_stack(text: str) -> None:
    assert _reason(text) == _at_stack_depth(400, lambda: _reason(text))


@pytest.mark.parametrize(("text", "reason"), [
    ("[" * SCAN_DEPTH_LIMIT + "x", "invalid_json"),  # at the bound: parsed, the first defect wins
    ("[" * (SCAN_DEPTH_LIMIT - 1) + "[],[x", "invalid_json"),  # ... also with more brackets than the bound
    ("[" * (SCAN_DEPTH_LIMIT + 1) + "x", "too_deep"),  # past it: refused before parsing
    ("x" + "[" * (SCAN_DEPTH_LIMIT + 1), "too_deep"),  # whatever comes first
    ("[" * (SCAN_DEPTH_LIMIT + 1) + "]" * (SCAN_DEPTH_LIMIT + 1), "too_deep"),
    ('{"a":' * (SCAN_DEPTH_LIMIT + 1) + "1" + "}" * (SCAN_DEPTH_LIMIT + 1), "too_deep"),
    ('"' + "[" * 600, "invalid_json"),  # brackets inside a string (here unterminated) do not count
    ('"\\\\"' + "[" * 600, "too_deep"),  # an escaped backslash, then the string ends: they count
    ('"\\\\\\"' + "[" * 600, "invalid_json"),  # then an escaped quote: still inside the string
    ("[]" * 600, "invalid_json"),  # many brackets, never nested: parsed (extra data)
    ('["' + "[" * 600 + '"]', None),  # a string of brackets is a string
    ('"' + "[" * 600 + '"', None),  # ... also at the top: no bracket counts at all
])
def test_nesting_past_the_scan_bound_is_too_deep_before_parsing(text: str, reason: str | None) -> None:
    assert _reason(text) == reason == _at_stack_depth(400, lambda: _reason(text))


BUILT_ONCE_CASES = ['{"a":1}', '\ufeff{"a":1}', "\ufeff", ' \ufeff{}', '{"a":1,"a":2}', "[1.5]", "[NaN]", "[Infinity]",
                    "[-Infinity]", "[9007199254740993]", "[1e3]", '{"a":[1,{"b":null}]}', "", "[", "tru", '"\\u00e9"',
                    '{"b":1,"a":2}', "[" * 3 + "]" * 3, '"x"  ', '"x" y', "0", "-0", "[01]",
                    # around the scanner called at 0 (fifth session): whitespace before, after, both;
                    # a value then more; a refusal with whitespace around it
                    ' {"a":1}', '\n[1]\t', "[1] ", "[1]]", ' {"a":1,"a":2}', '{"a":1,"a":2} ', " [1.5]", " ",
                    '\t"x"', "[1] x", "1 2", " 1e5 ", "\r\n{}\r\n", "[]{}", '""', " tru"]


@pytest.mark.parametrize("text", BUILT_ONCE_CASES)
def test_the_decoder_built_once_refuses_and_accepts_as_json_loads_does(text: str) -> None:
    """``parse_strict`` parses with a decoder built once (``_loads``); the oracle is ``json.loads``
    with the same hooks, built per call as the module did before, which also checks a leading BOM
    itself: the same value, or the same reason and message."""
    def oracle() -> object:
        return json.loads(text, object_pairs_hook=canonical._no_duplicates, parse_float=canonical._reject_float,
                          parse_constant=canonical._reject_constant, parse_int=canonical._check_int)
    try:
        expected: object = ("ok", oracle())
    except canonical._Reject as r:
        expected = ("non_canonical", r.reason)
    except ValueError as exc:
        expected = ("invalid_json", str(exc)[:200])
    try:
        got: object = ("ok", parse_strict(text))
    except SyncError as err:
        reason = err.details["reason"]
        got = ("invalid_json", err.details["message"]) if reason == "invalid_json" else ("non_canonical", reason)
    assert got == expected


def test_a_leading_byte_order_mark_is_refused_by_name() -> None:
    with pytest.raises(SyncError) as exc:
        parse_strict('\ufeff{"a":1}')
    assert exc.value.code is ErrorCode.NON_CANONICAL_PAYLOAD and exc.value.details == {
        "argument": "payload_json", "reason": "invalid_json",
        "message": "Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)"}


# ------------------------------------------------------------------ the fast paths (fourth session)
# ``parse_strict`` skips its validation walk (``_walk``) when the text has no ``\u`` and at most
# MAX_DEPTH opening brackets: the walk could then find nothing.  Each case: the text, the outcome
# written by hand ("ok" and the value, or the reason), and whether the walk runs -- the bound is
# exactly MAX_DEPTH brackets, string contents counted (a conservative count).

def _arrays(n: int, inner: str = "") -> str:
    return "[" * n + inner + "]" * n


def _objects(n: int, inner: str = "0") -> str:
    return '{"k":' * n + inner + "}" * n


def _nest_value(n: int, inner: Any = None) -> Any:
    value: Any = [] if inner is None else inner
    for _ in range(n - (1 if inner is None else 0)):
        value = [value]
    return value


def _nest_objects(n: int, inner: Any = 0) -> Any:
    value = inner
    for _ in range(n):
        value = {"k": value}
    return value


FAST_PATH_CASES: list[tuple[str, str, tuple[str, Any], bool]] = [
    ("63 arrays", _arrays(63), ("ok", _nest_value(63)), False),
    ("64 arrays (the limit, and the bound)", _arrays(64), ("ok", _nest_value(64)), False),
    ("65 arrays", _arrays(65), ("reject", "too_deep"), True),
    ("64 objects", _objects(64), ("ok", _nest_objects(64)), False),
    ("65 objects", _objects(65), ("reject", "too_deep"), True),
    ("32 objects around 32 arrays", _objects(32, _arrays(32)), ("ok", _nest_objects(32, _nest_value(32))), False),
    ("64 arrays around an empty object", _arrays(64, "{}"), ("reject", "too_deep"), True),
    ("63 arrays around an empty object", _arrays(63, "{}"), ("ok", _nest_value(63, {})), False),
    ("63 arrays, a string holding one bracket", _arrays(63, '"["'), ("ok", _nest_value(63, "[")), False),
    ("63 arrays, a string holding two brackets", _arrays(63, '"[{"'), ("ok", _nest_value(63, "[{")), True),
    ("65 brackets in a string only", '"' + "[" * 65 + '"', ("ok", "[" * 65), True),
    ("64 braces in a string only", '"' + "{" * 64 + '"', ("ok", "{" * 64), False),
    ("an escaped quote before brackets", '["a\\"[{", "]"]', ("ok", ['a"[{', "]"]), False),
    ("64 arrays and an escaped quote", _arrays(64, '"\\"]["'), ("ok", _nest_value(64, '"][')), True),
    ("a named escape", '"a\\n\\t\\\\b"', ("ok", "a\n\t\\b"), False),
    ("a u-escape (backslash, u)", '"\\u00e9"', ("ok", "é"), True),
    ("an escaped surrogate pair", '["\\ud83d\\ude00"]', ("ok", ["😀"]), True),
    ("a lone surrogate escaped in a value", '["\\ud800"]', ("reject", "lone_surrogate"), True),
    ("a lone surrogate escaped in a key", '{"\\udc00":1}', ("reject", "lone_surrogate"), True),
    ("an escaped lone surrogate 63 deep", _arrays(63, '"\\udfff"'), ("reject", "lone_surrogate"), True),
    ("an escaped backslash before u (not an escape)", '"\\\\u0041"', ("ok", "\\u0041"), True),
    ("a surrogate before a too-deep part: the walk's order", '["\\ud800",' + _arrays(65) + "]",
     ("reject", "lone_surrogate"), True),
    ("a too-deep part before a surrogate", "[" + _arrays(65) + ',"\\ud800"]', ("reject", "too_deep"), True),
    ("a raw lone surrogate (refused before parsing)", '["\ud800"]', ("reject", "lone_surrogate"), False),
    ("not JSON, 100 brackets (refused by the decoder)", "[" * 100, ("reject", "invalid_json"), False),
    ("a scalar", "17", ("ok", 17), False),
]


@pytest.mark.parametrize(("text", "outcome", "walks"), [c[1:] for c in FAST_PATH_CASES],
                         ids=[c[0] for c in FAST_PATH_CASES])
def test_the_validation_walk_is_skipped_exactly_where_it_could_find_nothing(
        text: str, outcome: tuple[str, Any], walks: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    walk = canonical._walk

    def spy(value: Any, depth: int) -> None:
        calls.append(depth)
        walk(value, depth)

    monkeypatch.setattr(canonical, "_walk", spy)
    try:
        got: tuple[str, Any] = ("ok", parse_strict(text))
    except SyncError as err:
        got = ("reject", err.details["reason"])
    assert got == outcome
    if got[0] == "ok":  # the same value and JSON types (true is not 1)
        assert expected_canonical(got[1]) == expected_canonical(outcome[1])
    assert (0 in calls) == walks, "the walk runs from the top exactly when the text may nest or escape too far"


@st.composite
def deep_texts(draw: st.DrawFn) -> str:
    """Nesting around the limit, with strings holding brackets, quotes, backslashes and \\u escapes."""
    depth = draw(st.integers(MAX_DEPTH - 3, MAX_DEPTH + 2))
    pieces = st.sampled_from(["[", "{", "]", "}", '\\"', "\\\\", "\\u00e9", "\\ud800", "\\udc00", "\\ud83d\\ude00",
                              "x", "\\n", ","])
    s = '"' + "".join(draw(st.lists(pieces, max_size=8))) + '"'
    kinds = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    opens = "".join("[" if is_array else "{" + s + ":" for is_array in kinds)
    closes = "".join("]" if is_array else "}" for is_array in reversed(kinds))
    return opens + draw(st.sampled_from([s, "0", "[]", "{}"])) + closes


def _depth_and_surrogates(value: Any) -> tuple[int, bool]:
    """Nesting depth (containers) and whether any string or key holds a surrogate, iteratively."""
    deepest, surrogate, todo = 0, False, [(value, 0)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, str):
            surrogate = surrogate or any(0xD800 <= ord(ch) <= 0xDFFF for ch in v)
        elif isinstance(v, list):
            deepest = max(deepest, d + 1)
            todo.extend((x, d + 1) for x in v)
        elif isinstance(v, dict):
            deepest = max(deepest, d + 1)
            todo.extend((k, d + 1) for k in v)
            todo.extend((x, d + 1) for x in v.values())
    return deepest, surrogate


@given(deep_texts())
def test_parse_strict_near_the_depth_limit_agrees_with_an_iterative_check(text: str) -> None:
    """Second opinion: ``json.loads`` and an iterative depth and surrogate count (not ``_walk``)."""
    try:
        value = json.loads(text, object_pairs_hook=canonical._no_duplicates)
    except canonical._Reject:
        assert_rejected(text, "duplicate_key")
        return
    deepest, surrogate = _depth_and_surrogates(value)
    if surrogate or deepest > MAX_DEPTH:
        with pytest.raises(SyncError) as exc:
            parse_strict(text)
        assert exc.value.details["reason"] in ({"lone_surrogate"} if not deepest > MAX_DEPTH else
                                               {"too_deep"} if not surrogate else {"too_deep", "lone_surrogate"})
    else:
        assert expected_canonical(parse_strict(text)) == expected_canonical(value)


# ``dumps_canonical`` calls CPython's C encoder with ``JSONEncoder``'s options itself.  The oracle is
# ``json.dumps`` with the rule's options, built per call by the standard library.

def _dumps_oracle(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@pytest.mark.parametrize("value", [
    None, True, 0, -1, "x", "é\u2028\x00\x1f\"\\", [], {}, [1, "a", None, False], {"b": 1, "a": [{"d": 2, "c": 3}]},
    {"é": 1, "e": 2, "\x00": 3}, {2: "x", 1.5: 1},
    list(range(60_000)),  # more than 100,000 pieces: the C encoder's output comes in chunks
    [{"k": i, "v": [str(i)] * 3} for i in range(20_000)],
], ids=lambda v: type(v).__name__ + str(len(v) if isinstance(v, list | dict | str) else v)[:12])
def test_dumps_canonical_writes_what_json_dumps_writes(value: Any) -> None:
    assert canonical.dumps_canonical(value) == _dumps_oracle(value)


@pytest.mark.parametrize("value", [
    float("nan"), [float("inf")], {"a": object()}, {(1,): 2}, b"x", {"a", "b"}, {"a": 1, 2: 3},
])
def test_dumps_canonical_refuses_what_json_dumps_refuses_with_the_same_error(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as want:
        _dumps_oracle(value)
    with pytest.raises(type(want.value)) as got:
        canonical.dumps_canonical(value)
    assert str(got.value) == str(want.value)


def test_dumps_canonical_refuses_a_cyclic_value_by_name_every_time() -> None:
    """The circular-reference markers are fresh per call (as in ``JSONEncoder.iterencode``): a cycle is
    refused by name, and a refused value leaves nothing behind for the next call."""
    cyclic: list[Any] = [1]
    cyclic.append([cyclic])
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^Circular reference detected$"):
            canonical.dumps_canonical(cyclic)
    shared = [1, 2]
    assert canonical.dumps_canonical([shared, shared, {"a": shared}]) == '[[1,2],[1,2],{"a":[1,2]}]'
    with pytest.raises(TypeError):
        canonical.dumps_canonical([shared, object()])
    assert canonical.dumps_canonical([shared, shared]) == "[[1,2],[1,2]]"


def test_dumps_canonical_without_the_c_encoder_falls_back_to_json_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interpreters without CPython's ``_json``: a copy of the module loaded with ``c_make_encoder`` None."""
    import importlib.util
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    spec = importlib.util.spec_from_file_location("canonical_without_c", canonical.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._C_MAKE_ENCODER is not canonical._C_MAKE_ENCODER
    for value in [{"b": 1, "a": ["é", None]}, "x", list(range(1000))]:
        assert module.dumps_canonical(value) == _dumps_oracle(value)
    with pytest.raises(ValueError, match=r"^Circular reference detected$"):
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        module.dumps_canonical(cyclic)


# --- fifth session: the scanner called at 0, the tree encoder (ADR-0025) ------------------------------------

TREE_VALUES: list[Any] = [{"b": 1, "a": [{"d": 2, "c": None}]}, {"é": "\u2028\x00\"", "e": [True, False]}, [], {},
                          "x", 7, [[[]]], {"pad": "x" * 138}, {"z": {"y": {"x": [1, -2, "\\"]}}}]


def _canonical_agrees(mod: Any) -> None:
    """``mod``'s ``parse_strict`` accepts and refuses the built-once table as ``json.loads`` with the
    same hooks does, and its ``canonicalize`` of indented, unsorted, ASCII-escaped spellings of a
    table of values is ``json.dumps``'s canonical text of the value."""
    for text in BUILT_ONCE_CASES:
        try:
            expected: object = ("ok", json.loads(text, object_pairs_hook=canonical._no_duplicates,
                                                 parse_float=canonical._reject_float,
                                                 parse_constant=canonical._reject_constant,
                                                 parse_int=canonical._check_int))
        except canonical._Reject as r:
            expected = ("non_canonical", r.reason)
        except ValueError as exc:
            expected = ("invalid_json", str(exc)[:200])
        try:
            got: object = ("ok", mod.parse_strict(text))
        except SyncError as err:
            reason = err.details["reason"]
            got = ("invalid_json", err.details["message"]) if reason == "invalid_json" else ("non_canonical", reason)
        assert got == expected, text
    for value in TREE_VALUES:
        for spelling in (json.dumps(value, indent=1), json.dumps(value, ensure_ascii=True), _dumps_oracle(value)):
            assert mod.canonicalize(spelling) == _dumps_oracle(value), spelling


def test_the_scanner_at_zero_and_the_tree_encoder_agree_with_json() -> None:
    _canonical_agrees(canonical)


PLANTED_CANONICAL = (
    ("a value followed by more text is taken", "return value if end == len(text) else _DECODER.decode(text)",
     "return value"),
    ("leading whitespace refused", "    except StopIteration:\n        return _DECODER.decode(text)\n",
     '    except StopIteration:\n        raise json.JSONDecodeError("Expecting value", text, 0) from None\n'),
    ("the tree encoder keeps the input's key order", "_TREE_ENCODER: Any = _C_MAKE_ENCODER(None, *_ENCODER_OPTIONS)",
     "_TREE_ENCODER: Any = _C_MAKE_ENCODER(None, *_ENCODER_OPTIONS[:5], False, *_ENCODER_OPTIONS[6:])"),
    ("the tree encoder escapes non-ASCII", "_TREE_ENCODER: Any = _C_MAKE_ENCODER(None, *_ENCODER_OPTIONS)",
     "_TREE_ENCODER: Any = _C_MAKE_ENCODER(None, _ENCODER_OPTIONS[0], json.encoder.encode_basestring_ascii, "
     "*_ENCODER_OPTIONS[2:])"),
)


@pytest.mark.parametrize(("name", "old", "new"), PLANTED_CANONICAL, ids=[p[0] for p in PLANTED_CANONICAL])
def test_planted_scanner_and_tree_encoder_bugs_are_caught(name: str, old: str, new: str) -> None:
    from support.edited import edited_module
    mod = edited_module(canonical, [(old, new)], name)
    with pytest.raises(AssertionError):
        _canonical_agrees(mod)


def test_canonicalize_joins_the_tree_encoders_chunks_as_they_are() -> None:
    """A text of more than 100,000 pieces (the C encoder then returns its output in several chunks):
    ``canonicalize`` joins them with nothing between, as ``json.dumps`` writes the value."""
    value = [{"k": i, "v": [str(i)] * 3} for i in range(20_000)]
    assert canonical.canonicalize(json.dumps(value, indent=1)) == _dumps_oracle(value)
    numbers = list(range(60_000))
    assert canonical.canonicalize(json.dumps(numbers)) == _dumps_oracle(numbers)
