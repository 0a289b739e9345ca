"""The HTTP routes' JSON as SpacetimeDB writes and reads it (crates/client-api, crates/sats serde).

The oracle is hand-written JSON derived from the Rust source's layout, never our own encoder:

* ``POST /sql`` answers ``Vec<SqlStmtResult<ProductValue>>`` (client-api-messages/src/http.rs); a
  row is a ``ProductValue`` serialized through serde *without its type* (sats/src/ser/impls.rs):
  a product is a JSON array of its fields, a sum ``[tag, payload]`` (``serialize_variant`` with no
  name), a unit ``[]``; a ``u256`` goes through ethnum's serde, ``"0x"`` + lowercase hex without
  leading zeros.  So an ``Identity`` (product ``{__identity__: u256}``) is ``["0x<hex>"]``, a
  ``Timestamp`` ``[micros]``, an ``Option`` ``[0, v]`` / ``[1, []]``.  ``spacetime sql`` decodes
  each row with the schema as a typed seed (cli/src/subcommands/sql.rs ``from_json_seed``): a
  product from an array or an object, never from a bare string.
* ``POST /call/:reducer`` reads the body with that typed seed (core/src/host/mod.rs
  ``FunctionArgs::Json`` -> schema ``ArgsSeed``): the arguments as an array *or* an object keyed by
  parameter name; a product from an array or an object; a sum from ``[tag, v]``, ``{"name": v}``
  or, for an ``Option``, ``null`` (``visit_unit``: none).
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import blake3
import pytest
from support.server import WireClient, call_http, running_server
from support.server import http as http_request

from adapters import satsjson
from spec.schema import REDUCER_BY_NAME, TABLE_BY_NAME
from spec.values import BOOL, I64, IDENTITY, STRING, TIMESTAMP, U32, U64, ArrayT, OptionT, SatsType

C2 = "c200" + "ab" * 30
DB = "/v1/database/autopilot-sync"

# (type, value as spec.values holds it, the JSON text SpacetimeDB's /sql writes for it)
SQL_VALUE_CASES: list[tuple[SatsType, object, str]] = [
    (STRING, "héllo", '"h\\u00e9llo"'),
    (BOOL, True, "true"),
    (U32, 4294967295, "4294967295"),
    (U64, 18446744073709551615, "18446744073709551615"),
    (I64, -9223372036854775808, "-9223372036854775808"),
    (IDENTITY, C2, f'["0x{C2}"]'),
    (IDENTITY, "00" * 31 + "01", '["0x1"]'),  # ethnum: no leading zeros
    (IDENTITY, "00" * 32, '["0x0"]'),
    (IDENTITY, "000f" + "00" * 30, '["0xf' + "00" * 30 + '"]'),
    (TIMESTAMP, 1_700_000_000_000_000, "[1700000000000000]"),
    (TIMESTAMP, -1, "[-1]"),
    (OptionT(STRING), None, "[1, []]"),
    (OptionT(STRING), "x", '[0, "x"]'),
    (OptionT(IDENTITY), C2, f'[0, ["0x{C2}"]]'),
    (OptionT(IDENTITY), None, "[1, []]"),
    (ArrayT(U32), (), "[]"),
    (ArrayT(U64), (1, 18446744073709551615), "[1, 18446744073709551615]"),
    (ArrayT(STRING), ("a", "b"), '["a", "b"]'),
]


@pytest.mark.parametrize(("t", "value", "text"), SQL_VALUE_CASES)
def test_sql_value_json_is_upstreams_untyped_form(t: SatsType, value: object, text: str) -> None:
    assert satsjson.untyped_json(t, value) == json.loads(text)


# (type, a JSON text SpacetimeDB's typed seed reads, the value it means)
CALL_VALUE_CASES: list[tuple[SatsType, str, object]] = [
    (IDENTITY, f'["0x{C2}"]', C2),
    (IDENTITY, f'{{"__identity__": "0x{C2}"}}', C2),
    (IDENTITY, '["0x1"]', "00" * 31 + "01"),
    (IDENTITY, '{"__identity__": "0xF"}', "00" * 31 + "0f"),
    (IDENTITY, '["0x' + "0" * 70 + '1"]', "00" * 31 + "01"),  # ethnum reads digits, only the value must fit
    (TIMESTAMP, "[1700000000000000]", 1_700_000_000_000_000),
    (TIMESTAMP, '{"__timestamp_micros_since_unix_epoch__": -1}', -1),
    (OptionT(STRING), '[0, "x"]', "x"),
    (OptionT(STRING), "[1, []]", None),
    (OptionT(STRING), "null", None),
    (OptionT(STRING), '{"some": "x"}', "x"),
    (OptionT(STRING), '{"none": []}', None),
    (OptionT(U64), "[0, 18446744073709551615]", 18446744073709551615),
    (OptionT(IDENTITY), f'[0, ["0x{C2}"]]', C2),
    (ArrayT(U32), "[1, 2]", (1, 2)),
]


@pytest.mark.parametrize(("t", "text", "value"), CALL_VALUE_CASES)
def test_call_args_take_upstreams_forms(t: SatsType, text: str, value: object) -> None:
    assert satsjson.from_json(t, json.loads(text), "a") == value


# JSON upstream's typed seed refuses, and so do we
CALL_REFUSED: list[tuple[SatsType, str]] = [
    (IDENTITY, '["0x' + "1" * 65 + '"]'),  # past 256 bits
    (IDENTITY, '["0x"]'),
    (IDENTITY, '["0xc2", 1]'),  # a product of one field
    (IDENTITY, "[]"),
    (TIMESTAMP, "[1, 2]"),
    (OptionT(STRING), '[2, "x"]'),  # Option has two variants
    (OptionT(STRING), '[1, "x"]'),  # none carries the unit
    (OptionT(STRING), '[0]'),
    (OptionT(STRING), '[0, 5]'),
]


@pytest.mark.parametrize(("t", "text"), CALL_REFUSED)
def test_call_args_refuse_what_upstream_refuses(t: SatsType, text: str) -> None:
    with pytest.raises(satsjson.SatsJsonError):
        satsjson.from_json(t, json.loads(text), "a")


def test_call_args_by_name_as_upstream() -> None:
    """``ArgsSeed::visit_named_product``: an object keyed by parameter name, in any order; every
    parameter present, no other key."""
    params = REDUCER_BY_NAME["append_sync_event"].args
    body = {"expected_next_seq": [0, 3], "stream_id": "a.s", "payload_hash": None,
            "idempotency_key": "k", "payload_json": "{}"}
    assert satsjson.args_from_json(params, body) == ("a.s", "k", "{}", None, 3)
    with pytest.raises(satsjson.SatsJsonError):
        satsjson.args_from_json(params, {k: v for k, v in body.items() if k != "payload_hash"})
    with pytest.raises(satsjson.SatsJsonError):
        satsjson.args_from_json(params, {**body, "extra": 1})


def _sql(st: Any, tok: str, text: str) -> Any:
    res = http_request("POST", f"{st.base}{DB}/sql", text, {"Authorization": f"Bearer {tok}"})
    assert res.status == 200, res.text
    assert res.headers["content-type"].startswith("application/json")
    return res.json()


def test_sql_rows_over_the_wire_are_upstreams_form(tmp_path: Path) -> None:
    """An Identity column over /sql is ``["0x<hex>"]`` (``spacetime sql`` cannot read a bare string
    where a product is due), a Timestamp ``[micros]``, an Option ``[tag, payload]``."""
    with running_server(tmp_path) as st:
        tok = st.token(streams=["demo.*"])
        assert call_http(st, tok, "append_sync_event", ["demo.s", "k1", '{"a":1}', {"none": []},
                                                        {"none": []}]).status == 200
        assert call_http(st, tok, "open_compute_assignment", ["r1", 5050, "{}"]).status == 200
        me = http_request("POST", f"{st.base}/v1/identity/websocket-token",
                  headers={"Authorization": f"Bearer {tok}"})
        assert me.status == 200
        (stmt,) = _sql(st, tok, "SELECT * FROM sync_event WHERE stream_id = 'demo.s'")
        names = [e["name"]["some"] for e in stmt["schema"]["elements"]]
        assert names == [c.name for c in TABLE_BY_NAME["sync_event"].columns]
        (row,) = stmt["rows"]
        producer = row[names.index("producer")]
        assert isinstance(producer, list) and len(producer) == 1 and producer[0].startswith("0xc200")
        assert len(producer[0]) == 66
        committed = row[names.index("committed_at")]
        assert isinstance(committed, list) and len(committed) == 1 and isinstance(committed[0], int)
        (stmt,) = _sql(st, tok, "SELECT * FROM compute_assignment WHERE request_id = 'r1'")
        names = [e["name"]["some"] for e in stmt["schema"]["elements"]]
        (row,) = stmt["rows"]
        assert row[names.index("provider_id")] == [1, []]
        assert row[names.index("provider_owner")] == [1, []]
        assert row[names.index("requester")] == producer  # the same caller


def test_call_route_takes_args_by_name_and_upstream_forms(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        tok = st.token(streams=["demo.*"])
        named = http_request("POST", f"{st.base}{DB}/call/append_sync_event",
                     json.dumps({"stream_id": "demo.s", "idempotency_key": "k1", "payload_json": "{}",
                                 "payload_hash": [1, []], "expected_next_seq": [0, 1]}),
                     {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        assert named.status == 200, named.text
        assert named.headers["syncref-return-value"] == "1"
        by_null = call_http(st, tok, "append_sync_event", ["demo.s", "k2", "{}", None, None])
        assert by_null.status == 200, by_null.text
        assert by_null.headers["syncref-return-value"] == "2"


def test_websocket_token_takes_the_query_token_as_upstream(tmp_path: Path) -> None:
    """``create_websocket_token`` takes ``SpacetimeAuthRequired``, whose credentials come from
    ``Authorization: Bearer`` or else ``?token=`` (client-api auth.rs ``SpacetimeCreds``)."""
    with running_server(tmp_path) as st:
        tok = st.token(scopes=["sync.subscribe"], streams=["demo.*"])
        by_query = http_request("POST", f"{st.base}/v1/identity/websocket-token?token={tok}")
        assert by_query.status == 200, by_query.text
        assert by_query.json()["token"].count(".") == 2
        neither = http_request("POST", f"{st.base}/v1/identity/websocket-token")
        assert neither.status == 401 and neither.text.startswith("Authorization required")
        # the header wins, as everywhere: a malformed one is refused even with a good query token
        both = http_request("POST", f"{st.base}/v1/identity/websocket-token?token={tok}",
                            headers={"Authorization": "Basic x"})
        assert both.status == 400
        bad = http_request("POST", f"{st.base}/v1/identity/websocket-token?token=not-a-jwt")
        assert bad.status == 401


@pytest.mark.parametrize("version", [2, 3])
def test_a_text_frame_closes_1011_with_upstreams_reason(tmp_path: Path, version: int) -> None:
    """message_handlers_v2.rs / _v3.rs: ``TextDecode(serde_json::Error::custom("vN websocket does
    not support text messages"))``, closed 1011 with ``format!("{e:#}")`` (a custom serde_json
    error has no position, so its text is the message)."""
    with running_server(tmp_path) as st:
        c = WireClient(st, st.token(), version=version)
        c.ws.send("hello")
        assert c.closed() == (1011, f"v{version} websocket does not support text messages")


# (Content-Type header or None, reducer) -> status, as database.rs `call`: the TypedHeader<ContentType>
# extractor (400 when missing) and assert_content_type_json (415 unless exactly application/json)
# run before the reducer is looked up (404)
CALL_HEAD_CASES: list[tuple[str | None, str, int]] = [
    (None, "append_sync_event", 400),
    (None, "no_such_reducer_here", 400),
    ("text/plain", "no_such_reducer_here", 415),
    ("application/json", "no_such_reducer_here", 404),
    ("text/plain", "append_sync_event", 415),
]


@pytest.mark.parametrize(("content_type", "reducer", "status"), CALL_HEAD_CASES)
def test_call_checks_content_type_before_the_reducer(tmp_path: Path, content_type: str | None, reducer: str,
                                                     status: int) -> None:
    with running_server(tmp_path) as st:
        headers = {"Authorization": f"Bearer {st.token()}", "Content-Length": "2"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection("127.0.0.1", st.server.port, timeout=15)  # urllib adds a Content-Type
        try:
            conn.request("POST", f"{DB}/call/{reducer}", body=b"[]", headers=headers)
            res = conn.getresponse()
            assert res.status == status, res.read()
        finally:
            conn.close()


def test_database_routes_take_the_name_or_the_database_identity(tmp_path: Path) -> None:
    """Every ``/v1/database/:name_or_identity/...`` route takes the database's name or its identity
    (client-api util.rs ``NameOrIdentity``), and ``GET .../identity`` answers that identity as hex
    text (database.rs ``get_identity``): ``spacetime sql`` / ``call`` resolve the name there and
    then address the database by its identity (cli util.rs ``spacetime_dns``, api.rs ``db_uri``)."""
    with running_server(tmp_path) as st:
        tok = st.token(streams=["demo.*"])
        res = http_request("GET", f"{st.base}{DB}/identity")
        assert res.status == 200 and res.headers["content-type"].startswith("text/plain")
        ident = res.text
        raw = bytes.fromhex(ident)
        assert len(ident) == 64 and ident == ident.lower()
        # the form Identity::from_claims gives, checked independently: c2 00 ++ blake3(c2 00 ++ h)[:4] ++ h
        assert raw[:2] == b"\xc2\x00" and blake3.blake3(b"\xc2\x00" + raw[6:]).digest()[:4] == raw[2:6]
        for seg in (ident, ident.upper()):
            again = http_request("GET", f"{st.base}/v1/database/{seg}/identity")
            assert (again.status, again.text) == (200, ident)
            sql = http_request("POST", f"{st.base}/v1/database/{seg}/sql", "SELECT * FROM sync_stream",
                               {"Authorization": f"Bearer {tok}"})
            assert sql.status == 200, sql.text
            assert http_request("GET", f"{st.base}/v1/database/{seg}/schema").status == 200
            assert call_http_at(st, seg, tok).status == 200
            c = WireClient(st, tok, database=seg)
            assert c.initial.token == tok
            c.close()
        for other in ("ab" * 32, "nope"):
            assert http_request("GET", f"{st.base}/v1/database/{other}/identity").status == 404
            assert http_request("POST", f"{st.base}/v1/database/{other}/sql", "SELECT * FROM sync_stream",
                                {"Authorization": f"Bearer {tok}"}).status == 404


def call_http_at(st: Any, seg: str, tok: str) -> Any:
    return http_request("POST", f"{st.base}/v1/database/{seg}/call/publish_stream_signal",
                        json.dumps(["demo.s", "typing", "{}"]),
                        {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})


# bodies SpacetimeDB's typed seed refuses for a repeated key: a product's `duplicate field`, a sum's
# `expected map representing sum type to have exactly one field`
DUPLICATE_KEY_BODIES = [
    '{"stream_id": "demo.s", "stream_id": "demo.t", "idempotency_key": "k", "payload_json": "{}",'
    ' "payload_hash": null, "expected_next_seq": null}',
    '["demo.s", "k", "{}", {"none": [], "none": []}, {"some": 1, "some": 2}]',
    '["demo.s", "k", "{}", null, {"some": 1, "some": 1}]',
]


@pytest.mark.parametrize("body", DUPLICATE_KEY_BODIES)
def test_call_refuses_a_repeated_key_as_upstream(tmp_path: Path, body: str) -> None:
    with running_server(tmp_path) as st:
        res = http_request("POST", f"{st.base}{DB}/call/append_sync_event", body,
                           {"Authorization": f"Bearer {st.token()}", "Content-Type": "application/json"})
        assert res.status == 400 and res.text.startswith("invalid_argument") and "duplicate" in res.text, res.text
