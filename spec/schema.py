"""The module schema as data.

One :class:`Table` per table of DESIGN §2: columns in the normative order with SATS types,
the primary key, unique indexes, whether it is an event table, whether it is public, and its
read-visibility rule.  Everything else (BSATN layouts, ``SELECT * FROM *``, the schema route,
the docs, the row-filter) is derived from this table, never restated.

Event tables (``presence_signal``, ``stream_signal``) hold no rows: a row exists only inside the
transaction that emitted it, is delivered once as an ``EventTable`` update, and is never part
of a snapshot or of the durable state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields

from spec.values import (
    IDENTITY,
    STRING,
    TIMESTAMP,
    U32,
    U64,
    ArrayT,
    BridgeOutbox,
    ComputeAssignment,
    OptionT,
    PresenceSignal,
    ProviderCapability,
    Row,
    SatsType,
    SessionPresence,
    StreamSignal,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)

SCHEMA_VERSION = 3
PROTOCOL_VERSION = "oa.sync.v1"
DEFAULT_DATABASE = "autopilot-sync"


class Visibility(enum.StrEnum):
    """Who may read a table's rows (DESIGN §4, Visibility)."""

    EVERYONE = "everyone"  # any connected identity (discovery data)
    STREAM_GRANT = "stream_grant"  # rows whose stream_id the caller was granted
    OWNER = "owner"  # the row's `owner` column equals the caller
    COMPUTE = "compute"  # the requester, the assigned provider's owner (provider_owner), compute.assign holders
    BRIDGE = "bridge"  # holders of a bridge scope


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: SatsType


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    row_type: type[Row]
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] | None
    unique: tuple[tuple[str, ...], ...]
    event: bool
    public: bool
    visibility: Visibility

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column_type(self, name: str) -> SatsType | None:
        for c in self.columns:
            if c.name == name:
                return c.type
        return None

    def key_of(self, row: Row) -> tuple[object, ...] | None:
        if self.primary_key is None:
            return None
        return tuple(getattr(row, c) for c in self.primary_key)


def _t(name: str, row_type: type[Row], cols: list[tuple[str, SatsType]], pk: tuple[str, ...] | None,
       unique: tuple[tuple[str, ...], ...] = (), *, event: bool = False, public: bool = True,
       visibility: Visibility) -> Table:
    return Table(name, row_type, tuple(Column(n, t) for n, t in cols), pk, unique, event, public,
                 visibility)


TABLES: tuple[Table, ...] = (
    _t("sync_stream", SyncStream, [
        ("stream_id", STRING), ("stream_class", STRING), ("epoch", U64), ("continues_epoch", U64),
        ("continues_seq", U64),
        ("head_seq", U64), ("floor_seq", U64), ("replay_budget", U64), ("created_at", TIMESTAMP),
        ("updated_at", TIMESTAMP), ("earlier_epochs", ArrayT(U64)), ("earlier_seqs", ArrayT(U64))],
       ("stream_id",), visibility=Visibility.STREAM_GRANT),
    _t("sync_event", SyncEvent, [
        ("stream_id", STRING), ("epoch", U64), ("seq", U64), ("idempotency_key", STRING),
        ("payload_hash", STRING), ("payload", STRING), ("producer", IDENTITY),
        ("committed_at", TIMESTAMP), ("tx_offset", U64)], None,
        (("stream_id", "seq"), ("stream_id", "idempotency_key")), visibility=Visibility.STREAM_GRANT),
    _t("sync_checkpoint", SyncCheckpoint, [
        ("checkpoint_id", STRING), ("client_id", STRING), ("stream_id", STRING), ("owner", IDENTITY),
        ("epoch", U64), ("last_applied_seq", U64), ("updated_at", TIMESTAMP)], ("checkpoint_id",),
        public=False, visibility=Visibility.OWNER),
    _t("session_presence", SessionPresence, [
        ("session_id", STRING), ("identity", IDENTITY), ("device_id", STRING), ("node_id", STRING),
        ("status", STRING), ("region", STRING), ("last_seen", TIMESTAMP), ("expires_at", TIMESTAMP),
        ("offline_reason", OptionT(STRING))], ("session_id",), visibility=Visibility.EVERYONE),
    _t("provider_capability", ProviderCapability, [
        ("provider_id", STRING), ("owner", IDENTITY), ("capability", STRING),
        ("capability_hash", STRING), ("nip90_kinds", ArrayT(U32)), ("price_hint_sats", U64),
        ("status", STRING), ("version", U64), ("updated_at", TIMESTAMP)], ("provider_id",),
        visibility=Visibility.EVERYONE),
    _t("compute_assignment", ComputeAssignment, [
        ("request_id", STRING), ("requester", IDENTITY), ("job_kind", U32), ("request", STRING),
        ("request_hash", STRING), ("provider_id", OptionT(STRING)),
        ("provider_owner", OptionT(IDENTITY)), ("status", STRING),
        ("result", OptionT(STRING)), ("version", U64), ("opened_at", TIMESTAMP),
        ("updated_at", TIMESTAMP)], ("request_id",), visibility=Visibility.COMPUTE),
    _t("bridge_outbox", BridgeOutbox, [
        ("outbox_id", STRING), ("source", STRING), ("nostr_kind", U32), ("tags", STRING),
        ("content", STRING), ("content_hash", STRING), ("status", STRING), ("attempts", U32),
        ("next_attempt_at", TIMESTAMP), ("last_error", OptionT(STRING)), ("nostr_event_id", OptionT(STRING)),
        ("relays_acked", ArrayT(STRING)), ("created_at", TIMESTAMP), ("updated_at", TIMESTAMP)],
        ("outbox_id",), public=False, visibility=Visibility.BRIDGE),
    _t("presence_signal", PresenceSignal, [
        ("session_id", STRING), ("identity", IDENTITY), ("status", STRING), ("reason", STRING),
        ("at", TIMESTAMP)], None, event=True, visibility=Visibility.EVERYONE),
    _t("stream_signal", StreamSignal, [
        ("stream_id", STRING), ("kind", STRING), ("payload", STRING), ("sender", IDENTITY),
        ("at", TIMESTAMP)], None, event=True, visibility=Visibility.STREAM_GRANT),
)

TABLE_BY_NAME: Mapping[str, Table] = {t.name: t for t in TABLES}
TABLE_BY_ROW_TYPE: Mapping[type[Row], Table] = {t.row_type: t for t in TABLES}
PERSISTENT_TABLES: tuple[Table, ...] = tuple(t for t in TABLES if not t.event)
STAR_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES if t.public and not t.event)
"""``SELECT * FROM *`` covers exactly the public non-event tables."""


def table_of(row: Row) -> Table:
    return TABLE_BY_ROW_TYPE[type(row)]


def check_schema_matches_rows() -> None:
    """The dataclass field order must equal the normative column order (it is the wire layout)."""
    for t in TABLES:
        names = tuple(f.name for f in fields(t.row_type))
        if names != t.column_names:
            raise AssertionError(f"{t.name}: row fields {names} != columns {t.column_names}")


check_schema_matches_rows()

# --- Reducer signatures (argument order is the wire order) -----------------------------------


@dataclass(frozen=True, slots=True)
class ReducerDef:
    name: str
    args: tuple[Column, ...]
    scope: str | None  # the oa_sync_scopes entry required, None = any authenticated caller
    returns: SatsType | None = None


REDUCERS: tuple[ReducerDef, ...] = (
    ReducerDef("append_sync_event", (Column("stream_id", STRING), Column("idempotency_key", STRING),
               Column("payload_json", STRING), Column("payload_hash", OptionT(STRING)),
               Column("expected_next_seq", OptionT(U64))), "sync.append", U64),
    ReducerDef("ack_checkpoint", (Column("client_id", STRING), Column("stream_id", STRING),
               Column("epoch", U64), Column("seq", U64)), "sync.checkpoint.write"),
    ReducerDef("upsert_presence", (Column("session_id", STRING), Column("device_id", STRING),
               Column("node_id", STRING), Column("status", STRING), Column("region", STRING),
               Column("ttl_ms", U64)), "presence.write"),
    ReducerDef("publish_provider_capability", (Column("provider_id", STRING),
               Column("capability_json", STRING), Column("nip90_kinds", ArrayT(U32)),
               Column("price_hint_sats", U64), Column("status", STRING)), "provider.publish"),
    ReducerDef("open_compute_assignment", (Column("request_id", STRING), Column("job_kind", U32),
               Column("request_json", STRING)), "compute.request"),
    ReducerDef("update_compute_assignment", (Column("request_id", STRING),
               Column("expected_version", U64), Column("status", STRING),
               Column("provider_id", OptionT(STRING)), Column("result_json", OptionT(STRING))), None),
    ReducerDef("enqueue_bridge_event", (Column("outbox_id", STRING), Column("source", STRING),
               Column("nostr_kind", U32), Column("tags_json", STRING), Column("content", STRING)),
               "bridge.enqueue"),
    ReducerDef("mark_bridge_event_sent", (Column("outbox_id", STRING), Column("nostr_event_id", STRING),
               Column("relays", ArrayT(STRING))), "bridge.mark_sent"),
    ReducerDef("record_bridge_failure", (Column("outbox_id", STRING), Column("error", STRING),
               Column("retry_after_ms", U64)), "bridge.mark_sent"),
    ReducerDef("publish_stream_signal", (Column("stream_id", STRING), Column("kind", STRING),
               Column("payload_json", STRING)), "sync.append"),
    ReducerDef("reset_stream_epoch", (Column("stream_id", STRING),), "sync.admin"),
)
REDUCER_BY_NAME: Mapping[str, ReducerDef] = {r.name: r for r in REDUCERS}

SCOPES: tuple[str, ...] = (
    "sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write", "provider.publish",
    "compute.request", "compute.assign", "compute.execute", "bridge.enqueue", "bridge.mark_sent",
    "sync.admin",
)
BRIDGE_SCOPES: frozenset[str] = frozenset({"bridge.enqueue", "bridge.mark_sent"})
