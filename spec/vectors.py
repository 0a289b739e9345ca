"""Language-neutral conformance vectors for canonical JSON, generated from the model.

The case lists below are curated by hand: each names an input text and, for a rejection, the
reason the author expects.  Everything else in a vector -- the canonical text, the hash, the
reason actually reported -- is computed by :mod:`spec.canonical`, the executable model of the
rule in DESIGN §2; building the vectors fails if the model disagrees with a curated reason or
rejects an accept case.  The files are written by ``tests/conformance/generate_vectors.py`` and
checked for drift by ``tests/conformance/test_vectors.py``; their format is described in
``tests/conformance/vectors/README.md`` and in each file's ``description``.

This module does no I/O: :func:`canonical_vectors` returns ``{file name: file text}``.

Curation rules: every reject input has exactly one defect (so the reason is unambiguous); no
case depends on which defect the model checks first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from spec.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, REASONS, canonical_and_hash, canonicalize
from spec.errors import ErrorCode, SyncError

ACCEPT_FORMAT: Final = "syncref.canonical_json.accept.v1"
REJECT_FORMAT: Final = "syncref.canonical_json.reject.v1"

REASON_MEANINGS: Final[dict[str, str]] = {
    "invalid_json": "not RFC 8259 JSON text: syntax error, empty text, bad escape, raw control "
                    "character in a string, comment, BOM, non-JSON whitespace, trailing data",
    "duplicate_key": "an object repeats a key; keys are compared after decoding escapes, without "
                     "Unicode normalization",
    "lone_surrogate": "a string or key holds an unpaired UTF-16 surrogate (as a \\u escape or raw), "
                      "which has no UTF-8 encoding",
    "non_integer_number": "a number token with a fraction or an exponent (1.0, 1e2, -0.0), "
                          "whatever its value",
    "integer_out_of_range": f"an integer outside +/-(2^53-1) = +/-{MAX_SAFE_INTEGER}",
    "nan_or_infinity": "one of the non-JSON tokens NaN, Infinity, -Infinity",
    "too_deep": f"more than {MAX_DEPTH} arrays/objects nested in one another",
}


class VectorError(Exception):
    """The curated cases and the model disagree; the vectors cannot be built."""


@dataclass(frozen=True, slots=True)
class Accept:
    """An input the model must accept; its canonical text and hash come from the model."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Reject:
    """An input with exactly one defect; ``reason`` is what the model must report."""

    name: str
    text: str
    reason: str


# --------------------------------------------------------------------------------------------
# accept cases

_NAMED_ESCAPES: Final[dict[int, str]] = {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r"}


def _nest(depth: int, inner: str) -> str:
    """``inner`` inside ``depth`` containers, alternating arrays and objects, arrays outermost."""
    opens = "".join("[" if i % 2 == 0 else '{"k":' for i in range(depth))
    closes = "".join("]" if i % 2 == 0 else "}" for i in reversed(range(depth)))
    return opens + inner + closes


def _khala_cases() -> list[Accept]:
    """The five payloads of OpenAgents' ``khala_payload_hash_vectors.v1.json`` (same rule)."""
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("sorted_flat_object", {"b": 2, "a": 1}),
        ("nested_sync_payload", {
            "topic": "runtime.codex_worker_summaries",
            "payload": {"status": "running",
                        "metadata": {"region": "us-central1", "flags": ["a", "b", "c"]},
                        "seq": 99},
            "doc_key": "org_123:worker_456",
        }),
        ("bool_null_array", {"tags": ["z", "a"], "active": True, "deleted": None,
                             "retry_after_ms": 1500}),
        ("string_escaping", {"message": "line\\nbreak", "quote": '"khala"',
                             "path": "docs/sync/thoughts.md"}),
        ("array_of_objects", {"events": [{"watermark": 2, "topic": "runtime.run_summaries"},
                                         {"topic": "runtime.run_summaries", "watermark": 3}]}),
    ]
    return [Accept(f"khala_v1_{name}", json.dumps(value, indent=2)) for name, value in payloads]


def _control_cases() -> list[Accept]:
    cases = []
    for cp in range(0x20):
        label = f"_{_NAMED_ESCAPES[cp]}" if cp in _NAMED_ESCAPES else ""
        # upper-case hex in the input; the canonical form uses a name or lower-case hex
        cases.append(Accept(f"control_u{cp:04x}{label}", f'"\\u{cp:04X}"'))
    cases.append(Accept("control_all_in_one_string",
                        '"' + "".join(f"\\u{cp:04x}" for cp in range(0x20)) + '"'))
    cases.append(Accept("control_named_escapes_in_input", r'"\b\f\n\r\t"'))
    cases.append(Accept("control_in_object_key", r'{"\u0000":0,"\u001F":31,"\n":10}'))
    return cases


ACCEPT_CASES: Final[tuple[Accept, ...]] = (
    # every kind of value at the top level
    Accept("top_null", "null"),
    Accept("top_true", "true"),
    Accept("top_false", "false"),
    Accept("top_zero", "0"),
    Accept("top_integer", "42"),
    Accept("top_negative_integer", "-17"),
    Accept("top_string", '"hello"'),
    Accept("top_empty_string", '""'),
    Accept("top_array", "[1,true,null]"),
    Accept("top_object", '{"a":1}'),
    # empty containers
    Accept("empty_array", "[]"),
    Accept("empty_object", "{}"),
    Accept("empty_array_with_whitespace", "[ \n ]"),
    Accept("empty_object_with_whitespace", "{\t}"),
    Accept("empty_containers_nested", '[[],{},[[]],[{}],{"a":[],"b":{}}]'),
    # whitespace (only space, tab, LF, CR are JSON whitespace) is dropped outside strings
    Accept("whitespace_around_scalar", " \t\r\n 1 \n"),
    Accept("whitespace_everywhere", '\n{ "b" :\t[ 1 , 2 ,\r\n3 ] ,\n "a" : { } }\r\n'),
    Accept("whitespace_inside_string_kept", '"  a   b  "'),
    Accept("pretty_printed", '{\n  "list": [\n    1,\n    2\n  ],\n  "name": "x"\n}\n'),
    # escaping of " and \ ; \/ and \u escapes of ordinary characters are decoded
    Accept("escape_quote", r'"say \"hi\""'),
    Accept("escape_backslash", r'"C:\\dir\\file"'),
    Accept("escape_quote_and_backslash_as_unicode", r'"\u0022\u005c\u005C"'),
    Accept("escape_solidus_in_input", r'"a\/b"'),
    Accept("raw_solidus", '"</script>"'),
    Accept("escape_ascii_letters_as_unicode", r'"\u0041\u0062\u0063"'),
    Accept("printable_ascii", '"' + "".join(
        "\\" + chr(c) if chr(c) in '"\\' else chr(c) for c in range(0x20, 0x7F)) + '"'),
    # control characters: the only characters besides " and \ that are escaped
    *_control_cases(),
    # characters that look special but are written raw
    Accept("del_u007f_escaped", r'"\u007f"'),
    Accept("del_u007f_raw", '"\x7f"'),
    Accept("c1_controls_u0080_u009f", r'"\u0080\u0085\u009f"'),
    Accept("line_and_paragraph_separator_escaped", r'"\u2028\u2029"'),
    Accept("line_and_paragraph_separator_raw", '"\u2028\u2029"'),
    Accept("specials_bom_replacement_noncharacters", r'"\ufeff\ufffd\ufffe\uffff"'),
    # non-ASCII text is written raw (UTF-8), never \u-escaped
    Accept("latin_escaped", r'"caf\u00e9"'),
    Accept("latin_raw", '"café"'),
    Accept("cjk_escaped", r'"\u4e2d\u6587"'),
    Accept("cjk_raw", '"中文"'),
    Accept("emoji_surrogate_pair_escaped", r'"\ud83d\ude00"'),
    Accept("emoji_surrogate_pair_escaped_upper_hex", r'"\uD83D\uDE00"'),
    Accept("emoji_raw", '"😀"'),
    Accept("astral_first_u10000", r'"\ud800\udc00"'),
    Accept("astral_last_u10ffff", r'"\udbff\udfff"'),
    Accept("no_unicode_normalization", r'["\u00e9","e\u0301"]'),
    # object keys sorted by code point (= by UTF-8 bytes), after decoding escapes
    Accept("keys_sorted", '{"b":1,"a":2,"c":3}'),
    Accept("keys_differ_by_case", '{"b":1,"B":2,"a":3,"A":4,"key":5,"Key":6,"KEY":7}'),
    Accept("keys_prefixes", '{"ab":1,"a":2,"":3,"b":4}'),
    Accept("keys_numeric_strings_not_numeric_order", '{"10":1,"9":2,"1":3,"-1":4}'),
    Accept("keys_non_ascii", '{"é":1,"z":2,"e":3,"中":4,"Z":5}'),
    Accept("keys_code_point_not_utf16_order", r'{"\ud83d\ude00":1,"\uff61":2}'),
    Accept("keys_code_point_not_utf16_order_wide",
           r'{"\ud83d\ude00":"emoji","\uff61":"halfwidth","\ue000":"private","\ud7ff":"hangul"}'),
    Accept("keys_sorted_decoded_not_escaped", r'{"!":1,"\n":2,"\u0001":3,"\\":4}'),
    Accept("keys_escaped_spelling", r'{"\u0062":1,"a":2}'),
    Accept("keys_unnormalized_are_distinct", r'{"\u00e9":1,"e\u0301":2}'),
    Accept("keys_sorted_at_every_depth", '{"z":{"y":1,"x":[{"b":1,"a":2}]},"a":null}'),
    Accept("array_order_kept", '[3,1,2,"b","a"]'),
    # integers
    Accept("minus_zero", "-0"),
    Accept("minus_zero_nested", '[-0,{"a":-0}]'),
    Accept("integer_max_safe", str(MAX_SAFE_INTEGER)),
    Accept("integer_min_safe", str(-MAX_SAFE_INTEGER)),
    Accept("integers_mixed", "[0,1,-1,10,-10,123456789,-987654321]"),
    # nesting up to the limit
    Accept(f"nesting_{MAX_DEPTH}_arrays", "[" * MAX_DEPTH + "]" * MAX_DEPTH),
    Accept(f"nesting_{MAX_DEPTH}_arrays_with_value", "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH),
    Accept(f"nesting_{MAX_DEPTH}_objects",
           '{"a":' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1)),
    Accept(f"nesting_{MAX_DEPTH}_mixed", _nest(MAX_DEPTH, "null")),
    Accept("nesting_mixed", '{"a":[{"b":[1,{"c":[]}]}],"d":[[{"e":"f"}]]}'),
    # a realistic payload
    Accept("realistic_payload",
           '{ "stream_id": "chat:42", "body": { "text": "Grüße\\n\\t— 👋", "n": -0,'
           ' "tags": [ "b", "a" ], "meta": { "z": null, "a": false } } }'),
    # the old Khala vectors (DESIGN §2: they follow this rule)
    *_khala_cases(),
)


# --------------------------------------------------------------------------------------------
# reject cases

def _r(reason: str, *cases: tuple[str, str]) -> list[Reject]:
    return [Reject(name, text, reason) for name, text in cases]


REJECT_CASES: Final[tuple[Reject, ...]] = (
    *_r("invalid_json",
        ("empty_text", ""),
        ("whitespace_only", " \n\t\r "),
        ("bare_word", "hello"),
        ("bare_word_python_true", "True"),
        ("bare_word_python_none", "None"),
        ("bare_word_undefined", "undefined"),
        ("truncated_literal", "tru"),
        ("trailing_comma_array", "[1,2,]"),
        ("trailing_comma_object", '{"a":1,}'),
        ("double_comma", "[1,,2]"),
        ("leading_comma", "[,1]"),
        ("single_quoted_string", "'a'"),
        ("single_quoted_key", "{'a':1}"),
        ("unquoted_key", "{a:1}"),
        ("non_string_key", "{1:2}"),
        ("missing_colon", '{"a" 1}'),
        ("missing_comma", "[1 2]"),
        ("colon_in_array", "[1:2]"),
        ("unterminated_array", "[1,2"),
        ("unterminated_object", '{"a":1'),
        ("unterminated_string", '"abc'),
        ("extra_closing_bracket", "[1]]"),
        ("two_values", "1 2"),
        ("two_objects", "{}{}"),
        ("line_comment", "// comment\n1"),
        ("block_comment", "/* comment */ 1"),
        ("leading_zero", "01"),
        ("leading_plus", "+1"),
        ("leading_dot", ".5"),
        ("trailing_dot", "1."),
        ("hex_number", "0x10"),
        ("minus_alone", "-"),
        ("minus_then_space", "- 1"),
        ("invalid_escape_x", r'"\x41"'),
        ("invalid_escape_single_quote", r'"\'"'),
        ("invalid_escape_upper_u", r'"\U0041"'),
        ("short_unicode_escape", r'"\u12"'),
        ("non_hex_unicode_escape", r'"\u12G4"'),
        ("raw_newline_in_string", '"a\nb"'),
        ("raw_tab_in_string", '"a\tb"'),
        ("raw_nul_in_string", '"\x00"'),
        ("raw_u001f_in_string", '"\x1f"'),
        ("byte_order_mark_prefix", "\ufeff{}"),
        ("form_feed_as_whitespace", "\f1"),
        ("vertical_tab_as_whitespace", "\v1"),
        ("no_break_space_as_whitespace", "\u00a01"),
        ("lowercase_nan", "nan"),
        ("lowercase_infinity", "infinity"),
        ),
    *_r("duplicate_key",
        ("duplicate_top", '{"a":1,"a":2}'),
        ("duplicate_same_value", '{"a":1,"a":1}'),
        ("duplicate_not_adjacent", '{"a":1,"b":2,"a":3}'),
        ("duplicate_empty_key", '{"":1,"":2}'),
        ("duplicate_nested_object", '{"x":{"a":1,"b":2,"a":3}}'),
        ("duplicate_in_array", '[1,{"a":1,"a":2}]'),
        ("duplicate_deep", '{"a":[{"b":{"c":{"d":1,"d":2}}}]}'),
        ("duplicate_escaped_spelling", r'{"a":1,"\u0061":2}'),
        ("duplicate_non_ascii_escaped_spelling", r'{"é":1,"\u00e9":2}'),
        ("duplicate_astral_escaped_spelling", r'{"😀":1,"\ud83d\ude00":2}'),
        ),
    *_r("lone_surrogate",
        ("lone_high_surrogate_escape", r'"\ud800"'),
        ("lone_low_surrogate_escape", r'"\udc00"'),
        ("high_surrogate_at_end", r'"abc\ud83d"'),
        ("high_surrogate_then_ascii", r'"\ud83dx"'),
        ("high_surrogate_then_high", r'"\ud83d\ud83d"'),
        ("surrogates_reversed", r'"\ude00\ud83d"'),
        ("lone_surrogate_in_key", r'{"\udfff":1}'),
        ("lone_surrogate_nested", r'[{"a":["\udbff"]}]'),
        ("raw_lone_high_surrogate", '"\ud800"'),
        ("raw_lone_low_surrogate", '"a\udc00b"'),
        ),
    *_r("non_integer_number",
        ("fraction_one_point_zero", "1.0"),
        ("fraction", "1.5"),
        ("minus_zero_point_zero", "-0.0"),
        ("zero_point_zero", "0.0"),
        ("exponent_lower", "1e2"),
        ("exponent_upper", "1E2"),
        ("exponent_plus", "1e+2"),
        ("exponent_minus", "1e-2"),
        ("exponent_zero", "0e0"),
        ("exponent_overflows_double", "1e400"),
        ("exponent_underflows_double", "1e-400"),
        ("integral_fraction_beyond_2_53", "9007199254740993.0"),
        ("fraction_nested", '{"a":[1,2.5]}'),
        ),
    *_r("integer_out_of_range",
        ("integer_2_53", str(MAX_SAFE_INTEGER + 1)),
        ("integer_minus_2_53", str(-MAX_SAFE_INTEGER - 1)),
        ("integer_2_64", str(2**64)),
        ("integer_17_digits", "1" + "0" * 16),
        ("integer_4301_digits", "1" + "0" * 4300),
        ("integer_out_of_range_nested", f'[1,{{"a":{-MAX_SAFE_INTEGER - 2}}}]'),
        ),
    *_r("nan_or_infinity",
        ("nan", "NaN"),
        ("infinity", "Infinity"),
        ("minus_infinity", "-Infinity"),
        ("nan_in_array", "[NaN]"),
        ("minus_infinity_in_object", '{"a":-Infinity}'),
        ),
    *_r("too_deep",
        (f"nesting_{MAX_DEPTH + 1}_arrays", "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)),
        (f"nesting_{MAX_DEPTH + 1}_arrays_with_value",
         "[" * (MAX_DEPTH + 1) + "1" + "]" * (MAX_DEPTH + 1)),
        (f"nesting_{MAX_DEPTH + 1}_objects", '{"a":' * MAX_DEPTH + "{}" + "}" * MAX_DEPTH),
        (f"nesting_{MAX_DEPTH + 1}_mixed", _nest(MAX_DEPTH + 1, "null")),
        ("nesting_10000_arrays", "[" * 10000 + "]" * 10000),
        ),
)


# --------------------------------------------------------------------------------------------
# documents

_COMMON_DESCRIPTION: Final[tuple[str, ...]] = (
    "Conformance vectors for syncref canonical JSON (DESIGN.md section 2). Generated from the "
    "executable model spec/canonical.py by tests/conformance/generate_vectors.py; do not edit "
    "by hand. See tests/conformance/vectors/README.md.",
    "Parsing: the input must be RFC 8259 JSON text (any value at the top level) with no "
    "duplicate object keys, no unpaired UTF-16 surrogates, no number with a fraction or "
    f"exponent, no integer outside +/-(2^53-1) = +/-{MAX_SAFE_INTEGER} and at most {MAX_DEPTH} "
    "nested arrays/objects; otherwise it is rejected with error code non_canonical_payload and "
    "one of the reasons in reject.json.",
    "Canonical text: the parsed value written with no whitespace; object keys sorted by Unicode "
    "code point (equivalently by their UTF-8 bytes; NOT by UTF-16 code units), keys compared "
    "after decoding escapes; array order kept; integers in plain decimal (-0 is written 0); "
    "strings escape only \" as \\\" and \\ as \\\\ and U+0000-U+001F (\\b \\t \\n \\f \\r by "
    "name, the others as \\u00xx with lower-case hex); every other character is written raw "
    "(including /, U+007F, U+0080-U+009F, U+2028, U+2029 and characters beyond U+FFFF), so the "
    "text is UTF-8 with no Unicode normalization. This is exactly Python's json.dumps(v, "
    "sort_keys=True, separators=(',', ':'), ensure_ascii=False, allow_nan=False).",
    "Hash: 'sha256:' followed by the lower-case hex SHA-256 of the canonical text's UTF-8 bytes.",
    "This file itself is ASCII (written with ensure_ascii): every non-ASCII character in a "
    "string below appears as a \\uXXXX escape, characters beyond U+FFFF as a surrogate pair. "
    "That is an artifact of the file, not of the canonical form; decode the file with any JSON "
    "reader to get the actual strings. Where a string holds a character outside printable "
    "ASCII (U+0020-U+007E), the matching *_utf8_hex field gives its exact UTF-8 bytes as "
    "lower-case hex.",
)

_ACCEPT_DESCRIPTION: Final[tuple[str, ...]] = (
    *_COMMON_DESCRIPTION,
    "Each case is accepted: {name, input, canonical, hash} plus input_utf8_hex / "
    "canonical_utf8_hex where the rule above calls for them. canonicalize(input) must equal "
    "canonical (compare UTF-8 bytes), and hash must equal the hash of canonical. canonical is "
    "itself a fixed point: canonicalize(canonical) == canonical.",
)

_REJECT_DESCRIPTION: Final[tuple[str, ...]] = (
    *_COMMON_DESCRIPTION,
    "Each case is rejected: {name, input, reason} plus input_utf8_hex where the rule above calls "
    "for it. Canonicalizing input must fail with error code non_canonical_payload and "
    "details.reason equal to reason (the meaning of each reason is under 'reasons'). Each input "
    "has exactly one defect, so the reason does not depend on the order of the checks.",
    "When the input is not valid Unicode text (it holds an unpaired surrogate code point itself, "
    "not as a \\u escape) it cannot be written as a JSON string: then input is null and "
    "input_utf16_hex gives the text as big-endian UTF-16 code units (4 hex digits each). Only "
    "UTF-16 string types (JavaScript, Java, C#) can hold such text; an implementation whose "
    "strings are always valid Unicode (Rust, Go, UTF-8 bytes off the wire) may skip these cases.",
)


def _printable_ascii(s: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in s)


def _valid_unicode(s: str) -> bool:
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in s)


def _utf16_hex(s: str) -> str:
    encoded = s.encode("utf-16-be", "surrogatepass")
    if encoded.decode("utf-16-be", "surrogatepass") != s:
        # two raw surrogate code points that pair up would read back as one astral character
        raise VectorError(f"input {s!r} does not survive a UTF-16 round trip")
    return encoded.hex()


def _check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise VectorError(f"duplicate case name {name!r}")
        if not name or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name):
            raise VectorError(f"case name {name!r} is not [A-Za-z0-9_]+")
        seen.add(name)


def accept_document() -> dict[str, Any]:
    """The accept vectors: canonical text and hash of every accept case, from the model."""
    _check_names([c.name for c in ACCEPT_CASES])
    cases: list[dict[str, Any]] = []
    for case in ACCEPT_CASES:
        try:
            canon, digest = canonical_and_hash(case.text)
        except SyncError as exc:
            raise VectorError(f"accept case {case.name!r} is rejected by the model: {exc}") from None
        if canonicalize(canon) != canon:
            raise VectorError(f"accept case {case.name!r}: canonical text is not a fixed point")
        entry: dict[str, Any] = {"name": case.name, "input": case.text}
        if not _printable_ascii(case.text):
            entry["input_utf8_hex"] = case.text.encode("utf-8").hex()
        entry["canonical"] = canon
        if not _printable_ascii(canon):
            entry["canonical_utf8_hex"] = canon.encode("utf-8").hex()
        entry["hash"] = digest
        cases.append(entry)
    return {"description": list(_ACCEPT_DESCRIPTION), "format": ACCEPT_FORMAT,
            "count": len(cases), "cases": cases}


def reject_document() -> dict[str, Any]:
    """The reject vectors: every reject case with the reason the model reports."""
    _check_names([c.name for c in REJECT_CASES])
    if set(REASON_MEANINGS) != set(REASONS):
        raise VectorError("REASON_MEANINGS does not describe exactly spec.canonical.REASONS")
    cases: list[dict[str, Any]] = []
    for case in REJECT_CASES:
        try:
            canonicalize(case.text)
        except SyncError as exc:
            if exc.code is not ErrorCode.NON_CANONICAL_PAYLOAD:
                raise VectorError(f"reject case {case.name!r} failed with {exc.code}") from None
            reason = exc.details["reason"]
        else:
            raise VectorError(f"reject case {case.name!r} is accepted by the model")
        if reason != case.reason:
            raise VectorError(f"reject case {case.name!r}: model says {reason!r}, "
                              f"curated {case.reason!r}")
        entry: dict[str, Any] = {"name": case.name}
        if _valid_unicode(case.text):
            entry["input"] = case.text
            if not _printable_ascii(case.text):
                entry["input_utf8_hex"] = case.text.encode("utf-8").hex()
        else:
            entry["input"] = None
            entry["input_utf16_hex"] = _utf16_hex(case.text)
        entry["reason"] = reason
        cases.append(entry)
    missing = set(REASONS) - {c["reason"] for c in cases}
    if missing:
        raise VectorError(f"no reject case for reasons {sorted(missing)}")
    return {"description": list(_REJECT_DESCRIPTION), "format": REJECT_FORMAT,
            "reasons": {r: REASON_MEANINGS[r] for r in REASONS},
            "count": len(cases), "cases": cases}


def render(document: dict[str, Any]) -> str:
    """Deterministic file text: 2-space indent, ASCII only, trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=True, allow_nan=False) + "\n"


def canonical_vectors() -> dict[str, str]:
    """``{file name: file text}`` of the canonical-JSON vectors (``vectors/canonical/``)."""
    return {"accept.json": render(accept_document()), "reject.json": render(reject_document())}
