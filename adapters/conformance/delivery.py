"""Delivery scenarios: what each connection receives, in order, as steps drive a server.

A scenario is a list of steps over named connections -- ``connect`` (claims, confirmed reads or
not), ``send`` (a client message: ``Subscribe``, ``Unsubscribe``, ``CallReducer``), ``hold`` (from
here on nothing becomes durable until a ``durable`` step), ``durable`` (the durable offset moves to
``to``), ``receive`` (everything the connection may be sent now), ``compact`` (the server runs its
retention now: the compaction transaction), ``close`` (the client closes a connection) and ``await``
(as ``receive``, after at least one message arrived: what another connection's close caused).  The model
(:class:`spec.harness.Server`) and the reference engine (:class:`reference.engine.Engine`) both
expose that interface, so :func:`drive` runs a scenario on either; the vector records the model's
messages for every ``receive`` and the consumer compares the engine's.

Messages are written in a normal form (:func:`message_json`): a ``$type`` tag and the fields, rows
as objects by column (SATS-JSON), and within one message the tables sorted by name and rows by
their JSON text -- the order of rows inside a message is not significant; the order of messages is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Final, Protocol

from adapters.conformance.codec import args_from_json, args_to_json, claims_from_json, claims_to_json, rows_to_json
from spec import messages as sm
from spec.auth import Claims
from spec.policy import DEFAULT_POLICY, Policy, StreamClass
from spec.schema import SCOPES


class Target(Protocol):
    now: int

    @property
    def committed(self) -> int: ...

    def connect(self, claims: Claims, confirmed: bool) -> int: ...
    def handle(self, conn_id: int, msg: sm.ClientMessage) -> None: ...
    def releasable(self, conn_id: int) -> bool: ...
    def pop(self, conn_id: int) -> sm.Outbound: ...
    def advance_durable(self, to: int) -> None: ...
    def close(self, conn_id: int) -> None: ...
    def compact(self) -> object: ...


RECEIVES: Final = ("receive", "receive_quiet", "await")
LARGE_PAYLOAD: Final = '{"n":1,"pad":"' + "0123456789abcdef" * 61 + '01234567"}'  # 1,000 bytes (the vectors'
# payload limit is 1024): every message that carries it is over the compression threshold of protocol.md "Frames"
"""The steps whose messages :func:`drive` returns, one list each."""
RETAIN_PREFIX: Final = "conformance.retain."
RETAIN_CLASS: Final = StreamClass("conformance-retain", retain_count=3, replay_budget=5)
"""The stream class the retention scenario writes to (its stream ids start with :data:`RETAIN_PREFIX`):
compaction keeps the 3 newest events, a resume more than 5 behind the head is stale.  A wire target
that offers ``--compact-cmd`` serves this class (docs/conformance.md)."""
KIT_POLICY: Final = dataclasses.replace(DEFAULT_POLICY, classes=((RETAIN_PREFIX, RETAIN_CLASS),),
                                        retain_sent_outbox_us=0, retain_terminal_assignment_us=0)
"""What the wire runner's model runs: the default policy (``syncref serve`` unconfigured) with the
retention class, and retention windows of 0 for sent outbox rows and terminal assignments (a
compaction removes every such row written before it; pending rows stay)."""
POLICY: Final = dataclasses.replace(KIT_POLICY, default_class=StreamClass("default", max_payload_bytes=1024,
                                                                          replay_budget=50))
"""The delivery vectors' policy: the kit's, with a small default class."""
T0: Final = 1_700_000_000_000_000


def _id(n: int) -> str:
    return format(n, "064x")


def people(ns: str = "s") -> dict[str, Claims]:
    """The scenario's people; their stream grants are under the namespace ``ns`` (``s`` in the vectors,
    a fresh one per run over the wire, so runs against a shared server do not see each other)."""
    return {
        "writer": Claims(_id(0x3417E), frozenset(SCOPES), (f"{ns}.*",)),
        "reader": Claims(_id(0x4EAD), frozenset({"sync.subscribe"}), (f"{ns}.a",)),
        "watcher": Claims(_id(0x3A7C), frozenset({"sync.subscribe"}), (f"{ns}.*",)),
        "noscope": Claims(_id(0x0DD), frozenset(), (f"{ns}.*",)),
        "bridge": Claims(_id(0xB41D6E), frozenset({"sync.subscribe", "bridge.enqueue", "bridge.mark_sent"}), ()),
        "requester": Claims(_id(0x4E9), frozenset({"sync.subscribe", "compute.request"}), ()),
        "dispatcher": Claims(_id(0xD15), frozenset({"sync.subscribe", "compute.assign"}), ()),
        "provider": Claims(_id(0x9401), frozenset({"sync.subscribe", "provider.publish", "compute.execute"}), ()),
        "executor": Claims(_id(0xE4EC), frozenset({"sync.subscribe", "compute.execute"}), ()),
        "keeper": Claims(_id(0x7E7A1), frozenset({"sync.subscribe", "sync.append"}), (f"{RETAIN_PREFIX}{ns}.*",)),
    }


PEOPLE: Final = people()


def _tables_json(parts: tuple[sm.TableRows, ...]) -> list[dict[str, Any]]:
    return sorted(({"table": t.table, "event": t.event, "inserts": rows_to_json(t.inserts),
                    "deletes": rows_to_json(t.deletes)} for t in parts), key=lambda d: str(d["table"]))


def _sets_json(sets: tuple[sm.QuerySetUpdate, ...]) -> list[dict[str, Any]]:
    return sorted(({"query_set_id": u.query_set_id, "tables": _tables_json(u.tables)} for u in sets),
                  key=lambda d: int(d["query_set_id"]))


def message_json(msg: sm.ServerMessage) -> dict[str, Any]:
    """The normal form of a model server message."""
    out: dict[str, Any] = {"$type": type(msg).__name__}
    if isinstance(msg, sm.SubscribeApplied):
        out.update(request_id=msg.request_id, query_set_id=msg.query_set_id, rows=_tables_json(msg.rows))
    elif isinstance(msg, sm.UnsubscribeApplied):
        out.update(request_id=msg.request_id, query_set_id=msg.query_set_id,
                   rows=None if msg.rows is None else _tables_json(msg.rows))
    elif isinstance(msg, sm.TransactionUpdate):
        out.update(tx_offset=msg.tx_offset, query_sets=_sets_json(msg.query_sets))
    elif isinstance(msg, sm.ReducerResult):
        o = msg.outcome
        outcome = ({"ok": {"ret": o.ret, "query_sets": _sets_json(o.query_sets)}} if isinstance(o, sm.ReducerOk)
                   else {"err": {"error": o.error, "internal": o.internal}})
        out.update(request_id=msg.request_id, tx_offset=msg.tx_offset, outcome=outcome)
    else:
        out.update({f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)})
    return json.loads(json.dumps(out, sort_keys=True))  # type: ignore[no-any-return]


def client_message_json(msg: sm.ClientMessage) -> dict[str, Any]:
    if isinstance(msg, sm.CallReducer):
        return {"$type": "CallReducer", "request_id": msg.request_id, "reducer": msg.reducer,
                "args": args_to_json(msg.reducer, msg.args)}
    if isinstance(msg, sm.Subscribe):
        return {"$type": "Subscribe", "request_id": msg.request_id, "query_set_id": msg.query_set_id,
                "queries": list(msg.queries)}
    return {"$type": "Unsubscribe", "request_id": msg.request_id, "query_set_id": msg.query_set_id,
            "send_dropped": msg.send_dropped}


def client_message_from_json(doc: dict[str, Any]) -> sm.ClientMessage:
    t = doc["$type"]
    if t == "CallReducer":
        return sm.CallReducer(doc["request_id"], doc["reducer"], args_from_json(doc["reducer"], doc["args"]))
    if t == "Subscribe":
        return sm.Subscribe(doc["request_id"], doc["query_set_id"], tuple(doc["queries"]))
    return sm.Unsubscribe(doc["request_id"], doc["query_set_id"], doc["send_dropped"])


# --- scenarios (steps as data) ----------------------------------------------------------------------------

def scenarios(ns: str = "s", e0: int = 1, v0: int = 1) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Every scenario's description and steps, with stream and outbox ids under ``ns``; ``e0`` and ``v0``
    are the server's epoch and version floors (a new stream's epoch, a new assignment's version): 1 in
    the vectors, the target's own over the wire (a target that restarted uncleanly has raised them)."""
    folk = people(ns)
    a, b = f"{ns}.a", f"{ns}.b"
    ev_a = f"SELECT * FROM sync_event WHERE stream_id = '{a}'"

    def connect(conn: str, who: str, confirmed: bool = False) -> dict[str, Any]:
        return {"op": "connect", "conn": conn, "person": who, "claims": claims_to_json(folk[who]),
                "confirmed": confirmed}

    def send(conn: str, msg: sm.ClientMessage) -> dict[str, Any]:
        return {"op": "send", "conn": conn, "message": client_message_json(msg)}

    def receive(conn: str) -> dict[str, Any]:
        return {"op": "receive", "conn": conn}

    def sub(conn: str, rid: int, qs: int, *queries: str) -> dict[str, Any]:
        return send(conn, sm.Subscribe(rid, qs, tuple(queries)))

    def append(conn: str, rid: int, stream: str, key: str, payload: str = '{"n":1}') -> dict[str, Any]:
        return send(conn, sm.CallReducer(rid, "append_sync_event", (stream, key, payload, None, None)))

    def call(conn: str, rid: int, reducer: str, *args: Any) -> dict[str, Any]:
        return send(conn, sm.CallReducer(rid, reducer, tuple(args)))

    hold: dict[str, Any] = {"op": "hold"}
    release: dict[str, Any] = {"op": "release"}
    compact: dict[str, Any] = {"op": "compact"}

    def close(conn: str) -> dict[str, Any]:
        return {"op": "close", "conn": conn}

    def wait(conn: str) -> dict[str, Any]:
        return {"op": "await", "conn": conn}

    kept = f"{RETAIN_PREFIX}{ns}.a"
    ev_kept = f"SELECT * FROM sync_event WHERE stream_id = '{kept}'"
    s0, s1, s2 = f"{ns}.s0", f"{ns}.s1", f"{ns}.s2"
    ttl = 300_000  # the longest TTL the default policy allows: no sweep expires a session mid-scenario

    def durable(to: int) -> dict[str, Any]:
        return {"op": "durable", "to": to}

    o1, o2, o3, o4, r3 = f"{ns}o1", f"{ns}o2", f"{ns}o3", f"{ns}o4", f"{ns}r3"
    o5 = f"{ns}o5"
    ck_a = f"SELECT * FROM sync_checkpoint WHERE stream_id = '{a}'"
    ob5 = f"SELECT * FROM bridge_outbox WHERE outbox_id = '{o5}'"
    p1, p2, r1, r2 = f"{ns}p1", f"{ns}p2", f"{ns}r1", f"{ns}r2"
    jobs = f"SELECT * FROM compute_assignment WHERE request_id = '{r1}'"
    outbox = f"SELECT * FROM bridge_outbox WHERE outbox_id = '{o1}'"
    eid = "ab" * 32
    return {
        "large_rows": ("rows whose messages are over the 1024-byte compression threshold: an update of one "
                       "large event, then of a small one, then a snapshot of both", [
            connect("w", "writer"), connect("r", "reader"), sub("r", 1, 10, ev_a), receive("r"),
            append("w", 1, a, "k1", LARGE_PAYLOAD), receive("w"), receive("r"), append("w", 2, a, "k2"),
            receive("w"), receive("r"), sub("r", 2, 11, ev_a), receive("r")]),
        "subscribe_snapshot": ("a subscription's first answer is the snapshot of the rows it matches, atomically", [
            connect("w", "writer"), append("w", 1, a, "k1"), append("w", 2, a, "k2", '{"n":2}'),
            append("w", 3, b, "k1"), receive("w"),
            connect("r", "reader"), sub("r", 1, 10, ev_a), receive("r")]),
        "update_and_caller_result": ("the caller hears of its own write only in its ReducerResult; every other "
                                     "subscriber gets a TransactionUpdate", [
            connect("w", "writer"), connect("r", "reader"), sub("w", 1, 10, ev_a), sub("r", 1, 10, ev_a),
            receive("w"), receive("r"), append("w", 2, a, "k1"), receive("w"), receive("r")]),
        "duplicate_call_is_a_noop": ("a retried append (same key, same payload) answers the first seq and sends "
                                     "no update to anyone", [
            connect("w", "writer"), connect("r", "reader"), sub("r", 1, 10, ev_a), receive("r"),
            append("w", 1, a, "k1"), append("w", 2, a, "k1"), receive("w"), receive("r")]),
        "idempotency_conflict": ("a retried key with another payload fails with idempotency_conflict, naming the "
                                 "existing seq, and writes nothing; the next new key takes the next seq", [
            connect("w", "writer"), connect("r", "reader"), sub("r", 1, 10, ev_a), receive("r"),
            append("w", 1, a, "k1"), append("w", 2, a, "k1", '{"n":2}'), append("w", 3, a, "k2", '{"n":2}'),
            receive("w"), receive("r")]),
        "checkpoint_never_backwards": ("an ack moves the caller's checkpoint forward only: a lower ack is a no-op, "
                                       "an ack past the head or in another epoch fails", [
            connect("w", "writer"), append("w", 1, a, "k1"), append("w", 2, a, "k2", '{"n":2}'),
            append("w", 3, a, "k3", '{"n":3}'),
            sub("w", 4, 10, f"SELECT * FROM sync_checkpoint WHERE stream_id = '{a}'"), receive("w"),
            call("w", 5, "ack_checkpoint", "c1", a, e0, 3), call("w", 6, "ack_checkpoint", "c1", a, e0, 1),
            call("w", 7, "ack_checkpoint", "c1", a, e0, 9), call("w", 8, "ack_checkpoint", "c1", a, e0 + 1, 1),
            receive("w")]),
        "duplicate_frame": ("the very same CallReducer frame twice (same request id): two identical answers, "
                            "one transaction", [
            connect("w", "writer"), connect("r", "reader"), sub("r", 1, 10, ev_a), receive("r"),
            append("w", 7, a, "k1"), append("w", 7, a, "k1"), receive("w"), receive("r")]),
        "reducer_error_result": ("a failing call answers ReducerResult with the error string and writes nothing", [
            connect("n", "noscope"), append("n", 1, a, "k1"), receive("n")]),
        "confirmed_reads_wait_for_durability": ("a confirmed-reads connection is sent an update only once its "
                                                "offset is durable; an unconfirmed one at once", [
            connect("w", "writer"), connect("c", "watcher", confirmed=True), connect("u", "watcher"),
            sub("c", 1, 10, ev_a), sub("u", 1, 10, ev_a), receive("c"), receive("u"), hold,
            append("w", 2, a, "k1"), receive("w"), receive("c"), receive("u"),
            append("w", 3, a, "k2", '{"n":2}'), durable(1), receive("c"), durable(2), receive("c"), receive("w")]),
        "confirmed_reads_released": ("while the log stalls, a confirmed reader is sent nothing of the new "
                                     "transaction (an unconfirmed one is); once it is durable, the update", [
            connect("w", "writer"), connect("c", "watcher", confirmed=True), connect("u", "watcher"),
            sub("c", 1, 10, ev_a), sub("u", 1, 10, ev_a), receive("c"), receive("u"),
            append("w", 1, a, "k0", '{"n":0}'), receive("w"), receive("c"), receive("u"), hold,
            append("w", 2, a, "k1"), receive("w"), receive("u"), {"op": "receive_quiet", "conn": "c"},
            release, receive("c"),
            # a second stall: a durable offset kept one past what storage confirmed is ahead after every
            # other confirmation only (each one it skips sets it back), so one of two stalls shows it
            hold, append("w", 3, a, "k2", '{"n":2}'), receive("w"), receive("u"),
            {"op": "receive_quiet", "conn": "c"}, release, receive("c")]),
        "confirmed_caller_waits": ("a confirmed-read connection's own answers are sent only once the offset they "
                                   "read is durable: a SubscribeApplied, a failure and a deduplicated retry reading "
                                   "another connection's undurable write, its own write with or without a "
                                   "subscription (an answer before that breaks CONF-1)", [
            connect("w", "writer", confirmed=True), connect("v", "writer"), connect("c", "watcher", confirmed=True),
            append("w", 1, a, "k0", '{"n":0}'), receive("w"), hold, append("v", 1, a, "k1"), receive("v"),
            # a table no write here touches: the writes below stay on the engine's no-subscriber path
            sub("c", 1, 10, f"SELECT * FROM session_presence WHERE session_id = '{ns}.none'"),
            {"op": "receive_quiet", "conn": "c"}, append("w", 2, a, "k1", '{"n":9}'), append("w", 3, a, "k1"),
            {"op": "receive_quiet", "conn": "w"}, release, receive("w"), receive("c"),
            hold, append("w", 4, a, "k2", '{"n":2}'), {"op": "receive_quiet", "conn": "w"}, release, receive("w"),
            sub("w", 5, 10, ev_a), receive("w"),
            hold, append("w", 6, a, "k3", '{"n":3}'), {"op": "receive_quiet", "conn": "w"}, release, receive("w")]),
        "event_tables": ("event-table rows reach subscribers once, marked as events, and never appear in a "
                         "snapshot", [
            connect("w", "writer"), connect("r", "watcher"), sub("r", 1, 10, "SELECT * FROM stream_signal"),
            receive("r"), call("w", 1, "publish_stream_signal", a, "typing", '{"on":true}'),
            receive("w"), receive("r"), sub("r", 2, 11, "SELECT * FROM stream_signal"), receive("r")]),
        "row_filter": ("a subscriber sees only rows of streams its grant covers, in snapshots and updates; one "
                       "granted both streams reads all four events, each with its own transaction's offset", [
            connect("w", "writer"), append("w", 1, a, "k1"), append("w", 2, b, "k1"), receive("w"),
            connect("r", "reader"), sub("r", 1, 10, "SELECT * FROM sync_event"), receive("r"),
            append("w", 3, b, "k2", '{"n":2}'), append("w", 4, a, "k2", '{"n":2}'), receive("r"),
            receive("w"), sub("w", 5, 11, "SELECT * FROM sync_event"), receive("w")]),
        "private_tables": ("a checkpoint reaches only its owner and an outbox row only bridge-scoped "
                           "subscribers, in snapshots and updates -- not everyone granted the stream: a watcher of the "
                           "stream hears its events and nothing of the writer's checkpoint or outbox row", [
            connect("w", "writer"), connect("r", "watcher"), sub("w", 1, 10, ev_a, ck_a, ob5),
            sub("r", 1, 10, ev_a, ck_a, ob5),
            receive("w"), receive("r"), append("w", 2, a, "k1"), call("w", 3, "ack_checkpoint", "c1", a, e0, 1),
            call("w", 4, "enqueue_bridge_event", o5, "receipts", 30078, '[["d","x"]]', "hello"), receive("w"),
            receive("r"), connect("r2", "watcher"), sub("r2", 1, 10, ev_a, ck_a, ob5), receive("r2")]),
        "unsubscribe": ("unsubscribe answers UnsubscribeApplied (with the set's rows when asked) and stops "
                        "updates", [
            connect("w", "writer"), append("w", 1, a, "k1"), connect("r", "reader"),
            sub("r", 1, 10, ev_a), sub("r", 2, 11, "SELECT * FROM sync_stream"),
            send("r", sm.Unsubscribe(3, 10, True)), send("r", sm.Unsubscribe(4, 11, False)), receive("r"),
            append("w", 2, a, "k2", '{"n":2}'), receive("r")]),
        "resume_and_stale_cursor": ("a resume within budget is a snapshot of the events after W; a stale one is a "
                                    "SubscriptionError naming every reason; a malformed resume is invalid_query", [
            connect("w", "writer"), append("w", 1, a, "k1"), append("w", 2, a, "k2", '{"n":2}'),
            append("w", 3, a, "k3", '{"n":3}'), receive("w"), connect("r", "reader"),
            sub("r", 1, 10, f"{ev_a} AND epoch = {e0} AND seq > 1"),
            sub("r", 2, 11, f"{ev_a} AND epoch = {e0 + 1} AND seq > 1"),
            sub("r", 3, 12, f"{ev_a} AND epoch = {e0} AND seq > 9"), sub("r", 4, 13, f"{ev_a} AND seq > 1"),
            sub("r", 5, 14, f"SELECT * FROM sync_event WHERE stream_id = '{b}' AND epoch = {e0} AND seq > 0"),
            sub("r", 6, 15, f"{ev_a} AND epoch = {e0} AND seq >= 0"), receive("r")]),
        "stale_cursor_recovery": ("after an epoch reset the old cursor is stale (epoch_changed, continues "
                                  "nothing); the client re-reads the stream row and resumes in the new epoch", [
            connect("w", "writer"), append("w", 1, a, "k1"), append("w", 2, a, "k2", '{"n":2}'),
            call("w", 3, "reset_stream_epoch", a), receive("w"), connect("r", "watcher"),
            sub("r", 1, 10, f"{ev_a} AND epoch = {e0} AND seq > 2"),
            sub("r", 2, 11, f"SELECT * FROM sync_stream WHERE stream_id = '{a}'"),
            sub("r", 3, 12, f"{ev_a} AND epoch = {e0 + 1} AND seq > 2"), receive("r"),
            append("w", 4, a, "k3", '{"n":3}'), receive("r")]),
        "compute_roles": ("an assignment is seen only by its requester, its provider's owner and dispatchers, in "
                          "updates too; assigning needs an active provider advertising the kind; running it needs "
                          "the assigned provider's owner, not just the execute scope", [
            connect("p", "provider"), connect("q", "requester"), connect("d", "dispatcher"),
            connect("x", "executor"), sub("x", 1, 10, jobs), sub("q", 1, 10, jobs), receive("x"), receive("q"),
            call("p", 1, "publish_provider_capability", p1, "{}", (5050,), 10, "active"),
            call("q", 2, "open_compute_assignment", r1, 5050, "{}"), receive("q"),
            call("d", 3, "update_compute_assignment", r1, v0, "assigned", p1, None),
            call("d", 4, "update_compute_assignment", r1, v0, "assigned", p1, None),
            call("p", 5, "publish_provider_capability", p2, "{}", (5051,), 10, "active"),
            call("q", 6, "open_compute_assignment", r2, 5050, "{}"), receive("q"),
            call("d", 7, "update_compute_assignment", r2, v0, "assigned", p2, None),
            receive("d"), call("x", 8, "update_compute_assignment", r1, v0 + 1, "running", None, None), receive("x"),
            call("p", 9, "update_compute_assignment", r1, v0 + 1, "running", None, None), receive("p"), receive("q"),
            receive("x")]),
        "bridge_outbox": ("the outbox rules a bridge worker relies on, without any relay: enqueue dedupes on "
                          "[source, kind, tags, content], kinds outside policy are denied, a failure records its "
                          "backoff, a success is kept and merges newly acked relays, another event id conflicts", [
            connect("g", "bridge"), sub("g", 1, 10, outbox), receive("g"),
            call("g", 2, "enqueue_bridge_event", o1, "receipts", 30078, '[["d","x"]]', "hello"),
            call("g", 3, "enqueue_bridge_event", o1, "receipts", 30078, '[ ["d", "x"] ]', "hello"),
            call("g", 4, "enqueue_bridge_event", o1, "providers", 30078, '[["d","x"]]', "hello"),
            call("g", 5, "enqueue_bridge_event", o2, "notes", 1, "[]", "hi"),
            call("g", 6, "record_bridge_failure", o1, "relay timeout", 30_000),
            call("g", 7, "mark_bridge_event_sent", o1, eid, ("wss://a",)),
            call("g", 8, "mark_bridge_event_sent", o1, eid, ("wss://b", "wss://a")),
            call("g", 9, "mark_bridge_event_sent", o1, eid, ("wss://b",)),
            call("g", 10, "mark_bridge_event_sent", o1, "cd" * 32, ("wss://c",)),
            call("g", 11, "record_bridge_failure", o1, "late", 0), receive("g")]),
        "retention_floor": ("compaction keeps a stream class's newest events and raises floor_seq to the first "
                            "kept; a resume below it is stale (retention_floor_breach, with "
                            "replay_budget_exceeded when it is also too far behind the head), one at floor - 1 is "
                            "the kept events; a compacted key is no longer a duplicate", [
            connect("w", "keeper"), *(append("w", i, kept, f"k{i}", f'{{"n":{i}}}') for i in range(1, 7)),
            receive("w"), compact, append("w", 7, kept, "k1"), receive("w"),
            connect("r", "keeper"), sub("r", 1, 10, f"SELECT * FROM sync_stream WHERE stream_id = '{kept}'"),
            sub("r", 2, 11, f"{ev_kept} AND epoch = {e0} AND seq > 1"),
            sub("r", 3, 12, f"{ev_kept} AND epoch = {e0} AND seq > 2"),
            sub("r", 4, 13, f"{ev_kept} AND epoch = {e0} AND seq > 3"), receive("r")]),
        "retention_tables": ("compaction removes sent outbox rows and terminal assignments past their windows "
                             "(0 in the kit's policy) and keeps pending rows; an assignment id it freed opens "
                             "again above every version it had (the version floor)", [
            connect("q", "requester"), connect("g", "bridge"),
            call("q", 1, "open_compute_assignment", r3, 5050, "{}"),
            call("q", 2, "update_compute_assignment", r3, v0, "cancelled", None, None), receive("q"),
            call("g", 1, "enqueue_bridge_event", o3, "receipts", 30078, '[["d","p"]]', "pending"),
            call("g", 2, "enqueue_bridge_event", o4, "receipts", 30078, '[["d","s"]]', "sent"),
            call("g", 3, "mark_bridge_event_sent", o4, eid, ("wss://a",)), receive("g"), compact,
            call("q", 3, "open_compute_assignment", r3, 5050, "{}"), receive("q"),
            sub("q", 4, 10, f"SELECT * FROM compute_assignment WHERE request_id = '{r3}'"), receive("q"),
            sub("g", 4, 10, f"SELECT * FROM bridge_outbox WHERE outbox_id = '{o3}'",
                f"SELECT * FROM bridge_outbox WHERE outbox_id = '{o4}'"), receive("g")]),
        "presence_ownership": ("a session belongs to the connection that upserted it last: closing an earlier "
                               "one leaves it as it is, closing the last one marks it disconnected (each close "
                               "also marks a session only it upserted, so each is seen to have happened)", [
            connect("o", "watcher"),
            sub("o", 1, 10, *(f"SELECT * FROM session_presence WHERE session_id = '{x}'" for x in (s0, s1, s2))),
            receive("o"),
            connect("c1", "writer"), call("c1", 1, "upsert_presence", s0, "d0", "n0", "online", "r", ttl),
            call("c1", 2, "upsert_presence", s1, "d1", "n0", "online", "r", ttl), receive("c1"),
            connect("c2", "writer"), call("c2", 3, "upsert_presence", s1, "d1", "n0", "away", "r", ttl),
            call("c2", 4, "upsert_presence", s2, "d2", "n0", "online", "r", ttl),
            receive("c2"), receive("o"), close("c1"), wait("o"), close("c2"), wait("o")]),
    }


SCENARIOS: Final = scenarios()


def drive(target: Target, steps: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Run ``steps``; return the messages of each ``receive`` step, in order."""
    conns: dict[str, int] = {}
    held = False
    received: list[list[dict[str, Any]]] = []

    def settle() -> None:
        if not held:
            target.advance_durable(target.committed)

    for step in steps:
        op = step["op"]
        if op == "connect":
            conns[step["conn"]] = target.connect(claims_from_json(step["claims"]), step["confirmed"])
        elif op == "send":
            target.handle(conns[step["conn"]], client_message_from_json(step["message"]))
            settle()
        elif op == "hold":
            held = True
        elif op == "release":
            held = False
            target.advance_durable(target.committed)
        elif op == "durable":
            target.advance_durable(step["to"])
        elif op == "compact":
            target.now += 1  # retention runs after the writes before it (a window of 0 removes what they stamped)
            target.compact()
            settle()
            if "version_floor" in step:  # a wire target's floor after its compaction (others' rows raise it too)
                _raise_version_floor(target, int(step["version_floor"]))
        elif op == "close":
            target.close(conns[step["conn"]])
            settle()
        elif op in RECEIVES:
            cid = conns[step["conn"]]
            got = []
            while target.releasable(cid):
                got.append(message_json(target.pop(cid).message))
            received.append(got)
        else:
            raise ValueError(f"unknown step {op!r}")
    return received


def _raise_version_floor(target: Target, floor: int) -> None:
    """Raise the model's version floor to ``floor`` (never lower it): a wire target's compaction also
    removed assignments of writers the scenario does not know (a shared target), and every version it
    hands out from then on is above theirs.  Only the model target takes it (the wire runner's)."""
    from spec.harness import Server

    if not isinstance(target, Server):
        raise ValueError("only the model target takes a wire target's version floor")
    log = target.log
    if floor > log.db.version_floor:
        db = dataclasses.replace(log.db, version_floor=floor)
        target.log = dataclasses.replace(log, db=db, durable_db=db if log.durable == log.committed else log.durable_db)


def model_target(policy: Policy = POLICY, max_queue: int = 1000, max_undurable: int = 8, now: int = T0,
                 epoch_floor: int = 1, version_floor: int = 1) -> Target:
    """The model server, empty but for its floors (a wire target's own, which unclean restarts raise)."""
    from spec.delivery import start
    from spec.harness import Server
    from spec.state import DbState
    server = Server(policy, max_queue=max_queue, max_undurable=max_undurable)
    server.log = start(DbState(epoch_floor=epoch_floor, version_floor=version_floor))
    server.now = now
    return server


def engine_target(policy: Policy = POLICY, max_queue: int = 1000, max_undurable: int = 8, now: int = T0) -> Target:
    from reference.engine import Engine

    class _Engine(Engine):
        def advance_durable(self, to: int) -> None:
            self.take_records()  # the store took the records; now they are durable up to ``to``
            super().advance_durable(to)

        def compact(self, now: int | None = None) -> bool:
            return super().compact(self.now if now is None else now)

    engine = _Engine(policy, max_queue=max_queue, max_undurable=max_undurable)
    engine.now = now
    return engine


def _types(got: list[dict[str, Any]]) -> list[str]:
    return [m["$type"] for m in got]


EXPECT: Final[dict[str, Callable[[list[list[dict[str, Any]]]], bool]]] = {
    # hand-written facts each scenario must show (the generator refuses a model that breaks one)
    "subscribe_snapshot": lambda r: len(r[1][0]["rows"][0]["inserts"]) == 2,
    "large_rows": lambda r: r[2][0]["query_sets"][0]["tables"][0]["inserts"][0]["payload"] == LARGE_PAYLOAD
    and _types(r[4]) == ["TransactionUpdate"] and len(r[5][0]["rows"][0]["inserts"]) == 2,
    "update_and_caller_result": lambda r: _types(r[2]) == ["ReducerResult"] and _types(r[3]) == ["TransactionUpdate"]
    and bool(r[2][0]["outcome"]["ok"]["query_sets"]),
    "duplicate_call_is_a_noop": lambda r: [m["outcome"]["ok"]["ret"] for m in r[1]] == [1, 1]
    and _types(r[2]) == ["TransactionUpdate"],
    "reducer_error_result": lambda r: r[0][0]["outcome"]["err"]["error"].startswith("missing_scope"),
    "confirmed_reads_wait_for_durability": lambda r: r[3] == [] and _types(r[4]) == ["TransactionUpdate"]
    and r[5][0]["tx_offset"] == 1 and r[6][0]["tx_offset"] == 2,
    "confirmed_caller_waits": lambda r: [m["outcome"].get("err", {}).get("error", "ok").split(":")[0]
                                         for m in r[0] + r[1] + r[4] + r[7] + r[10]]
    == ["ok", "ok", "idempotency_conflict", "ok", "ok", "ok"] and r[4][1]["outcome"]["ok"]["ret"] == 2
    and r[2] == [] == r[3] == r[6] == r[9] and _types(r[5]) == _types(r[8]) == ["SubscribeApplied"]
    and bool(r[10][0]["outcome"]["ok"]["query_sets"]),
    "event_tables": lambda r: r[2][0]["query_sets"][0]["tables"][0]["event"] is True
    and r[3][0]["rows"] == [],
    "row_filter": lambda r: len(r[1][0]["rows"][0]["inserts"]) == 1 and len(r[2]) == 1
    and sorted(e["tx_offset"] for e in r[4][0]["rows"][0]["inserts"]) == [1, 2, 3, 4],
    "private_tables": lambda r: {t["table"] for m in r[2] for s in m["outcome"]["ok"]["query_sets"]
                                 for t in s["tables"]} == {"sync_event", "sync_checkpoint", "bridge_outbox"}
    and _types(r[3]) == ["TransactionUpdate"]
    and [t["table"] for t in r[3][0]["query_sets"][0]["tables"]] == ["sync_event"]
    and [t["table"] for t in r[4][0]["rows"]] == ["sync_event"],
    "unsubscribe": lambda r: _types(r[0])[2:] == ["UnsubscribeApplied", "UnsubscribeApplied"]
    and r[0][2]["rows"] is not None and r[0][3]["rows"] is None and r[1] == [],
    "duplicate_frame": lambda r: [m["request_id"] for m in r[1]] == [7, 7] and r[1][0] == r[1][1]
    and _types(r[2]) == ["TransactionUpdate"],
    "confirmed_reads_released": lambda r: _types(r[3]) == _types(r[4]) == ["TransactionUpdate"]
    and r[7] == [] == r[11] and _types(r[6]) == _types(r[8]) == _types(r[10]) == _types(r[12]) == ["TransactionUpdate"],
    "retention_floor": lambda r: [m["outcome"]["ok"]["ret"] for m in r[0] + r[1]] == [1, 2, 3, 4, 5, 6, 7]
    and r[2][0]["rows"][0]["inserts"][0]["floor_seq"] == 4
    and _types(r[2]) == ["SubscribeApplied", "SubscriptionError", "SubscriptionError", "SubscribeApplied"]
    and '"reasons":["retention_floor_breach","replay_budget_exceeded"]' in r[2][1]["error"]
    and '"reasons":["retention_floor_breach"]' in r[2][2]["error"]
    and sorted(e["seq"] for e in r[2][3]["rows"][0]["inserts"]) == [4, 5, 6, 7],
    "retention_tables": lambda r: [m["outcome"].get("err", {}).get("error", "ok") for m in r[0] + r[1] + r[2]]
    == ["ok"] * 6 and r[3][0]["rows"][0]["inserts"][0]["version"] == 3
    and [row["status"] for row in r[4][0]["rows"][0]["inserts"]] == ["pending"],
    "presence_ownership": lambda r: [len(x) for x in r[3:]] == [4, 1, 1]
    and [sorted((row["session_id"].split(".")[-1], row["status"], row["offline_reason"]["some"])
                for row in x[0]["query_sets"][0]["tables"][0]["inserts"]) for x in r[4:]]
    == [[("s0", "offline", "disconnected")], [("s1", "offline", "disconnected"), ("s2", "offline", "disconnected")]],
    "stale_cursor_recovery": lambda r: _types(r[1]) == ["SubscriptionError", "SubscribeApplied", "SubscribeApplied"]
    and '"epoch_changed"' in r[1][0]["error"] and _types(r[2]) == ["TransactionUpdate"],
    "compute_roles": lambda r: [m["outcome"].get("err", {}).get("error", "ok").split(":")[0] for m in r[4]]
    == ["ok", "version_conflict", "provider_unavailable"] and r[5][0]["outcome"]["err"]["error"].startswith("forbidden")
    and r[8] == [] and _types(r[3]) == ["TransactionUpdate", "ReducerResult"] and _types(r[7]) == ["TransactionUpdate"],
    "bridge_outbox": lambda r: [m["outcome"].get("err", {}).get("error", "ok").split(":")[0] for m in r[1]]
    == ["ok", "ok", "idempotency_conflict", "policy_denied", "ok", "ok", "ok", "ok", "bridge_event_conflict", "ok"],
    "resume_and_stale_cursor": lambda r: _types(r[1]) == ["SubscribeApplied"] + ["SubscriptionError"] * 4
    + ["SubscribeApplied"] and r[1][1]["error"].startswith("stale_cursor")
    and r[1][3]["error"].startswith("invalid_query") and len(r[1][5]["rows"][0]["inserts"]) == 3,
    "idempotency_conflict": lambda r: [m["outcome"].get("err", {}).get("error", "ok").split(":")[0] for m in r[1]]
    == ["ok", "idempotency_conflict", "ok"] and r[1][2]["outcome"]["ok"]["ret"] == 2
    and _types(r[2]) == ["TransactionUpdate", "TransactionUpdate"],
    "checkpoint_never_backwards": lambda r: [m["outcome"].get("err", {}).get("error", "ok").split(":")[0]
                                             for m in r[1]]
    == ["ok", "ok", "checkpoint_ahead_of_head", "stale_epoch"] and bool(r[1][0]["outcome"]["ok"]["query_sets"])
    and not r[1][1]["outcome"]["ok"]["query_sets"],
}
