"""Fuzzing where text enters: HTTP JSON bodies and JWT claims, with strings that include lone
surrogates (what a JSON ``\\ud800`` escape decodes to) and bodies that include invalid UTF-8.

Whatever comes in, the answer is specific (200, 400, 401, 530; never a 500 and never a hang), text
UTF-8 cannot carry is refused where it enters (400 ``invalid_argument`` / 401 naming the claim),
and the server goes on committing afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.server import ServerThread, http, running_server

from adapters.auth import AuthConfig, Authenticator, AuthError, KeyStore
from spec.errors import SyncError
from spec.schema import SCOPES

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(alphabet=st.one_of(st.characters(), SURROGATE), max_size=12)  # any code point, surrogates too


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list | tuple):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


# --- JWT claims --------------------------------------------------------------------------------------

KEYS = KeyStore.generate()
AUTH = Authenticator(AuthConfig(), KEYS)
CLAIMS = ("oa_device_id", "oa_session_id", "oa_client_build_id", "oa_protocol_version", "sub", "x_custom")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(claim=st.sampled_from(CLAIMS), value=TEXT, scopes=st.lists(TEXT | st.sampled_from(SCOPES), max_size=3),
       streams=st.lists(TEXT, max_size=3), nested=st.dictionaries(TEXT, TEXT, max_size=2))
def test_jwt_claims_with_any_text(claim: str, value: str, scopes: list[str], streams: list[str],
                                  nested: dict[str, str]) -> None:
    payload = {"sub": "fuzz", "iss": "syncref://local", "aud": ["spacetimedb"], "iat": int(time.time()),
               "oa_sync_scopes": scopes, "oa_sync_streams": streams, "x_nested": nested, claim: value}
    token = jwt.encode(payload, KEYS.private_key, algorithm="ES256")  # PyJWT writes surrogates as \\u escapes
    seen = json.loads(json.dumps(payload))  # what the verifier decodes: an escaped pair is one character
    try:
        verified = AUTH.verify(token)
    except AuthError as err:
        assert err.status == 401
        if has_surrogate(seen):
            assert "not valid Unicode text" in err.message or "malformed claim" in err.message, err.message
        return
    assert not has_surrogate(seen), "a claim UTF-8 cannot carry was accepted"
    for text in (verified.claims.device_id, verified.claims.session_id, *verified.claims.scopes,
                 *verified.claims.streams):
        if text is not None:
            text.encode("utf-8")  # everything that reaches a record is text


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=80))
def test_tokens_that_are_not_text_are_401(raw: bytes) -> None:
    token = raw.decode("utf-8", "surrogateescape")  # what a header with such bytes becomes
    with pytest.raises(AuthError) as info:
        AUTH.verify(token)
    assert info.value.status == 401


def test_mint_refuses_text_utf8_cannot_carry() -> None:
    with pytest.raises(ValueError, match="device_id is not valid Unicode text"):
        AUTH.mint(scopes=["sync.append"], streams=["*"], ttl_s=60, device_id="dev\udcff")
    with pytest.raises(ValueError, match="streams is not valid Unicode text"):
        AUTH.mint(scopes=["sync.append"], streams=iter(["ok", "bad\ud800"]), ttl_s=60)


# --- HTTP JSON -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(Path(tmp_path_factory.mktemp("textfuzz"))) as st_:
        yield st_


@pytest.fixture(scope="module")
def token(server: ServerThread) -> str:
    return server.token()


ARGS = {
    "append_sync_event": st.tuples(TEXT, TEXT, TEXT.map(lambda s: json.dumps({"v": s})),
                                   st.none() | TEXT, st.none() | st.integers(0, 5)),
    "record_bridge_failure": st.tuples(TEXT, TEXT, st.integers(0, 10_000)),
    "upsert_presence": st.tuples(TEXT, TEXT, TEXT, st.sampled_from(["online", "away"]), TEXT,
                                 st.integers(1000, 60_000)),
    "enqueue_bridge_event": st.tuples(TEXT, TEXT, st.just(1), st.just("[]"), TEXT),
}


def sats(value: Any) -> Any:
    return value if not isinstance(value, tuple) else list(value)


def body_of(reducer: str, args: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for i, a in enumerate(args):
        optional = reducer == "append_sync_event" and i in (3, 4)
        out.append(({"none": []} if a is None else {"some": a}) if optional else a)
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_http_json_bodies_with_any_text(server: ServerThread, token: str, data: st.DataObject) -> None:
    reducer = data.draw(st.sampled_from(sorted(ARGS)))
    args = data.draw(ARGS[reducer])
    body = json.dumps(body_of(reducer, args))  # ensure_ascii: a surrogate becomes a \\udXXX escape
    if data.draw(st.booleans()):
        raw = body.encode()
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(min_size=1, max_size=4).filter(lambda b: not _utf8(b))) + raw[cut:]
    else:
        raw = body.encode()
    resp = http("POST", f"{server.base}/v1/database/autopilot-sync/call/{reducer}", raw,
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert resp.status in (200, 400, 530), (resp.status, resp.text)
    if resp.status == 400:
        assert SyncError.parse(resp.text).code.value == "invalid_argument"
    if _utf8(raw) and has_surrogate(json.loads(body)):  # what the server decodes (an escaped pair is one character)
        assert resp.status == 400 and "lone surrogate" in resp.text, resp.text
    if not _utf8(raw):
        assert resp.status == 400 and "not valid UTF-8" in resp.text


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=120), prefix=st.sampled_from([b"", b"SELECT * FROM sync_stream WHERE stream_id = '"]))
def test_sql_bodies_with_any_bytes(server: ServerThread, token: str, raw: bytes, prefix: bytes) -> None:
    resp = http("POST", f"{server.base}/v1/database/autopilot-sync/sql", prefix + raw + (b"'" if prefix else b""),
                {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    assert resp.status in (200, 400), (resp.status, resp.text)


def test_the_server_still_commits_after_the_fuzzing(server: ServerThread, token: str) -> None:
    resp = http("POST", f"{server.base}/v1/database/autopilot-sync/call/append_sync_event",
                json.dumps(["after.fuzz", "k", "{}", {"none": []}, {"none": []}]),
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert resp.status == 200
    assert server.call(lambda: server.server.engine.durable == server.server.engine.committed)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
