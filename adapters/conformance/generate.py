"""Generate the conformance vectors from the executable model.

:func:`generate` returns ``{relative path: file text}`` for the whole tree under
``adapters/conformance/vectors/`` -- pure, no I/O; ``python -m adapters.conformance.generate``
writes it (``--check``: exit 1 if the checked-in tree differs).  Layout, after ethereum's
consensus-spec-tests::

    index.json                              every area, handler and case (the consumer's checklist)
    <area>/<handler>/<case>/manifest.json   {format, area, handler, case, description, parts}
    <area>/<handler>/<case>/<part>.json     pre / ops / post, or error instead of post

What a vector says comes from the model (``spec.*``); the curated inputs and the expectations
they must meet come from :mod:`adapters.conformance.cases`, :mod:`spec.vectors` (canonical JSON)
and the tables below.  Generation fails (:class:`VectorError`) when the model disagrees with a
curated expectation.  Part formats are documented per handler in ``docs/conformance.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from adapters import bsatn, wire
from adapters.conformance import cases as cs
from adapters.conformance.codec import (
    args_to_json,
    claims_to_json,
    error_to_json,
    policy_to_json,
    row_to_json,
    rows_to_json,
    state_to_json,
    wire_to_json,
)
from spec import messages as sm
from spec import query as q
from spec.client import apply_rule, continues
from spec.compat import CompatWindow, negotiate
from spec.delivery import resume_form_error
from spec.errors import SyncError
from spec.reducers import CallContext, Err, call
from spec.resume import stale_reasons
from spec.schema import PROTOCOL_VERSION, SCHEMA_VERSION, TABLES, table_of
from spec.state import DbState, Delta
from spec.values import Row
from spec.vectors import accept_document, reject_document

FORMAT: Final = "syncref.conformance.v1"
VECTORS_DIR: Final = Path(__file__).resolve().parent / "vectors"


class VectorError(Exception):
    """A curated expectation and the model disagree: the vectors cannot be built."""


@dataclass(frozen=True, slots=True)
class Vector:
    area: str
    handler: str
    case: str
    description: str
    parts: dict[str, Any]


def render(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


# --- canonical JSON (the cases of spec.vectors, one directory each) -------------------------------------

def canonical_vectors() -> Iterator[Vector]:
    for case in accept_document()["cases"]:
        ops = {k: v for k, v in case.items() if k.startswith("input")}
        post = {k: v for k, v in case.items() if k.startswith("canonical") or k == "hash"}
        yield Vector("canonical", "accept", case["name"], "the canonical text and hash of an accepted input",
                     {"ops": ops, "post": post})
    for case in reject_document()["cases"]:
        ops = {k: v for k, v in case.items() if k.startswith("input")}
        yield Vector("canonical", "reject", case["name"], f"rejected: {case['reason']}",
                     {"ops": ops, "error": {"code": "non_canonical_payload", "reason": case["reason"]}})


# --- reducer calls: reducers, checkpoint, compute, outbox ---------------------------------------------------

def _outcome_json(out: Any, before: DbState) -> dict[str, Any]:
    if isinstance(out, Err):
        return {"error": error_to_json(out.error)}
    return {"ret": out.ret, "noop": out.noop, "events": _events(out.delta)}


def _events(delta: Delta) -> dict[str, list[dict[str, Any]]]:
    """The event-table rows a transaction emitted (they never enter the state)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for td in delta.tables:
        if td.inserts and table_of(td.inserts[0]).event:
            out[td.table] = rows_to_json(td.inserts)
    return out


def _op_json(o: cs.Op, now: int, tx_offset: int) -> dict[str, Any]:
    known = o.reducer in {r.name for r in __import__("spec.schema", fromlist=["REDUCERS"]).REDUCERS}
    args = list(o.args) if (o.raw or not known) else args_to_json(o.reducer, o.args)
    return {"caller": o.who, "claims": claims_to_json(cs.PEOPLE[o.who]), "now": now, "tx_offset": tx_offset,
            "reducer": o.reducer, "args": args, "args_plain_json": o.raw or not known}


def _got(out: Any) -> str:
    return out.error.code.value if isinstance(out, Err) else ("noop" if out.noop else "ok")


def call_vector(case: cs.Case) -> Vector:
    db = DbState()
    committed = 0
    now = cs.T0
    samples: list[Row] = []

    def run(o: cs.Op, i: int) -> tuple[dict[str, Any], Any]:
        nonlocal db, committed, now
        now = cs.T0 + i * cs.STEP_US
        ctx = CallContext(cs.PEOPLE[o.who], now, committed + 1, cs.POLICY)
        out = call(db, ctx, o.reducer, o.args)
        if _got(out) != o.expect:
            detail = out.error.render() if isinstance(out, Err) else _got(out)
            raise VectorError(f"{case.area}/{case.handler}/{case.name}: {o.reducer}{o.args!r:.120} expected "
                              f"{o.expect}, the model says {detail}")
        op_doc = _op_json(o, now, committed + 1)
        if not isinstance(out, Err):
            if not out.noop:
                committed += 1
            db = out.state
            samples.extend(r for td in out.delta.tables for r in td.inserts)
        return op_doc, out

    setup = [run(o, i)[0] for i, o in enumerate(case.setup)]
    pre = {"policy": policy_to_json(cs.POLICY), "setup": setup, "state": state_to_json(db)}
    results = [run(o, len(case.setup) + i) for i, o in enumerate(case.ops)]
    ops = [d for d, _ in results]
    parts: dict[str, Any] = {"pre": pre, "ops": ops}
    last = results[-1][1]
    if len(results) == 1 and isinstance(last, Err):
        parts["error"] = error_to_json(last.error)
    else:
        parts["post"] = {"outcomes": [_outcome_json(out, db) for _, out in results], "state": state_to_json(db)}
    _SAMPLE_ROWS.extend(samples)
    return Vector(case.area, case.handler, case.name, case.description, parts)


_SAMPLE_ROWS: list[Row] = []


# --- SQL subset ------------------------------------------------------------------------------------------

SQL_ACCEPT: Final[tuple[tuple[str, str], ...]] = (
    ("select_star", "SELECT * FROM sync_stream"),
    ("table_star", "SELECT sync_event.* FROM sync_event"),
    ("star_from_star", "SELECT * FROM *"),
    ("where_eq_string", "SELECT * FROM sync_event WHERE stream_id = 's.a'"),
    ("where_and", "SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND seq > 2"),
    ("literal_on_left", "SELECT * FROM sync_event WHERE 2 < seq"),
    ("all_ops", "SELECT * FROM sync_event WHERE seq >= 1 AND seq <= 9 AND seq < 8 AND seq > 0 AND epoch = 1"),
    ("quoted_identifiers", 'SELECT * FROM "sync_event" WHERE (("sync_event"."stream_id" = \'s.a\') AND '
                           '("sync_event"."epoch" = 1)) AND ("sync_event"."seq" > 1)'),
    ("lowercase_keywords", "select * from sync_stream where epoch = 1"),
    ("string_with_quote", "SELECT * FROM sync_event WHERE stream_id = 'it''s'"),
    ("bool_literal", "SELECT * FROM session_presence WHERE status = 'online'"),
    ("hex_identity", "SELECT * FROM sync_checkpoint WHERE owner = 0x" + "ab" * 32),
    ("rfc3339_timestamp", "SELECT * FROM session_presence WHERE last_seen > '2026-01-01T00:00:00Z'"),
    ("trailing_semicolon", "SELECT * FROM sync_stream;"),
)
SQL_REJECT: Final[tuple[tuple[str, str], ...]] = (
    ("empty", ""),
    ("not_select", "DELETE FROM sync_stream"),
    ("unknown_table", "SELECT * FROM nope"),
    ("unknown_column", "SELECT * FROM sync_stream WHERE nope = 1"),
    ("projection", "SELECT stream_id FROM sync_stream"),
    ("or", "SELECT * FROM sync_event WHERE seq = 1 OR seq = 2"),
    ("not", "SELECT * FROM sync_event WHERE NOT seq = 1"),
    ("join", "SELECT * FROM sync_event JOIN sync_stream"),
    ("order_by", "SELECT * FROM sync_event ORDER BY seq"),
    ("limit", "SELECT * FROM sync_event LIMIT 1"),
    ("not_equal", "SELECT * FROM sync_event WHERE seq != 1"),
    ("in", "SELECT * FROM sync_event WHERE seq IN (1, 2)"),
    ("like", "SELECT * FROM sync_event WHERE stream_id LIKE 's%'"),
    ("type_mismatch", "SELECT * FROM sync_event WHERE seq = 'one'"),
    ("u64_out_of_range", "SELECT * FROM sync_event WHERE seq = 18446744073709551616"),
    ("negative_u64", "SELECT * FROM sync_event WHERE seq > -1"),
    ("column_vs_column", "SELECT * FROM sync_event WHERE seq = epoch"),
    ("unterminated_string", "SELECT * FROM sync_event WHERE stream_id = 's"),
    ("trailing_garbage", "SELECT * FROM sync_stream x"),
    ("option_column", "SELECT * FROM compute_assignment WHERE provider_id = 'p'"),
    ("bad_timestamp", "SELECT * FROM session_presence WHERE last_seen > '2026-13-01T00:00:00Z'"),
)


def _query_json(query: q.Query) -> dict[str, Any]:
    return {"table": query.table, "where": [[c.column, c.op.value, c.value] for c in query.where]}


def sql_vectors() -> Iterator[Vector]:
    for name, sql in SQL_ACCEPT:
        try:
            parsed = q.parse(sql)
        except SyncError as err:
            raise VectorError(f"sql accept case {name}: {err.render()}") from None
        yield Vector("sql", "parse", name, "a query in the subset and its parsed form",
                     {"ops": {"sql": sql}, "post": {"queries": [_query_json(x) for x in parsed]}})
    for name, sql in SQL_REJECT:
        try:
            q.parse(sql)
        except SyncError as err:
            if err.code.value != "invalid_query":
                raise VectorError(f"sql reject case {name}: {err.render()}") from None
            yield Vector("sql", "reject", name, "outside the subset: invalid_query (the message is advice; "
                         "compare the code)", {"ops": {"sql": sql}, "error": error_to_json(err)})
        else:
            raise VectorError(f"sql reject case {name} parses")


# --- stale cursors -------------------------------------------------------------------------------------

def stale_vectors() -> Iterator[Vector]:
    epoch, head, floor, budget = 3, 20, 8, 10
    for req in (None, 2, 3, 4):
        for w in sorted({0, floor - 2, floor - 1, floor, head - budget - 1, head - budget, head - budget + 1,
                         head - 1, head, head + 1, head + 5}):
            reasons = stale_reasons(epoch, head, floor, budget, req, w)
            name = f"epoch_{'none' if req is None else req}_w_{w}"
            yield Vector("stale", "reasons", name,
                         f"stream at epoch {epoch}, floor {floor}, head {head}, budget {budget}; resume W={w}",
                         {"ops": {"epoch": epoch, "head": head, "floor": floor, "budget": budget,
                                  "requested_epoch": req, "watermark": w},
                          "post": {"reasons": list(reasons)}})
    for name, (e, h, f, b, w) in {"empty_stream_w0": (1, 0, 1, 5, 0), "empty_stream_w1": (1, 0, 1, 5, 1),
                                  "budget_zero_at_head": (1, 5, 1, 0, 5), "budget_zero_behind": (1, 5, 1, 0, 4),
                                  "all_four": (2, 30, 20, 5, 31)}.items():
        req = 1 if name == "all_four" else e
        if name == "all_four":
            w = 10
        yield Vector("stale", "reasons", name, "edge case", {
            "ops": {"epoch": e, "head": h, "floor": f, "budget": b, "requested_epoch": req, "watermark": w},
            "post": {"reasons": list(stale_reasons(e, h, f, b, req, w))}})
    # a page (ADR-0042): a resume bounded above, seq <= B, is held against the budget for min(head, B) - W
    for w, b in ((floor - 1, floor - 1 + budget), (floor - 1, floor + budget), (floor - 1, head + 5),
                 (head - budget, head + 5), (head - budget - 1, head + 5), (head - budget - 1, head - 1),
                 (floor - 1, floor - 2), (floor - 2, floor), (head + 1, head + 3), (0, budget)):
        reasons = stale_reasons(epoch, head, floor, budget, epoch, w, b)
        yield Vector("stale", "reasons", f"page_w_{w}_b_{b}",
                     f"stream at epoch {epoch}, floor {floor}, head {head}, budget {budget}; a page W={w} < seq <= "
                     f"B={b}: min(head, B) - W against the budget (ADR-0042)",
                     {"ops": {"epoch": epoch, "head": head, "floor": floor, "budget": budget,
                              "requested_epoch": epoch, "watermark": w, "upper": b},
                      "post": {"reasons": list(reasons)}})
    forms = {
        "pins_both": "SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND seq > 2",
        "page": "SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND seq > 2 AND seq <= 9",
        "ge_form": "SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND seq >= 3",
        "literal_left": "SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 AND 2 < seq",
        "missing_epoch": "SELECT * FROM sync_event WHERE stream_id = 's.a' AND seq > 2",
        "missing_stream": "SELECT * FROM sync_event WHERE epoch = 1 AND seq > 2",
        "missing_both": "SELECT * FROM sync_event WHERE seq > 2",
        "epoch_range_not_pin": "SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch >= 1 AND seq > 2",
        "no_seq_bound": "SELECT * FROM sync_event WHERE stream_id = 's.a'",
        "upper_bound_only": "SELECT * FROM sync_event WHERE seq < 5",
        "other_table": "SELECT * FROM sync_stream WHERE head_seq > 2",
    }
    for name, sql in forms.items():
        (query,) = q.parse(sql)
        err = resume_form_error(query)
        parts: dict[str, Any] = {"ops": {"sql": sql}}
        if err is None:
            parts["post"] = {"accepted": True, "resume_watermark": q.resume_watermark(query)}
        else:
            parts["error"] = error_to_json(err)
        yield Vector("stale", "resume_form", name, "is this subscription a well-formed resume?", parts)


# --- compatibility negotiation -------------------------------------------------------------------------------

def compat_vectors() -> Iterator[Vector]:
    builds = {"none": None, "blank": " ", "malformed": "2026-06-01", "below_min": "20251231T235959Z",
              "at_min": "20260101T000000Z", "inside": "20260601T120000Z", "at_max": "20991231T235959Z",
              "above_max": "21000101T000000Z"}
    protocols = {"none": None, "current": PROTOCOL_VERSION, "other": "oa.sync.v0"}
    schemas = {"none": None, "below": SCHEMA_VERSION - 1, "current": SCHEMA_VERSION, "above": SCHEMA_VERSION + 1}
    for require in (False, True):
        window = CompatWindow(require_claims=require)
        for bn, build in builds.items():
            for pn, protocol in protocols.items():
                for sn, schema in schemas.items():
                    err = negotiate(window, build, protocol, schema)
                    parts: dict[str, Any] = {
                        "pre": {"window": {**window.as_json(), "require_claims": require}},
                        "ops": {"client_build_id": build, "protocol_version": protocol, "schema_version": schema}}
                    if err is None:
                        parts["post"] = {"admitted": True}
                    else:
                        parts["error"] = error_to_json(err)
                    yield Vector("compat", "negotiate",
                                 f"{'require' if require else 'optional'}_build_{bn}_protocol_{pn}_schema_{sn}",
                                 "the first failing check, in order, decides the code", parts)


# --- client apply ------------------------------------------------------------------------------------------

def client_vectors() -> Iterator[Vector]:
    for last in (0, 1, 5):
        for seq in range(max(0, last - 2), last + 4):
            yield Vector("client", "apply_rule", f"last_{last}_seq_{seq}", "duplicate, apply or gap",
                         {"ops": {"last": last, "seq": seq}, "post": {"action": apply_rule(last, seq)}})
    for epoch in (None, 1, 2):
        for last in (0, 3, 4):
            for ce, cseq in ((0, 0), (1, 3), (2, 3), (1, 4)):
                new = 3
                yield Vector("client", "continues",
                             f"view_{'none' if epoch is None else epoch}_{last}_new_{new}_continues_{ce}_{cseq}",
                             "may a view adopt the new epoch without a rebootstrap?",
                             {"ops": {"epoch": epoch, "last": last, "new_epoch": new, "continues_epoch": ce,
                                      "continues_seq": cseq},
                              "post": {"continues": continues(epoch, last, new, ce, cseq)}})
    # the chain of several unclean restarts (ADR-0010): the last hop 7 up to 6, then earlier hops
    chains = {"folded": ((5, 2), (4, 3)), "hop_by_hop": ((5, 2), (5, 3)), "malformed": ((5,), ())}
    for cname, (epochs, seqs) in chains.items():
        for epoch in (None, 7, 5, 2, 1):
            for last in (0, 3, 4, 5, 6):
                yield Vector("client", "continues",
                             f"chain_{cname}_view_{'none' if epoch is None else epoch}_{last}",
                             "may a view adopt the new epoch without a rebootstrap? (a chain of hops, ADR-0010)",
                             {"ops": {"epoch": epoch, "last": last, "new_epoch": 9, "continues_epoch": 7,
                                      "continues_seq": 6, "earlier_epochs": list(epochs), "earlier_seqs": list(seqs)},
                              "post": {"continues": continues(epoch, last, 9, 7, 6, epochs, seqs)}})


# --- BSATN ---------------------------------------------------------------------------------------------

def _sample_rows() -> dict[str, list[Row]]:
    by_table: dict[str, list[Row]] = {}
    for r in _SAMPLE_ROWS:
        rows = by_table.setdefault(table_of(r).name, [])
        if r not in rows and len(rows) < 2:
            rows.append(r)
    missing = {t.name for t in TABLES} - set(by_table)
    if missing:
        raise VectorError(f"no sample row for tables {sorted(missing)} (add a reducer case that writes one)")
    return by_table


def bsatn_vectors() -> Iterator[Vector]:
    rows = _sample_rows()
    for t in TABLES:
        for i, r in enumerate(rows[t.name]):
            yield Vector("bsatn", "row", f"{t.name}_{i}", f"a {t.name} row (BSATN product, columns in order)",
                         {"ops": {"table": t.name, "row": row_to_json(r)}, "post": {"hex": bsatn.encode_row(r).hex()}})
    ev = rows["sync_event"][0]
    stream = rows["sync_stream"][0]
    sig = rows["stream_signal"][0]
    client: dict[str, wire.ClientMessage] = {
        "subscribe": wire.Subscribe(1, 7, ("SELECT * FROM sync_stream", "SELECT * FROM sync_event WHERE seq > 1")),
        "unsubscribe": wire.Unsubscribe(2, 7, False),
        "unsubscribe_send_dropped": wire.Unsubscribe(3, 7, True),
        "one_off_query": wire.OneOffQuery(4, "SELECT * FROM sync_stream"),
        "call_procedure": wire.CallProcedure(6, 0, "p", b""),
    }
    for reducer_case in cs.REDUCER_CASES + cs.ASSIGNMENT_CASES:  # every reducer (the compute update's are there)
        o = reducer_case.ops[0]
        name = f"call_reducer_{o.reducer}"
        if reducer_case.handler in (o.reducer, "update") and not o.raw and name not in client:
            client[name] = wire.CallReducer(5, 0, o.reducer, bsatn.encode_args(o.reducer, o.args))
    for name, msg in client.items():
        yield Vector("bsatn", "client_message", name, "a v2 ClientMessage",
                     {"ops": {"message": wire_to_json(msg)}, "post": {"hex": wire.encode_client(msg).hex()}})
    persistent = sm.TableRows("sync_event", (ev,), ())
    updates = (sm.QuerySetUpdate(7, (sm.TableRows("sync_stream", (stream,), (stream,)), persistent,
                                     sm.TableRows("stream_signal", (sig,), (), event=True))),)
    server: dict[str, wire.ServerMessage] = {
        "initial_connection": wire.InitialConnection("ab" * 32, 0x0102030405060708090A0B0C0D0E0F10, "tok.en.x"),
        "subscribe_applied": wire.to_wire(sm.SubscribeApplied(1, 7, (persistent,))),
        "subscribe_applied_empty": wire.to_wire(sm.SubscribeApplied(1, 7, ())),
        "unsubscribe_applied": wire.to_wire(sm.UnsubscribeApplied(2, 7, None)),
        "unsubscribe_applied_dropped": wire.to_wire(sm.UnsubscribeApplied(3, 7, (persistent,))),
        "subscription_error": wire.to_wire(sm.SubscriptionError(1, 7, 'invalid_query: {"message":"x"}')),
        "subscription_error_no_request": wire.to_wire(sm.SubscriptionError(None, 7, "e")),
        "transaction_update": wire.to_wire(sm.TransactionUpdate(9, updates)),
        "reducer_result_ok": wire.to_wire(sm.ReducerResult(5, 9, sm.ReducerOk(3, updates)), timestamp=cs.T0),
        "reducer_result_ok_no_ret": wire.to_wire(sm.ReducerResult(5, 9, sm.ReducerOk(None, ())), timestamp=cs.T0),
        "reducer_result_err": wire.to_wire(sm.ReducerResult(
            5, 9, sm.ReducerErr('missing_scope: {"scope":"sync.append"}')), timestamp=cs.T0),
        "reducer_result_internal": wire.to_wire(sm.ReducerResult(
            5, 9, sm.ReducerErr("internal error", internal=True)), timestamp=cs.T0),
        "one_off_query_rows": wire.to_wire(sm.OneOffQueryResult(4, sm.TableRows("sync_stream", (stream,)))),
        "one_off_query_error": wire.to_wire(sm.OneOffQueryResult(4, 'invalid_query: {"message":"x"}')),
    }
    for name, smsg in server.items():
        yield Vector("bsatn", "server_message", name, "a v2 ServerMessage",
                     {"ops": {"message": wire_to_json(smsg)}, "post": {"hex": wire.encode_server(smsg).hex()}})


# --- delivery scenarios --------------------------------------------------------------------------------

def delivery_vectors() -> Iterator[Vector]:
    from adapters.conformance import delivery as d
    for name, (description, steps) in d.SCENARIOS.items():
        received = d.drive(d.model_target(), steps)
        if not d.EXPECT[name](received):
            raise VectorError(f"delivery/{name}: the model's messages break the scenario's expectation: "
                              f"{json.dumps(received)[:800]}")
        yield Vector("delivery", "scenario", name, description, {
            "pre": {"policy": policy_to_json(d.POLICY), "max_queue": 1000, "max_undurable": 8, "now": d.T0},
            "ops": steps, "post": {"received": received}})


# --- the tree --------------------------------------------------------------------------------------------

def all_vectors() -> list[Vector]:
    _SAMPLE_ROWS.clear()
    out = list(canonical_vectors())
    out += [call_vector(c) for c in cs.ALL_CASES]
    out += list(sql_vectors()) + list(stale_vectors()) + list(compat_vectors()) + list(client_vectors())
    out += list(bsatn_vectors()) + list(delivery_vectors())
    return out


def generate() -> dict[str, str]:
    files: dict[str, str] = {}
    index: dict[str, dict[str, list[str]]] = {}
    for v in all_vectors():
        base = f"{v.area}/{v.handler}/{v.case}"
        if f"{base}/manifest.json" in files:
            raise VectorError(f"duplicate case {base}")
        parts = sorted(v.parts)
        files[f"{base}/manifest.json"] = render({"format": FORMAT, "area": v.area, "handler": v.handler,
                                                 "case": v.case, "description": v.description, "parts": parts})
        for part in parts:
            files[f"{base}/{part}.json"] = render(v.parts[part])
        index.setdefault(v.area, {}).setdefault(v.handler, []).append(v.case)
    files["index.json"] = render({"format": FORMAT, "count": sum(len(c) for h in index.values() for c in h.values()),
                                  "areas": index})
    return files


def sync(directory: Path, wanted: dict[str, str], *, check: bool) -> list[str]:
    """Write ``wanted`` under ``directory`` (removing other ``*.json``), or with ``check`` only list
    what differs.  Returns the differences (``out of date: path`` / ``stale: path``)."""
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*.json")} if directory.exists() else set()
    problems = []
    for rel, text in sorted(wanted.items()):
        path = directory / rel
        if rel not in present or path.read_bytes() != text.encode("ascii"):
            problems.append(f"out of date: {rel}")
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text.encode("ascii"))
    for rel in sorted(present - set(wanted)):
        problems.append(f"stale: {rel}")
        if not check:
            (directory / rel).unlink()
    if not check:
        for d in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="(Re)generate the conformance vectors from the model.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the vectors differ")
    parser.add_argument("--dir", type=Path, default=VECTORS_DIR)
    args = parser.parse_args(argv)
    problems = sync(args.dir, generate(), check=args.check)
    for p in problems[:50]:
        print(p)
    if len(problems) > 50:
        print(f"... and {len(problems) - 50} more")
    if args.check and problems:
        print("the vectors drifted from the model: run python -m adapters.conformance.generate", file=sys.stderr)
        return 1
    print(f"{args.dir}: {'up to date' if not problems else f'{len(problems)} files written/removed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
