"""Canonical JSON and payload hashes.

The canonical text of a JSON value is exactly what Python writes with
``json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
for the value parsed from the input: keys sorted by code point, no whitespace, UTF-8 with
non-ASCII characters unescaped, ``"`` and ``\\`` escaped, control characters U+0000-U+001F
escaped (``\\n \\r \\t \\b \\f`` by name, the rest as lowercase ``\\u00XX``).

Parsing is strict where JSON itself is loose, each rejection with its own reason (all under
the error code ``non_canonical_payload``):

============================  =============================================================
reason                        input
============================  =============================================================
``invalid_json``              not JSON at all (syntax error, empty text, bad escape)
``duplicate_key``             an object repeats a key (JSON leaves this undefined)
``lone_surrogate``            a string holds an unpaired UTF-16 surrogate (not UTF-8-encodable)
``non_integer_number``        a number with a fraction or exponent (``1.0``, ``1e3``)
``integer_out_of_range``      an integer outside +/-(2^53 - 1) (not exact in every JSON reader)
``nan_or_infinity``           ``NaN``, ``Infinity``, ``-Infinity``
``too_deep``                  nesting deeper than :data:`MAX_DEPTH`
============================  =============================================================

A text with several defects gets the reason of the first one Python's ``json`` scanner meets, left
to right (a duplicate key counts when its object closes, a lone surrogate and a container past
:data:`MAX_DEPTH` only once the whole text has parsed), with one exception that keeps the answer a
function of the text: a text whose arrays/objects nest more than :data:`SCAN_DEPTH_LIMIT` deep --
brackets counted outside string literals, a literal running from ``"`` to the next unescaped ``"`` or
to the end of the text -- is ``too_deep`` before it is parsed at all.  (The scanner recurses once per
level; past the interpreter's recursion limit, whose distance from the caller depends on the
caller's own stack, it would otherwise stop with a different reason in different callers.)

Any JSON value may be the top level.  The hash of a value is ``sha256:`` followed by the
lowercase hex SHA-256 of its canonical text's UTF-8 bytes.  The canonical text of a canonical
text is itself (idempotence), which the contracts below state and CrossHair and Hypothesis check.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from itertools import accumulate
from typing import Any

import icontract

from spec import contracts
from spec.errors import ErrorCode, SyncError

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
"""At most this many arrays/objects nested in one another: ``[]`` has depth 1, a scalar 0."""
SCAN_DEPTH_LIMIT = 512
"""A text nesting deeper than this (brackets outside string literals) is ``too_deep`` before parsing,
so the scanner never recurses near the interpreter's limit (1000 frames, shared with the caller)."""
_MAX_SAFE_DIGITS = len(str(MAX_SAFE_INTEGER))
_HASH_TEXT = re.compile(r"sha256:[0-9a-f]{64}")
_SURROGATE = re.compile("[\ud800-\udfff]")

REASONS: tuple[str, ...] = (
    "invalid_json", "duplicate_key", "lone_surrogate", "non_integer_number",
    "integer_out_of_range", "nan_or_infinity", "too_deep",
)

JsonValue = Any


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject("duplicate_key", f"duplicate object key {k!r}")
        out[k] = v
    return out


def _reject_float(text: str) -> Any:
    raise _Reject("non_integer_number", f"number {text[:40]} is not an integer")


def _reject_constant(text: str) -> Any:
    raise _Reject("nan_or_infinity", f"{text} is not a JSON number")


def _check_int(text: str) -> int:
    # JSON forbids leading zeros, so more digits than 2^53 - 1 has always means out of range.
    # Checking the length first also keeps int() clear of Python's 4300-digit conversion limit,
    # whose ValueError would otherwise be misreported as invalid_json.
    if len(text.lstrip("-")) > _MAX_SAFE_DIGITS:
        raise _Reject("integer_out_of_range", f"integer {text[:40]} is outside +/-(2^53-1)")
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _Reject("integer_out_of_range", f"integer {text[:40]} is outside +/-(2^53-1)")
    return value


def _utf8_encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@icontract.ensure(lambda s, result: result == (not _utf8_encodable(s)),
                  "a string holds a surrogate exactly when it cannot be written as UTF-8", enabled=contracts.PER_ROW)
def _has_surrogate(s: str) -> bool:
    return not s.isascii() and _SURROGATE.search(s) is not None


def _walk(value: Any, depth: int) -> None:
    """Check ``value``, which sits inside ``depth`` arrays/objects."""
    if isinstance(value, str):
        if _has_surrogate(value):
            raise _Reject("lone_surrogate", "string contains an unpaired surrogate")
        return
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        raise _Reject("too_deep", f"nesting deeper than {MAX_DEPTH}")
    if isinstance(value, list):
        for v in value:
            _walk(v, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if _has_surrogate(k):
                raise _Reject("lone_surrogate", "object key contains an unpaired surrogate")
            _walk(v, depth + 1)


# ``json.loads`` and ``json.dumps`` with options build a new decoder or encoder on every call, which
# cost as much as the parsing and writing of a small payload: both are built once here, with the
# same options (``_loads`` keeps ``json.loads``'s own check of a leading byte-order mark, so every
# input is accepted or refused with the same reason and message; the text is always a str here:
# ``parse_strict`` searches it for surrogates first, which a bytes value would not get past).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_float=_reject_float,
                            parse_constant=_reject_constant, parse_int=_check_int)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# ``_ENCODER.encode`` builds CPython's C encoder (``json.encoder.c_make_encoder``) afresh on every call
# from its options, through two Python frames (``encode``, ``iterencode``); ``dumps_canonical`` builds
# the same C encoder from the same options itself -- with a fresh circular-reference marker dict per
# call, as ``iterencode`` does, so a cyclic value is still refused by name and two threads never share
# the markers -- and joins its chunks as ``encode`` does (one chunk, or several for an output of more
# than ~100,000 pieces).  Where ``_json`` is missing (not CPython) it falls back to ``_ENCODER.encode``.
_C_MAKE_ENCODER: Any = (getattr(json.encoder, "c_make_encoder", None)
                        or (lambda markers, *options: lambda value, level: [_ENCODER.encode(value)]))
_ENCODER_OPTIONS = (_ENCODER.default,
                    json.encoder.encode_basestring_ascii if _ENCODER.ensure_ascii else json.encoder.encode_basestring,
                    _ENCODER.indent, _ENCODER.key_separator, _ENCODER.item_separator, _ENCODER.sort_keys,
                    _ENCODER.skipkeys, _ENCODER.allow_nan)


# A parsed value is a tree of fresh containers (the decoder builds every list and, through
# ``_no_duplicates``, every dict anew; nothing is shared, so nothing is cyclic), so ``canonicalize``
# writes it with the C encoder built once, without circular-reference markers; ``dumps_canonical``
# keeps them for values of any origin.
_TREE_ENCODER: Any = _C_MAKE_ENCODER(None, *_ENCODER_OPTIONS)
# ``_DECODER.decode`` is two Python frames around the scanner (skip whitespace, ``raw_decode``, skip
# whitespace, "Extra data" past the value); ``_loads`` calls the scanner at 0 itself and takes its
# value when it spans the whole text.  Anything else goes to ``decode`` for its value or error: the
# scanner at 0 stops at once on leading whitespace (StopIteration), and a value that ends early may
# be followed by whitespace or by extra data.  An error the scanner raises at 0 is the one ``decode``
# raises, since ``decode`` starts the same scanner at the same place when no whitespace leads.
_SCAN: Any = _DECODER.scan_once  # type: ignore[attr-defined]


def _loads(text: str) -> JsonValue:
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


# When the validation walk can be skipped.  ``_walk`` refuses exactly two things: a container nested
# deeper than MAX_DEPTH, and a string or key holding a surrogate.  ``parse_strict`` skips it when the
# text has no ``\u`` and at most MAX_DEPTH ``[`` and ``{`` together; then it could find neither:
#
# * Depth.  Every array or object of the parsed value was opened by its own ``[`` or ``{`` of the text
#   (outside any string: JSON has no other way to start one), and a chain of k containers nested in one
#   another opened k distinct brackets.  ``_walk`` refuses a container it meets at depth >= MAX_DEPTH,
#   the (MAX_DEPTH + 1)-th of such a chain, so refusing needs at least MAX_DEPTH + 1 brackets.  Counting
#   every bracket of the text -- those inside strings too -- only over-counts: the skip is conservative.
# * Surrogates.  The text itself holds none (searched first).  A decoded string's characters are the
#   text's own characters or what an escape stands for; the escapes other than ``\uXXXX`` stand for
#   ``" \ / \b \f \n \r \t``, none a surrogate.  With no ``\u`` in the text there is no ``\uXXXX``
#   escape (a ``\\u`` -- an escaped backslash, then u -- also matches, and only makes the walk run).
#
# So with the walk skipped the outcome is the same: the value, or the decoder's own refusal.  For the
# 150-byte payload of the benchmarks the two counts and the search cost ~0.3 us, the walk ~0.8 us.
# Measured in docs/performance.md "verify-log, halved (fourth session)"; tests/spec/test_canonical.py
# holds the cases at the bound (63/64/65 levels, brackets and escapes in strings) with whether the walk ran.


# What the depth bound does not count: a string literal (from a quote to the next unescaped one, or to
# the end of the text) or a run of other characters.  Removing them leaves the brackets outside
# literals, in order; the deepest nesting is the largest running sum of +1 per opening bracket and -1
# per closing one.  One substitution and C-level iteration: linear (no backtracking: every character
# of a literal is taken by exactly one part of the pattern, and a literal always ends), a few ms for
# 256 KiB.
_NOT_COUNTED = re.compile(r'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)|[^"\[\]{}]+', re.DOTALL)
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nests_past_scan_limit(text: str) -> bool:
    brackets = _NOT_COUNTED.sub("", text)
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets), initial=0)) > SCAN_DEPTH_LIMIT


def parse_strict(text: str, argument: str = "payload_json") -> JsonValue:
    """Parse ``text`` under the strict rules above, or raise ``SyncError(non_canonical_payload)``.

    :raises SyncError: ``non_canonical_payload`` with one of :data:`REASONS`
    """
    try:
        if _has_surrogate(text):
            raise _Reject("lone_surrogate", "text contains an unpaired surrogate")
        brackets = text.count("[") + text.count("{")
        if brackets > SCAN_DEPTH_LIMIT and _nests_past_scan_limit(text):
            raise _Reject("too_deep", f"nesting deeper than {MAX_DEPTH}")
        value = _loads(text)
        if "\\u" in text or brackets > MAX_DEPTH:  # else _walk finds nothing
            _walk(value, 0)
    except _Reject as r:
        raise SyncError(ErrorCode.NON_CANONICAL_PAYLOAD,
                        {"argument": argument, "reason": r.reason, "message": r.detail}) from None
    except RecursionError:
        raise SyncError(ErrorCode.NON_CANONICAL_PAYLOAD,
                        {"argument": argument, "reason": "too_deep",
                         "message": f"nesting deeper than {MAX_DEPTH}"}) from None
    except ValueError as exc:  # JSONDecodeError and int-digit limits
        raise SyncError(ErrorCode.NON_CANONICAL_PAYLOAD,
                        {"argument": argument, "reason": "invalid_json", "message": str(exc)[:200]}) from None
    return value


def dumps_canonical(value: JsonValue) -> str:
    """Canonical text of an already-parsed, valid value."""
    return "".join(_C_MAKE_ENCODER({}, *_ENCODER_OPTIONS)(value, 0))


def _json_equal(a: JsonValue, b: JsonValue) -> bool:
    """Equality of JSON values that, unlike ``==``, tells ``true`` from ``1``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _no_raw_control(text: str) -> bool:
    return all(ord(ch) >= 0x20 for ch in text)


# The oracles canonicalize the same stored payloads after every step; these checks are pure
# functions of their arguments, so each pair is checked once.
@functools.lru_cache(maxsize=4096)
def _is_fixed_point(result: str) -> bool:
    return dumps_canonical(json.loads(result)) == result


@functools.lru_cache(maxsize=4096)
def _is_clean(result: str) -> bool:
    return _no_raw_control(result) and _utf8_encodable(result)


@functools.lru_cache(maxsize=4096)
def _same_value(text: str, result: str) -> bool:
    return _json_equal(json.loads(result), json.loads(text))


@icontract.ensure(lambda result: _is_fixed_point(result),
                  "HASH-2 (canonical text is a fixed point: canonicalizing it again changes nothing)",
                  enabled=icontract.SLOW)
@icontract.ensure(lambda result: _is_clean(result),
                  "HASH-2 (canonical text has no raw control characters and is valid UTF-8)", enabled=icontract.SLOW)
@icontract.ensure(lambda text, result: _same_value(text, result),
                  "HASH-2 (canonical text denotes the same JSON value as the input)", enabled=icontract.SLOW)
def canonicalize(text: str, argument: str = "payload_json") -> str:
    """Canonical text of the JSON ``text``, or ``SyncError(non_canonical_payload)``.

    :raises SyncError: ``non_canonical_payload``: ``text`` is not representable JSON
    """
    return "".join(_TREE_ENCODER(parse_strict(text, argument), 0))  # dumps_canonical of a tree


@functools.lru_cache(maxsize=4096)
def _digest_of(canonical_text: str, result: str) -> bool:
    return bytes.fromhex(result[7:]) == hashlib.sha256(canonical_text.encode("utf-8")).digest()


@icontract.ensure(lambda result: _HASH_TEXT.fullmatch(result) is not None,
                  "HASH-1 (a payload hash is sha256: and 64 lowercase hex digits)", enabled=icontract.SLOW)
@icontract.ensure(lambda canonical_text, result: _digest_of(canonical_text, result),
                  "HASH-1 (the hash is the SHA-256 of the text's UTF-8 bytes)", enabled=icontract.SLOW)
def payload_hash(canonical_text: str) -> str:
    """``sha256:`` + lowercase hex SHA-256 of the UTF-8 bytes of a canonical text."""
    return "sha256:" + hashlib.sha256(canonical_text.encode("utf-8")).hexdigest()


@icontract.ensure(lambda text, result: not result or (_no_raw_control(text) and text.strip() == text),
                  "a canonical text has no raw control characters and no surrounding whitespace",
                  enabled=contracts.PER_ROW)
def is_canonical(text: str) -> bool:
    try:
        return canonicalize(text) == text
    except SyncError:
        return False


@icontract.ensure(lambda result: payload_hash(result[0]) == result[1], "HASH-1 (the hash is of the canonical text)")
def canonical_and_hash(text: str, argument: str = "payload_json") -> tuple[str, str]:
    """:raises SyncError: ``non_canonical_payload``"""
    canon = canonicalize(text, argument)
    return canon, payload_hash(canon)
