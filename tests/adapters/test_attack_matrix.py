"""The attack matrix: one table, one row per attack, each run against a real server over the wire.

Every row names the attack, how it is made, and the documented answer it must get (HTTP status
and error text, a reducer error code, or a subscription error code); after the whole matrix the
persistent state must be exactly what the legitimate setup wrote -- no attack left a trace -- and a
bystander still appends.  The rows that need a process of their own (oversized frames, slow
readers, slow-loris upgrades, connection caps, deep JSON, huge payloads, token expiry of a live
connection) live in ``tests/adapters/test_hostile.py`` and ``tests/adapters/test_limits.py``; the
token-validation unit matrix in ``tests/adapters/test_auth.py``.  docs/reliability.md lists them all.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.server import RawSocketClient, ServerThread, WireClient, call_http, http, running_server, with_limits
from websockets.exceptions import InvalidStatus

from adapters import wire
from adapters.auth import REVOKED_JTI_FILE, Authenticator, KeyStore
from spec.errors import SyncError
from spec.schema import REDUCERS, SCOPES, TABLES

VICTIM_STREAM = "secret.s"
MINE = "mine.a"
NONE = {"none": []}  # an Option's None in the HTTP JSON call body


@dataclass
class World:
    st: ServerThread
    victim: str  # a token with every scope on every stream
    attacker: str  # sync.subscribe + sync.append + presence/provider/checkpoint rights on mine.* only
    reader: str  # sync.subscribe only, on mine.*


def _claims_token(st: ServerThread, **overrides: Any) -> str:
    """A token signed with the server's key whose claims are a valid token's, overridden."""
    keys = KeyStore.load_or_create(st.config.data_dir)
    good = Authenticator(st.config.auth, keys).mint(subject="forger", scopes=SCOPES, streams=("*",), ttl_s=3600)
    claims = jwt.decode(good, options={"verify_signature": False})
    claims.update(overrides)
    for k, v in list(claims.items()):
        if v is None:
            del claims[k]
    return jwt.encode(claims, keys.private_key, algorithm="ES256")


def _b64(d: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def token_attacks(st: ServerThread) -> dict[str, str]:
    keys = KeyStore.load_or_create(st.config.data_dir)
    good = Authenticator(st.config.auth, keys).mint(subject="forger", scopes=SCOPES, streams=("*",), ttl_s=3600)
    header, payload, _sig = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    other_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = keys.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    hs = (_b64({"alg": "HS256", "typ": "JWT"}) + "." + payload)
    import hashlib
    import hmac
    hs_sig = base64.urlsafe_b64encode(hmac.new(public_pem, hs.encode(), hashlib.sha256).digest()).rstrip(b"=")
    return {
        "expired": _claims_token(st, exp=now - 3600, iat=now - 7200),
        "not_yet_valid": _claims_token(st, nbf=now + 3600),
        "issued_in_the_future": _claims_token(st, iat=now + 3600),
        "wrong_signature": jwt.encode(claims, other_key, algorithm="ES256"),
        "tampered_payload": f"{header}.{_b64({**claims, 'oa_sync_scopes': list(SCOPES), 'sub': 'admin'})}.{_sig}",
        "wrong_audience": _claims_token(st, aud=["someone-else"]),
        "wrong_issuer": _claims_token(st, iss="https://evil.example"),
        "alg_none": _b64({"alg": "none", "typ": "JWT"}) + "." + payload + ".",
        "hs256_with_the_public_key": hs + "." + hs_sig.decode(),
        "hex_identity_of_someone_else": _claims_token(st, hex_identity="c200" + "ab" * 30),
        "garbage": "not.a.jwt",
    }


# attack -> the documented 401 text it gets (the start of the body)
TOKEN_ROWS = {
    "expired": "token expired",
    "not_yet_valid": "token not yet valid (nbf",
    "issued_in_the_future": "token not yet valid (iat",
    "wrong_signature": "token signature invalid",
    "tampered_payload": "token signature invalid",
    "wrong_audience": "token audience must include 'spacetimedb'",
    "wrong_issuer": "token issuer 'https://evil.example' is not trusted",
    "alg_none": "token algorithm 'none' is not accepted",
    "hs256_with_the_public_key": "token algorithm 'HS256' is not accepted",
    "hex_identity_of_someone_else": "token hex_identity does not match",
    "garbage": "token malformed",
}


SAMPLE_ARGS: dict[str, tuple[Any, ...]] = {
    "append_sync_event": (VICTIM_STREAM, "evil", '{"evil":1}', None, None),
    "ack_checkpoint": ("victim-laptop", VICTIM_STREAM, 1, 1),
    "upsert_presence": ("victim-session", "dev", "node", "online", "eu", 30_000),
    "publish_provider_capability": ("victim-provider", '{"evil":1}', (5000,), 1, "active"),
    "open_compute_assignment": ("evil-request", 5000, '{"evil":1}'),
    "update_compute_assignment": ("victim-request", 1, "cancelled", None, None),
    "enqueue_bridge_event": ("evil-outbox", "evil", 30078, "[]", "evil"),
    "mark_bridge_event_sent": ("victim-outbox", "e" * 64, ("wss://evil",)),
    "record_bridge_failure": ("victim-outbox", "evil", 1000),
    "publish_stream_signal": (VICTIM_STREAM, "typing", "{}"),
    "reset_stream_epoch": (VICTIM_STREAM,),
}


def persistent_state(st: ServerThread) -> dict[str, frozenset[Any]]:
    def read() -> dict[str, frozenset[Any]]:
        return {t.name: frozenset(st.server.engine.db.rows(t.name)) for t in TABLES if not t.event}
    out: dict[str, frozenset[Any]] = st.call(read)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_server(Path(tmp_path_factory.mktemp("attacks"))) as st:
        victim = st.token(SCOPES, ("*",))
        attacker = st.token(("sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write",
                             "provider.publish", "compute.request"), ("mine.*",))
        reader = st.token(("sync.subscribe",), ("mine.*",))
        for i, stream in enumerate((VICTIM_STREAM, MINE)):
            for n in range(3):
                r = call_http(st, victim, "append_sync_event", [stream, f"k{n}", json.dumps({"n": n, "s": i}), NONE,
                                                                NONE])
                assert r.status == 200, r.text
        # over HTTP: no connection whose end would later mark presence rows offline mid-matrix
        setup = [("ack_checkpoint", ["victim-laptop", VICTIM_STREAM, 1, 2]),
                 ("ack_checkpoint", ["victim-laptop", MINE, 1, 2]),
                 ("upsert_presence", ["victim-session", "dev", "node", "online", "eu", 300_000]),
                 ("publish_provider_capability", ["victim-provider", '{"v":1}', [5000], 1, "active"]),
                 ("open_compute_assignment", ["victim-request", 5000, '{"v":1}']),
                 ("enqueue_bridge_event", ["victim-outbox", "victim", 30078, "[]", "hello"])]
        for name, args in setup:
            r = call_http(st, victim, name, args)
            assert r.status == 200, (name, r.text)
        yield World(st, victim, attacker, reader)


def reducer_code(r: wire.ReducerResult) -> str:
    """The error code of a refused call (the attack must not have succeeded)."""
    assert isinstance(r.outcome, wire.ReducerErr), f"the attack was not refused: {r}"
    return SyncError.parse(wire.decode_string(r.outcome.error)).code.value


# --- the matrix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", sorted(TOKEN_ROWS))
def test_forged_and_invalid_tokens_are_401_and_write_nothing(world: World, attack: str) -> None:
    before = persistent_state(world.st)
    token = token_attacks(world.st)[attack]
    res = call_http(world.st, token, "append_sync_event", [VICTIM_STREAM, f"tok-{attack}", '{"x":1}', NONE, NONE])
    assert res.status == 401 and res.text.startswith(TOKEN_ROWS[attack]), (attack, res.status, res.text)
    ws = http("POST", f"{world.st.base}/v1/identity/websocket-token", b"", {"Authorization": f"Bearer {token}"})
    assert ws.status == 401 and ws.text.startswith(TOKEN_ROWS[attack]), (attack, ws.status, ws.text)
    assert persistent_state(world.st) == before


def test_a_token_for_another_database_reaches_nothing(world: World) -> None:
    before = persistent_state(world.st)
    res = http("POST", f"{world.st.base}/v1/database/other-db/call/append_sync_event",
               json.dumps([MINE, "x", '{"x":1}', NONE, NONE]),
               {"Authorization": f"Bearer {world.victim}", "Content-Type": "application/json"})
    assert res.status == 404, (res.status, res.text)
    assert persistent_state(world.st) == before


def test_a_revoked_jti_is_401_everywhere_and_closes_its_open_connection(world: World) -> None:
    """``syncref token revoke`` names a token: its open connection is closed (1008) within
    a few seconds, and the token -- and a websocket token traded for it before -- gets 401 ``token
    revoked`` on every route; other tokens keep working, and nothing was written."""
    st = world.st
    own = st.token(("sync.subscribe", "sync.append"), ("mine.*",))  # not the shared attacker: revoked for good
    traded = http("POST", f"{st.base}/v1/identity/websocket-token", b"", {"Authorization": f"Bearer {own}"})
    assert traded.status == 200
    ws_token = json.loads(traded.text)["token"]
    live = WireClient(st, own)
    assert isinstance(live.subscribe(1, "SELECT * FROM sync_stream"), wire.SubscribeApplied)
    before = persistent_state(st)
    revoke = subprocess.run([sys.executable, "-m", "adapters.cli", "token", "revoke", "--data",
                             str(st.config.data_dir), "--token", own],
                            capture_output=True, text=True, timeout=60, check=False)
    jti = jwt.decode(own, options={"verify_signature": False})["jti"]
    assert revoke.returncode == 0 and f"revoked jti {jti}" in revoke.stdout, revoke.stderr
    assert live.closed(timeout=20) == (1008, "token revoked: reconnect with another token")
    for token in (own, ws_token):
        res = call_http(st, token, "append_sync_event", [MINE, "after-revoke", '{"x":1}', NONE, NONE])
        assert (res.status, res.text) == (401, f"token revoked (jti {jti})")
        again = http("POST", f"{st.base}/v1/identity/websocket-token", b"", {"Authorization": f"Bearer {token}"})
        assert again.status == 401 and again.text.startswith("token revoked")
        with pytest.raises(InvalidStatus) as refused:
            WireClient(st, token)
        assert refused.value.response.status_code == 401
    assert persistent_state(st) == before
    still = http("POST", f"{st.base}/v1/identity/websocket-token", b"", {"Authorization": f"Bearer {world.victim}"})
    assert still.status == 200  # another token is unaffected (a read: the shared world's state stays as it was)
    assert 'syncref_closes_total{cause="token_revoked"} 1.0' in http("GET", f"{st.base}/metrics").text


def test_peers_that_never_complete_a_revocation_close_hold_back_no_other(tmp_path: Path) -> None:
    """A revoked token held by connections whose peers read nothing (their sockets' buffers are
    full, so the close frame waits for room): the other token revoked in the same change is closed,
    and so is a later revocation's connection.  The revocation watcher awaited each close itself:
    it waited for every silent peer in turn, and a close that ended cancelled (aiohttp's drain
    waiter, shared with the connection's cancelled sender) killed the watcher, so no revocation
    closed an open connection again."""
    with running_server(tmp_path, limits=with_limits(close_timeout_s=10.0)) as st:
        silent_tok, other_tok, writer = st.token(), st.token(), st.token()
        silent = [RawSocketClient(st, silent_tok, rcvbuf=4096) for _ in range(2)]  # never read
        for peer in silent:
            peer.send(wire.Subscribe(1, 1, (f"SELECT * FROM sync_event WHERE stream_id = '{MINE}'",)))
        live = WireClient(st, other_tok)

        def buffered() -> list[int]:
            return st.call(lambda: [s.request.transport.get_write_buffer_size() for s in st.server.sessions.values()
                                    if s.verified.raw.get("jti") == jtis[0] and s.request.transport is not None])

        jtis = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in (silent_tok, other_tok)]
        payload = json.dumps({"pad": "y" * 100_000})
        for i in range(400):  # until both silent peers' kernel buffers are full and their transports hold more
            assert call_http(st, writer, "append_sync_event", [MINE, f"k{i}", payload, NONE, NONE]).status == 200
            if min(buffered(), default=0) > 100 * 1024:  # past the high-water mark (64 KiB): paused
                break
        assert min(buffered()) > 100 * 1024, buffered()
        (st.config.data_dir / REVOKED_JTI_FILE).write_text("\n".join(jtis) + "\n")
        assert live.closed(timeout=40) == (1008, "token revoked: reconnect with another token")
        assert st.call(lambda: all(s.closing for s in st.server.sessions.values()
                                   if s.verified.raw.get("jti") == jtis[0]))  # closed or closing
        later_tok = st.token()
        later = WireClient(st, later_tok)
        later_jti = jwt.decode(later_tok, options={"verify_signature": False})["jti"]
        (st.config.data_dir / REVOKED_JTI_FILE).write_text("\n".join([*jtis, later_jti]) + "\n")
        assert later.closed(timeout=40) == (1008, "token revoked: reconnect with another token")
        for peer in silent:
            peer.close()


@pytest.mark.parametrize("reducer", [r.name for r in REDUCERS])
def test_scope_escalation_through_every_reducer_is_missing_scope(world: World, reducer: str) -> None:
    """A subscribe-only token calls every reducer: each is refused with missing_scope, before any
    argument or state check, and writes nothing."""
    assert set(SAMPLE_ARGS) == {r.name for r in REDUCERS}, "a new reducer needs a row"
    before = persistent_state(world.st)
    c = WireClient(world.st, world.reader)
    try:
        r = c.call(reducer, *SAMPLE_ARGS[reducer])
    finally:
        c.close()
    assert reducer_code(r) == "missing_scope", r
    assert persistent_state(world.st) == before


# Check order (DESIGN section 2): missing_scope, then forbidden_stream, then forbidden (the row's owner).
ANOTHER_OWNER = {
    "ack_checkpoint/granted_stream": (("victim-laptop", MINE, 1, 3), "forbidden"),
    "ack_checkpoint/ungranted_stream": (("victim-laptop", VICTIM_STREAM, 1, 3), "forbidden_stream"),
    "upsert_presence": (("victim-session", "dev", "node", "offline", "eu", 30_000), "forbidden"),
    "publish_provider_capability": (("victim-provider", '{"evil":1}', (5000,), 1, "withdrawn"), "forbidden"),
    "append_sync_event": ((VICTIM_STREAM, "evil", '{"evil":1}', None, None), "forbidden_stream"),
    "publish_stream_signal": ((VICTIM_STREAM, "typing", "{}"), "forbidden_stream"),
}


@pytest.mark.parametrize("row", sorted(ANOTHER_OWNER))
def test_another_owners_rows_and_streams_are_refused(world: World, row: str) -> None:
    args, expected = ANOTHER_OWNER[row]
    reducer = row.split("/")[0]
    before = persistent_state(world.st)
    c = WireClient(world.st, world.attacker)
    try:
        r = c.call(reducer, *args)
    finally:
        c.close()
    assert reducer_code(r) == expected, r
    assert persistent_state(world.st) == before


UNGRANTED_QUERIES = {
    "pinned_to_the_secret_stream": f"SELECT * FROM sync_event WHERE stream_id = '{VICTIM_STREAM}'",
    "unpinned": "SELECT * FROM sync_event",
    "or_with_a_granted_stream": f"SELECT * FROM sync_event WHERE stream_id = '{MINE}' OR stream_id = '{VICTIM_STREAM}'",
    "comment_after_a_granted_pin": f"SELECT * FROM sync_event WHERE stream_id = '{MINE}' -- OR 1 = 1",
    "block_comment": f"SELECT * FROM sync_event /* x */ WHERE stream_id = '{VICTIM_STREAM}'",
    "quote_breakout": f"SELECT * FROM sync_event WHERE stream_id = '{MINE}'' OR stream_id = ''{VICTIM_STREAM}'",
    "double_quoted_identifier": f"SELECT * FROM \"sync_event\" WHERE \"stream_id\" = '{VICTIM_STREAM}'",
    "star_from_star": "SELECT * FROM *",
    "secret_stream_row": f"SELECT * FROM sync_stream WHERE stream_id = '{VICTIM_STREAM}'",
    "another_owners_checkpoints": "SELECT * FROM sync_checkpoint",
    "bridge_outbox_without_a_bridge_scope": "SELECT * FROM bridge_outbox",
    "stream_signal_of_the_secret_stream": f"SELECT * FROM stream_signal WHERE stream_id = '{VICTIM_STREAM}'",
}

# The documented answer on each path (subscription, one-off query, HTTP /sql): an error code, or
# "filtered" -- answered with only what the token may read (the row filter of the grants).
F, IQ, FS = "filtered", "invalid_query", "forbidden_stream"
EXPECTED = {
    "pinned_to_the_secret_stream": (FS, FS, FS),
    "unpinned": (F, F, F),
    "or_with_a_granted_stream": (IQ, IQ, IQ),  # OR is outside the subset
    "comment_after_a_granted_pin": (IQ, IQ, IQ),  # comments are outside the subset
    "block_comment": (IQ, IQ, IQ),
    "quote_breakout": (F, F, F),  # one literal: mine.a' OR stream_id = 'secret.s (granted by mine.*, empty)
    "double_quoted_identifier": (FS, FS, FS),
    "star_from_star": (F, IQ, IQ),  # a one-off query reads one table
    "secret_stream_row": (FS, FS, FS),
    "another_owners_checkpoints": (F, F, F),
    "bridge_outbox_without_a_bridge_scope": (F, F, F),
    "stream_signal_of_the_secret_stream": (FS, FS, FS),
}


def _leaks(rows: list[Any]) -> list[Any]:
    """Rows the reader may not see: anything of the ungranted stream, any checkpoint (private to its
    owner; the reader has none), any outbox row (private to bridge scopes).  Presence, provider
    capabilities and assignments are public tables (DESIGN section 2)."""
    from spec.values import BridgeOutbox, SyncCheckpoint

    return [r for r in rows if getattr(r, "stream_id", None) == VICTIM_STREAM
            or isinstance(r, SyncCheckpoint | BridgeOutbox)]


@pytest.mark.parametrize("name", sorted(UNGRANTED_QUERIES))
def test_ungranted_data_is_unreachable_by_subscription_one_off_and_sql(world: World, name: str) -> None:
    sql = UNGRANTED_QUERIES[name]
    before = persistent_state(world.st)
    sub_want, one_want, sql_want = EXPECTED[name]
    c = WireClient(world.st, world.reader)
    try:
        msg = c.subscribe(1, sql)
        if sub_want == F:
            assert isinstance(msg, wire.SubscribeApplied), (name, msg)
            rows = [r for t in msg.rows.tables for r in _decode_rows(t.table, t.rows)]
            assert not _leaks(rows), (name, _leaks(rows))
        else:
            assert isinstance(msg, wire.SubscriptionError) and msg.error.startswith(sub_want + ":"), (name, msg)
        c.send(wire.OneOffQuery(c.rid(), sql))
        one = c.recv_until(wire.OneOffQueryResult)
        if one_want == F:
            assert not isinstance(one.result, str), (name, one.result)
            rows = [r for t in one.result.tables for r in _decode_rows(t.table, t.rows)]
            assert not _leaks(rows), (name, _leaks(rows))
        else:
            assert isinstance(one.result, str) and one.result.startswith(one_want + ":"), (name, one.result)
    finally:
        c.close()
    res = http("POST", f"{world.st.base}/v1/database/autopilot-sync/sql", sql,
               {"Authorization": f"Bearer {world.reader}"})
    if sql_want == F:
        assert res.status == 200, (name, res.status, res.text[:300])
        assert VICTIM_STREAM not in res.text and "victim-laptop" not in res.text and "victim-outbox" not in res.text, (
            name, res.text[:300])
    else:
        assert res.status == 400 and res.text.startswith(sql_want + ":"), (name, res.status, res.text[:300])
    assert persistent_state(world.st) == before


def _decode_rows(table: str, rl: Any) -> list[Any]:
    from support.server import rows_of
    rows: list[Any] = rows_of(table, rl)
    return rows


def test_after_the_matrix_a_bystander_still_appends(world: World) -> None:
    c = WireClient(world.st, world.victim)
    try:
        r = c.call("append_sync_event", MINE, f"after-{time.time_ns()}", '{"after":true}', None, None)
    finally:
        c.close()
    assert isinstance(r.outcome, wire.ReducerOk), r




def test_the_matrix_checks_can_fail(world: World) -> None:
    """Negative controls: the victim's own token reads the secret stream (the leak detector flags
    those rows), and a legitimate write changes the persistent-state snapshot."""
    c = WireClient(world.st, world.victim)
    try:
        msg = c.subscribe(1, f"SELECT * FROM sync_event WHERE stream_id = '{VICTIM_STREAM}'")
        assert isinstance(msg, wire.SubscribeApplied)
        rows = [r for t in msg.rows.tables for r in _decode_rows(t.table, t.rows)]
        # the three set up (the revocation test may have added its "still-fine" since: order-independent)
        assert {"k0", "k1", "k2"} <= {getattr(r, "idempotency_key", None) for r in _leaks(rows)}
        before = persistent_state(world.st)
        r = c.call("append_sync_event", MINE, f"control-{time.time_ns()}", '{"control":true}', None, None)
        assert isinstance(r.outcome, wire.ReducerOk)
        assert persistent_state(world.st) != before
    finally:
        c.close()
