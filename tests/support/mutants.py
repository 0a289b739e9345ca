"""Planted bugs in the model, and the harness that shows the machines catch them.

A mutant is a realistic bug written as source edits to one ``spec`` module.  It is applied from
the test side only: the edited source is executed into the module's own namespace (monkeypatching
every function and class in it), and the implementation modules that imported names from it are
reloaded so they pick the mutants up.  The oracles (``spec.invariants``, ``spec.trace``) are never
reloaded.  Each mutant runs in its own subprocess::

    PYTHONPATH=tests python -m support.mutants NAME      # prints one JSON line

and must be *killed*: some machine reports an invariant violation within a fixed budget.
"""

from __future__ import annotations

import importlib
import inspect
import json
import linecache
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

IMPLEMENTATION = ("spec.state", "spec.resume", "spec.reducers", "spec.delivery", "spec.harness", "spec.client",
                  "spec.system")


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    edits: tuple[tuple[str, str], ...]
    description: str
    expected: tuple[str, ...] = ()  # invariants it breaks; its kill must cite one (tests/spec/test_mutants.py)
    killer: str | None = None  # a test file (under tests/) that kills it, when no machine can reach the code
    system_only: bool = False  # delivery code the module machine never runs: only the system machine tries it


MUTANTS: tuple[Mutant, ...] = (
    Mutant("seq_head_plus_2", "spec.reducers", (("    seq = a.head + 1\n", "    seq = a.head + 2\n"),),
           "append assigns head+2", expected=('SEQ-1', 'SEQ-4')),
    Mutant("sequence_before_dedupe", "spec.reducers", (
        ("    Check(\"`expected_next_seq`, when given, is head + 1\", ErrorCode.SEQUENCE_CONFLICT,\n"
         "          lambda a: None if a.expected_next_seq in (None, a.head + 1)\n"
         "          else {\"actual_next_seq\": a.head + 1, \"expected_next_seq\": a.expected_next_seq, \"stream_id\": a.stream_id}),\n",
         ""),
        ("    NoOp(\"the key is retained with this payload: a retry, answered with its original seq\",\n",
         "    Check(\"`expected_next_seq`, when given, is head + 1\", ErrorCode.SEQUENCE_CONFLICT,\n"
         "          lambda a: None if a.expected_next_seq in (None, a.head + 1)\n"
         "          else {\"actual_next_seq\": a.head + 1, \"expected_next_seq\": a.expected_next_seq, \"stream_id\": a.stream_id}),\n"
         "    NoOp(\"the key is retained with this payload: a retry, answered with its original seq\",\n")),
        "the sequence check runs before dedupe, so a retry after the head moved fails", expected=("IDEM-2", "IDEM-3"),
        # the machines killed it in every seed but up to ModuleMachine's 252nd of 300 (docs/mutation.md, "Kill margins")
        killer="spec/test_model_margin_killers.py::test_a_retry_after_the_head_moved_gets_its_original_seq_IDEM_2"),
    Mutant("dedupe_without_hash_compare", "spec.reducers",
           (("lambda a: a.existing is not None and a.existing.payload_hash == a.digest,",
             "lambda a: a.existing is not None,"),),
           "a duplicate key is accepted whatever its payload", expected=('IDEM-3',)),
    Mutant("non_monotonic_ack", "spec.reducers",
           (("a.old.epoch == a.epoch and a.old.last_applied_seq >= a.seq)",
             "a.old.epoch == a.epoch and a.old.last_applied_seq == a.seq)"),),
           "a lower ack overwrites the checkpoint", expected=('CKPT-2',),
           # killed in 13 of 13 seeds but as late as the 166th example (docs/mutation.md, "Kill margins (eleventh session)")
           killer="spec/test_model_margin_killers.py::test_a_lower_ack_leaves_the_checkpoint_where_it_was_CKPT_2"),
    Mutant("ack_past_head", "spec.reducers",
           (("          lambda a: None if a.seq <= a.head\n", "          lambda a: None if a.seq <= a.head + 1\n"),),
           "the checkpoint may run one past the head", expected=('CKPT-1',)),
    Mutant("confirmed_gate_off_by_one", "spec.delivery",
           (("    return not confirmed or offset <= durable\n", "    return not confirmed or offset <= durable + 1\n"),),
           "confirmed reads release one offset early", expected=('CONF-1',)),
    Mutant("stale_floor_lt_vs_le", "spec.resume",
           (('("retention_floor_breach", watermark < floor - 1)',
             '("retention_floor_breach", watermark < floor - 2)'),),
           "the retention check uses < where <= is right", expected=('STALE-1', 'STALE-2'),
           # killed in 10 of 10 seeds but as late as the 354th example (docs/mutation.md, "Kill margins (eleventh session)")
           killer="spec/test_model_margin_killers.py::test_a_resume_one_below_the_floor_breaches_retention_STALE_1_STALE_2"),
    Mutant("epoch_ignored_on_resume", "spec.resume",
           (('("epoch_changed", requested_epoch is not None and requested_epoch != epoch)',
             '("epoch_changed", False)'),),
           "the stale check ignores the requested epoch", expected=('STALE-1',)),
    Mutant("snapshot_not_atomic", "spec.delivery",
           (("    rows = snapshot(log.db, sub.claims, queries)\n",
             "    rows = snapshot(log.durable_db, sub.claims, queries)\n"),),
           "the snapshot is read from an older state than the one registration starts from", expected=('DELIV-2',)),
    Mutant("caller_also_gets_update", "spec.delivery",
           (("        elif updates:\n            sends.append((conn_id, Outbound(offset, TransactionUpdate",
             "        if updates:\n            sends.append((conn_id, Outbound(offset, TransactionUpdate"),),
           "the caller gets a TransactionUpdate besides its ReducerResult", expected=('DELIV-3', 'DELIV-2')),
    Mutant("row_filter_ignored", "spec.delivery",
           (("if q.matches(query, r) and can_read(claims, r)]", "if q.matches(query, r)]"),),
           "subscriptions are not row-filtered by grants and ownership", expected=('AUTH-1',),
           # the machines killed it in every seed but up to SystemMachine's ~230th of 300 (docs/mutation.md)
           killer="spec/test_model_margin_killers.py::test_a_reader_granted_one_stream_gets_no_event_of_another_AUTH_1"),
    Mutant("event_rows_persisted", "spec.state",
           (("    return {t.name: () for t in PERSISTENT_TABLES}", "    return {t.name: () for t in TABLES}"),
            ("        if t.event:\n            self._inserts.setdefault(t.name, []).append(row)\n            return\n",
             "")),
           "event-table rows are stored in the state", expected=('EVT-1',)),
    Mutant("gap_applied", "spec.client", (("            if rule == \"gap\":", "            if False:"),),
           "the client applies across a gap", expected=('REPLAY-1',)),
    Mutant("no_epoch_bump_on_crash", "spec.reducers",
           (("    for s in streams:\n"
             "        tx.update(s, continued_stream(s, fresh, now))\n", ""),
            ("    tx.epoch_floor = fresh\n", ""),
            ("            tx.update(e, replace(e, epoch=fresh))\n", "            pass\n"),
            ("            tx.update(c, replace(c, epoch=fresh))\n", "            pass\n")),
           "an unclean restart keeps epochs, so lost seqs get reused", expected=("DUR-2", "SEQ-2", "CONT-1")),
    Mutant("compaction_keeps_floor", "spec.reducers",
           (("        tx.update(s, replace(s, floor_seq=max(s.floor_seq, cut + 1), updated_at=now))", "        pass"),),
           "compaction drops events but leaves floor_seq", expected=('SEQ-1',)),
    Mutant("assignment_version_not_bumped", "spec.reducers",
           (("result=a.result, version=old.version + 1,", "result=a.result, version=old.version,"),),
           "an assignment update keeps its version", expected=('ASSIGN-1',)),
    Mutant("scope_not_checked", "spec.reducers",
           (('    needs_scope("sync.append"),\n    needs_grant("stream_id"),\n    valid_id("stream_id"),\n'
             '    valid_id("idempotency_key"),\n',
             '    needs_grant("stream_id"),\n    valid_id("stream_id"),\n    valid_id("idempotency_key"),\n'),),
           "append does not check the sync.append scope", expected=('AUTH-2',)),
    Mutant("slow_consumer_kept", "spec.delivery",
           (("    return queued > max_queue\n", "    return False\n"),),
           "a client past the outbound bound is kept, so its queue grows without limit", expected=("SLOW-1",)),
    Mutant("failed_call_heard_by_others", "spec.delivery",
           (("        return log, ((conn_id, Outbound(log.committed,\n"
             "                                        ReducerResult(request_id, log.committed, ReducerErr(outcome.error.render())))),)\n",
             "        return log, tuple((other, Outbound(log.committed,\n"
             "                                           ReducerResult(request_id, log.committed, ReducerErr(outcome.error.render()))))\n"
             "                          for other in subs)\n"),),
           "a failed call's error is sent to every connection", expected=("DELIV-4",), system_only=True),
    Mutant("failed_call_takes_offset", "spec.delivery",
           (("    if isinstance(outcome, Err):\n        return log, ((conn_id, Outbound(log.committed,\n",
             "    if isinstance(outcome, Err):\n        log = replace(log, committed=log.committed + 1)\n"
             "        return log, ((conn_id, Outbound(log.committed,\n"),),
           "a failed call takes an offset", expected=("DELIV-4",), system_only=True),
    Mutant("result_sent_twice", "spec.delivery",
           (("                                                                  ReducerOk(caller.ret, updates)))))\n",
             "                                                                  ReducerOk(caller.ret, updates)))))\n"
             "            sends.append((conn_id, Outbound(offset, ReducerResult(caller.request_id, offset, ReducerOk(caller.ret, ())))))\n"),),
           "the caller gets its ReducerResult twice", expected=("DELIV-3",), system_only=True),
    Mutant("slow_close_at_the_bound", "spec.delivery",
           (("    return queued > max_queue\n", "    return queued >= max_queue\n"),),
           "a client is disconnected as slow with a queue at (not past) the bound", expected=("SLOW-1",), system_only=True),
    Mutant("disconnect_forgets_watermarks", "spec.client",
           (("    def on_disconnect(self) -> None:\n        self.connected = False\n        self.qs_stream.clear()\n",
             "    def on_disconnect(self) -> None:\n        self.connected = False\n        self.qs_stream.clear()\n"
             "        self.streams.clear()\n"),),
           "a client forgets its streams' watermarks when its connection drops", expected=("SLOW-1",)),
    Mutant("crash_keeps_undurable_state", "spec.delivery",
           (("        db=log.durable_db,\n", ""),),
           "recovery keeps the in-memory state instead of the durable one", expected=("DUR-1",)),
    Mutant("sweep_strict_expiry", "spec.reducers",
           (("        if r.status != \"offline\" and r.expires_at <= now:",
             "        if r.status != \"offline\" and r.expires_at < now:"),),
           "the presence sweep spares rows that expire exactly now", expected=("PRES-2",)),
)
MUTANTS += (
    # --- issue 9, defects to fix (ADR-0003) ---
    Mutant("assign_skips_provider_check", "spec.reducers",
           (("    Check(\"to assign, the provider exists, is active and advertises the job kind\", ErrorCode.PROVIDER_UNAVAILABLE,\n"
             "          lambda a: None if a.status != \"assigned\" or a.unavailable is None\n"
             "          else {\"job_kind\": a.row.job_kind, \"provider_id\": a.provider_id, \"reason\": a.unavailable}),\n", ""),
            ("        assert a.provider is not None  # the provider check passed\n"
             "        provider_id, provider_owner = a.provider.provider_id, a.provider.owner\n",
             "        provider_id, provider_owner = a.provider_id, a.provider.owner if a.provider is not None else None\n")),
           "assigning does not check that the provider exists, is active and advertises the kind",
           expected=("ASSIGN-2", "ASSIGN-3"),
           # killed in 10 of 10 seeds but as late as the 194th example (docs/mutation.md, "Kill margins (eleventh session)")
           killer="spec/test_model_margin_killers.py::test_assigning_names_an_active_provider_advertising_the_kind_ASSIGN_3"),
    Mutant("execute_scope_reads_assignments", "spec.delivery",
           (("if q.matches(query, r) and can_read(claims, r)]",
             "if q.matches(query, r) and (can_read(claims, r) or (type(r).__name__ == 'ComputeAssignment'"
             " and 'compute.execute' in claims.scopes))]"),),
           "every compute.execute holder reads every assignment (the rule before ADR-0003)", expected=("AUTH-1",),
           # the system machine killed it in 4 of 5 seeds (tenth session, docs/mutation.md "Kill margins")
           killer="spec/test_model_margin_killers.py::test_an_executor_reads_no_assignment_it_is_not_assigned_AUTH_1"),
    Mutant("execute_by_scope_alone", "spec.reducers",
           (("has_role(role, a.claims.scopes, a.claims.identity, a.row)",
             "has_role(role, a.claims.scopes, a.claims.identity, replace(a.row, provider_owner=a.claims.identity))"),),
           "any compute.execute holder starts, completes or fails any assigned job", expected=("ASSIGN-4", "ASSIGN-2")),
    Mutant("resume_without_epoch_accepted", "spec.delivery",
           (("            refused = resume_form_error(query)\n", "            refused = None\n"),),
           "a sync_event subscription bounding seq without epoch = is accepted (skips the epoch check)",
           expected=("STALE-3",),
           # the machines killed it in every seed but up to SystemMachine's ~200th of 300 (docs/mutation.md)
           killer="spec/test_model_margin_killers.py::test_a_resume_without_epoch_is_refused_STALE_3"),
    Mutant("first_upserter_marks", "spec.delivery",
           (("    return {**owners, session: conn_id}\n", "    return {session: conn_id, **owners}\n"),),
           "the first connection that upserted a session marks it on close, even after a newer connection "
           "re-upserted it (the reconnect flap)", expected=("PRES-3",),
           # SystemMachine alone kills it, as late as its 145th example (docs/mutation.md, "Kill margins (eleventh
           # session)"); the flap as two close steps was PRES-3's blind spot (docs/mutation.md, twelfth session)
           killer="spec/test_mutation_kills_system.py::"
                  "test_system_a_close_after_the_last_upserters_close_marks_nothing_PRES_3"),
    Mutant("backoff_not_recorded", "spec.reducers",
           (("                             next_attempt_at=a.ctx.now + 1000 * a.retry_after_ms,\n", ""),),
           "record_bridge_failure validates retry_after_ms and drops it (no durable backoff)", expected=("BRIDGE-3",)),
    Mutant("repeated_ack_ignores_relays", "spec.reducers",
           (("a.row.status == \"sent\" and set(a.relays) <= set(a.row.relays_acked)", "a.row.status == \"sent\""),),
           "a repeated mark_bridge_event_sent ignores relays acknowledged since", expected=("BRIDGE-3",)),
    Mutant("source_not_in_dedupe_hash", "spec.reducers",
           (("    return payload_hash(dumps_canonical([source, nostr_kind, parse_strict(tags_canonical), content]))",
             "    return payload_hash(dumps_canonical([nostr_kind, parse_strict(tags_canonical), content]))"),),
           "another source under the same outbox_id is a silent no-op", expected=("BRIDGE-3",)),
    Mutant("retention_takes_live_assignments", "spec.reducers",
           (("        return row.status in ASSIGNMENT_TERMINAL and expired(row.updated_at, now,"
             " policy.retain_terminal_assignment_us)",
             "        return expired(row.updated_at, now, policy.retain_terminal_assignment_us)"),),
           "retention removes live assignments too", expected=("RET-1",)),
    Mutant("seq_ge_0_is_watermark_minus_1", "spec.query",
           (("    return None if bound is None else max(0, bound)", "    return bound"),),
           "seq >= 0 resumes from watermark -1 (a floor breach on every stream)", expected=("STALE-1",)),
    Mutant("budget_ignores_upper_bound", "spec.resume",
           (("    end = head if upper is None else min(head, upper)\n", "    end = head\n"),),
           "a page's replay is measured to the head, not to its upper bound (ADR-0042)", expected=("STALE-1",)),
    Mutant("budget_upper_max_not_min", "spec.resume",
           (("    end = head if upper is None else min(head, upper)\n",
             "    end = head if upper is None else max(head, upper)\n"),),
           "a page's replay ends at the larger of head and its bound (ADR-0042)", expected=("STALE-1",)),
    Mutant("upper_bound_lt_read_as_le", "spec.query",
           (("    bounds = [c.value - (c.op is Op.LT) for c in q.where if c.column == column and c.op in (Op.LT, Op.LE)",
             "    bounds = [c.value for c in q.where if c.column == column and c.op in (Op.LT, Op.LE)"),),
           "`seq < v` is read as `seq <= v`: the page's replay is one too long (ADR-0042)", expected=("STALE-1",)),
    Mutant("no_version_bump_on_crash", "spec.reducers",
           (("    for row in versioned:\n        tx.update(row, replace(row, version=version))\n"
             "    tx.version_floor = version\n", ""),),
           "versions roll back with the lost suffix and are reused for other content", expected=("VER-1",)),
    Mutant("reopened_assignment_restarts_at_1", "spec.reducers",
           (("None, a.db.version_floor, a.ctx.now, a.ctx.now))", "None, 1, a.ctx.now, a.ctx.now))"),),
           "an assignment id freed by retention starts again at version 1", expected=("VER-1", "ASSIGN-2")),
    Mutant("crash_starts_fresh_epochs", "spec.reducers",
           (("        tx.update(s, continued_stream(s, fresh, now))",
             "        tx.update(s, replace(s, epoch=fresh, continues_epoch=0, continues_seq=0, earlier_epochs=(),"
             " earlier_seqs=(), floor_seq=s.head_seq + 1, updated_at=now))"),
            ("        if old_epoch.get(e.stream_id) == e.epoch:\n            tx.update(e, replace(e, epoch=fresh))\n",
             "        if old_epoch.get(e.stream_id) == e.epoch:\n            tx.delete(e)\n")),
           "an unclean restart starts every stream in a fresh empty epoch: every client rebootstraps (before "
           "ADR-0003)", expected=("CONT-1",)),
    Mutant("client_never_continues", "spec.client",
           (("            return last <= bound", "            return False"),),
           "the client rebootstraps whenever the epoch changed, even into an epoch continuing its own",
           expected=("CONT-1",)),
    Mutant("client_continues_past_continues_seq", "spec.client",
           (("            return last <= bound", "            return last >= 0"),),
           "a client that saw events the crash lost continues instead of rebootstrapping", expected=("CONT-1",)),
    # --- ADR-0010: the continuation chain across several unclean restarts ---
    Mutant("crash_drops_the_chain", "spec.resume",
           (("                   earlier_epochs=tuple(e for e, _ in earlier), earlier_seqs=tuple(s for _, s in earlier),",
             "                   earlier_epochs=(), earlier_seqs=(),"),),
           "an unclean restart records only the last hop: a client two restarts behind rebootstraps (before "
           "ADR-0010)", expected=("CONT-1",), killer="spec/test_continuation_chain.py"),
    Mutant("client_reads_only_the_last_hop", "spec.client",
           (("    for hop_epoch, hop_seq in ((continues_epoch, continues_seq), *zip(earlier_epochs, earlier_seqs, "
             "strict=True)):",
             "    for hop_epoch, hop_seq in ((continues_epoch, continues_seq),):"),),
           "the client ignores the earlier hops of the chain: it rebootstraps two restarts behind",
           expected=("CONT-1",), killer="spec/test_continuation_chain.py"),
    Mutant("client_takes_its_hop_s_bound_only", "spec.client",
           (("        bound = min(bound, hop_seq)\n", "        bound = hop_seq\n"),),
           "the client reads its own hop's bound, not the minimum since: a chain written hop by hop lets a "
           "client past a later crash's head continue", expected=("CONT-1",), killer="spec/test_continuation_chain.py"),
)
MUTANTS += (
    # --- issue 9, "every invariant has at least one planted mutant that dies on it" ---
    Mutant("reset_lowers_the_epoch", "spec.reducers",
           (("    tx.update(stream, replace(stream, epoch=stream.epoch + 1, continues_epoch=0,",
             "    tx.update(stream, replace(stream, epoch=stream.epoch - 1, continues_epoch=0,"),),
           "reset_stream_epoch moves the stream to a lower epoch", expected=("SEQ-3",)),
    Mutant("dedupe_lookup_misses", "spec.reducers",
           (("lambda e: (e.stream_id, e.idempotency_key) == key)", "lambda e: (e.stream_id, e.idempotency_key) == key and e.seq < 0)"),),
           "the dedupe lookup never finds the retained key, so a retry appends a second event under it",
           expected=("IDEM-1", "IDEM-2", "IDEM-3")),
    Mutant("event_stores_raw_payload", "spec.reducers",
           (("    tx.insert(SyncEvent(a.stream_id, epoch, seq, a.idempotency_key, a.digest, a.canon, a.claims.identity,",
             "    tx.insert(SyncEvent(a.stream_id, epoch, seq, a.idempotency_key, payload_hash(a.payload_json), a.payload_json,"
             " a.claims.identity,"),),
           "an appended event stores the payload as sent (and its hash), not its canonical form", expected=("HASH-1",)),
    Mutant("canonical_keeps_key_order", "spec.canonical",
           (('_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,',
             '_ENCODER = json.JSONEncoder(sort_keys=False, separators=(",", ":"), ensure_ascii=False,'),),
           "canonical JSON keeps the input's key order", expected=("HASH-2",), killer="spec/test_canonical.py"),
    Mutant("error_result_at_older_offset", "spec.delivery",
           (("        return log, ((conn_id, Outbound(log.committed,\n"
             "                                        ReducerResult(request_id, log.committed, ReducerErr(",
             "        return log, ((conn_id, Outbound(max(0, log.committed - 1),\n"
             "                                        ReducerResult(request_id, log.committed, ReducerErr("),),
           "a failed call's result is queued tagged with the offset before the state it read", system_only=True, expected=("DELIV-1",)),
    Mutant("rehydrate_skips_the_window", "spec.client",
           (("            view.last = view.base = max(row.floor_seq - 1, 0)",
             "            view.last = view.base = max(row.head_seq, 0)"),),
           "a rebootstrap starts at the head instead of the floor: the retained window is never applied",
           expected=("REPLAY-2",)),
    Mutant("event_rows_sent_as_table_rows", "spec.delivery",
           (("        parts = tuple(TableRows(t, tuple(i), tuple(d), TABLE_BY_NAME[t].event)",
             "        parts = tuple(TableRows(t, tuple(i), tuple(d), False)"),),
           "event-table rows reach subscribers as ordinary table rows", system_only=True, expected=("EVT-2",),
           killer="spec/test_key_and_event_flags.py"),
    Mutant("minimum_build_refused", "spec.compat",
           (("    if build < window.min_client_build_id:", "    if build <= window.min_client_build_id:"),),
           "a client exactly at the minimum build is told to upgrade", expected=("COMPAT-1",),
           killer="spec/test_compat.py"),
    Mutant("offline_without_reason", "spec.reducers",
           (('    reason = "explicit_offline" if a.status == "offline" else None\n', "    reason = None\n"),),
           "an explicit offline upsert records no offline_reason", expected=("PRES-1",)),
    Mutant("dead_letter_one_late", "spec.reducers",
           (('    status = "failed" if attempts >= a.ctx.policy.bridge_max_attempts else "pending"',
             '    status = "failed" if attempts > a.ctx.policy.bridge_max_attempts else "pending"'),),
           "an outbox row reaching the maximum attempts stays pending", expected=("BRIDGE-1",)),
    Mutant("failure_recorded_on_sent_rows", "spec.reducers",
           (('lambda a: a.row.status != "pending"', 'lambda a: a.row.status == "failed"'),),
           "record_bridge_failure on a sent row counts an attempt and moves it back", expected=("BRIDGE-2",)),
    Mutant("provider_version_plus_2", "spec.reducers",
           (("    version = a.db.version_floor if a.old is None else a.old.version + 1",
             "    version = a.db.version_floor if a.old is None else a.old.version + 2"),),
           "a provider update bumps its version by 2", expected=("PROV-1",)),
    Mutant("checkpoint_always_inserted", "spec.reducers",
           (("a.seq, a.ctx.now)\n    if a.old is None:", "a.seq, a.ctx.now)\n    if True:"),),
           "an ack inserts a second checkpoint row under the same id", expected=("KEY-1",),
           killer="spec/test_key_and_event_flags.py"),
)
MUTANTS += (
    # --- issue 9, convergence that is not circular (ADR-0013) ---
    Mutant("client_ignores_gaps", "spec.client",
           (("                self.gaps_detected += 1\n                self._commit(stream_id)\n"
             "                return self._resubscribe(stream_id)  # never applied\n",
             "                break\n"),),
           "the client skips gap detection: it stops applying at a gap but never asks again", expected=("REPLAY-1",)),
    Mutant("rebootstrap_keeps_rows", "spec.client",
           (("        view.applied = []\n        view.epoch = epoch\n", "        view.epoch = epoch\n"),),
           "a rebootstrap keeps the rows applied before it and adds the rehydrated window to them",
           # the kept rows are read as the new epoch's: the client holds (stream, new epoch, seq) with an old
           # payload, which SEQ-2 flags first under some draws (seed 6, eleventh session's kill margins)
           expected=("REPLAY-1", "REPLAY-2", "SEQ-2")),
    Mutant("checkpoint_without_the_apply", "spec.client",
           (("        return Checkpoint(self.epoch, self.last, self.base, tuple(self.applied), self.rehydrating,",
             "        return Checkpoint(self.epoch, self.last, self.base, (), self.rehydrating,"),),
           "the checkpoint store commits the watermark without the applied events: a restarted client has "
           "neither", expected=("REPLAY-2", "REPLAY-1"),
           # the machines killed it in every seed but up to SystemMachine's 200th of 300 (docs/mutation.md)
           killer="spec/test_model_margin_killers.py::test_a_restarted_client_holds_the_events_it_applied_REPLAY_2"),
    Mutant("first_follow_rebootstraps", "spec.client",
           (("        self.streams[stream_id] = StreamView(epoch=FIRST_EPOCH)\n",
             "        self.streams[stream_id] = StreamView(epoch=FIRST_EPOCH, rebootstraps=1, rehydrating=True)\n"),),
           "a stream without a checkpoint is rebootstrapped instead of replayed from zero", expected=("REPLAY-3",)),
    Mutant("gap_rebootstraps", "spec.client",
           (("                return self._resubscribe(stream_id)  # never applied\n",
             "                self._rebootstrap(stream_id, e.epoch)\n"
             "                return self._resubscribe(stream_id)  # never applied\n"),),
           "a gap makes the client rebootstrap instead of resuming from its watermark", expected=("REPLAY-3",)),
    Mutant("subscribe_grant_exact_only", "spec.delivery",
           (("        if isinstance(stream_id, str) and not stream_granted(claims, stream_id):",
             "        if isinstance(stream_id, str) and stream_id not in claims.streams:"),),
           "a subscription's stream grant is matched exactly, never as a prefix: readable streams are refused",
           expected=("REPLAY-2",), system_only=True),
    # --- ADR-0015: the harness's scheduling of the pure delivery transitions (the system machine reaches
    # this code but did not hit the ordering within 300 examples: a slow consumer's close needs a session
    # it owns and a later subscriber of both transactions; tests/spec/test_harness.py builds that case) ---
    Mutant("marks_commit_mid_fanout", "spec.harness",
           (("        while self._disconnects and not self._fanning_out and self.can_commit():",
             "        while self._disconnects and self.can_commit():"),),
           "without the re-entrancy flag, a slow consumer's close commits its presence marks in the middle of "
           "another transaction's fanout: the connections after it hear the later offset first",
           expected=("DELIV-1",), system_only=True, killer="spec/test_harness.py"),
)
NO_MUTANT: dict[str, str] = {
    "CONF-2": "every planted bug that loses an event a confirmed client received (recovery dropping the last durable "
              "transaction, a durable state lagging its offset, a durable offset that falls) breaks DUR-1, REPLAY-1, "
              "REPLAY-2 or a contract in an earlier step of the same runs, so no kill cites CONF-2 first; its check "
              "is shown able to fail by the Z3 proof conf (control durable_can_fall)",
}
"""Invariants without a planted mutant that dies on them, each with the reason (tests/spec/test_docs.py)."""
MUTANT_BY_NAME = {m.name: m for m in MUTANTS}


def edit_targets_missing(mutants: Iterable[Mutant]) -> list[tuple[str, int, str]]:
    """(mutant, times found, the text's start) for every edit whose text is not in its module's source file
    exactly once, edit after edit -- read from the file itself, not through :func:`apply`, so a refactor that
    moved a targeted line is named at once instead of a mutant that cannot run."""
    from importlib.util import find_spec
    from pathlib import Path

    missing = []
    for m in mutants:
        spec = find_spec(m.module)
        assert spec is not None and spec.origin is not None, m.module
        src = Path(spec.origin).read_text(encoding="utf-8")
        for old, new in m.edits:
            if src.count(old) != 1:
                missing.append((m.name, src.count(old), old[:60]))
            src = src.replace(old, new)
    return missing


def apply(m: Mutant, implementation: tuple[str, ...] = IMPLEMENTATION) -> None:
    mod = importlib.import_module(m.module)
    src = inspect.getsource(mod)
    for old, new in m.edits:
        if src.count(old) != 1:
            raise RuntimeError(f"mutant {m.name}: edit target found {src.count(old)} times in {m.module}")
        src = src.replace(old, new)
    filename = f"<mutant {m.name} of {m.module}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)  # for inspect/icontract
    exec(compile(src, filename, "exec"), mod.__dict__)
    after = False
    for name in implementation:
        if name == m.module:
            after = True
            continue
        if after:
            importlib.reload(importlib.import_module(name))


def _cited(text: str) -> list[str]:
    """The invariant ids of the catalog a failure message names."""
    import re

    from spec.invariants import CATALOG
    known = {i.id for i in CATALOG}
    return sorted({t for t in re.findall(r"\b[A-Z][A-Z0-9]*-\d+\b", text) if t in known})


def run_killer(m: Mutant, implementation: tuple[str, ...] = IMPLEMENTATION) -> dict[str, object]:
    """A mutant of code no machine reaches (or reaches only by chance), killed by its test file: killed
    when the file fails; the invariants cited are those its module docstring says the file checks.
    ``killer`` may name one test of the file (``path::test``): then only that test runs, and must fail."""
    import ast
    import contextlib
    import io
    from pathlib import Path

    import pytest
    assert m.killer is not None
    file, _, test = m.killer.partition("::")
    path = Path(__file__).resolve().parents[1] / file
    started = time.monotonic()
    apply(m, implementation)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pytest.main(["-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-x", "--tb=short", str(path) + (f"::{test}" if test else "")])
    ids = _cited(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "")  # what the file checks
    return {"mutant": m.name, "killed": code == 1, "by": m.killer, "invariants": ids,
            "seconds": round(time.monotonic() - started, 1)}


def drive(machine: type[Any], budget: int, seed: int | None = None) -> tuple[Exception | None, int]:
    """Run ``machine`` as the mutant-kill tests do: ``budget`` examples of up to 60 steps, no shrinking,
    no example database.  ``seed`` None is CI's run (``derandomize``: the same draws on every run);
    an int draws from that seed instead (``support.kill_margin``).  Returns the failure (None when
    the machine held) and how many examples ran, counting the failing one.

    The class itself is run, not a subclass: the derandomized draws are seeded by a digest of the
    machine's source, so a subclass would draw other examples than CI.  The count comes from
    ``teardown`` (run once per example), patched on the class for the run and restored after."""
    runs = [0]
    own = machine.__dict__.get("teardown")
    inherited = machine.teardown

    def teardown(self: Any) -> None:
        runs[0] += 1
        inherited(self)

    machine.teardown = teardown  # type: ignore[method-assign]
    if seed is not None:
        machine._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]  # what @hypothesis.seed sets
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=budget, stateful_step_count=60, deadline=None, database=None, derandomize=seed is None,
            suppress_health_check=list(HealthCheck), print_blob=False, phases=[Phase.explicit, Phase.generate]))
    except Exception as exc:
        return exc, runs[0] - 1  # without a shrink phase Hypothesis replays the failing example once to raise
    finally:
        if own is None:
            del machine.teardown
        else:
            machine.teardown = own  # type: ignore[method-assign]
        if seed is not None:
            del machine._hypothesis_internal_use_seed  # type: ignore[attr-defined]
    return None, runs[0]


def run(name: str, budget: int = 300, seed: int | None = None, machine_only: bool = False,
        last_only: bool = False) -> dict[str, object]:
    """Kill mutant ``name``: by its killer file if it has one, else by the machines (``drive``).
    ``machine_only`` runs the machines even for a mutant with a killer (``support.kill_margin``);
    ``last_only`` runs only the last of them, counting the ones before as run out (their whole budget,
    no kill): ``support.kill_margin --last-machine``, a lower bound on the margin for the mutants the
    first machine never kills, at a fraction of the cost."""
    from support.machines import ModuleMachine, SystemMachine
    m = MUTANT_BY_NAME[name]
    if m.killer is not None and not machine_only:
        return run_killer(m)
    apply(m)
    started = time.monotonic()
    machines = (SystemMachine,) if m.module == "spec.client" or m.system_only else (ModuleMachine, SystemMachine)
    examples = 0
    if last_only:
        examples, machines = budget * (len(machines) - 1), machines[-1:]
    for machine in machines:
        exc, ran = drive(machine, budget, seed)
        examples += ran
        if exc is not None:
            text = str(exc)
            ids = _cited(text)
            contract = type(exc).__name__ == "ViolationError"
            if not ids and not contract:
                # an unexpected crash is not a kill: the machines must *detect* the bug
                return {"mutant": name, "killed": False, "by": machine.__name__, "error": f"{type(exc).__name__}: "
                        f"{text[:300]}", "examples": examples, "seconds": round(time.monotonic() - started, 1)}
            return {"mutant": name, "killed": True, "by": machine.__name__,
                    "invariants": ids or ["contract"], "error": type(exc).__name__, "examples": examples,
                    "seconds": round(time.monotonic() - started, 1)}
    return {"mutant": name, "killed": False, "examples": examples, "seconds": round(time.monotonic() - started, 1)}


def cli(argv: list[str], budget: int) -> tuple[str, int, int | None, bool]:
    """``NAME [BUDGET [SEED]]``: without SEED, CI's run (the killer file, else the derandomized
    machines); with SEED the machines only (``support.kill_margin``): an int seeds their draws,
    ``derandomized`` is CI's draw."""
    seed = argv[2] if len(argv) > 2 else None
    return (argv[0], int(argv[1]) if len(argv) > 1 else budget,
            None if seed in (None, "derandomized") else int(seed), seed is not None)


if __name__ == "__main__":  # NAME [BUDGET [SEED [last]]]: ``last`` runs the last machine only (run's last_only)
    print(json.dumps(run(*cli(sys.argv[1:4], 300), last_only=sys.argv[4:] == ["last"])))


def run_in_subprocesses(runner: str, names: list[str], budget: int, record: str) -> list[dict[str, object]]:
    """Run each named mutant of ``runner`` (``support.mutants`` or ``support.engine_mutants``) in its
    own subprocess, two at a time; record the results in ``build/<record>`` for ``syncref verify``."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def one(name: str) -> dict[str, object]:
        env = dict(os.environ, PYTHONPATH=f"{root / 'tests'}{os.pathsep}{root}")
        proc = subprocess.run([sys.executable, "-m", runner, name, str(budget)], cwd=root, capture_output=True,
                              text=True, env=env, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {"mutant": name, "killed": False, "error": proc.stderr[-400:]}
        result: dict[str, object] = json.loads(lines[-1])
        return result

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, names))
    out = root / "build"
    out.mkdir(exist_ok=True)
    (out / record).write_text(json.dumps(results, indent=1))
    return results
