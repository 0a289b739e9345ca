"""What SpacetimeDB's CLI does with our answers before it even decodes them (review of the
upstream-compatible HTTP JSON, helper revx).

The oracle is the Rust source, read (crates/cli, crates/client-api, crates/lib), restated here as
hand-written expectations -- never our own encoder:

* ``spacetime call`` / ``describe`` read the module with ``ClientApi::module_def`` (cli api.rs):
  ``?version=10``, on a 4xx ``?version=9``, then ``json_or_error`` -> ``ensure_content_type
  ("application/json")`` (cli util.rs), which compares the ``Content-Type`` header's *value* with
  ``"application/json"`` byte for byte (``ty == content_type``).  A success whose header is
  ``application/json; charset=utf-8`` is refused there: "was success but did not have
  content-type: application/json".  ``spacetime sql`` checks the same on ``/sql``.  (axum's
  ``Json`` writes exactly ``application/json``.)
* ``:name_or_identity`` (client-api util.rs ``NameOrIdentity``'s ``Deserialize``): a segment that
  ``Identity::from_hex`` reads is the identity -- ``from_hex_pad`` (lib lib.rs) drops a leading
  ``0x`` first, and the ``hex`` crate takes either case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.server import http, running_server

from adapters import satsjson
from adapters.auth import AuthConfig
from spec.values import STRING, OptionT

DB = "/v1/database/autopilot-sync"


def test_spacetime_call_reads_the_v9_schema_as_json(tmp_path: Path) -> None:
    """The two requests ``ClientApi::module_def`` makes, judged as ``ensure_content_type`` does."""
    with running_server(tmp_path) as st:
        v10 = http("GET", f"{st.base}{DB}/schema?version=10")
        assert 400 <= v10.status < 500  # is_client_error: the CLI asks for 9
        v9 = http("GET", f"{st.base}{DB}/schema?version=9")
        assert v9.status == 200
        assert v9.headers["content-type"] == "application/json", v9.headers["content-type"]


def test_spacetime_sql_reads_the_answer_as_json(tmp_path: Path) -> None:
    with running_server(tmp_path) as st:
        res = http("POST", f"{st.base}{DB}/sql", "SELECT * FROM sync_stream",
                   {"Authorization": f"Bearer {st.token()}"})
        assert res.status == 200 and res.headers["content-type"] == "application/json"


def test_the_identity_routes_answer_json_as_axum_writes_it(tmp_path: Path) -> None:
    """``POST /v1/identity`` and ``/v1/identity/websocket-token`` answer ``axum::Json`` upstream
    (client-api routes/identity.rs): the same exact header."""
    with running_server(tmp_path, auth=AuthConfig(allow_anonymous=True)) as st:
        minted = http("POST", f"{st.base}/v1/identity")
        assert minted.status == 200 and minted.headers["content-type"] == "application/json"
        ws = http("POST", f"{st.base}/v1/identity/websocket-token",
                  headers={"Authorization": f"Bearer {minted.json()['token']}"})
        assert ws.status == 200 and ws.headers["content-type"] == "application/json"
        assert set(ws.json()) == {"token"}


def test_the_database_identity_with_0x_names_the_database(tmp_path: Path) -> None:
    """``from_hex_pad`` drops a leading ``0x`` (lowercase only) before ``Identity::from_hex``, so
    ``/v1/database/0x<identity>/...`` addresses the database as the bare identity does; ``0X`` is
    not stripped there (the segment is then a name, and no database has it)."""
    with running_server(tmp_path) as st:
        ident = http("GET", f"{st.base}{DB}/identity").text
        tok = st.token()
        for seg in (f"0x{ident}", f"0x{ident.upper()}"):
            got = http("GET", f"{st.base}/v1/database/{seg}/identity")
            assert (got.status, got.text) == (200, ident)
            assert http("GET", f"{st.base}/v1/database/{seg}/schema?version=9").status == 200
            sql = http("POST", f"{st.base}/v1/database/{seg}/sql", "SELECT * FROM sync_stream",
                       {"Authorization": f"Bearer {tok}"})
            assert sql.status == 200, sql.text
        for seg in (f"0X{ident}", f"0x0x{ident}", f"0x{ident}0", "0x"):
            assert http("GET", f"{st.base}/v1/database/{seg}/identity").status == 404


# An Option's variant as upstream's sats serde reads it (de/serde.rs ``VariantVisitor``): a map's one
# key or a sequence's first element, either a number (``visit_u64``: a u8 tag) or a string -- which
# is a tag when ``str::parse::<u8>`` reads it (digits, an optional ``+``) and a variant name
# otherwise.  (JSON text, the value it means.)
OPTION_TAG_CASES: list[tuple[str, object]] = [
    ('["some", "x"]', "x"),
    ('["none", []]', None),
    ('["0", "x"]', "x"),
    ('["1", {}]', None),
    ('["+0", "x"]', "x"),
    ('["00", "x"]', "x"),
    ('{"0": "x"}', "x"),
    ('{"1": []}', None),
    ('{"+1": []}', None),
]


@pytest.mark.parametrize(("text", "value"), OPTION_TAG_CASES)
def test_an_options_tag_is_read_as_upstream_reads_it(text: str, value: object) -> None:
    assert satsjson.from_json(OptionT(STRING), json.loads(text), "a") == value


OPTION_TAG_REFUSED = [
    '["2", "x"]',  # a tag past the variants
    '["256", "x"]',  # not a u8: a name, and no variant has it
    '["Some", "x"]',  # names are exact
    '{"2": "x"}',
    '{" 0": "x"}',
    '["-0", "x"]',
    '["0", "x", 1]',
    '[true, "x"]',
    '["none", 5]',  # none carries the unit
]


@pytest.mark.parametrize("text", OPTION_TAG_REFUSED)
def test_an_options_tag_upstream_refuses_is_refused(text: str) -> None:
    with pytest.raises(satsjson.SatsJsonError):
        satsjson.from_json(OptionT(STRING), json.loads(text), "a")


def test_a_call_with_string_option_tags(tmp_path: Path) -> None:
    """The call route end to end: ``expected_next_seq`` as ``["some", 1]`` on a new stream is the
    first append (seq 1), ``payload_hash`` as ``{"1": []}`` none."""
    body = '["t.s", "k1", "{}", {"1": []}, ["some", 1]]'
    with running_server(tmp_path) as st:
        res = http("POST", f"{st.base}{DB}/call/append_sync_event", body,
                   {"Authorization": f"Bearer {st.token()}", "Content-Type": "application/json"})
        assert res.status == 200, res.text
        again = http("POST", f"{st.base}{DB}/call/append_sync_event", '["t.s", "k2", "{}", null, ["0", 1]]',
                     {"Authorization": f"Bearer {st.token()}", "Content-Type": "application/json"})
        assert again.status == 530 and again.text.startswith("sequence_conflict"), again.text


def _series(metrics_text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


def test_many_distinct_names_and_identities_add_no_metric_series(tmp_path: Path) -> None:
    """A client naming many databases (names, identities, ``0x`` forms) grows no label set: the
    route label is fixed per route and the status is one of a few codes."""
    with running_server(tmp_path) as st:
        for i in range(3):
            http("GET", f"{st.base}/v1/database/n{i}/identity")
            http("POST", f"{st.base}/v1/database/{i:064x}/sql", "SELECT * FROM sync_stream",
                 {"Authorization": f"Bearer {st.token()}"})
        before = _series(http("GET", f"{st.base}/metrics").text)
        for i in range(3, 60):
            http("GET", f"{st.base}/v1/database/n{i}/identity")
            http("GET", f"{st.base}/v1/database/0x{i:064x}/schema?version=9")
            http("POST", f"{st.base}/v1/database/{i:064x}/sql", "SELECT * FROM sync_stream",
                 {"Authorization": f"Bearer {st.token()}"})
        after = _series(http("GET", f"{st.base}/metrics").text)
        grown = {s for s in after - before if "_created" not in s}
        assert grown <= {'syncref_http_requests_total{route="schema",status="404"}',
                         'syncref_http_requests_total{route="metrics",status="200"}'}, sorted(grown)
        assert not any(f"n{i}" in s or f"{i:064x}" in s for s in after for i in range(60))
