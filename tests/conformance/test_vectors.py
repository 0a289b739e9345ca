"""The checked-in canonical-JSON vectors: no drift from the model, the model passes them, and
they mean what an independent implementation would take them to mean.

(a) ``adapters/conformance/vectors/canonical/`` (one directory per case) equal what
    :func:`spec.vectors.canonical_vectors` generates now;
(b) every vector passes against :mod:`spec.canonical`;
(c) every vector is checked the way another implementation would read it: hashes recomputed with
    :mod:`hashlib`, canonical texts rebuilt by a separate serializer written from the rule's
    wording, and the five OpenAgents Khala vectors matched against their published hashes.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from typing import Any

import pytest

from adapters.conformance.generate import VECTORS_DIR
from spec.canonical import MAX_DEPTH, REASONS, canonical_and_hash, canonicalize, is_canonical
from spec.errors import ErrorCode, SyncError
from spec.vectors import ACCEPT_FORMAT, REJECT_FORMAT, accept_document, canonical_vectors, reject_document, render

CANONICAL_DIR = VECTORS_DIR / "canonical"
REGENERATE = ".venv/bin/python -m adapters.conformance.generate"
HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")

# Published in OpenAgentsInc/openagents docs/protocol/testdata/khala_payload_hash_vectors.v1.json
# ("khala.payload_hash.v1"); DESIGN §2 says our rule reproduces them.
KHALA_PUBLISHED_HASHES = {
    "khala_v1_sorted_flat_object":
        "sha256:43258cff783fe7036d8a43033f830adfc60ec037382473548ac742b888292777",
    "khala_v1_nested_sync_payload":
        "sha256:bf367b161129295cb3fab72a7eae88f8602207d4fc8fcf4510c4d5fa0bcb5317",
    "khala_v1_bool_null_array":
        "sha256:b5ef670c5e47639c44a0ed4ba6901df6b0e7f59e41e4102bb26e76fb1f4af946",
    "khala_v1_string_escaping":
        "sha256:5da82c8c6bf15cceb33ae20ba89c0adb33d030c5d65824d138936fae7a1ab3d8",
    "khala_v1_array_of_objects":
        "sha256:700bae9e6bc89b1810ee4cc08c459cc2a02ccb13fcde1949b10adfa031e8212d",
}


def _document(name: str) -> dict[str, Any]:
    """The accept/reject document of spec.vectors, reassembled from the kit's one-directory-per-case
    layout (``canonical/<accept|reject>/<case>/{ops,post|error}.json``)."""
    handler = name.removesuffix(".json")
    generated = accept_document() if handler == "accept" else reject_document()
    index = json.loads((VECTORS_DIR / "index.json").read_text("ascii"))
    cases = []
    for case in index["areas"]["canonical"][handler]:
        base = CANONICAL_DIR / handler / case
        entry: dict[str, Any] = {"name": case, **json.loads((base / "ops.json").read_text("ascii"))}
        if handler == "accept":
            entry.update(json.loads((base / "post.json").read_text("ascii")))
        else:
            entry["reason"] = json.loads((base / "error.json").read_text("ascii"))["reason"]
        cases.append(entry)
    return {**{k: v for k, v in generated.items() if k != "cases"}, "count": len(cases), "cases": cases}


ACCEPT_DOC = _document("accept.json")
REJECT_DOC = _document("reject.json")
ACCEPT: list[dict[str, Any]] = ACCEPT_DOC["cases"]
REJECT: list[dict[str, Any]] = REJECT_DOC["cases"]


def _name(case: dict[str, Any]) -> str:
    return str(case["name"])


def _printable_ascii(s: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in s)


def _input_text(case: dict[str, Any]) -> str:
    """The input as the README tells implementers to read it."""
    if case["input"] is None:
        return bytes.fromhex(case["input_utf16_hex"]).decode("utf-16-be", "surrogatepass")
    text: str = case["input"]
    if "input_utf8_hex" in case:
        assert bytes.fromhex(case["input_utf8_hex"]).decode("utf-8") == text
    return text


def _canonical_bytes(case: dict[str, Any]) -> bytes:
    if "canonical_utf8_hex" in case:
        return bytes.fromhex(case["canonical_utf8_hex"])
    data: bytes = case["canonical"].encode("ascii")
    return data


# ---------------------------------------------------------------------------------- (a) drift

def test_checked_in_vectors_match_the_model() -> None:
    expected = canonical_vectors()
    present = {name: render(_document(name)) for name in expected}
    problems: list[str] = []
    for name in sorted(set(expected) - set(present)):
        problems.append(f"missing: {name}")
    for name in sorted(set(present) - set(expected)):
        problems.append(f"stale (the model no longer generates it): {name}")
    for name in sorted(set(expected) & set(present)):
        if present[name] != expected[name]:
            diff = list(difflib.unified_diff(present[name].splitlines(), expected[name].splitlines(),
                                             f"checked-in {name}", f"generated {name}", lineterm=""))
            problems.append("\n".join(diff[:40]))
    if problems:
        pytest.fail(f"tests/conformance/vectors/canonical/ has drifted from spec/vectors.py + "
                    f"spec/canonical.py.\nRun `{REGENERATE}` and review the diff.\n\n"
                    + "\n".join(problems), pytrace=False)


def test_vector_files_are_well_formed() -> None:
    for doc, fmt in ((ACCEPT_DOC, ACCEPT_FORMAT), (REJECT_DOC, REJECT_FORMAT)):
        assert doc["format"] == fmt
        assert isinstance(doc["description"], list) and doc["description"]
        assert doc["count"] == len(doc["cases"]) > 0
        names = [c["name"] for c in doc["cases"]]
        assert len(names) == len(set(names)), "case names must be unique"
    for path in CANONICAL_DIR.rglob("*.json"):
        data = path.read_bytes()
        assert data.isascii(), f"{path.name} must be ASCII (written with ensure_ascii)"
        assert data.endswith(b"\n") and b"\r" not in data
    for case in ACCEPT:
        assert set(case) - {"input_utf8_hex", "canonical_utf8_hex"} == {"name", "input", "canonical", "hash"}
    for case in REJECT:
        assert set(case) - {"input_utf8_hex", "input_utf16_hex"} == {"name", "input", "reason"}
        assert ("input_utf16_hex" in case) == (case["input"] is None)


def test_vectors_cover_the_rule() -> None:
    assert {c["reason"] for c in REJECT} == set(REASONS)
    assert set(REJECT_DOC["reasons"]) == set(REASONS)
    canonicals = "".join(c["canonical"] for c in ACCEPT)
    for cp in range(0x20):  # every control character appears escaped in some canonical text
        escaped = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}.get(cp, f"\\u{cp:04x}")
        assert escaped in canonicals
    for ch in ("\x7f", "\u2028", "\u2029", "é", "中", "\U0001f600"):  # written raw
        assert ch in canonicals
    names = {_name(c) for c in ACCEPT} | {_name(c) for c in REJECT}
    for needed in (f"nesting_{MAX_DEPTH}_arrays", f"nesting_{MAX_DEPTH + 1}_arrays", "integer_max_safe",
                   "integer_min_safe", "integer_2_53", "integer_minus_2_53", "minus_zero",
                   "keys_code_point_not_utf16_order", *KHALA_PUBLISHED_HASHES):
        assert needed in names


# ----------------------------------------------------------------------- (b) the model passes

@pytest.mark.parametrize("case", ACCEPT, ids=_name)
def test_accept_vector(case: dict[str, Any]) -> None:
    text = _input_text(case)
    canon, digest = canonical_and_hash(text)
    assert canon == case["canonical"]
    assert digest == case["hash"]
    assert is_canonical(canon)
    assert canonicalize(canon) == canon


@pytest.mark.parametrize("case", REJECT, ids=_name)
def test_reject_vector(case: dict[str, Any]) -> None:
    text = _input_text(case)
    with pytest.raises(SyncError) as info:
        canonicalize(text, "input_json")
    assert info.value.code is ErrorCode.NON_CANONICAL_PAYLOAD
    assert info.value.details["reason"] == case["reason"]
    assert info.value.details["argument"] == "input_json"
    assert not is_canonical(text)


# -------------------------------------------------------- (c) as an independent reader sees it

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _independent_string(s: str) -> str:
    """Strings per the rule's wording: escape " \\ and U+0000-U+001F, everything else raw."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _independent_canonical(value: Any) -> str:
    """A second serializer (no json.dumps): keys ordered by their UTF-8 bytes."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _independent_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_independent_canonical(v) for v in value) + "]"
    assert isinstance(value, dict)
    items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
    return "{" + ",".join(_independent_string(k) + ":" + _independent_canonical(v) for k, v in items) + "}"


@pytest.mark.parametrize("case", ACCEPT, ids=_name)
def test_accept_vector_independently(case: dict[str, Any]) -> None:
    text = _input_text(case)
    canonical_bytes = _canonical_bytes(case)
    assert canonical_bytes.decode("utf-8") == case["canonical"]
    assert ("canonical_utf8_hex" in case) == (not _printable_ascii(case["canonical"]))
    assert ("input_utf8_hex" in case) == (not _printable_ascii(text))
    assert HASH_RE.fullmatch(case["hash"])
    assert case["hash"] == "sha256:" + hashlib.sha256(canonical_bytes).hexdigest()
    assert _independent_canonical(json.loads(text)) == case["canonical"]
    if case["name"] in KHALA_PUBLISHED_HASHES:
        assert case["hash"] == KHALA_PUBLISHED_HASHES[case["name"]]


def test_equal_canonical_texts_share_a_hash() -> None:
    by_canonical: dict[str, set[str]] = {}
    for case in ACCEPT:
        by_canonical.setdefault(case["canonical"], set()).add(case["hash"])
    assert all(len(hashes) == 1 for hashes in by_canonical.values())
    assert len({h for hashes in by_canonical.values() for h in hashes}) == len(by_canonical)
