"""Apply every conformance vector to an implementation, and fail on any file left unread.

This is the consumer side of the kit (as in the consensus-spec-tests consumers): it walks
``index.json``, reads each case's manifest and parts, and checks them against one or more
*targets* -- implementations of the rules:

``model``
    the executable model (``spec.*``): the source the vectors were generated from, so this target
    proves the checked-in files are what the model says (and that the reader reads them right);
``engine``
    the reference engine (``reference.*``), a second implementation with its own reducers, indexes
    and stale-cursor check: reducer-call vectors are replayed through ``Engine.call_detached`` (the
    setup calls build the state, which must equal ``pre.state``) and stale-cursor vectors go through
    the engine's own subscribe-time check;
``codec``
    the BSATN codec of ``adapters.wire`` (the model has no bytes), both ways.

A handler a target does not implement is *not applicable*, reported as such, never as passed.
Every ``*.json`` under the directory must be read by some handler, or the run fails (a vector
nobody checks is a vector that silently stopped mattering).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.conformance.codec import (
    args_from_json,
    claims_from_json,
    error_to_json,
    policy_from_json,
    row_from_json,
    rows_to_json,
    state_from_json,
    state_to_json,
    wire_from_json,
    wire_to_json,
)

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
TARGETS = ("model", "engine", "codec")


class Divergence(Exception):
    """The implementation disagrees with the vector (the message says where, readably)."""


class NotApplicable(Exception):
    """This target does not implement this handler."""


def _same(what: str, got: Any, want: Any) -> None:
    if got != want:
        g = json.dumps(got, sort_keys=True, default=str)
        w = json.dumps(want, sort_keys=True, default=str)
        raise Divergence(f"{what}: got {g[:600]}, the vector says {w[:600]}")


@dataclass
class Case:
    root: Path
    rel: str  # area/handler/case
    read: set[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> Any:
        path = f"{self.rel}/{name}.json"
        self.read.add(path)
        return json.loads((self.root / path).read_text("ascii"))

    def has(self, name: str) -> bool:
        return name in self.manifest["parts"]


# --- model ----------------------------------------------------------------------------------------------

def _canonical_input(ops: dict[str, Any]) -> str:
    if ops["input"] is None:
        return bytes.fromhex(ops["input_utf16_hex"]).decode("utf-16-be", "surrogatepass")
    text: str = ops["input"]
    return text


def model_canonical(c: Case) -> None:
    from spec.canonical import canonical_and_hash
    from spec.errors import SyncError
    text = _canonical_input(c.part("ops"))
    if c.has("post"):
        post = c.part("post")
        canon, digest = canonical_and_hash(text)
        _same("canonical", canon, post["canonical"])
        _same("hash", digest, post["hash"])
    else:
        err = c.part("error")
        try:
            canonical_and_hash(text)
        except SyncError as e:
            _same("error", [e.code.value, e.details.get("reason")], [err["code"], err["reason"]])
        else:
            raise Divergence(f"accepted, the vector says {err['code']} ({err['reason']})")


def _outcome_model(db: Any, o: dict[str, Any], policy: Any) -> tuple[Any, dict[str, Any]]:
    from spec.reducers import CallContext, Err, call
    from spec.schema import table_of
    args = tuple(o["args"]) if o["args_plain_json"] else args_from_json(o["reducer"], o["args"])
    out = call(db, CallContext(claims_from_json(o["claims"]), o["now"], o["tx_offset"], policy), o["reducer"], args)
    if isinstance(out, Err):
        return db, {"error": error_to_json(out.error)}
    events = {td.table: rows_to_json(td.inserts) for td in out.delta.tables
              if td.inserts and table_of(td.inserts[0]).event}
    return out.state, {"ret": out.ret, "noop": out.noop, "events": events}


def _check_calls(c: Case, step: Callable[[dict[str, Any]], dict[str, Any]], state: Callable[[], dict[str, Any]],
                 pre: dict[str, Any]) -> None:
    ops = c.part("ops")
    outcomes = [step(o) for o in ops]
    if c.has("error"):
        err = c.part("error")
        _same(f"{ops[0]['reducer']} outcome", outcomes[0], {"error": err})
        _same("state after the failed call (unchanged)", state(), pre["state"])
    else:
        post = c.part("post")
        for i, (got, want) in enumerate(zip(outcomes, post["outcomes"], strict=True)):
            _same(f"outcome of op {i} ({ops[i]['reducer']})", got, want)
        _same("state after", state(), post["state"])


def model_calls(c: Case) -> None:
    pre = c.part("pre")
    policy = policy_from_json(pre["policy"])
    db = state_from_json(pre["state"])
    _same("pre.state round trip", state_to_json(db), pre["state"])
    holder = {"db": db}

    def step(o: dict[str, Any]) -> dict[str, Any]:
        holder["db"], out = _outcome_model(holder["db"], o, policy)
        return out
    _check_calls(c, step, lambda: state_to_json(holder["db"]), pre)


def model_sql(c: Case) -> None:
    from spec import query as q
    from spec.errors import SyncError
    sql = c.part("ops")["sql"]
    try:
        parsed = q.parse(sql)
    except SyncError as e:
        if not c.has("error"):
            raise Divergence(f"rejected: {e.render()}") from None
        _same("error code", e.code.value, c.part("error")["code"])
        return
    if c.has("error"):
        raise Divergence(f"parsed {sql!r}; the vector says {c.part('error')['code']}")
    got = [{"table": x.table, "where": [[w.column, w.op.value, w.value] for w in x.where]} for x in parsed]
    _same("parsed queries", got, c.part("post")["queries"])


def model_stale_reasons(c: Case) -> None:
    from spec.resume import stale_reasons
    o = c.part("ops")
    got = stale_reasons(o["epoch"], o["head"], o["floor"], o["budget"], o["requested_epoch"], o["watermark"],
                        o.get("upper"))  # a page's seq <= B (ADR-0042); absent: an unbounded resume
    _same("reasons", list(got), c.part("post")["reasons"])


def model_resume_form(c: Case) -> None:
    from spec import query as q
    from spec.delivery import resume_form_error
    (query,) = q.parse(c.part("ops")["sql"])
    err = resume_form_error(query)
    if c.has("error"):
        want = c.part("error")
        if err is None:
            raise Divergence(f"accepted as a resume; the vector says {want['code']}")
        _same("error", error_to_json(err), want)
    else:
        if err is not None:
            raise Divergence(f"refused: {err.render()}")
        _same("resume watermark", q.resume_watermark(query), c.part("post")["resume_watermark"])


def _window(doc: dict[str, Any]) -> Any:
    from spec.compat import CompatWindow
    return CompatWindow(doc["protocol_version"], doc["min_schema_version"], doc["max_schema_version"],
                        doc["min_client_build_id"], doc["max_client_build_id"], doc["require_claims"])


def _compat_check(c: Case, negotiate: Callable[[Any, Any, Any, Any], Any]) -> None:
    window = _window(c.part("pre")["window"])
    o = c.part("ops")
    err = negotiate(window, o["client_build_id"], o["protocol_version"], o["schema_version"])
    if c.has("error"):
        want = c.part("error")
        if err is None:
            raise Divergence(f"admitted; the vector says {want['code']}")
        _same("rejection", error_to_json(err), want)
    else:
        _same("admitted", err is None or err.render(), c.part("post")["admitted"])


def model_compat(c: Case) -> None:
    from spec.compat import negotiate
    _compat_check(c, negotiate)


def model_apply_rule(c: Case) -> None:
    from spec.client import apply_rule
    o = c.part("ops")
    _same("action", apply_rule(o["last"], o["seq"]), c.part("post")["action"])


def model_continues(c: Case) -> None:
    from spec.client import continues
    o = c.part("ops")
    _same("continues", continues(o["epoch"], o["last"], o["new_epoch"], o["continues_epoch"], o["continues_seq"],
                                 o.get("earlier_epochs", ()), o.get("earlier_seqs", ())),
          c.part("post")["continues"])


def _delivery(c: Case, make: Callable[..., Any]) -> None:
    from adapters.conformance.delivery import RECEIVES, drive
    pre = c.part("pre")
    steps = c.part("ops")
    want = c.part("post")["received"]
    got = drive(make(policy_from_json(pre["policy"]), pre["max_queue"], pre["max_undurable"], pre["now"]), steps)
    receives = [s for s in steps if s["op"] in RECEIVES]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        _same(f"receive #{i} on connection {receives[i]['conn']}", g, w)


def model_delivery(c: Case) -> None:
    from adapters.conformance.delivery import model_target
    _delivery(c, model_target)


def engine_delivery(c: Case) -> None:
    from adapters.conformance.delivery import engine_target
    _delivery(c, engine_target)


# --- engine ----------------------------------------------------------------------------------------------

def _engine_state(engine: Any) -> dict[str, Any]:
    from spec.schema import PERSISTENT_TABLES
    from spec.state import DbState
    tables = {t.name: tuple(engine.db.rows(t.name)) for t in PERSISTENT_TABLES}
    return state_to_json(DbState(tables, engine.db.epoch_floor, engine.db.version_floor))


def engine_calls(c: Case) -> None:
    from reference.engine import Engine
    from spec.auth import Claims
    from spec.errors import SyncError
    from spec.messages import Subscribe, TransactionUpdate
    from spec.schema import SCOPES, TABLE_BY_NAME, TABLES
    pre = c.part("pre")
    engine = Engine(policy_from_json(pre["policy"]))

    def step(o: dict[str, Any]) -> dict[str, Any]:
        if engine.committed + 1 != o["tx_offset"]:
            raise Divergence(f"the engine would commit at offset {engine.committed + 1}, the vector at "
                             f"{o['tx_offset']}")
        engine.now = o["now"]
        args = tuple(o["args"]) if o["args_plain_json"] else args_from_json(o["reducer"], o["args"])
        before = engine.committed
        claims = claims_from_json(o["claims"])
        # event rows never enter a table: a subscriber of the caller's identity hears them
        observer = engine.connect(Claims(claims.identity, frozenset(SCOPES), ("*",)), False)
        engine.handle(observer, Subscribe(1, 1, tuple(f"SELECT * FROM {t.name}" for t in TABLES if t.event)))
        while engine.releasable(observer):
            engine.pop(observer)
        try:
            try:
                _, ret = engine.call_detached(claims, o["reducer"], args)
            except SyncError as e:
                return {"error": error_to_json(e)}
            engine.take_records()
            engine.advance_durable(engine.committed)
            events: dict[str, list[dict[str, Any]]] = {}
            while engine.releasable(observer):
                msg = engine.pop(observer).message
                if isinstance(msg, TransactionUpdate):
                    for qs in msg.query_sets:
                        for tr in qs.tables:
                            if TABLE_BY_NAME[tr.table].event and tr.inserts:
                                events[tr.table] = rows_to_json(tr.inserts)
            return {"ret": ret, "noop": engine.committed == before, "events": events}
        finally:
            engine.close(observer)

    for i, o in enumerate(pre["setup"]):
        out = step(o)
        if "error" in out:
            raise Divergence(f"setup call {i} ({o['reducer']}) failed: {out['error']}")
    _same("state after the setup calls (pre.state)", _engine_state(engine), pre["state"])
    _check_calls(c, step, lambda: _engine_state(engine), pre)


def engine_stale_reasons(c: Case) -> None:
    """Through the engine's own subscribe-time check: a stream row at (epoch, head, floor)."""
    from reference.engine import Engine
    from spec import query as q
    from spec.errors import SyncError
    from spec.policy import Policy, StreamClass
    from spec.values import SyncStream
    o = c.part("ops")
    engine = Engine(Policy(default_class=StreamClass("default", replay_budget=o["budget"])))
    engine.db._insert(SyncStream("s.a", "default", o["epoch"], 0, 0, o["head"], o["floor"], o["budget"], 0, 0))
    epoch = "" if o["requested_epoch"] is None else f" AND epoch = {o['requested_epoch']}"
    upper = "" if o.get("upper") is None else f" AND seq <= {o['upper']}"  # a page (ADR-0042)
    (query,) = q.parse(f"SELECT * FROM sync_event WHERE stream_id = 's.a'{epoch} AND seq > {o['watermark']}{upper}")
    try:
        engine._check_stale(query)
    except SyncError as e:
        got = list(e.details["reasons"])
    else:
        got = []
    _same("reasons", got, c.part("post")["reasons"])


# --- codec -----------------------------------------------------------------------------------------------

def codec_row(c: Case) -> None:
    from adapters import bsatn
    o, post = c.part("ops"), c.part("post")
    row = row_from_json(o["table"], o["row"])
    _same("encoding", bsatn.encode_row(row).hex(), post["hex"])
    _same("decoding", bsatn.decode_row(o["table"], bytes.fromhex(post["hex"])), row)


def _codec_message(c: Case, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
    o, post = c.part("ops"), c.part("post")
    msg = wire_from_json(o["message"])
    _same("encoding", encode(msg).hex(), post["hex"])
    _same("decoding", wire_to_json(decode(bytes.fromhex(post["hex"]))), o["message"])


def codec_client(c: Case) -> None:
    from adapters import wire
    _codec_message(c, wire.encode_client, wire.decode_client)


def codec_server(c: Case) -> None:
    from adapters import wire
    _codec_message(c, wire.encode_server, wire.decode_server)


Handler = Callable[[Case], None]
CALL_AREAS = ("reducers", "checkpoint", "compute", "outbox")
HANDLERS: dict[str, dict[tuple[str, str | None], Handler]] = {
    "model": {("canonical", None): model_canonical, **{(a, None): model_calls for a in CALL_AREAS},
              ("sql", None): model_sql, ("stale", "reasons"): model_stale_reasons,
              ("stale", "resume_form"): model_resume_form, ("compat", None): model_compat,
              ("client", "apply_rule"): model_apply_rule, ("client", "continues"): model_continues,
              ("delivery", None): model_delivery},
    "engine": {**{(a, None): engine_calls for a in CALL_AREAS}, ("stale", "reasons"): engine_stale_reasons,
               ("delivery", None): engine_delivery},
    "codec": {("bsatn", "row"): codec_row, ("bsatn", "client_message"): codec_client,
              ("bsatn", "server_message"): codec_server},
}


def handler_for(target: str, area: str, handler: str) -> Handler | None:
    table = HANDLERS[target]
    return table.get((area, handler)) or table.get((area, None))


@dataclass
class Result:
    area: str
    handler: str
    case: str
    target: str
    status: str  # pass | fail | n/a
    message: str = ""


@dataclass
class Report:
    results: list[Result]
    unread: list[str]
    missing: list[str]

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.unread and not self.missing

    def table(self) -> str:
        rows: dict[tuple[str, str, str], list[int]] = {}
        for r in self.results:
            counts = rows.setdefault((r.area, r.handler, r.target), [0, 0, 0])
            counts[("pass", "fail", "n/a").index(r.status)] += 1
        lines = [f"{'area':<11} {'handler':<28} {'target':<7} {'pass':>5} {'fail':>5} {'n/a':>5}"]
        for (area, handler, target), (p, f, n) in sorted(rows.items()):
            if p or f:
                lines.append(f"{area:<11} {handler:<28} {target:<7} {p:>5} {f:>5} {n:>5}")
        for r in self.failures[:20]:
            lines.append(f"FAIL {r.target} {r.area}/{r.handler}/{r.case}: {r.message}")
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more failures")
        for path in self.unread[:20]:
            lines.append(f"UNREAD {path}")
        for path in self.missing[:20]:
            lines.append(f"MISSING {path}")
        total = len({(r.area, r.handler, r.case) for r in self.results})
        lines.append(f"{total} vectors, {sum(r.status == 'pass' for r in self.results)} passed checks, "
                     f"{len(self.failures)} failed, {len(self.unread)} files unread: "
                     f"{'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def run(directory: Path = VECTORS_DIR, targets: Iterable[str] = TARGETS, only: str | None = None) -> Report:
    """Apply every vector (of area ``only``, if given) to each target."""
    index = json.loads((directory / "index.json").read_text("ascii"))
    read: set[str] = {"index.json"}
    results: list[Result] = []
    missing: list[str] = []
    targets = tuple(targets)
    for area, handlers in sorted(index["areas"].items()):
        if only is not None and area != only:
            continue
        for handler, names in sorted(handlers.items()):
            for name in names:
                rel = f"{area}/{handler}/{name}"
                if not (directory / rel / "manifest.json").exists():
                    missing.append(f"{rel}/manifest.json")
                    continue
                case = Case(directory, rel, read)
                case.manifest = case.part("manifest")
                if (case.manifest["area"], case.manifest["handler"], case.manifest["case"]) != (area, handler, name):
                    results.append(Result(area, handler, name, "-", "fail", "manifest names another case"))
                for target in targets:
                    fn = handler_for(target, area, handler)
                    if fn is None:
                        results.append(Result(area, handler, name, target, "n/a"))
                        continue
                    try:
                        fn(case)
                    except Divergence as e:
                        results.append(Result(area, handler, name, target, "fail", str(e)))
                    except Exception as e:  # a crash of the implementation is a failure of the vector
                        results.append(Result(area, handler, name, target, "fail",
                                              f"raised {type(e).__name__}: {e}"[:600]))
                    else:
                        results.append(Result(area, handler, name, target, "pass"))
    scope = directory if only is None else directory / only
    present = {p.relative_to(directory).as_posix() for p in scope.rglob("*.json")}
    if only is not None:
        present.add("index.json")
    unread = sorted(present - read)
    return Report(results, unread, missing)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Apply the conformance vectors to the model, the reference "
                                                 "engine and the BSATN codec.")
    parser.add_argument("--dir", type=Path, default=VECTORS_DIR)
    parser.add_argument("--only", help="one area")
    parser.add_argument("--target", action="append", choices=TARGETS, help="(repeatable; default all)")
    args = parser.parse_args(argv)
    report = run(args.dir, args.target or TARGETS, args.only)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
