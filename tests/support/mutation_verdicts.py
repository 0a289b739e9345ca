"""Generated mutants (mutmut, `support.mutate`) that do not change behaviour, each with the reason.

Keys are mutmut's mutant names (`module.function__mutmut_N`), valid for the commit recorded in
docs/mutation.md: editing a function renumbers its mutants, so the list is re-checked after each
measured run (`support.mutate` flags an entry that a test now kills).
"""

_REJECT_ARGS = "_Reject never leaves the module and parse_strict reads its .reason and .detail, never .args"

EQUIVALENT: dict[str, str] = {
    # spec/query.py
    "spec.query.xǁ_Parserǁunexpected__mutmut_3":
        "the key of a non-word, non-symbol token (a number, 0x..., a quoted string or identifier, quotes "
        "included) is never a key of _UNSUPPORTED, so looking it up finds nothing either way",
    "spec.query.xǁ_Parserǁunexpected__mutmut_10":
        "the empty key and 'XXXX' are both absent from _UNSUPPORTED: the lookup falls back the same way",
    "spec.query.xǁ_Parserǁcoerce__mutmut_9":
        "no table has a Bool column (spec.schema), so the (BOOL, 'a boolean') pair is never looked up",
    "spec.query.xǁ_Parserǁcoerce__mutmut_10":
        "no table has a Bool column (spec.schema), so the (BOOL, 'a boolean') pair is never looked up",
    "spec.query.xǁ_Parserǁcoerce__mutmut_36":
        "the stand-in for an over-long literal is only compared with the range: hi + 2 is out of range like "
        "hi + 1, and the message quotes the literal's text, not the stand-in",
    "spec.query.xǁ_Parserǁcoerce__mutmut_56":
        "RFC 3339 years 0001-9999 give |micros| < 2.6e17, far inside -(2**63) (and -(3**63)): the lower "
        "bound never binds",
    "spec.query.xǁ_Parserǁcoerce__mutmut_57": "as coerce__mutmut_56 (-(2**64)): the lower bound never binds",
    "spec.query.xǁ_Parserǁcoerce__mutmut_59":
        "RFC 3339 years 0001-9999 give micros < 2.6e17, far below 2**63: the upper bound never binds",
    # spec/errors.py
    "spec.errors.x_canonical_details__mutmut_4":
        "ensure_ascii=None is falsy, so json.dumps treats it as ensure_ascii=False",
    "spec.errors.x_canonical_details__mutmut_5":
        "allow_nan=None is falsy, so json.dumps treats it as allow_nan=False",
    "spec.errors.xǁSyncErrorǁ__hash____mutmut_1":
        "a constant hash still agrees with __eq__ (equal errors hash equal); only hashing speed changes",
    "spec.errors.xǁSyncErrorǁparse__mutmut_11":
        "the 'without details' branch is reached only when the whole text is a known code (at most 28 "
        "characters), so quoting text[:80] or text[:81] is the same",
    # spec/canonical.py
    "spec.canonical.xǁ_Rejectǁ__init____mutmut_1": _REJECT_ARGS,
    "spec.canonical.xǁ_Rejectǁ__init____mutmut_2": _REJECT_ARGS,
    "spec.canonical.xǁ_Rejectǁ__init____mutmut_3": _REJECT_ARGS,
    "spec.canonical.xǁ_Rejectǁ__init____mutmut_4": _REJECT_ARGS,
    "spec.canonical.x_dumps_canonical__mutmut_4": "ensure_ascii=None is falsy, so json.dumps treats it as False",
    "spec.canonical.x_dumps_canonical__mutmut_5": "allow_nan=None is falsy, so json.dumps treats it as False",
    "spec.canonical.x__utf8_encodable__mutmut_3": "codec names are case-insensitive: 'UTF-8' is the utf-8 codec",
}

# --- reference/ (the reference block of docs/mutation.md) --------------------------------------------

_UTF8 = "codec names are case-insensitive: 'UTF-8' is the utf-8 codec, the bytes hashed are the same"

EQUIVALENT.update({
    "reference.log.x_make_record__mutmut_23": _UTF8,
    "reference.log.x_record_hash__mutmut_24": _UTF8,
    "reference.durability.xǁGroupCommitWriterǁ_run__mutmut_2":
        "idle starts as None instead of False: it is only read as `if idle and ...`, where None is false too",
    "reference.replay.x__run__mutmut_20":
        "zip(..., strict=True) without strict: the line before raises unless len(args) == len(rdef.args), so the "
        "two sequences always have the same length there",
    "reference.reducers.x_append_sync_event__mutmut_127":
        "`or True` keeps stream.floor_seq when the stream is empty (head_seq < floor_seq); SEQ-1 (floor_seq <= "
        "head_seq + 1, a state invariant the contracts and machines check) makes it head_seq + 1 = next_seq then, "
        "the value the original picks",
    "reference.durability.xǁLogStoreǁopen__mutmut_11":
        "uri=None for the read-only 'file:...?mode=ro' name: the SQLite this runs on (Debian's 3.40.1) is built "
        "with SQLITE_USE_URI=1, which reads file: names as URIs whatever the flag says (checked: the mutant opens "
        "the same database read-only); a SQLite built without it would open a file named 'file:...' instead, so "
        "this is equivalent on this platform only",
})
