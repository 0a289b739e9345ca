"""Generated mutants (mutmut, `support.mutate`) that do not change behaviour, each with the reason.

Keys are mutmut's mutant names (`module.function__mutmut_N`), valid for the commit recorded in
docs/mutation.md: editing a function renumbers its mutants, so the list is re-checked after each
measured run (`support.mutate` flags an entry that a test now kills).
"""

_REJECT_ARGS = "_Reject never leaves the module and parse_strict reads its .reason and .detail, never .args"

_ZIP_AFTER_LEN = ("the lengths are compared first (`len(a) == len(b) and ...`), so zip's strict flag never sees "
                  "lists of different lengths")

_CONNECTED_FALSY = ("Client.connected is only read for its truth (`if self.connected`, `if not self.connected`): "
                    "None is as False")
_ZIP_AFTER_LEN_CHAIN = ("the chain's two lists are compared in length first "
                        "(`len(earlier_epochs) != len(earlier_seqs)` returns False), so zip's strict flag never "
                        "sees lists of different lengths")

EQUIVALENT: dict[str, str] = {
    # spec/canonical.py, decorated functions (`--icontract --decorated-only`)
    "spec.canonical.x_payload_hash__mutmut_7":
        "str.encode looks codec names up case-insensitively: 'UTF-8' is the same codec as 'utf-8'",
    # fifth session: canonicalize writes with the tree encoder (the level argument, as in dumps_canonical)
    "spec.canonical.x_canonicalize__mutmut_13":
        "the C encoder's second argument is the current indent level, read only when an indent is set; the "
        "tree encoder has none (separators only), so level 1 writes the same text as level 0",
    # reference/reducers.py, decorated functions (`--icontract --decorated-only`)
    "reference.reducers.x_compact__mutmut_43":
        "with len(log.events) == retain_count (`>=` for `>`), keep_from = log.floor + 0 = log.floor, and "
        "keep_from == log.floor skips the stream, as when the count rule is skipped",
    # spec/reducers.py, decorated functions (`./run mutate --icontract --decorated-only`)
    "spec.reducers.x_call__mutmut_24":
        "call checks len(args) == len(rdef.args) first and returns invalid_argument otherwise, so zip's strict "
        "flag (None here) never sees sequences of different lengths",
    "spec.reducers.x_call__mutmut_28":
        "call checks len(args) == len(rdef.args) first and returns invalid_argument otherwise, so zip's strict "
        "flag (False here) never sees sequences of different lengths",
    "spec.reducers.x_call__mutmut_27":
        "call checks len(args) == len(rdef.args) first and returns invalid_argument otherwise, so zip's strict "
        "flag never sees sequences of different lengths",
    "spec.reducers.x_compact__mutmut_39":
        "with len(events) == retain_count (`>=` for `>`), the count rule drops events[:len(events) - retain_count], "
        "i.e. events[:0]: nothing, as when the rule is skipped",
    "spec.reducers.x_compact__mutmut_40":
        "the count rule is the first to add to `drop`, which is the fresh empty set made just before "
        "(`drop = set()`), so `drop = {...}` for `drop |= {...}` gives the same set and nothing else holds it",
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
    # (dumps_canonical's mutmut_4 and _5, ensure_ascii=None and allow_nan=None, are gone: the encoder's
    # options are now set once at module level, which mutmut does not mutate; branch snap)
    "spec.canonical.x__utf8_encodable__mutmut_3": "codec names are case-insensitive: 'UTF-8' is the utf-8 codec",

    # ---- spec/ modules, second session (branch mutspec) ------------------------------------------------
    # spec/canonical.py (the rest of the module)
    "spec.canonical.x__json_equal__mutmut_14": _ZIP_AFTER_LEN,
    "spec.canonical.x__json_equal__mutmut_17": _ZIP_AFTER_LEN,
    "spec.canonical.x__json_equal__mutmut_18": _ZIP_AFTER_LEN,
    "spec.canonical.x__check_int__mutmut_21":
        "the range check after the length check sees at most 16 digits and a sign (17 characters), so "
        "quoting text[:40] or text[:41] is the same",
    # renumbered from mutmut_63 when parse_strict's json.loads call moved into _loads (branch snap;
    # matched by the mutation itself, '200' -> '201', with mutmut's create_mutations on both sources),
    # and back to mutmut_63 when the walk's skip test came before it (fourth session, branch snap),
    # then mutmut_73 when the scan-depth bound came before the parse (branch revt; matched the same way)
    "spec.canonical.x_parse_strict__mutmut_73":
        "the ValueErrors parse_strict can meet are json's JSONDecodeError (a message of at most ~50 characters "
        "plus line, column and offset) -- int()'s digit limit is kept out by _check_int's length check -- so "
        "no message reaches 200 characters and [:200] or [:201] is the same",
    # the scan-depth guard only skips the scan: a text with exactly SCAN_DEPTH_LIMIT brackets nests at most
    # that deep, which _nests_past_scan_limit does not refuse
    "spec.canonical.x_parse_strict__mutmut_19":
        "the guard only decides whether to scan: a text with SCAN_DEPTH_LIMIT brackets cannot nest past "
        "SCAN_DEPTH_LIMIT, so scanning it too refuses nothing",
    "spec.canonical.x_dumps_canonical__mutmut_10":
        "the C encoder's second argument is the current indent level, read only when an indent is set; the "
        "canonical encoder has none (separators only), so level 1 writes the same text as level 0",
    # fifth session: _loads takes the scanner's value at 0 only as a shortcut
    "spec.canonical.x__loads__mutmut_20":
        "`and False` sends every text to _DECODER.decode, which starts the same scanner after any leading "
        "whitespace and checks what follows the value: the same value or error, by the longer way",
    # spec/resume.py
    "spec.resume.x_continuation_hops__mutmut_5": "strict=None is falsy: zip behaves as with strict=False",
    "spec.resume.x_continuation_hops__mutmut_8": "strict=False is zip's default",
    "spec.resume.x_continuation_hops__mutmut_9":
        "earlier_epochs and earlier_seqs always have the same length: a stream row gets them only from "
        "continued_stream (both built from one list of pairs) or empty at creation, so strict=True never "
        "raises (a row with unequal lists also breaks CONT-1, spec.invariants._chain_carried)",
    # spec/reducers.py (sample: --sample N --seed 9)
    "spec.reducers.x_retention_expired__mutmut_27":
        "a pending outbox row's window is None (the window table names only sent and failed), and "
        "spec.policy.expired is False for a None window, so the status test adds nothing for pending rows",
    # spec/reducer_contracts.py (sample)
    "spec.reducer_contracts.x_well_typed__mutmut_14": _ZIP_AFTER_LEN.replace("`len(a) == len(b) and ...`",
                                                                            "`len(args) == len(rdef.args) and ...`"),
    # spec/query.py (sample)
    "spec.query.xǁ_Parserǁ__init____mutmut_28":
        "every alternative of _TOKEN is a named group that matches at least one character, so m.lastgroup "
        "is never None and the fallback string is never used",
    "spec.query.xǁ_Parserǁoperand__mutmut_46":
        "no table has a Bool column (spec.schema), so a boolean literal's value is never compared: coerce "
        "refuses it with a message that quotes its text, the same for TRUE and FALSE",
    # spec/client.py (full run)
    "spec.client.x_continues__mutmut_13": _ZIP_AFTER_LEN_CHAIN,
    "spec.client.x_continues__mutmut_16": _ZIP_AFTER_LEN_CHAIN,
    "spec.client.x_continues__mutmut_17": _ZIP_AFTER_LEN_CHAIN,
    "spec.client.x_continues__mutmut_3":
        "with epoch None the loop still finds no hop (hop epochs are ints, never None) and returns False, "
        "as the early exit does",
    "spec.client.xǁClientǁcrash__mutmut_3": _CONNECTED_FALSY,
    "spec.client.xǁClientǁon_disconnect__mutmut_1": _CONNECTED_FALSY,
}

# --- reference/ (the reference block of docs/mutation.md) --------------------------------------------

_DIFFER_FALLBACK = ("_differ without its per-type attrgetter falls back to `old != new`, the rows' dataclass "
                    "equality, which the fast path restates: Python 3.11's generated __eq__ compares the two "
                    "tuples of every field (no row type sets compare=False or its own __eq__), as the two "
                    "attrgetter tuples do, and answers NotImplemented -> identity for another type, as the "
                    "type check does: the same answer for every pair of rows, only slower")

_TXN_COUNT = ("Txn.delete's count of a row in the transaction's inserts is only read for its truth (`if count:`); "
              "the mutant's count (built as -1 or 2 per held row, left at count + 1 by a delete, or started at "
              "2 by an insert) is non-zero wherever the original's is, and differs only once the row has left "
              "the inserts (the "
              "original's 0): deleting that row again needs it back in the Db, and only Txn.insert (which "
              "makes both counts non-zero again) puts rows back -- Txn.relabel_events changes event values in "
              "place, but its one caller, recovery_bump, inserts and deletes no event and relabels to a fresh "
              "epoch no deleted row had")

_UTF8 = "codec names are case-insensitive: 'UTF-8' is the utf-8 codec, the bytes hashed are the same"

EQUIVALENT.update({
    # every "utf-8" -> "UTF-8" of log.py as of f1da87b (record_hash's own went when it began calling chain_hash)
    "reference.log.x_body_json__mutmut_25": _UTF8,
    "reference.log.x_chain__mutmut_6": _UTF8,
    # renumbered from _19 and _24 when chain_hash wrote the body inline (fifth session, branch snap)
    "reference.log.x_chain_hash__mutmut_6": _UTF8,
    "reference.log.x_chain_hash__mutmut_15": _UTF8,
    "reference.log.x_make_record__mutmut_24": _UTF8,
    "reference.log.x_make_record__mutmut_30": _UTF8,
    "reference.log.x__encode_flat__mutmut_1":
        "always _canon(value) instead of the prebuilt C encoder: _FLAT is _CANON's own C encoder with the same "
        "separators, sort_keys and allow_nan, built once and without the circular-reference markers, so on the "
        "acyclic lists of rows and arguments it encodes the texts are identical (checked on nested values)",
    "reference.log.x__encode_flat__mutmut_9":
        "_FLAT(value, 1): the second argument is the C encoder's current indent level, read only when an indent "
        "is set; _FLAT has none, so the text is the same (checked)",
    "reference.db.xǁTxnǁdelete__mutmut_5":
        "the undo tag 'XXdelXX' for 'del': rollback dispatches on 'ins' and 'relabel' and restores the row for any "
        "other tag, so the delete is undone the same way",
    "reference.db.xǁTxnǁinsert__mutmut_22":
        "inserted.get(None, 0) + 1 (once the counts exist): the count before an insert is always 0 -- Db "
        "refuses a second copy of a row (duplicate primary key, or an event seq/key the stream holds), so a row "
        "inserted in this transaction is inserted again only after its delete took the count back to 0 -- and "
        "None is never a key, so both give 1",
    "reference.durability.xǁGroupCommitWriterǁ_run__mutmut_2":
        "idle starts as None instead of False: it is only read as `if idle and ...`, where None is false too",
    "reference.durability.xǁGroupCommitWriterǁ_run__mutmut_22":
        "_hurry reset to None instead of False after taking a batch: it is only read for its truth (`... or "
        "self._hurry` and `not self._hurry` in _gather), where None is false like False, and set to True again",
    # renumbered from _20 when _run tested the arguments with _args_ok first (fifth session, branch snap)
    "reference.replay.x__run__mutmut_22":
        "zip(..., strict=True) without strict: the line before raises unless len(args) == len(rdef.args), and "
        "_arg_checks(rec.name) has one entry per argument of rdef, so the two sequences always have the same "
        "length there",
    "reference.reducers.x_append_sync_event__mutmut_131":
        "`or True` keeps stream.floor_seq when the stream is empty (head_seq < floor_seq); SEQ-1 (floor_seq <= "
        "head_seq + 1, a state invariant the contracts and machines check) makes it head_seq + 1 = next_seq then, "
        "the value the original picks",
    "reference.durability.xǁLogStoreǁopen__mutmut_17":
        "uri=None for the read-only 'file:...?mode=ro' name: the SQLite this runs on (Debian's 3.40.1) is built "
        "with SQLITE_USE_URI=1, which reads file: names as URIs whatever the flag says (checked: the mutant opens "
        "the same database read-only); a SQLite built without it would open a file named 'file:...' instead, so "
        "this is equivalent on this platform only",
    # the third sample (36 per module, seed 1), on main's source as of this branch's merge of 41dd903
    "reference.eventlog.xǁRetainedRowsǁ__eq____mutmut_7":
        "the lengths are compared first (`len(self) == len(other) and ...`), so zip's strict flag (None here) "
        "never sees sequences of different lengths",
    "reference.snapshot.x_encode__mutmut_37": _UTF8,
    "reference.durability.x__json_array__mutmut_7":
        "a failed scan's end only has to differ from len(text): -1 and None both do, so both fall back to "
        "json.loads (and the scanned value is not read)",
    "reference.replay.x_verify_log__mutmut_151":
        "snapshot.matches is verify_log's shortcut: with offset None the bytes it builds name offset null and never "
        "equal a file, so every file goes the slow way (decoded, then head hash and differs), which gives the same "
        "check the shortcut would (matches' contract: a file it accepts decodes to an image differs finds equal)",
    "reference.eventlog.xǁStreamLogǁvalues__mutmut_21":
        "one_epoch is a shortcut: without it every row's epoch is epochs[bisect_right(run_seqs, seq) - 1], and "
        "with one epoch that index is 0 or -1, both epochs[0], the value the shortcut gives",
    "reference.engine.xǁEngineǁone_off__mutmut_23":
        "one_off passes _send the size _fits measured of the same answer; given None, _send measures it with "
        "_fits itself (deterministic, and it fitted a line before): the same size is queued, at twice the cost; "
        "an error answer is passed None by the original too",
})

# the third sample completed on main's b7b4995 (docs/mutation.md "Third sample")
EQUIVALENT.update({
    "reference.db.x__differ__mutmut_1": _DIFFER_FALLBACK,
    "reference.db.x__differ__mutmut_2": _DIFFER_FALLBACK,
    "reference.db.x__differ__mutmut_3": _DIFFER_FALLBACK,
    "reference.durability.xǁLogStoreǁopen__mutmut_133":
        "the fresh-directory check's SQL in lower case: SQLite's keywords are case-insensitive and the table's "
        "name is commit_log either way, so it is the same query",
    "reference.db.xǁDbǁ_insert__mutmut_11":
        "a new stream's log made as StreamLog(stream_id) (floor 1) instead of StreamLog(stream_id, row.seq): the "
        "next-seq check is skipped for an empty log, and StreamLog.append of an empty log sets floor = ev.seq "
        "itself, so the floor the constructor got is overwritten before anything reads it (checked: "
        "test_a_stream_log_made_by_its_first_event_starts_at_that_events_seq passes on this mutant)",
    "reference.db.xǁTxnǁdelete__mutmut_26":
        "inserted.get(row, None) for inserted.get(row, 0): the count is only read for its truth (`if count:`), "
        "and None is false as 0 is",
    "reference.db.xǁTxnǁdelete__mutmut_17": _TXN_COUNT,
    "reference.db.xǁTxnǁdelete__mutmut_31": _TXN_COUNT,
    "reference.db.xǁTxnǁdelete__mutmut_23": _TXN_COUNT,
    "reference.log.x_row_values__mutmut_1":
        "row_values without its per-type cache lookup: every call builds the attrgetter of the row's fields "
        "(and stores it again), the getter a cache hit would have returned: the same values, slower",
    "reference.db.xǁTxnǁinsert__mutmut_26": _TXN_COUNT,
    "reference.eventlog.xǁStreamLogǁappend__mutmut_14":
        "append's inline lookup of the producer's number is a shortcut: with `no = None` every append calls "
        "_producer(ev.producer), which looks the producer up the same way and returns the same `no << "
        "_KEY_BITS` for a known one (and registers an unknown one, as the original's call does): the same meta, "
        "one call slower",
    "reference.eventlog.xǁStreamLogǁrelabel__mutmut_12":
        "zip(self._run_seqs, epochs) without strict=True: epochs is built from self._run_epochs one for one, "
        "and _run_seqs and _run_epochs are kept in step (every write appends, pops, inserts or deletes both, "
        "or assigns both together), so the two always have the same length",
    "reference.engine.xǁEngineǁ_unregister__mutmut_15":
        "`break` for `continue` on a query whose shape is gone: never taken -- _subscribe registers every query "
        "of a set under its shape with a count per (connection, set), only _unregister removes a shape, and "
        "only once no set counts on it, so while a set is being unregistered each of its queries still has its "
        "shape (two queries of one shape in one set count 2, and the first leaves it)",
})

# --- third session: spec/system.py, spec/trace.py, spec/vectors.py (samples, seed 9) -------------------

# Twelfth session: System._usurped_marks (eleventh session, never classified).  mutmut makes 34 mutants of it
# (xǁSystemǁ_usurped_marks__mutmut_1..34, the source of d1039b5), each run against the PRES-3 tests of
# tests/spec/test_mutation_kills_system.py with the function swapped in: all 34 killed, none equivalent, so
# none is listed here.  1-22, 27-30 and 32 (the attribution: which closed connection's marks, the PRES-3 id, the
# message's build) die in the flap tests (test_system_a_close_marking_a_session_it_did_not_upsert_last_is_PRES_3,
# test_system_marks_no_close_explains_are_flagged); 23-26, 31, 33 and 34 change only the violation's text --
# the sessions named (`and` for `or`, `==` for `!=`, owner.get(None)), their last upserters (owner.get(None)),
# the sort of None among connection ids without key=str (a TypeError) -- and die in
# test_system_the_usurped_marks_name_exactly_the_sessions_taken_PRES_3 (added for them: two sessions of c1, one
# re-upserted by c2, one HTTP-upserted session and one untouched session of c0, the message asserted whole).

EQUIVALENT.update({
    # spec/vectors.py
    "spec.vectors.x_accept_document__mutmut_21":
        "codec names are case-insensitive: 'UTF-8' is the utf-8 codec, so input_utf8_hex holds the same bytes",
    # spec/trace.py
    "spec.trace.xǁTraceǁ_meetings__mutmut_81":
        "`if (stream) or True`: a None stream then looks up client.streams.get(None), which is None too (the keys "
        "are stream ids, never None or empty), and the next line skips it either way",
    "spec.trace.xǁTraceǁ_stale_signals__mutmut_16":
        "`if (stream) or True`: a None stream then looks up client.streams.get(None), which is None too (the keys "
        "are stream ids, never None or empty), and the next line skips it either way",
    "spec.trace.xǁTraceǁobserve__mutmut_26":
        "the first-message default -2 for -1: offsets are never negative (the initial state is offset 0), so "
        "`offset < last`, `offset <= last` and max(last, offset) come out the same",
    "spec.trace.xǁTraceǁon_crash__mutmut_9":
        "sync_event dropped from strip()'s `moved`: the comprehension then copies the raw sync_event rows, but "
        "the next lines overwrite out['sync_event'] with the epoch-stripped rows",
    "spec.trace.xǁTraceǁon_crash__mutmut_37":
        "the stripped checkpoints stored under 'SYNC_CHECKPOINT' instead of 'sync_checkpoint': the key is "
        "internal to strip(), both sides of the comparison use it, and the raw table is still left out by `moved`",
    "spec.trace.xǁTraceǁon_crash__mutmut_30":
        "strip() blanks the events' epochs with None instead of 0: any constant does, it is applied to both "
        "sides of the comparison",
    "spec.trace.xǁTraceǁ_stale_signals__mutmut_43":
        "the budget that stands for 'none' (a sync_stream row carries no budget) 3**64 for 2**64: heads and "
        "watermarks are u64, so head - watermark < 2**64 and neither bound is ever exceeded",
    "spec.trace.xǁTraceǁ_stale_signals__mutmut_44":
        "the budget that stands for 'none' (a sync_stream row carries no budget) 2**65 for 2**64: heads and "
        "watermarks are u64, so head - watermark < 2**64 and neither bound is ever exceeded",
    "spec.trace.xǁTraceǁ_meetings__mutmut_88":
        "`or True` walks the inserts of every table, not only sync_stream's: the loop keeps only SyncStream rows "
        "(`isinstance(r, SyncStream)`), which no other table holds",
    # spec/system.py
    "spec.system.xǁSystemǁcrash__mutmut_2":
        "keeping states[committed] too (<= for <): that entry is overwritten with server.db two lines below, "
        "before anything reads it (trace.on_crash reads the trace's own states)",
    "spec.system.xǁSystemǁ_check_slow_close__mutmut_4":
        "pop(conn_id) without the None default: the id is always there -- connect() records conn_objs[conn_id] "
        "before it makes the link, links are made only there, and _check_slow_close runs once per link as "
        "_drop_dead_links removes it, the only place an entry is popped",
    "spec.system.xǁSystemǁcrash__mutmut_11":
        "states[committed] = None is overwritten before anything reads it: the _sync_states() two lines below "
        "ends with states[committed] = server.db (its loop may re-record the recovery commit and run the PRES-3 "
        "mark check on it, which cannot flag: crash() has just cleared last_upsert)",
    "spec.system.xǁSystemǁserver_step__mutmut_14":
        "`or True` computes the queue snapshot for every message, not only calls: _queues() only reads, and the "
        "snapshot is used only under `isinstance(msg, CallReducer)`, so only the cost changes",
    "spec.system.xǁSystemǁ_check_slow_close__mutmut_7":
        "`(conn is not None) or True` reads conn.closed_reason even when conn is None, which it never is: as for "
        "_check_slow_close__mutmut_4, the connection object is always in conn_objs when its link is dropped",
    "spec.system.xǁSystemǁreset_epoch__mutmut_11":
        "the admin call's context offset committed - 1 for committed + 1: reset_stream_epoch writes no event, and "
        "ctx.tx_offset is read only by append_sync_event (the events' tx_offset column)",
    "spec.trace.x__shares__mutmut_22": _ZIP_AFTER_LEN_CHAIN,
    "spec.trace.xǁTraceǁ_meetings__mutmut_7":
        "`if (stream) or True`: a None stream then looks up client.streams.get(None), which is None too (the keys "
        "are stream ids, never None or empty), and the next line returns either way",
    "spec.trace.xǁTraceǁon_crash__mutmut_7":
        "sync_stream dropped from strip()'s `moved`: the comprehension then copies the raw sync_stream rows, but "
        "the next lines overwrite out['sync_stream'] with the (stream, head, floor) triples",
    "spec.trace.xǁTraceǁon_crash__mutmut_40":
        "strip() blanks the checkpoints' epochs with None instead of 0: any constant does, it is applied to both "
        "sides of the comparison",
    "spec.trace.xǁTraceǁon_crash__mutmut_49":
        "the versioned contents stored under 'XXversionedXX' instead of 'versioned': the key is internal to "
        "strip(), and both sides of the comparison use it",
    "spec.trace.xǁTraceǁobserve__mutmut_162":
        "`break` for `continue` after an event-table query in the DELIV-2 oracle: a query text parses to one "
        "query (one statement per query), or for `SELECT * FROM *` to the public persistent tables, none of them "
        "an event table, so that `continue` only ever ends the loop anyway",
    "spec.system.xǁSystemǁ_drain__mutmut_5": "moved starts None instead of False: it is only read as `if not moved`",
    "spec.system.xǁSystemǁreset_epoch__mutmut_12":
        "the admin call's context offset committed + 2 for committed + 1: reset_stream_epoch writes no event, and "
        "ctx.tx_offset is read only by append_sync_event (the events' tx_offset column)",
    "spec.system.xǁSystemǁserver_step__mutmut_19":
        "`isinstance(msg, CallReducer) or seen is not None` for `and`: seen is set (not None) exactly when msg is "
        "a CallReducer (the line that computes it), so both conditions are the same",
    "spec.system.xǁSystemǁreset_epoch__mutmut_10":
        "the admin call's context left with the default policy: reset_stream_epoch reads nothing of ctx.policy "
        "(its checks are the admin scope, the id's form and the stream's existence; its write is epoch + 1 and "
        "floor = head + 1)",
    "spec.system.xǁSystemǁ_sync_states__mutmut_11":
        "the PRES-3 mark check guarded by `offset - 2 in states` for `offset - 1`: System.states holds every "
        "offset from 0 to the committed one (each commit is recorded by the _sync_states after the action that "
        "made it; crash() trims only offsets at or above the new committed one), so the guards differ only at "
        "offset 1, whose check compares with the empty initial state, where no session exists to be marked",
    "spec.system.xǁSystemǁ__init____mutmut_22":
        "states starts as {1: db} instead of {0: db}: the wrong entry at 1 is replaced by _sync_states when offset "
        "1 commits, before anything reads it, and the entry at 0 is written by the _sync_states after the "
        "server's first step while nothing is committed, which comes before any message of offset 0 is "
        "delivered (every server step is followed by _sync_states); the first commit's PRES-3 check, which the "
        "missing entry skips, compares with the empty initial state, where no session exists to be marked",
    "spec.vectors.x_accept_document__mutmut_32":
        "codec names are case-insensitive: 'UTF-8' is the utf-8 codec, so canonical_utf8_hex holds the same bytes",
    "spec.vectors.x_reject_document__mutmut_33":
        "codec names are case-insensitive: 'UTF-8' is the utf-8 codec, so input_utf8_hex holds the same bytes",
    "spec.vectors.x__utf16_hex__mutmut_7":
        "codec names are case-insensitive: 'UTF-16-BE' is the utf-16-be codec, the same code units",
    "spec.vectors.x__utf16_hex__mutmut_15":
        "codec names are case-insensitive: 'UTF-16-BE' is the utf-16-be codec, the same round trip",
    "spec.vectors.x_render__mutmut_5": "allow_nan=None is falsy, read as False: json.dumps still refuses NaN",
    "spec.vectors.x_render__mutmut_8": "ensure_ascii left out: json.dumps' default is True, the value it was given",
})

# The mutated line of each reference/ entry (stripped, as mutmut writes it): `support.mutate --report`
# lists an entry whose mutant no longer carries it under "equivalent_moved" and does not count it as
# equivalent -- editing a function renumbers its mutants, and a name then means another mutant (as
# record_hash__mutmut_24 and append_sync_event__mutmut_127 did after f1da87b and fad3263).
MUTATED_LINE: dict[str, str] = {
    "spec.canonical.x_parse_strict__mutmut_73":
        '{"argument": argument, "reason": "invalid_json", "message": str(exc)[:201]}) from None',
    "spec.canonical.x_parse_strict__mutmut_19":
        "if brackets >= SCAN_DEPTH_LIMIT and _nests_past_scan_limit(text):",
    "spec.canonical.x_dumps_canonical__mutmut_10": 'return "".join(_C_MAKE_ENCODER({}, *_ENCODER_OPTIONS)(value, 1))',
    "spec.canonical.x_canonicalize__mutmut_13":
        'return "".join(_TREE_ENCODER(parse_strict(text, argument), 1))  # dumps_canonical of a tree',
    "spec.canonical.x__loads__mutmut_20": "return value if (end == len(text)) and False else _DECODER.decode(text)",
    # the decorated functions' entries (`--icontract --decorated-only`)
    "spec.canonical.x_payload_hash__mutmut_7":
        'return "sha256:" + hashlib.sha256(canonical_text.encode("UTF-8")).hexdigest()',
    "reference.reducers.x_compact__mutmut_43":
        "if cls.retain_count is not None and len(log.events) >= cls.retain_count:",
    "spec.reducers.x_call__mutmut_27": "for col, value in zip(rdef.args, args, ):",
    "spec.reducers.x_call__mutmut_24": "for col, value in zip(rdef.args, args, strict=None):",
    "spec.reducers.x_call__mutmut_28": "for col, value in zip(rdef.args, args, strict=False):",
    "spec.reducers.x_compact__mutmut_39": "if cls.retain_count is not None and len(events) >= cls.retain_count:",
    "spec.reducers.x_compact__mutmut_40": "drop = {e.seq for e in events[: len(events) - cls.retain_count]}",
    "reference.log.x_body_json__mutmut_25": '"delta_hash": hashlib.sha256(delta.encode("UTF-8")).hexdigest()}',
    "reference.log.x_chain__mutmut_6": 'return hashlib.sha256((prev_hash + _canon(body)).encode("UTF-8")).hexdigest()',
    "reference.log.x_chain_hash__mutmut_6":
        'f\'"delta_hash":"{hashlib.sha256(delta.encode("UTF-8")).hexdigest()}","kind":{_name_text(kind)},\'',
    "reference.log.x_chain_hash__mutmut_15": 'return hashlib.sha256((prev_hash + body).encode("UTF-8")).hexdigest()',
    "reference.log.x_make_record__mutmut_24": 'hashlib.sha256(delta.encode("UTF-8")).hexdigest())',
    "reference.log.x_make_record__mutmut_30":
        'digest = hashlib.sha256((prev_hash + body).encode("UTF-8")).hexdigest()',
    "reference.log.x__encode_flat__mutmut_1": "if _FLAT is not None:  # pragma: no cover",
    "reference.log.x__encode_flat__mutmut_9": 'return "".join(_FLAT(value, 1))',
    "reference.db.xǁTxnǁdelete__mutmut_5": 'self.undo.append(("XXdelXX", row))',
    "reference.db.xǁTxnǁinsert__mutmut_22": "inserted[row] = inserted.get(None, 0) + 1",
    "reference.durability.xǁGroupCommitWriterǁ_run__mutmut_2": "idle = None",
    "reference.durability.xǁGroupCommitWriterǁ_run__mutmut_22": "self._hurry = None",
    "reference.replay.x__run__mutmut_22": "for (col, has_type), value in zip(_arg_checks(rec.name), args, ):",
    "reference.reducers.x_append_sync_event__mutmut_131":
        "floor = stream.floor_seq if (stream.head_seq >= stream.floor_seq) or True else next_seq",
    "reference.durability.xǁLogStoreǁopen__mutmut_93": "conn = sqlite3.connect(path, check_same_thread=False)",
    "reference.durability.xǁLogStoreǁopen__mutmut_17":
        'conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=None, isolation_level=None,',
    "reference.eventlog.xǁRetainedRowsǁ__eq____mutmut_7":
        "return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=None))",
    "reference.snapshot.x_encode__mutmut_37":
        'yield (_ENC.encode({"sha256": digest.hexdigest()}) + "\\n").encode("UTF-8")',
    "reference.eventlog.xǁStreamLogǁvalues__mutmut_21": "one_epoch = None",
    "reference.replay.x_verify_log__mutmut_151": "if snapshot.matches(held, db, None, head, store.log_id):",
    "reference.durability.x__json_array__mutmut_7": "end = None",
    "reference.engine.xǁEngineǁone_off__mutmut_23": "self._send(conn, self.committed, answer, None)",
    "reference.db.x__differ__mutmut_1": "get = None",
    "reference.db.x__differ__mutmut_2": "get = _FIELDS.get(None)",
    "reference.db.x__differ__mutmut_3": "get = _FIELDS.get(type(None))",
    "reference.durability.xǁLogStoreǁopen__mutmut_133":
        'if conn.execute("select 1 from commit_log limit 1").fetchone() is not None:',
    "reference.engine.xǁEngineǁ_unregister__mutmut_15": "break",
    "reference.db.xǁDbǁ_insert__mutmut_11": "log = self.logs[row.stream_id] = StreamLog(row.stream_id, )",
    "reference.db.xǁTxnǁdelete__mutmut_26": "count = inserted.get(row, None)",
    "reference.db.xǁTxnǁdelete__mutmut_17": "inserted[held] = inserted.get(held, 0) - 1",
    "reference.db.xǁTxnǁdelete__mutmut_31": "inserted[row] = count + 1",
    "reference.db.xǁTxnǁdelete__mutmut_23": "inserted[held] = inserted.get(held, 0) + 2",
    "reference.log.x_row_values__mutmut_1": "get = None",
    "reference.db.xǁTxnǁinsert__mutmut_26": "inserted[row] = inserted.get(row, 1) + 1",
    "reference.eventlog.xǁStreamLogǁrelabel__mutmut_12": "for s, e in zip(self._run_seqs, epochs, ):",
    "reference.eventlog.xǁStreamLogǁappend__mutmut_14": "no = None",
}

# the fifth session's draw of engine.py (48, seed 1, on main 0a60a44; docs/mutation.md "Fourth sample")
EQUIVALENT["reference.engine.xǁEngineǁ_signature_error__mutmut_22"] = (
    "zip(_arg_checks(reducer), args, strict=None) for strict=True: the line above returns when len(args) != "
    "len(rdef.args), and _arg_checks(reducer) has exactly one entry per rdef.args, so the lengths are equal "
    "whenever the zip runs and the strict flag never fires")
MUTATED_LINE["reference.engine.xǁEngineǁ_signature_error__mutmut_22"] = (
    "for (name, check), value in zip(_arg_checks(reducer), args, strict=None):")
# reference/parsecache.py, measured whole (35 mutants)
EQUIVALENT["reference.parsecache.xǁParseCacheǁparse__mutmut_17"] = (
    "entries.popitem(last=None) for last=False: OrderedDict.popitem reads `last` only for its truth, and None is "
    "false as False is, so the least recently used entry (the first) goes either way")
MUTATED_LINE["reference.parsecache.xǁParseCacheǁparse__mutmut_17"] = "entries.popitem(last=None)"
# reference/eventlog.py, the fifth session's draw (48, seed 1): EventSeq.__eq__ compares lengths first
EQUIVALENT["reference.eventlog.xǁEventSeqǁ__eq____mutmut_10"] = _ZIP_AFTER_LEN
EQUIVALENT["reference.eventlog.xǁEventSeqǁ__eq____mutmut_11"] = _ZIP_AFTER_LEN
MUTATED_LINE["reference.eventlog.xǁEventSeqǁ__eq____mutmut_10"] = (
    "return len(self) == len(other) and all(a == b for a, b in zip(self, other, ))")
MUTATED_LINE["reference.eventlog.xǁEventSeqǁ__eq____mutmut_11"] = (
    "return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=False))")
# after the small-gap replay merge (ADR-0024): the draws of today's engine.py and eventlog.py
EQUIVALENT.update({
    "reference.eventlog.xǁStreamLogǁ_slot__mutmut_10":
        "_slot's -1 for a row kept whole becomes -2: both callers (append, push_first) return before reading the "
        "slot when the event is not encodable (enc is None), the only case that returns it",
    "reference.eventlog.xǁStreamLogǁappend__mutmut_57":
        "a row kept whole gets (end, 1, 0, 0) in the columns instead of (end, 0, 0, 0): only its end offset is "
        "read (the next row's start); every reader of a position's other columns (_event, values, columns, runs) "
        "takes a row kept whole from _odd first, and push_first's revive compares a dead slot's columns only for "
        "an encodable event, whose meta (key length >= 1) never equals an odd slot's 0",
    "reference.eventlog.xǁStreamLogǁretained_rows__mutmut_38":
        "`lo <= hi` for `lo < hi` adds an empty segment (lo == hi): every reader of the segments (_positions, runs, "
        "column_bytes, __len__'s sum of hi - lo) visits positions lo..hi-1, none for an empty one; with rows kept "
        "whole the segments are rebuilt from positions (was retained_rows__mutmut_48 before ADR-0038 moved the "
        "view's making to StreamLog._view)",
})
EQUIVALENT["reference.engine.xǁEngineǁ_fanout__mutmut_185"] = (
    "the per-fanout memo `single` stored (in _fanout's one_part) under (qs id, id(None)) while it is looked up "
    "under (qs id, id(only)): `only` is a tuple, never the None singleton, so the memo never hits and each "
    "receiver (general path) or each group's query set id (fast path, ADR-0026) builds its update again -- from "
    "shared_rows and shared_sets, which give the very same TableRows and QuerySetUpdate objects for the same "
    "part: the same updates, slower (was _fanout__mutmut_203 before the fast path renumbered the mutants)")
EQUIVALENT["reference.engine.xǁEngineǁ_fanout__mutmut_332"] = (
    "the general path's _send given offset None with its queue entry `out`: _send reads the offset only to "
    "make an entry when none is given (`Outbound(offset, message) if out is None else out`)")
EQUIVALENT["reference.engine.xǁEngineǁ_fanout__mutmut_334"] = (
    "the general path's _send given size None: _send measures the message itself (`_fits`), the same "
    "estimate `sized` took of the same object (a message over the bound came as None anyway)")
MUTATED_LINE.update({
    "reference.engine.xǁEngineǁ_fanout__mutmut_332": "self._send(target, None, out.message, size, out)",
    "reference.engine.xǁEngineǁ_fanout__mutmut_334": "self._send(target, offset, out.message, None, out)",
    "reference.engine.xǁEngineǁ_fanout__mutmut_185": "single[(qs_id, id(None))] = update",
    "reference.eventlog.xǁStreamLogǁ_slot__mutmut_10": "return -2",
    "reference.eventlog.xǁStreamLogǁappend__mutmut_57": "self._cols[-1].extend((end, 1, 0, 0))",
    "reference.eventlog.xǁStreamLogǁretained_rows__mutmut_38": "if lo <= hi:",
})

# ---- spec/delivery.py, harness.py, contracts.py (third session, docs/mutation.md) ---------------------------

_NO_DETAILS = ("SyncError(code) and SyncError(code, None) have details {} (SyncError.__init__: `dict(details) if "
               "details is not None else {}`), as SyncError(code, {}) does: the same error, the same wire string")
_FANNING_FALSY = "Server._fanning_out is only read as `not self._fanning_out` (in _drain_disconnects): None is as False"

EQUIVALENT.update({
    "spec.delivery.x_authorize_query__mutmut_19": _NO_DETAILS,
    "spec.delivery.x_authorize_query__mutmut_21": _NO_DETAILS,
    "spec.harness.xǁServerǁ__init____mutmut_10": _FANNING_FALSY,
    "spec.harness.xǁServerǁ_queue__mutmut_16": _FANNING_FALSY,
    "spec.harness.xǁServerǁ__init____mutmut_11":
        "_fanning_out starts True instead of False: it is read only while a close waits to be marked, and a close "
        "waits only for a session its connection owns, which it took by an upsert call whose answer went through "
        "_queue -- which leaves the flag False; so no read ever sees the initial value",
    "spec.harness.xǁServerǁ_queue__mutmut_6":
        "`break` for `continue` on a connection closed earlier in the batch: never taken -- a batch names each "
        "connection at most once (fanout: one message per subscriber; subscribe/unsubscribe: one message), all "
        "of them open when it was made, and in the batch only a connection's own over-bound append closes it "
        "(the marks its close queues wait for the end of the batch)",
    # measured with `--icontract` (support.mutmut_icontract): a function that carries icontract contracts
    "spec.delivery.x_stale_error__mutmut_25":
        "`isinstance(requested_epoch, int) or True`: the pinned epoch is an int or None whatever the query (the "
        "parser refuses a literal that is not an integer for the U64 column epoch, a boolean included), so the "
        "value is kept exactly when the original keeps it",
    "spec.contracts.x_hot__mutmut_6":
        "typing.cast(None, dispatch) returns dispatch unchanged, as cast(F, dispatch) does: cast only informs "
        "the type checker",
})

# the sixth session's draw (48 each of engine.py, durability.py and log.py, seed 6, on main c4e8faa; a partial
# run: docs/mutation.md "Fifth sample")
# (_candidates__mutmut_36, the watermark read from another column, was claimed equivalent here: its rows are
# the same, but it counts the whole log against max_scan_rows instead of the slice, and rows are now counted
# before they are built -- test_engine_point_reads.py's test_rows_are_counted_before_any_is_built kills it)
# (drawn as _snapshot__mutmut_16; ADR-0041 moved the line into _take_snapshot, where mutmut numbers it 18)
EQUIVALENT["reference.engine.xǁEngineǁ_take_snapshot__mutmut_18"] = (
    "the resume fast path never taken (rows = None): the general path below matches the same query over the "
    "same candidates with the row filter (can_read, indexed), which _resume_rows is the shortcut of (its "
    "docstring: 'what _snapshot would "
    "give for the query alone'; tests/reference/test_resume_fast_path.py holds both to the same hand-written "
    "seqs), so the same rows in the same order, as a tuple instead of a RetainedRows view, which the wire "
    "encodes as the same bytes")
MUTATED_LINE["reference.engine.xǁEngineǁ_take_snapshot__mutmut_18"] = "rows = None"
EQUIVALENT["reference.log.x_delta_text_of__mutmut_29"] = (
    "_canon(out) where _FLAT exists: _FLAT is _CANON's own C encoder with the same settings (as "
    "x__encode_flat__mutmut_1), so the same text")
MUTATED_LINE["reference.log.x_delta_text_of__mutmut_29"] = (
    'return "".join(_FLAT(out, 0)) if _FLAT is None else _canon(out)')
EQUIVALENT["reference.log.x_delta_text_of__mutmut_30"] = (
    "_canon(None) on the branch taken only without the C encoder (_FLAT is None), which CPython 3.11 always has "
    "(the '# pragma: no cover' branch of x__encode_flat__mutmut_1)")
MUTATED_LINE["reference.log.x_delta_text_of__mutmut_30"] = (
    'return "".join(_FLAT(out, 0)) if _FLAT is not None else _canon(None)')

# the seventh session: the durability and log survivors of the sixth session's draw (seed 6; docs/mutation.md
# "Fifth sample"), regenerated from main cb1ecd0's source (the same text as c4e8faa's: the numbers hold)
_LOWER_SQL = ("the query's SQL in lower case: SQLite's keywords are case-insensitive and the table and column "
              "names are the same, so it is the same query (as LogStore.open__mutmut_124)")
EQUIVALENT.update({
    "reference.durability.x_decode_changes__mutmut_11":
        "the fast path never taken (type(None) is list): every table's rows go through row_from_json, which the "
        "fast path inlines -- row_maker(table) looked up only when a row is built, make(*values), and for a "
        "table with array columns a list copy whose array positions become tuples (JSON gives exact lists, so "
        "type(v) is list and isinstance agree) -- so the same rows, and on a malformed delta the same exception "
        "with the same text (checked on 1,327 hand-built deltas, malformed rows, unknown and non-string tables, "
        "non-list row lists: every result and LogCorruption text equal)",
    "reference.durability.xǁGroupCommitWriterǁ_gather__mutmut_3":
        "the target without min(..., max_batch): _last_batch is set only by _write to len(batch), and every "
        "batch _write gets comes from _take, which takes at most max_batch records, so _last_batch <= max_batch "
        "always and the min is _last_batch itself",
    "reference.durability.xǁGroupCommitWriterǁ_gather__mutmut_34":
        "`left < 0` for `left <= 0`: only when the clock reads exactly the deadline does the mutant go on, to "
        "Condition.wait(0), which does not block (a zero-timeout acquire); the loop then reads the clock again, "
        "past the deadline, and breaks: the same end of the gathering a moment later, in which another thread "
        "may append, as it could have a moment before the deadline",
    "reference.durability.xǁLogStoreǁcount__mutmut_4": _LOWER_SQL,
    "reference.durability.xǁLogStoreǁhash_at__mutmut_7": _LOWER_SQL,
})
MUTATED_LINE.update({
    "reference.durability.x_decode_changes__mutmut_11":
        "if type(None) is list and type(inserts) is list and (deletes or inserts):  # else as before",
    "reference.durability.xǁGroupCommitWriterǁ_gather__mutmut_3":
        "target = self._last_batch if (self._max_batch is None) or True else min(self._last_batch, self._max_batch)",
    "reference.durability.xǁGroupCommitWriterǁ_gather__mutmut_34": "if left < 0:",
    "reference.durability.xǁLogStoreǁcount__mutmut_4":
        'return int(self._conn.execute("select count(*) from commit_log").fetchone()[0])',
    "reference.durability.xǁLogStoreǁhash_at__mutmut_7":
        "row = self._conn.execute('select hash from commit_log where \"offset\" = ?', (offset,)).fetchone()",
})
# the rest of that draw, checked in the seventh session (the same source)
_ROW_WIDTH = ("every Row type (spec.values.Row: the nine tables' row dataclasses) has 5 to 14 fields, so row_values "
              "always takes the attrgetter of several names, which returns the tuple itself")
EQUIVALENT.update({
    "reference.log.x__encode_flat__mutmut_2":
        "_canon(None) on the branch taken only without CPython's C encoder (_FLAT is None: the '# pragma: no "
        "cover' ImportError fallback), which CPython 3.11 always has (as x_delta_text_of__mutmut_30)",
    "reference.log.x_row_values__mutmut_13": "`len(names) > 2` for `> 1`, a difference only for a row of exactly "
                                             "two fields: none -- " + _ROW_WIDTH,
    "reference.log.x_row_values__mutmut_15": "many(None) in the getter of a one-field row: none -- " + _ROW_WIDTH,
})
MUTATED_LINE.update({
    "reference.log.x__encode_flat__mutmut_2": "return _canon(None)",
    "reference.log.x_row_values__mutmut_13":
        "get = _VALUES[type(row)] = many if len(names) > 2 else (lambda r: (many(r),))",
    "reference.log.x_row_values__mutmut_15":
        "get = _VALUES[type(row)] = many if len(names) > 1 else (lambda r: (many(None),))",
})
EQUIVALENT["reference.engine.xǁEngineǁ_fanout__mutmut_343"] = (
    "the fast path's memo lookup single.get(None) never hits, so every (query set id, part) calls one_part, which "
    "finds the part's TableRows in shared_rows and its QuerySetUpdate in shared_sets by the same identities "
    "(stored there by the first call) and returns the very object the memo held: the same updates, one lookup "
    "slower (as _fanout__mutmut_185)")
MUTATED_LINE["reference.engine.xǁEngineǁ_fanout__mutmut_343"] = "update = single.get(None)"
