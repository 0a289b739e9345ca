"""Planted bugs the conformance vectors must catch.

Each row names a mutant (of the model, ``support.mutants``; of the reference engine,
``support.engine_mutants``; or one of the few below, of rules the machines do not own: the
negotiation order, the BSATN option tags, canonical key order), the vector area it should break
and the target to run.  ``PYTHONPATH=tests python -m support.conformance_mutants TARGET:NAME`` (e.g.
``engine:non_monotonic_ack``; an unknown one lists them) applies the mutant in this process, runs the vectors of that area against that target, and prints one JSON
line: how many vectors failed and the first divergence.  Killed = at least one failed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from support.engine_mutants import ENGINE, ENGINE_MUTANTS
from support.mutants import IMPLEMENTATION, MUTANTS, Mutant, apply


@dataclass(frozen=True)
class KitMutant:
    mutant: Mutant
    area: str
    target: str  # model | engine | codec
    chain: tuple[str, ...]  # the modules reloaded after the mutated one


_MODEL = {m.name: m for m in MUTANTS}
_ENGINE = {m.name: m for m in ENGINE_MUTANTS}
_OWN: tuple[Mutant, ...] = (
    Mutant("compat_schema_before_protocol", "spec.compat",
           (("    if protocol != window.protocol_version:\n        return SyncError(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION,",
             "    if schema is not None and protocol is not None and protocol != window.protocol_version and not "
             "window.min_schema_version <= schema <= window.max_schema_version:\n"
             "        return SyncError(ErrorCode.UNSUPPORTED_SCHEMA_VERSION, {\"requested_schema_version\": schema, "
             "\"window\": w})\n"
             "    if protocol != window.protocol_version:\n        return SyncError(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION,"),),
           "the schema window is checked before the protocol version"),
    Mutant("bsatn_option_tags_swapped", "adapters.bsatn",
           (("OPTION_SOME = 0\nOPTION_NONE = 1\n", "OPTION_SOME = 1\nOPTION_NONE = 0\n"),),
           "Option's some/none tags are the wrong way round"),
    Mutant("canonical_keys_by_utf16", "spec.canonical",
           (("_ENCODER = json.JSONEncoder(sort_keys=True,", "_ENCODER = json.JSONEncoder(sort_keys=False,"),),
           "object keys are not sorted"),
    Mutant("apply_across_gap", "spec.client",
           (('    return "apply" if seq == last + 1 else "gap"', '    return "apply"'),),
           "a client applies an event past a gap"),
    Mutant("resume_without_stream_only", "spec.delivery",
           (('    missing = [c for c in ("stream_id", "epoch")', '    missing = [c for c in ("stream_id",)'),),
           "a resume that pins the stream but not the epoch is accepted"),
)
_OWN_BY_NAME = {m.name: m for m in _OWN}

KIT_MUTANTS: tuple[KitMutant, ...] = (
    KitMutant(_MODEL["dedupe_without_hash_compare"], "reducers", "model", IMPLEMENTATION),
    KitMutant(_MODEL["non_monotonic_ack"], "checkpoint", "model", IMPLEMENTATION),
    KitMutant(_MODEL["ack_past_head"], "reducers", "model", IMPLEMENTATION),
    KitMutant(_MODEL["scope_not_checked"], "reducers", "model", IMPLEMENTATION),
    KitMutant(_MODEL["source_not_in_dedupe_hash"], "reducers", "model", IMPLEMENTATION),
    KitMutant(_MODEL["execute_by_scope_alone"], "compute", "model", IMPLEMENTATION),
    KitMutant(_MODEL["assignment_version_not_bumped"], "compute", "model", IMPLEMENTATION),
    KitMutant(_MODEL["repeated_ack_ignores_relays"], "outbox", "model", IMPLEMENTATION),
    KitMutant(_MODEL["backoff_not_recorded"], "outbox", "model", IMPLEMENTATION),
    KitMutant(_MODEL["stale_floor_lt_vs_le"], "stale", "model", IMPLEMENTATION),
    KitMutant(_MODEL["budget_ignores_upper_bound"], "stale", "model", IMPLEMENTATION),
    KitMutant(_MODEL["budget_upper_max_not_min"], "stale", "model", IMPLEMENTATION),
    KitMutant(_OWN_BY_NAME["resume_without_stream_only"], "stale", "model", IMPLEMENTATION[2:]),
    KitMutant(_OWN_BY_NAME["apply_across_gap"], "client", "model", IMPLEMENTATION[3:]),
    KitMutant(_MODEL["client_continues_past_continues_seq"], "client", "model", IMPLEMENTATION),
    KitMutant(_ENGINE["dedupe_without_hash_compare"], "reducers", "engine", ENGINE),
    KitMutant(_ENGINE["non_monotonic_ack"], "checkpoint", "engine", ENGINE),
    KitMutant(_ENGINE["source_not_in_dedupe_hash"], "reducers", "engine", ENGINE),
    KitMutant(_ENGINE["execute_by_scope_alone"], "compute", "engine", ENGINE),
    KitMutant(_ENGINE["assign_skips_provider_check"], "compute", "engine", ENGINE),
    KitMutant(_ENGINE["repeated_ack_overwrites_relays"], "outbox", "engine", ENGINE),
    KitMutant(_ENGINE["stale_floor_off_by_one"], "stale", "engine", ENGINE),
    KitMutant(_ENGINE["stale_ignores_epoch"], "stale", "engine", ENGINE),
    KitMutant(_ENGINE["stale_ignores_page_bound"], "stale", "engine", ENGINE),
    KitMutant(_MODEL["confirmed_gate_off_by_one"], "delivery", "model", IMPLEMENTATION),
    KitMutant(_MODEL["caller_also_gets_update"], "delivery", "model", IMPLEMENTATION),
    KitMutant(_MODEL["row_filter_ignored"], "delivery", "model", IMPLEMENTATION),
    KitMutant(_ENGINE["confirmed_gate_off_by_one"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["caller_also_gets_update"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["fanout_ignores_row_filter"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["checkpoint_by_stream_grant"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["bridge_rows_for_everyone"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["caller_result_ungated"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["caller_error_ungated"], "delivery", "engine", ENGINE),
    KitMutant(_ENGINE["snapshot_ungated"], "delivery", "engine", ENGINE),
    KitMutant(_OWN_BY_NAME["compat_schema_before_protocol"], "compat", "model", ("spec.compat",)),
    KitMutant(_OWN_BY_NAME["bsatn_option_tags_swapped"], "bsatn", "codec", ("adapters.bsatn", "adapters.wire")),
    KitMutant(_OWN_BY_NAME["canonical_keys_by_utf16"], "canonical", "model", ("spec.canonical",)),
)
KIT_MUTANT_BY_ID = {f"{k.target}:{k.mutant.name}": k for k in KIT_MUTANTS}


def run(ident: str) -> dict[str, object]:
    from adapters.conformance.vectors_runner import run as run_vectors
    k = KIT_MUTANT_BY_ID[ident]
    apply(k.mutant, k.chain)
    report = run_vectors(targets=(k.target,), only=k.area)
    fails = report.failures
    return {"mutant": ident, "area": k.area, "failed": len(fails), "checked": len(report.results),
            "first": f"{fails[0].area}/{fails[0].handler}/{fails[0].case}: {fails[0].message}" if fails else None}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in KIT_MUTANT_BY_ID:
        raise SystemExit("usage: python -m support.conformance_mutants TARGET:NAME, one of: "
                         + " ".join(sorted(KIT_MUTANT_BY_ID)))
    print(json.dumps(run(sys.argv[1])))
