"""Planted bugs in the reference engine, which the differential machine must catch.

Same mechanism as ``support/mutants.py`` (source edits executed into the module, dependents
reloaded), aimed at ``reference/``.  A mutant is killed when the differential machine fails: a
:class:`~support.diff.Divergence` from the model, a trace invariant, a contract, or an internal
consistency check of the engine firing.  Run one::

    PYTHONPATH=tests python -m support.engine_mutants NAME
"""

from __future__ import annotations

import json
import sys
import time

from support.mutants import Mutant, apply, cli, drive, run_killer

ENGINE = ("reference.log", "reference.eventlog", "reference.db", "reference.reducers", "reference.engine", "support.diff")

ENGINE_MUTANTS: tuple[Mutant, ...] = (
    Mutant("fanout_drops_deletes", "reference.engine",
           (("            deletes = tx.deletes.get(table, [])\n", "            deletes: list[Row] = []\n"),),
           "the incremental delta misses deletes (an update reaches clients as an insert only)"),
    Mutant("shape_key_too_coarse", "reference.engine",
           (("            key = self.parse_cache.facts(query).shape\n            shape = self.shapes.setdefault(query.table, {}).get(key)",
             "            key = (query.table,)\n            shape = self.shapes.setdefault(query.table, {}).get(key)"),),
           "queries of one table share a shape, so one query's matches go to all"),
    Mutant("pinned_shapes_miss_their_stream", "reference.engine",
           (("            for shape in list(index.get(sid, {}).values()):",
             "            for shape in list(index.get(sid + \"~\", {}).values()):"),),
           "the by-stream shape index loses the shapes pinned to the written stream"),
    Mutant("fanout_ignores_row_filter", "reference.engine",
           (("                    seen_ins = [readable(row) for row in ins]",
             "                    seen_ins = [True for row in ins]"),),
           "incremental updates skip the per-client row filter"),
    Mutant("durable_ahead_of_store", "reference.engine",
           (("        self.durable = max(self.durable, offset)\n", "        self.durable = max(self.durable, offset + 1)\n"),),
           "the durable offset runs one past what storage confirmed"),
    Mutant("confirmed_gate_off_by_one", "reference.engine",
           (("        return self.durable if conn.confirmed else None\n",
             "        return self.durable + 1 if conn.confirmed else None\n"),),
           "confirmed reads release one offset early"),
    Mutant("caller_result_ungated", "reference.engine",
           (("            self._send(conn, offset, ReducerResult(request_id, offset, ReducerOk(ret, tuple(by_conn.pop(",
             "            self._send(conn, 0, ReducerResult(request_id, offset, ReducerOk(ret, tuple(by_conn.pop("),
            ("                self._send(conn, offset, ReducerResult(request_id, offset, ReducerOk(ret, ())))",
             "                self._send(conn, 0, ReducerResult(request_id, offset, ReducerOk(ret, ())))")),
           "a confirmed caller's own ReducerResult skips the confirmed-read gate (acknowledged before durable)"),
    Mutant("caller_error_ungated", "reference.engine",
           (("            tx.rollback()\n            self._send(conn, self.committed, ReducerResult(msg.request_id, "
             "self.committed, ReducerErr(err.render())))",
             "            tx.rollback()\n            self._send(conn, 0, ReducerResult(msg.request_id, "
             "self.committed, ReducerErr(err.render())))"),),
           "a confirmed caller's failed ReducerResult skips the confirmed-read gate (its state not yet durable)"),
    Mutant("checkpoint_by_stream_grant", "reference.engine",
           (("    if TABLE_BY_NAME[table].visibility is Visibility.STREAM_GRANT:\n        covers",
             "    if TABLE_BY_NAME[table].visibility in (Visibility.STREAM_GRANT, Visibility.OWNER):\n        covers"),),
           "a checkpoint is readable by anyone granted its stream, not only by its owner",
           killer="reference/test_private_tables.py"),
    Mutant("bridge_rows_for_everyone", "reference.engine",
           (("    return functools.partial(can_read, claims)\n",
             "    if TABLE_BY_NAME[table].visibility is Visibility.BRIDGE:\n        return lambda row: True\n"
             "    return functools.partial(can_read, claims)\n"),),
           "bridge outbox rows are readable without a bridge scope", killer="reference/test_private_tables.py"),
    Mutant("resume_includes_watermark", "reference.eventlog",
           (("        first = self._head + max(0, watermark + 1 - self.floor)  # the first position in range",
             "        first = self._head + max(0, watermark - self.floor)  # the first position in range"),),
           "a resume snapshot also holds the event at the watermark (seq >= W)"),
    Mutant("unclean_restart_as_clean", "reference.engine",
           (("        if not clean:\n            fresh = max(", "        if False:\n            fresh = max("),),
           "an unclean restart is recovered as a clean one: every epoch and version kept (DUR-2, VER-1)"),
    Mutant("recovery_keeps_epoch_floor", "reference.reducers",
           (("    tx.db.epoch_floor = fresh\n", ""),),
           "unclean recovery moves the streams but not the epoch floor: a stream created after it starts in an "
           "epoch a lost transaction may have handed out (DUR-2)"),
    Mutant("recovery_keeps_version_floor", "reference.reducers",
           (("    tx.db.version_floor = version\n", ""),),
           "unclean recovery raises the live rows' versions but not the version floor: a row created after it "
           "starts at a version a lost transaction may have handed out (VER-1)"),
    Mutant("one_off_ignores_row_filter", "reference.engine",
           (("candidates, lambda row: q.matches(query, row) and readable(row))\n",
             "candidates, lambda row: q.matches(query, row))\n"),),
           "a one-off read (OneOffQuery, /sql) skips the row filter: rows of ungranted streams, others' checkpoints",
           killer="reference/test_private_tables.py"),
    Mutant("snapshot_ungated", "reference.engine",
           (("        self._observe_resumes(snap)\n        self._send(conn, self.committed, applied, size)",
             "        self._observe_resumes(snap)\n        self._send(conn, 0, applied, size)"),),
           "a confirmed reader's SubscribeApplied skips the confirmed-read gate (its snapshot not yet durable)"),
    Mutant("stale_floor_off_by_one", "reference.engine",
           (("stale_reasons(epoch, head, floor, budget, req_epoch, w, upper)",
             "stale_reasons(epoch, head, floor - 1, budget, req_epoch, w, upper)"),),
           "the engine reads the retention floor one too low (a resume one past the floor is served)"),
    Mutant("stale_ignores_epoch", "reference.engine",
           (("list(_stale_reasons(epoch, head, floor, budget, req_epoch, w, upper))",
             "list(_stale_reasons(epoch, head, floor, budget, None, w, upper))"),),
           "the stale check ignores the requested epoch"),
    Mutant("stale_ignores_page_bound", "reference.engine",
           (("list(_stale_reasons(epoch, head, floor, budget, req_epoch, w, upper))",
             "list(_stale_reasons(epoch, head, floor, budget, req_epoch, w))"),),
           "the engine's stale check drops a page's upper bound: a page far behind the head is stale (ADR-0042)",
           killer="reference/test_paged_resume.py"),
    Mutant("page_rows_not_cut_at_bound", "reference.engine",
           (("                last = log.floor + len(log) - 1 if upper is None else min(log.floor + len(log) - 1, upper)\n",
             "                last = log.floor + len(log) - 1\n"),),
           "a page's rows are taken (and counted against max_scan_rows) to the head, not to its bound (ADR-0042)",
           killer="reference/test_paged_resume.py"),
    Mutant("replay_slice_off_by_one", "reference.eventlog",
           (("        first = self._head + max(0, watermark + 1 - self.floor)  # the first position in range",
             "        first = self._head + max(0, watermark + 2 - self.floor)  # the first position in range"),),
           "a resume snapshot skips the first event after the watermark"),
    Mutant("caller_also_gets_update", "reference.engine",
           (("ReducerOk(ret, tuple(by_conn.pop(conn.conn_id,", "ReducerOk(ret, tuple(by_conn.get(conn.conn_id,"),),
           "the caller gets a TransactionUpdate besides its ReducerResult"),
    Mutant("slow_consumer_bound_off", "reference.engine",
           (("        if len(conn.outbound) > self.max_queue or (",
             "        if len(conn.outbound) > self.max_queue + 1 or ("),),
           "the outbound bound is enforced one message late"),
    Mutant("dedupe_without_hash_compare", "reference.reducers",
           (("        if existing.payload_hash == digest:\n            return seq",
             "        if True:\n            return seq"),), "a duplicate key is accepted whatever its payload"),
    Mutant("non_monotonic_ack", "reference.reducers",
           (("old.epoch == epoch and seq <= old.last_applied_seq:", "old.epoch == epoch and seq == old.last_applied_seq:"),),
           "a lower ack overwrites the checkpoint",
           # killed in 20 of 20 seeds but as late as the 164th example of 200 (eleventh session's kill margins)
           killer="reference/test_engine_margin_killers.py::test_a_lower_ack_leaves_the_checkpoint_where_it_was"),
    Mutant("compaction_floor_off_by_one", "reference.reducers",
           (("        tx.update(stream, replace(stream, floor_seq=max(stream.floor_seq, keep_from), updated_at=now))",
             "        tx.update(stream, replace(stream, floor_seq=max(stream.floor_seq, keep_from) - 1, updated_at=now))"),),
           "compaction sets floor_seq one below the first retained event"),
    Mutant("recovery_bump_too_small", "reference.reducers",
           (("    fresh = top + max_undurable + 1\n", "    fresh = top + 1\n"),),
           "unclean recovery bumps epochs by one instead of past the undurable window"),
    Mutant("index_not_updated_on_delete", "reference.eventlog",
           (("        ev = self._event(self._head)\n        self._unindex(ev)\n", "        ev = self._event(self._head)\n"),),
           "compaction leaves the idempotency index pointing at dropped events"),
    Mutant("disconnect_in_fanout", "reference.engine",
           (("        while self._disconnects and not self._fanning_out and self.can_commit():",
             "        while self._disconnects and self.can_commit():"),),
           "a slow consumer's presence is marked inside another transaction's fanout",
           # the differential machine reached it only by chance (ninth session: its draws stopped reaching it)
           killer="reference/test_disconnect_after_fanout.py"),
)
ENGINE_MUTANTS += (
    # --- issue 9, defects to fix (ADR-0003) ---
    Mutant("assign_skips_provider_check", "reference.reducers",
           (("        if reason:\n            raise _err(ErrorCode.PROVIDER_UNAVAILABLE",
             "        if reason == 'missing':\n            raise _err(ErrorCode.PROVIDER_UNAVAILABLE"),),
           "assigning checks only that the provider exists, not that it is active and advertises the kind",
           # killed in 20 of 20 seeds but as late as the 246th example (eleventh session's kill margins)
           killer="reference/test_engine_margin_killers.py::test_assigning_names_an_active_provider_advertising_the_kind"),
    Mutant("fanout_execute_scope_reads", "reference.engine",
           (("                    seen_ins = [readable(row) for row in ins]",
             "                    seen_ins = [readable(row) or ("
             "table == 'compute_assignment' and 'compute.execute' in group.claims.scopes) for row in ins]"),),
           "incremental updates send every assignment to compute.execute holders",
           # killed in 20 of 20 seeds, but at DiffMachine's 176th of 200 at worst (eleventh session's kill margins)
           killer="reference/test_engine_margin_killers.py::test_an_executor_hears_of_no_assignment_it_is_not_assigned"),
    Mutant("execute_by_scope_alone", "reference.reducers",
           (("        if need.identity_column is not None and getattr(old, need.identity_column) != c.identity:",
             "        if need.identity_column == 'requester' and old.requester != c.identity:"),),
           "the executor role checks the scope but not that the caller owns the assigned provider"),
    Mutant("resume_without_epoch_accepted", "reference.engine",
           (('                missing = [c for c, v in (("stream_id", f.stream_id), ("epoch", f.epoch)) if v is None]',
             '                missing = [c for c, v in (("stream_id", f.stream_id),) if v is None]'),),
           "a resume that pins the stream but not the epoch is accepted"),
    Mutant("first_upserter_marks", "reference.engine",
           (('        old = self._last_upsert.pop(session, None)\n',
             '        if session in self._last_upsert and conn_id is not None:\n            return\n'
             '        old = self._last_upsert.pop(session, None)\n'),),
           "a session stays with the first connection that upserted it, which marks it on close"),
    Mutant("backoff_not_recorded", "reference.reducers",
           (("                               next_attempt_at=x.now + 1000 * retry_after_ms,\n", ""),),
           "record_bridge_failure drops retry_after_ms"),
    Mutant("repeated_ack_overwrites_relays", "reference.reducers",
           (("        relays_acked = tuple(sorted(set(old.relays_acked).union(relays)))",
             "        relays_acked = tuple(sorted(set(relays)))"),),
           "a repeated mark_bridge_event_sent replaces relays_acked instead of merging",
           # the machine killed it in 19 of 20 seeds (eleventh session, docs/mutation.md "Kill margins")
           killer="reference/test_engine_margin_killers.py::test_a_repeated_sent_mark_merges_the_relays_acknowledged"),
    Mutant("source_not_in_dedupe_hash", "reference.reducers",
           (("    digest = payload_hash(dumps_canonical([source, nostr_kind, tags, content]))",
             "    digest = payload_hash(dumps_canonical([nostr_kind, tags, content]))"),),
           "the outbox dedupe hash leaves the source out"),
    Mutant("retention_takes_pending_outbox", "reference.reducers",
           (('            ("bridge_outbox", "sent"): cut(policy.retain_sent_outbox_us),',
             '            ("bridge_outbox", "sent"): cut(policy.retain_sent_outbox_us),'
             ' ("bridge_outbox", "pending"): cut(policy.retain_sent_outbox_us),'),),
           "retention removes pending outbox rows (never sent) too",
           # the machine killed it in 4 of 5 seeds (tenth session, docs/mutation.md "Kill margins")
           killer="reference/test_engine_margin_killers.py::test_retention_takes_the_sent_outbox_row_and_keeps_the_pending_one"),
    Mutant("seq_ge_0_unclamped", "reference.engine",
           (("        w = max(w, 0)  # seqs start at 1", "        w = w  # seqs start at 1"),),
           "the engine's stale check reads seq >= 0 as watermark -1",
           # the machine killed it in 4 of 5 seeds (tenth session, docs/mutation.md "Kill margins")
           killer="reference/test_engine_margin_killers.py::test_a_resume_from_the_start_is_served_every_event"),
    Mutant("recovery_keeps_versions", "reference.reducers",
           (("            tx.update(row, replace(row, version=version))\n", "            pass\n"),),
           "unclean recovery raises the version floor but leaves the live rows' versions"),
    Mutant("retention_keeps_version_floor", "reference.reducers",
           (("                    tx.db.version_floor = max(tx.db.version_floor, row.version + 1)",
             "                    pass"),),
           "retention frees an assignment id without raising the version floor",
           killer="reference/test_hardening_engine.py"),
    Mutant("recovery_without_relabel", "reference.reducers",
           (("        tx.relabel_events(s.stream_id, s.epoch, fresh)\n", ""),),
           "unclean recovery continues epochs but leaves the retained events in the old epoch"),
    Mutant("stale_cursor_without_continuation", "reference.engine",
           (('                **continuation_details(row if isinstance(row, SyncStream) else None),',
             '                **continuation_details(None),'),),
           "the stale_cursor details do not say which epoch the new one continues"),
    Mutant("recovery_drops_the_chain", "reference.reducers",
           (("        tx.update(s, continued_stream(s, fresh, now))",
             "        tx.update(s, replace(s, epoch=fresh, continues_epoch=s.epoch, continues_seq=s.head_seq,"
             " earlier_epochs=(), earlier_seqs=(), updated_at=now))"),),
           "the engine's recovery records only the last hop (CONT-1, ADR-0010): a reader two unclean restarts "
           "behind rebootstraps", killer="reference/test_engine_chain.py"),
)
ENGINE_MUTANTS += (
    # --- max_scan_rows counts the rows the caller can read (branch precise): the count's indexes ---
    Mutant("scan_count_prefix_range_one_long", "reference.db",
           (("    return lo, len(keys) if end is None else bisect.bisect_left(keys, end, lo)\n",
             "    return lo, len(keys) if end is None else min(len(keys), bisect.bisect_left(keys, end, lo) + 1)\n"),),
           "a prefix's range of stream ids takes one id past its end (counted and read)",
           killer="reference/test_scan_counts.py"),
    Mutant("scan_count_exact_under_prefix_twice", "reference.engine",
           (("                   tuple(sid for sid in exact if not under_prefix(sid)))", "                   tuple(exact))"),),
           "an exact grant a prefix grant also covers is counted (and read) twice",
           killer="reference/test_scan_counts.py"),
    Mutant("scan_count_stream_index_misses_deletes", "reference.db",
           (("            self.stream_ids.remove(key[0])  # type: ignore[arg-type]\n", "            pass\n"),),
           "the sorted stream ids miss the delete of an update: every append adds its stream id again",
           killer="reference/test_scan_counts.py"),
    Mutant("scan_count_assignments_by_requester_only", "reference.db",
           (('"compute_assignment": ColumnIndex(("requester", "provider_owner"))',
             '"compute_assignment": ColumnIndex(("requester",))'),),
           "a provider's owner is not found as a reader of the assignments it serves",
           killer="reference/test_scan_counts.py"),
    Mutant("scan_count_restore_skips_reindex", "reference.snapshot",
           (("    db.reindex()\n", ""),),
           "a db restored from a snapshot reads (and counts) its secondary indexes empty",
           killer="reference/test_scan_counts.py"),
    Mutant("scan_count_replay_writes_stream_rows_unindexed", "reference.engine",
           (("            db._insert(row)\n",
             "            if isinstance(row, SyncStream) and (row.stream_id,) not in db.pk[\"sync_stream\"]:\n"
             "                db.pk[\"sync_stream\"][(row.stream_id,)] = row  # a faster restart, past the index\n"
             "            else:\n"
             "                db._insert(row)\n"),),
           "recovery writes the stream rows of the commit log straight into the table: the sorted stream ids "
           "miss them, and a prefix grant's read finds (and counts) none", killer="reference/test_scan_counts.py"),
    Mutant("scan_count_walk_takes_every_id", "reference.engine",
           (("                granted = [logs[sid] for sid in ids if covers(sid)]\n",
             "                granted = [logs[sid] for sid in ids]\n"),
            ("                walked = [rows_of[(sid,)] for sid in ids if covers(sid)]\n",
             "                walked = [rows_of[(sid,)] for sid in ids]\n")),
           "with more prefix grants than stream ids, every stream id is taken (and counted) as granted",
           killer="reference/test_scan_counts.py"),
    # --- the secondary indexes themselves (branch revp): reference/db.py, judged by a set model ---
    Mutant("index_agreement_check_blind", "reference.db",
           (('        """The secondary indexes hold what a rebuild from the rows would (a consistency check)."""\n',
             '        """The secondary indexes hold what a rebuild from the rows would (a consistency check)."""\n'
             '        return True\n'),),
           "the engine's SLOW 'indexes agree with the rows' check passes whatever the indexes hold",
           killer="reference/test_secondary_indexes.py"),
    Mutant("column_index_keeps_empty_entries", "reference.db",
           (("                if not held:\n                    del self.by_value[value]\n", ""),),
           "an identity whose rows are all deleted keeps an empty entry: the index grows with every identity "
           "that once held a row", killer="reference/test_secondary_indexes.py"),
    Mutant("sorted_keys_remove_unchecked", "reference.db",
           (("            if i == len(keys) or keys[i] != key:\n"
             "                raise LocalProtocolError(f\"key {key!r} removed but not held\")\n", ""),),
           "a removal of a key the index does not hold deletes the next key in its place",
           killer="reference/test_secondary_indexes.py"),
    Mutant("prefix_end_overflows_at_last_code_point", "reference.db",
           (('    while prefix and prefix[-1] == "\\U0010ffff":\n        prefix = prefix[:-1]\n', ""),),
           "the end of a prefix ending in U+10FFFF is computed past the last code point",
           killer="reference/test_secondary_indexes.py"),
    # sliced Subscribe snapshots and Unsubscribe dropped rows (ADR-0041): code only the server's
    # engine.slice_rows reaches, killed by their test file
    Mutant("sliced_snapshot_registered_late", "reference.engine",
           (("            self._register(conn, msg.query_set_id, queries)\n            return self._hold(conn, snap)",
             "            return self._hold(conn, snap)"),
            ("            if snap.kind == \"subscribe\":\n                self._observe_resumes(snap)",
             "            if snap.kind == \"subscribe\":\n                self._register(conn, snap.query_set_id, "
             "list(snap.queries))\n                self._observe_resumes(snap)")),
           "a sliced subscription is registered after its last slice: commits made while it was stepped are lost",
           killer="reference/test_engine_sliced_snapshots.py"),
    Mutant("sliced_snapshot_queue_not_held", "reference.engine",
           (("        conn.reading, conn.snapshot = snap.offset, snap", "        conn.reading, conn.snapshot = None, snap"),),
           "the queue is not held while a snapshot is stepped: later updates go out before the SubscribeApplied",
           killer="reference/test_engine_sliced_snapshots.py"),
    Mutant("sliced_snapshot_answered_at_the_end", "reference.engine",
           (("        self._insert(conn, snap.offset, message, size)", "        self._insert(conn, self.committed, message, size)"),),
           "a sliced snapshot's answer is queued behind the updates held during it, not at its offset", killer="reference/test_engine_sliced_snapshots.py"),
    Mutant("sliced_snapshot_refusal_keeps_its_updates", "reference.engine",
           (("                self._drop_set(conn, snap.query_set_id, snap.offset)\n", ""),),
           "a sliced snapshot refused over max_outbound_message_bytes leaves its set's updates queued", killer="reference/test_engine_sliced_snapshots.py"),
    Mutant("sliced_snapshot_at_the_slice_size", "reference.engine",
           (("        if self.slice_rows is not None and snap.candidates > self.slice_rows:\n            # registered now",
             "        if self.slice_rows is not None and snap.candidates >= self.slice_rows:\n            # registered now"),),
           "a snapshot of exactly slice_rows candidates is sliced (the small path takes an extra turn)", killer="reference/test_engine_sliced_snapshots.py"),
    # one-off answers encoded ahead by the server (ADR-0043): the re-packed table is checked against the read's
    Mutant("one_off_repacked_table_unchecked", "reference.engine",
           (("        if table is not None and (table.table != rows.table or table.inserts is not rows.inserts\n"
             "                                  or len(table.deletes) != len(rows.deletes) or table.event != rows.event):",
             "        if False:"),),
           "a one-off answered with any table the caller hands in: a slice lost by the encoding ahead goes out as the "
           "answer", killer="reference/test_engine_read_view.py"),
    # the periodic snapshot's incremental capture (ADR-0011): a mutation kind that forgets to mark its
    # stream changed, or a capture that reuses what changed, makes an image that is not the state
    Mutant("snapshot_capture_append_unmarked", "reference.db",
           (("            self.changed_logs.add(row.stream_id)\n            log = self.logs.get(row.stream_id)\n",
             "            log = self.logs.get(row.stream_id)\n"),),
           "an append does not mark its stream changed: the next image keeps the stream's previous events", killer="reference/test_snapshot_capture.py"),
    Mutant("snapshot_capture_drop_unmarked", "reference.db",
           (("            self.changed_logs.add(row.stream_id)\n            log = self.logs[row.stream_id]\n            if len(log) and row.seq == log.floor and",
             "            log = self.logs[row.stream_id]\n            if len(log) and row.seq == log.floor and"),),
           "a retention drop (or the rollback of an append) does not mark its stream changed", killer="reference/test_snapshot_capture.py"),
    Mutant("snapshot_capture_relabel_unmarked", "reference.db",
           (("        self.changed_logs.add(stream_id)\n        log.relabel(old_epoch, new_epoch)",
             "        log.relabel(old_epoch, new_epoch)"),),
           "an epoch renumbering (an unclean restart's relabel) does not mark its stream changed", killer="reference/test_snapshot_capture.py"),
    Mutant("snapshot_capture_new_streams_skipped", "reference.snapshot",
           (("        for sid in itertools.islice(logs, len(entries), None):", "        for sid in ():"),),
           "streams created since the previous image are left out of the next", killer="reference/test_snapshot_capture.py"),
    Mutant("snapshot_capture_tables_reused", "reference.snapshot",
           (("        return Image(offset, head_hash, db.epoch_floor, db.version_floor, _tables(db),\n                     tuple(self._entries",
             "        return Image(offset, head_hash, db.epoch_floor, db.version_floor,\n                     "
             "globals().setdefault(\"_held\", {}).setdefault(id(db), _tables(db)),\n                     tuple(self._entries"),),
           "the primary-key tables' copy is reused from the Db's first image after they changed", killer="reference/test_snapshot_capture.py"),
    Mutant("snapshot_capture_view_shares_chunk_lists", "reference.eventlog",
           (("        view._data, view._cols = self._data[:], self._cols[:]\n",
             "        view._data, view._cols = self._data, self._cols\n"),),
           "a captured view shares the live log's chunk lists: a reused image sees later appends and drops", killer="reference/test_snapshot_capture.py"),
    Mutant("snapshot_capture_live_log_not_viewed", "reference.snapshot",
           (("            log = logs[sid]\n            entries[sid] = (sid, log.floor, log.captured())\n\n\ndef restore",
             "            log = logs[sid]\n            entries[sid] = (sid, log.floor, log.events)\n\n\ndef restore"),),
           "a stream first taken (at start or created since) is held as its live log, not a view: the file "
           "written meanwhile, and every later image that keeps the entry, see the changes after the capture",
           killer="reference/test_snapshot_capture.py::test_a_snapshot_written_while_its_streams_change_is_the_state_at_its_capture"),
)
ENGINE_MUTANTS += (
    # --- one-off reads and cross-identity readers (tests/support/reads.py: the differential machines'
    # read rules, judged by SQLite over the model's tables); each dies in the machines, no killer file ---
    Mutant("frozen_views_taken_lazily", "reference.engine",
           (("    return itertools.chain.from_iterable([log.frozen() for log in logs])",
             "    return itertools.chain.from_iterable(log.frozen() for log in logs)"),),
           "ADR-0038: a sliced read of several streams freezes each stream's log only when its step reaches it, "
           "so events appended to a later stream between steps show in the answer (killed by ReadRules.step_read / read_between_writes: "
           "the answer is not the state at take time)"),
    Mutant("owner_rows_looked_up_when_stepped", "reference.engine",
           (("            return [rows_of[key] for key in keys]\n",
             "            return (rows_of[key] for key in keys)\n"),),
           "ADR-0038: a read of sync_checkpoint / compute_assignment holds the caller's live index, not its rows "
           "as they were: an ack committed between steps shows (or the index changes size under the iteration) "
           "(killed by ReadRules.step_read / read_between_writes)"),
    Mutant("point_read_skips_row_filter", "reference.engine",
           (("        readable = _row_filter(claims, query.table)\n        return Read(",
             "        readable = (_row_filter(claims, query.table) if query.table not in _PK_COLUMN\n"
             "                    or q.pinned_value(query, _PK_COLUMN[query.table]) is None else (lambda row: True))\n"
             "        return Read("),),
           "AUTH-1: a one-off read that pins a primary key skips the row filter, as if the key lookup had checked "
           "it: B reads A's checkpoint by its id, a reader without a bridge scope an outbox row "
           "(killed by ReadRules.one_off)"),
    Mutant("owner_rows_grouped_by_grants", "reference.engine",
           (("                groups.setdefault(filter_key(self.conns[key[0]].claims, table), []).append(key)",
             "                groups.setdefault(self.conns[key[0]].claims.streams, []).append(key)"),),
           "AUTH-1: the fanout groups every table's subscribers by their stream grants (ADR-0014's key of "
           "sync_event): two identities with the same grants share one filtered update, so A's checkpoint "
           "reaches B, and a bridge-scoped reader's outbox rows one without the scope "
           "(killed by ReaderViews.readers_watch / readers_hold_their_view)"),
)
ENGINE_MUTANT_BY_NAME = {m.name: m for m in ENGINE_MUTANTS}
READ_MUTANTS = frozenset({"frozen_views_taken_lazily", "owner_rows_looked_up_when_stepped", "point_read_skips_row_filter",
                          "owner_rows_grouped_by_grants"})
"""Bugs of one-off reads and of what readers of other identities are sent: the module machine (its read rules and
readers, tests/support/reads.py) runs first."""


def run(name: str, budget: int = 200, seed: int | None = None, machine_only: bool = False,
        last_only: bool = False) -> dict[str, object]:
    """As :func:`support.mutants.run`, with the differential machines."""
    m = ENGINE_MUTANT_BY_NAME[name]
    if m.killer is not None and not machine_only:  # code the differential machines reach only by chance: its test file kills it
        return run_killer(m, ENGINE)
    apply(m, ENGINE)
    from support.machines import DiffMachine, DiffModuleMachine
    started = time.monotonic()
    # reducer and index bugs show fastest call by call; fanout, gating and recovery need the system
    # (the module machine's readers of several identities also judge the engine's fanout: tried after the system
    # machine, or first for the read mutants, which it reaches within a few dozen examples)
    module_first = m.module in ("reference.reducers", "reference.db", "reference.eventlog") or m.name in READ_MUTANTS
    machines = (DiffModuleMachine, DiffMachine) if module_first else (DiffMachine, DiffModuleMachine)
    examples = 0
    if last_only:
        examples, machines = budget * (len(machines) - 1), machines[-1:]
    for machine in machines:
        exc, ran = drive(machine, budget, seed)
        examples += ran
        if exc is not None:
            return {"mutant": name, "killed": True, "by": f"{machine.__name__}: {type(exc).__name__}",
                    "detail": (str(exc).splitlines() or [""])[0][:160], "examples": examples,
                    "seconds": round(time.monotonic() - started, 1)}
    return {"mutant": name, "killed": False, "examples": examples, "seconds": round(time.monotonic() - started, 1)}


if __name__ == "__main__":  # NAME [BUDGET [SEED [last]]], as support.mutants
    print(json.dumps(run(*cli(sys.argv[1:4], 200), last_only=sys.argv[4:] == ["last"])))
