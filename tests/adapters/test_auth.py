"""The auth matrix: minting, verifying and refusing tokens (adapters/auth.py).

Time is a fake clock throughout; hostile tokens are built with PyJWT (or, for the HS256
algorithm-confusion token PyJWT refuses to make, with hmac) directly, not with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import blake3
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.auth import (
    KEY_FILE_NAME,
    MAX_TTL_S,
    AuthConfig,
    Authenticator,
    AuthError,
    KeyStore,
    RevocationList,
    Verified,
    identity_from_claims,
)
from spec.auth import Claims
from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import SCOPES

T0 = 1_750_000_000
LOCAL = "syncref://local"
EXTERNAL = "https://control.example"
SECRET = b"s" * 32
KEYS = KeyStore.generate()  # one key for the module: generating is the slow part


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_auth(config: AuthConfig | None = None, keys: KeyStore = KEYS) -> tuple[Authenticator, FakeClock]:
    clock = FakeClock()
    return Authenticator(config or AuthConfig(), keys, clock=clock), clock


def sign(payload: dict[str, Any], key: Any = None, alg: str = "ES256") -> str:
    return jwt.encode(payload, KEYS.private_key if key is None else key, algorithm=alg)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "iss": LOCAL, "aud": ["spacetimedb"], "iat": T0}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(auth: Authenticator, token: str, status: int = 401) -> str:
    with pytest.raises(AuthError) as info:
        auth.verify(token)
    assert info.value.status == status
    return info.value.message


# -- identity derivation ----------------------------------------------------------------------

def test_identity_vector_from_spacetimedb() -> None:
    # crates/bindings-csharp/Runtime.Tests/JwtClaimsTest.cs pairs {"sub":"123","iss":"example.com"}
    # with this identity.
    assert identity_from_claims("example.com", "123") == \
        "c200ef884364c1a99be0298dc68f2004e6b97c09d1b1658b7db22f51fb662059"


@pytest.mark.parametrize(("iss", "sub"), [("localhost", "alice"), (LOCAL, str(uuid.UUID(int=7))), ("é", "|")])
def test_identity_layout_and_checksum(iss: str, sub: str) -> None:
    # The checks of SpacetimeDB's from_claims_formats_correctly proptest, spelled out independently.
    raw = bytes.fromhex(identity_from_claims(iss, sub))
    assert len(raw) == 32 and raw[:2] == b"\xc2\x00"
    assert raw[6:] == blake3.blake3(f"{iss}|{sub}".encode()).digest()[:26]
    assert raw[2:6] == blake3.blake3(b"\xc2\x00" + raw[6:]).digest()[:4]


# -- minting and round trips ------------------------------------------------------------------

def test_mint_identity_round_trip_with_default_grants() -> None:
    auth, _ = make_auth()
    identity, token = auth.mint_identity()
    verified = auth.verify(token)
    assert verified.identity == identity
    assert verified.claims == Claims(
        identity=identity,
        scopes=frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write",
                          "provider.publish", "compute.request"}),
        streams=(f"identity.{identity}.*",))
    raw = verified.raw
    assert raw["iss"] == LOCAL and raw["aud"] == ["spacetimedb"] and raw["iat"] == T0
    assert "exp" not in raw  # long-lived by default, like SpacetimeDB's minted identities
    assert raw["hex_identity"] == identity == identity_from_claims(LOCAL, raw["sub"])
    assert uuid.UUID(raw["sub"]).version == 4
    assert jwt.get_unverified_header(token)["alg"] == "ES256"


def test_mint_identity_gives_fresh_identities_and_optional_ttl() -> None:
    auth, clock = make_auth(AuthConfig(identity_ttl_s=3600))
    a, token = auth.mint_identity()
    b, _ = auth.mint_identity()
    assert a != b
    assert auth.verify(token).raw["exp"] == T0 + 3600
    clock.now = T0 + 3600 + 30
    assert refused(auth, token) == "token expired"


def test_mint_with_explicit_claims_round_trip() -> None:
    auth, _ = make_auth()
    token = auth.mint(subject="bob", scopes=["sync.admin", "bridge.enqueue"], streams=["a.b", "own.{identity}.*"],
                      ttl_s=600, device_id="dev-1", session_id="sess-1", client_build_id="20260301T120000Z",
                      protocol_version="oa-sync-1", schema_version=3)
    bob = identity_from_claims(LOCAL, "bob")
    verified = auth.verify(token)
    assert verified.claims == Claims(identity=bob, scopes=frozenset({"sync.admin", "bridge.enqueue"}),
                                     streams=("a.b", f"own.{bob}.*"), device_id="dev-1", session_id="sess-1",
                                     client_build_id="20260301T120000Z", protocol_version="oa-sync-1",
                                     schema_version=3)
    assert verified.raw["exp"] == T0 + 600
    assert verified.subject == "bob" and verified.issuer == LOCAL


def test_mint_refuses_caller_mistakes() -> None:
    auth, _ = make_auth()
    with pytest.raises(LocalProtocolError, match=r"sync\.apend"):
        auth.mint(scopes=["sync.apend"], streams=[], ttl_s=None)
    with pytest.raises(LocalProtocolError, match="ttl_s"):
        auth.mint(scopes=[], streams=[], ttl_s=0)
    with pytest.raises(LocalProtocolError, match="stream grants"):
        auth.mint(scopes=[], streams="abc", ttl_s=None)


@pytest.mark.parametrize("grant", [" other.*", "demo.**", "demo\\..*", "d\u00e9mo.*", "a|b", "x" * 129, "x" * 129 + "*",
                                   "demo.{user}.*", "*.x"])
def test_a_stream_grant_that_can_match_no_stream_is_refused(grant: str) -> None:
    """Stream ids are 1-128 characters of [A-Za-z0-9._:-] and a grant is an id or a plain prefix
    ending in ``*`` (no regex, no glob inside), so these grant nothing at all.  As with an unknown
    scope, a typo must not mint a token that silently grants less than asked (``--streams 'a.*, b.*'``
    gave " b.*").  Failed before: each was minted; the server then answered forbidden_stream."""
    auth, _ = make_auth()
    with pytest.raises(LocalProtocolError, match="can match no stream id"):
        auth.mint(scopes=["sync.subscribe"], streams=["demo.ok.*", grant], ttl_s=60)
    with pytest.raises(LocalProtocolError, match="can match no stream id"):
        AuthConfig(default_stream_grants=("identity.{identity}.*", grant))


def test_every_grant_that_can_match_a_stream_is_minted() -> None:
    auth, _ = make_auth()
    grants = ["*", "a", "a*", "a.b:c-d_e.*", "x" * 128, "x" * 128 + "*", "x" * 127 + "*", "own.{identity}.*"]
    token = auth.mint(scopes=[], streams=grants, ttl_s=60)
    identity = auth.verify(token).identity
    assert auth.verify(token).claims.streams == (*grants[:-1], f"own.{identity}.*")
    assert AuthConfig(default_stream_grants=("identity.{identity}.*", "public.*")).default_stream_grants


def test_a_grant_is_refused_exactly_when_no_stream_id_matches_it() -> None:
    """Every grant of up to 4 characters over ``a . * space é`` against the spec's matching rule
    (``spec.auth.grant_matches``) and stream id syntax (``spec.values.is_id``): minted exactly when
    some stream id matches it.  The oracle searches the ids of up to 4 characters over the same
    alphabet (an exact grant matches itself, a prefix grant its prefix or ``a``: a match, if any,
    is among them).  Checked sound (revc's refusal neither refuses a valid grant nor takes a void one)."""
    import itertools

    from spec.auth import grant_matches
    from spec.values import is_id

    alphabet = "a.* \u00e9"
    words = ["".join(w) for n in range(1, 5) for w in itertools.product(alphabet, repeat=n)]
    ids = [w for w in words if is_id(w)]
    auth, _ = make_auth()
    refused_grants, minted_grants = 0, 0
    for grant in words:
        matchable = any(grant_matches(grant, stream_id) for stream_id in ids)
        try:
            auth.mint(scopes=[], streams=[grant], ttl_s=60)
            minted = True
        except LocalProtocolError as exc:
            assert "can match no stream id" in str(exc), (grant, exc)
            minted = False
        assert minted == matchable, (grant, matchable)
        refused_grants, minted_grants = refused_grants + (not minted), minted_grants + minted
    assert refused_grants > 0 and minted_grants > 0


def test_dev_grants_everything() -> None:
    config = AuthConfig(dev=True)
    auth, _ = make_auth(config)
    _, token = auth.mint_identity()
    verified = auth.verify(token)
    assert verified.claims.scopes == frozenset(SCOPES)
    assert verified.claims.streams == ("*",)
    assert config.anonymous_allowed
    assert not AuthConfig().anonymous_allowed
    assert AuthConfig(allow_anonymous=True).anonymous_allowed


def test_default_grant_templates_are_filled_with_the_identity() -> None:
    auth, _ = make_auth(AuthConfig(default_scopes=frozenset({"sync.subscribe"}),
                                   default_stream_grants=("identity.{identity}.*", "public.*", "x.{identity}")))
    identity, token = auth.mint_identity()
    claims_ = auth.verify(token).claims
    assert claims_.streams == (f"identity.{identity}.*", "public.*", f"x.{identity}")
    assert claims_.scopes == frozenset({"sync.subscribe"})


def test_default_scopes_exclude_admin_bridge_and_compute_roles() -> None:
    auth, _ = make_auth()
    _, token = auth.mint_identity()
    scopes = auth.verify(token).claims.scopes
    assert not scopes & {"sync.admin", "bridge.enqueue", "bridge.mark_sent", "compute.assign", "compute.execute"}


# -- time -------------------------------------------------------------------------------------

def test_expiry_honours_30s_leeway() -> None:
    auth, clock = make_auth()
    token = sign(claims(exp=T0 + 100))
    clock.now = T0 + 100 + 29
    assert auth.verify(token).identity == identity_from_claims(LOCAL, "alice")
    clock.now = T0 + 100 + 30
    assert refused(auth, token) == "token expired"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_no_double_can_hold_is_a_malformed_claim(claim: str) -> None:
    """Failed before: ``math.isfinite`` raised OverflowError on an integer past ~1.8e308, so a
    token this server signed itself (``syncref token mint --ttl 1000...0``) or an external issuer's
    answered 500 on every route instead of 401."""
    auth, _ = make_auth()
    assert f"malformed claim {claim}" in refused(auth, sign(claims(**{claim: 10**400})))
    far = 2**1023  # the largest power of two a double holds: still a number of seconds
    if claim == "exp":
        assert auth.verify(sign(claims(exp=far))).identity


def test_mint_bounds_the_ttl_so_every_minted_token_verifies() -> None:
    auth, _ = make_auth()
    assert auth.verify(auth.mint(scopes=[], streams=[], ttl_s=MAX_TTL_S)).raw["exp"] == T0 + MAX_TTL_S
    with pytest.raises(LocalProtocolError, match="ttl_s"):
        auth.mint(scopes=[], streams=[], ttl_s=MAX_TTL_S + 1)
    with pytest.raises(LocalProtocolError, match="ttl_s"):
        auth.mint(scopes=[], streams=[], ttl_s=10**400)


def test_not_before_in_the_future() -> None:
    auth, _ = make_auth()
    assert auth.verify(sign(claims(nbf=T0 + 30))).identity  # within leeway
    assert "not yet valid" in refused(auth, sign(claims(nbf=T0 + 31)))


def test_issued_in_the_future() -> None:
    auth, _ = make_auth()
    assert auth.verify(sign(claims(iat=T0 + 30))).identity
    assert "iat" in refused(auth, sign(claims(iat=T0 + 31)))


# -- signatures and algorithms ----------------------------------------------------------------

def test_token_signed_by_another_key_is_refused() -> None:
    other = Authenticator(AuthConfig(), KeyStore.generate(), clock=FakeClock())
    _, token = other.mint_identity()
    auth, _ = make_auth()
    assert refused(auth, token) == "token signature invalid"


def test_tampered_payload_is_refused() -> None:
    auth, _ = make_auth()
    header, _, signature = sign(claims(oa_sync_scopes=["sync.subscribe"])).split(".")
    forged = b64url(json.dumps(claims(oa_sync_scopes=["sync.admin"])).encode())
    assert refused(auth, f"{header}.{forged}.{signature}") == "token signature invalid"


def hs256_with_secret(payload: dict[str, Any], secret: bytes) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_algorithm_confusion_public_key_as_hmac_secret() -> None:
    auth, _ = make_auth()
    token = hs256_with_secret(claims(), KEYS.public_key_pem())
    assert "algorithm 'HS256' is not accepted" in refused(auth, token)


def test_algorithm_confusion_against_external_public_key() -> None:
    ext = ec.generate_private_key(ec.SECP256R1())
    pem = ext.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    auth, _ = make_auth(AuthConfig(external_issuer=EXTERNAL, external_public_key_pem=pem))
    token = hs256_with_secret(claims(iss=EXTERNAL), pem)
    assert "algorithm 'HS256' is not accepted" in refused(auth, token)


def test_alg_none_is_refused() -> None:
    auth, _ = make_auth()
    token = jwt.encode(claims(), "", algorithm="none")
    assert "algorithm 'none'" in refused(auth, token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "e30.e30.", "e30.W10.", "bm90IGpzb24.e30.x"])
def test_garbage_tokens_are_401(token: str) -> None:
    auth, _ = make_auth()
    assert "malformed" in refused(auth, token)


def test_oversized_token_is_refused_before_parsing() -> None:
    auth, _ = make_auth()
    assert "too long" in refused(auth, sign(claims(padding="p" * 20_000)))


# -- audience and issuer ----------------------------------------------------------------------

@pytest.mark.parametrize("aud", [["other"], "other", None, []])
def test_audience_must_include_spacetimedb(aud: Any) -> None:
    auth, _ = make_auth()
    payload = claims()
    payload.pop("aud")
    if aud is not None:
        payload["aud"] = aud
    assert refused(auth, sign(payload)) == "token audience must include 'spacetimedb'"


@pytest.mark.parametrize("aud", ["spacetimedb", ["other", "spacetimedb"]])
def test_audience_single_string_or_list(aud: Any) -> None:
    auth, _ = make_auth()
    assert auth.verify(sign(claims(aud=aud))).identity == identity_from_claims(LOCAL, "alice")


def test_unknown_issuer_is_refused_even_with_our_signature() -> None:
    auth, _ = make_auth()
    assert "issuer 'https://evil' is not trusted" in refused(auth, sign(claims(iss="https://evil")))


def test_missing_issuer_and_subject() -> None:
    auth, _ = make_auth()
    payload = claims()
    del payload["iss"]
    assert refused(auth, sign(payload)) == "token missing claim 'iss'"
    payload = claims()
    del payload["sub"]
    assert refused(auth, sign(payload)) == "token missing claim 'sub'"


# -- external issuer --------------------------------------------------------------------------

def test_external_hs256_issuer() -> None:
    auth, _ = make_auth(AuthConfig(external_issuer=EXTERNAL, external_hs256_secret=SECRET))
    token = sign(claims(iss=EXTERNAL, sub="user-9", oa_sync_scopes=["sync.append"], oa_sync_streams=["s.1"]),
                 key=SECRET, alg="HS256")
    verified = auth.verify(token)
    assert verified.claims == Claims(identity=identity_from_claims(EXTERNAL, "user-9"),
                                     scopes=frozenset({"sync.append"}), streams=("s.1",))
    wrong = sign(claims(iss=EXTERNAL), key=b"w" * 32, alg="HS256")
    assert refused(auth, wrong) == "token signature invalid"
    # the external secret does not vouch for the local issuer
    local = sign(claims(), key=SECRET, alg="HS256")
    assert "algorithm 'HS256' is not accepted" in refused(auth, local)


def test_external_es256_public_key() -> None:
    ext = ec.generate_private_key(ec.SECP256R1())
    pem = ext.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    auth, _ = make_auth(AuthConfig(external_issuer=EXTERNAL, external_public_key_pem=pem))
    assert auth.verify(sign(claims(iss=EXTERNAL), key=ext)).identity == identity_from_claims(EXTERNAL, "alice")
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert refused(auth, sign(claims(iss=EXTERNAL), key=stranger)) == "token signature invalid"
    # a token for the local issuer signed by the external key is not ours
    assert refused(auth, sign(claims(), key=ext)) == "token signature invalid"


def test_external_rs256_public_key() -> None:
    ext = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = ext.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    auth, _ = make_auth(AuthConfig(external_issuer=EXTERNAL, external_public_key_pem=pem))
    assert auth.verify(sign(claims(iss=EXTERNAL), key=ext, alg="RS256")).identity
    stranger = KeyStore.generate().private_key  # ES256 is allowed (our own key), but this is not our key
    assert refused(auth, sign(claims(iss=EXTERNAL), key=stranger)) == "token signature invalid"


@pytest.mark.parametrize("kwargs", [
    {"external_issuer": EXTERNAL},
    {"external_hs256_secret": SECRET},
    {"external_issuer": EXTERNAL, "external_hs256_secret": b"short"},
    {"external_issuer": LOCAL, "external_hs256_secret": SECRET},
    {"external_issuer": EXTERNAL, "external_public_key_pem": b"not a pem"},
    {"leeway_s": -1},
    {"default_scopes": frozenset({"sync.everything"})},
])
def test_bad_config_is_a_local_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        AuthConfig(**kwargs)
    assert isinstance(info.value, ValueError)  # configuration loaders catch ValueError


# -- websocket tokens -------------------------------------------------------------------------

def test_websocket_token_carries_claims_and_lives_60s() -> None:
    auth, clock = make_auth()
    token = auth.mint(subject="carol", scopes=["sync.subscribe"], streams=["a.*"], ttl_s=None, device_id="d",
                      client_build_id="20260301T120000Z", protocol_version="p", schema_version=2)
    original = auth.verify(token)
    clock.now = T0 + 5
    short = auth.websocket_token(original)
    again = auth.verify(short)
    assert again.claims == original.claims
    assert again.raw["iat"] == T0 + 5 and again.raw["exp"] == T0 + 65
    assert {k: v for k, v in again.raw.items() if k not in ("iat", "exp", "oa_conn_exp")} == \
        {k: v for k, v in original.raw.items() if k not in ("iat", "exp")}
    clock.now = T0 + 65 + 29
    assert auth.verify(short).identity == identity_from_claims(LOCAL, "carol")
    clock.now = T0 + 65 + 30
    assert refused(auth, short) == "token expired"
    assert auth.verify(token).identity  # the original lives on


def test_websocket_token_never_outlives_the_original() -> None:
    auth, _ = make_auth()
    original = auth.verify(auth.mint(scopes=[], streams=[], ttl_s=10))
    short = auth.verify(auth.websocket_token(original))
    assert short.raw["exp"] == T0 + 10


def test_websocket_token_for_an_external_caller_keeps_the_identity() -> None:
    auth, _ = make_auth(AuthConfig(external_issuer=EXTERNAL, external_hs256_secret=SECRET))
    original = auth.verify(sign(claims(iss=EXTERNAL, exp=T0 + 3600, oa_sync_scopes=["sync.append"]),
                                key=SECRET, alg="HS256"))
    short = auth.websocket_token(original)
    assert jwt.get_unverified_header(short)["alg"] == "ES256"
    assert auth.verify(short).claims == original.claims


def test_websocket_token_needs_verified_claims() -> None:
    auth, _ = make_auth()
    with pytest.raises(LocalProtocolError):
        auth.websocket_token(Verified(claims=Claims(identity=identity_from_claims(LOCAL, "x"), scopes=frozenset()),
                                      raw={"sub": "x"}, connection_exp=None))



# -- the connection bound of a websocket token (oa_conn_exp) -----------------------------------
# A websocket token lives 60 s, but a connection opened with it is bounded by the token it was
# traded for: its exp travels as ``oa_conn_exp`` (or "none"), honoured only on our own signature.

EXT_EC = ec.generate_private_key(ec.SECP256R1())
EXT_EC_PEM = EXT_EC.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
EXT_CONFIG = AuthConfig(external_issuer=EXTERNAL, external_hs256_secret=SECRET, external_public_key_pem=EXT_EC_PEM)
FAR = T0 + 10**6

# (case, the token presented to websocket-token, signed with, the traded token's exp, its oa_conn_exp,
#  the connection bound of the traded token): hand-written from the rule, not computed.
CONN_EXP_CASES: list[tuple[str, dict[str, Any], str, int, Any, float | None]] = [
    ("local parent with exp", claims(exp=T0 + 3600), "local", T0 + 60, T0 + 3600, T0 + 3600),
    ("local parent without exp", claims(), "local", T0 + 60, "none", None),
    ("local parent expiring first", claims(exp=T0 + 10), "local", T0 + 10, T0 + 10, T0 + 10),
    ("external HS256 parent", claims(iss=EXTERNAL, exp=T0 + 7200), "hs256", T0 + 60, T0 + 7200, T0 + 7200),
    ("external parent without exp", claims(iss=EXTERNAL), "hs256", T0 + 60, "none", None),
    ("external HS256 parent claiming a far bound", claims(iss=EXTERNAL, exp=T0 + 100, oa_conn_exp=FAR), "hs256",
     T0 + 60, T0 + 100, T0 + 100),
    ("external EC parent claiming no bound", claims(iss=EXTERNAL, exp=T0 + 100, oa_conn_exp="none"), "ext-ec",
     T0 + 60, T0 + 100, T0 + 100),
    ("local websocket token traded again", claims(exp=T0 + 50, oa_conn_exp=T0 + 3600), "local", T0 + 50,
     T0 + 3600, T0 + 3600),
    ("local websocket token of an unbounded parent", claims(exp=T0 + 50, oa_conn_exp="none"), "local", T0 + 50,
     "none", None),
    ("null counts as absent", claims(exp=T0 + 3600, oa_conn_exp=None) | {"oa_conn_exp": None}, "local",
     T0 + 60, T0 + 3600, T0 + 3600),
]


def _sign_with(payload: dict[str, Any], signer: str) -> str:
    if signer == "hs256":
        return sign(payload, key=SECRET, alg="HS256")
    return sign(payload, key=EXT_EC if signer == "ext-ec" else None)


@pytest.mark.parametrize(("case", "payload", "signer", "exp", "conn_exp", "bound"), CONN_EXP_CASES,
                         ids=[c[0] for c in CONN_EXP_CASES])
def test_a_websocket_token_carries_the_bound_of_the_token_it_was_traded_for(
        case: str, payload: dict[str, Any], signer: str, exp: int, conn_exp: Any, bound: float | None) -> None:
    """Failed before: the traded token carried no ``oa_conn_exp``; the server bounded its connection by the
    60 s ``exp`` (tests/adapters/test_sdk_e2e.py shows the drop)."""
    auth, _ = make_auth(EXT_CONFIG)
    parent = auth.verify(_sign_with(payload | {"jti": "j" * 32}, signer))
    traded = auth.verify(auth.websocket_token(parent))
    assert (traded.raw["exp"], traded.raw["oa_conn_exp"], traded.connection_exp) == (exp, conn_exp, bound)
    assert traded.claims == parent.claims and traded.raw["jti"] == "j" * 32


# (case, payload, signed with, the token's own connection bound): a token presented directly.
DIRECT_CASES: list[tuple[str, dict[str, Any], str, float | None]] = [
    ("local, no claim", claims(exp=T0 + 70), "local", T0 + 70),
    ("local, no claim, no exp", claims(), "local", None),
    ("local, claim", claims(exp=T0 + 70, oa_conn_exp=FAR), "local", FAR),
    ("local, claim none", claims(exp=T0 + 70, oa_conn_exp="none"), "local", None),
    ("local, float claim", claims(exp=T0 + 70, oa_conn_exp=FAR + 0.5), "local", FAR + 0.5),
    ("external HS256, claim ignored", claims(iss=EXTERNAL, exp=T0 + 70, oa_conn_exp=FAR), "hs256", T0 + 70),
    ("external HS256, none ignored", claims(iss=EXTERNAL, exp=T0 + 70, oa_conn_exp="none"), "hs256", T0 + 70),
    ("external EC, claim ignored", claims(iss=EXTERNAL, exp=T0 + 70, oa_conn_exp=FAR), "ext-ec", T0 + 70),
    ("external issuer on our key, claim honoured", claims(iss=EXTERNAL, exp=T0 + 70, oa_conn_exp=FAR), "local", FAR),
]


@pytest.mark.parametrize(("case", "payload", "signer", "bound"), DIRECT_CASES, ids=[c[0] for c in DIRECT_CASES])
def test_oa_conn_exp_is_honoured_only_under_our_own_signature(
        case: str, payload: dict[str, Any], signer: str, bound: float | None) -> None:
    auth, _ = make_auth(EXT_CONFIG)
    assert auth.verify(_sign_with(payload, signer)).connection_exp == bound


def test_oa_conn_exp_forged_under_another_key_for_our_issuer_is_refused() -> None:
    auth, _ = make_auth(EXT_CONFIG)
    forged = sign(claims(exp=T0 + 70, oa_conn_exp=FAR), key=EXT_EC)  # iss = us, signed by someone else
    assert refused(auth, forged) == "token signature invalid"


@pytest.mark.parametrize("value", [True, False, "never", "", "1750000000", [T0], {"exp": T0}, 10**400,
                                   float("inf")])
@pytest.mark.parametrize("signer", ["local", "hs256"])
def test_a_wrongly_typed_oa_conn_exp_is_a_malformed_claim(value: Any, signer: str) -> None:
    auth, _ = make_auth(EXT_CONFIG)
    payload = claims(iss=LOCAL if signer == "local" else EXTERNAL, exp=T0 + 70) | {"oa_conn_exp": value}
    message = refused(auth, _sign_with(payload, signer))
    assert message == 'malformed claim oa_conn_exp (must be a number of seconds or "none")', message


# -- claim shapes -----------------------------------------------------------------------------

def test_hex_identity_must_match() -> None:
    auth, _ = make_auth()
    wrong = identity_from_claims(LOCAL, "mallory")
    assert "hex_identity does not match" in refused(auth, sign(claims(hex_identity=wrong)))
    right = identity_from_claims(LOCAL, "alice")
    assert auth.verify(sign(claims(hex_identity=right))).identity == right


@pytest.mark.parametrize(("claim", "value"), [
    ("oa_sync_scopes", "sync.append"),
    ("oa_sync_scopes", [1]),
    ("oa_sync_streams", {"a": 1}),
    ("oa_sync_streams", ["ok", None]),
    ("oa_device_id", 5),
    ("oa_session_id", ["s"]),
    ("oa_client_build_id", 20260101),
    ("oa_protocol_version", 1),
    ("oa_schema_version", "1"),
    ("oa_schema_version", True),
    ("oa_schema_version", 1.5),
    ("exp", "later"),
    ("nbf", True),
    ("hex_identity", 12),
    ("sub", ""),
    ("sub", "x" * 129),
    ("sub", 7),
])
def test_malformed_claims_are_401_naming_the_claim(claim: str, value: Any) -> None:
    auth, _ = make_auth()
    assert claim in refused(auth, sign(claims(**{claim: value})))


def test_unknown_scopes_kept_and_absent_grants_empty() -> None:
    auth, _ = make_auth()
    verified = auth.verify(sign(claims(oa_sync_scopes=["sync.append", "future.scope"])))
    assert verified.claims.scopes == frozenset({"sync.append", "future.scope"})
    assert verified.claims.streams == ()
    nulls = claims()
    nulls.update(oa_device_id=None, oa_sync_scopes=None, oa_sync_streams=None, oa_schema_version=None)
    bare = auth.verify(sign(nulls))  # JSON null counts as absent
    assert bare.claims == Claims(identity=identity_from_claims(LOCAL, "alice"), scopes=frozenset())


def test_verified_is_a_value() -> None:
    auth, _ = make_auth()
    token = sign(claims())
    a, b = auth.verify(token), auth.verify(token)
    assert a == b and hash(a) == hash(b) and isinstance(a, Verified)
    with pytest.raises(TypeError):
        a.raw["sub"] = "eve"  # type: ignore[index]


# -- requests ---------------------------------------------------------------------------------

def test_bearer_header_wins_over_query() -> None:
    auth, _ = make_auth()
    assert auth.token_from_request("Bearer head.er.tok", "query.tok.en") == "head.er.tok"
    assert auth.token_from_request("bearer  abc ", None) == "abc"
    assert auth.token_from_request(None, "query.tok.en") == "query.tok.en"
    assert auth.token_from_request(None, None) is None


@pytest.mark.parametrize("header", ["Basic x", "Bearer", "Bearer ", "Bearer a b", "", "Token abc"])
def test_malformed_authorization_header_is_400(header: str) -> None:
    auth, _ = make_auth()
    with pytest.raises(AuthError) as info:
        auth.token_from_request(header, "query.tok.en")
    assert info.value.status == 400
    assert isinstance(info.value, RemoteProtocolError)


def test_authenticate_combines_extraction_and_verification() -> None:
    auth, _ = make_auth()
    identity, token = auth.mint_identity()
    assert auth.authenticate(None, None) is None
    verified = auth.authenticate(f"Bearer {token}", "junk")
    assert verified is not None and verified.identity == identity
    with pytest.raises(AuthError) as info:
        auth.authenticate(None, "junk")
    assert info.value.status == 401


# -- key store --------------------------------------------------------------------------------

def test_keystore_persists_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = KeyStore.load_or_create(data)
    path = data / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(data) == [KEY_FILE_NAME]  # no temporary file left behind
    second = KeyStore.load_or_create(data)
    assert second.public_key_pem() == first.public_key_pem()
    assert first.public_key_pem().startswith(b"-----BEGIN PUBLIC KEY-----")
    _, token = Authenticator(AuthConfig(), first, clock=FakeClock()).mint_identity()
    assert Authenticator(AuthConfig(), second, clock=FakeClock()).verify(token).identity


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_keystore_refuses_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    """Whoever reads the key mints any token, sync.admin included.  syncref creates it 0600, but a
    restore or copy (``cp`` without ``-p``, a umask) leaves it readable by others.  Failed before: it
    was used as it was; the bridge's Nostr key file was already refused in that case."""
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(KeyStore.generate().private_key_pem())
    path.chmod(mode)
    with pytest.raises(ValueError, match=re.escape(f"{path}: mode {mode:04o} lets other users read the signing key")
                       + r".*chmod 600"):
        KeyStore.load_or_create(tmp_path)
    path.chmod(0o600)
    assert KeyStore.load_or_create(tmp_path).public_key_pem()
    path.chmod(0o400)  # read-only for its owner is fine
    assert KeyStore.load_or_create(tmp_path).public_key_pem()


def test_keystore_refuses_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / KEY_FILE_NAME))):
        KeyStore.load_or_create(tmp_path)


def test_keystore_refuses_a_key_of_the_wrong_type(tmp_path: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / KEY_FILE_NAME).write_bytes(p384)
    with pytest.raises(ValueError, match="P-256"):
        KeyStore.load_or_create(tmp_path)


def test_keystore_creation_race_keeps_the_first_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    winner = KeyStore.generate()
    real_link = os.link

    def link_after_another_process(src: str, dst: str) -> None:
        Path(dst).write_bytes(winner.private_key_pem())  # another server got there first
        Path(dst).chmod(0o600)  # (it writes its key 0600, as this one does)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_another_process)
    loaded = KeyStore.load_or_create(tmp_path)
    assert loaded.public_key_pem() == winner.public_key_pem()
    assert os.listdir(tmp_path) == [KEY_FILE_NAME]


# -- revocation ------------------------------------------------------------------------------


def test_minted_tokens_carry_a_fresh_jti_and_websocket_tokens_keep_it() -> None:
    auth, _ = make_auth()
    a, b = (auth.mint(scopes=["sync.subscribe"], streams=["s"], ttl_s=60) for _ in range(2))
    _, c = auth.mint_identity()
    jtis = [auth.verify(t).raw["jti"] for t in (a, b, c)]
    assert len(set(jtis)) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", j) for j in jtis)
    traded = auth.websocket_token(auth.verify(a))
    assert auth.verify(traded).raw["jti"] == jtis[0]


def test_the_revocation_list_follows_its_file(tmp_path: Path) -> None:
    path = tmp_path / "revoked-jti"
    rl = RevocationList(path)
    assert rl.jtis == frozenset() and rl.problem is None and not rl.revoked("a1")  # no file: nothing revoked
    path.write_text("# leaked on 2026-12-01\na1\n\n  b2   # trailing comment\n")
    assert rl.revoked("a1") and rl.revoked("b2") and not rl.revoked("c3") and not rl.revoked(None)
    assert rl.refresh() is False  # unchanged file: no change
    path.write_text("a1\nb2\nnot valid\n")  # a malformed line: the last good list stays
    assert rl.refresh() is False and rl.jtis == {"a1", "b2"}
    assert rl.problem is not None and rl.problem.startswith(f"{path}:3: not a jti")
    path.write_text("c3\n")
    assert rl.refresh() is True and rl.jtis == {"c3"} and rl.problem is None
    path.unlink()  # removing the file un-revokes
    assert rl.refresh() is True and rl.jtis == frozenset()
    path.write_bytes(b"\xff\xfe")
    assert rl.refresh() is False and rl.problem is not None and "not UTF-8" in rl.problem
    assert RevocationList(None).refresh() is False and not RevocationList(None).revoked("a1")


def test_a_same_size_rewrite_keeping_the_mtime_is_read(tmp_path: Path) -> None:
    """An edit that swaps one jti for another of the same length (every minted jti is 32 hex
    digits) and leaves the mtime as it was -- ``touch -r``, ``cp -p``, ``rsync -t``, or two writes
    within one tick of the filesystem's clock -- is read: the file's size and mtime alone were
    the whole stamp, so the swapped-in jti stayed accepted (and the swapped-out one refused) until
    the file changed again."""
    path = tmp_path / "revoked-jti"
    a, b = "a" * 32, "b" * 32
    old = time.time_ns() - 3600 * 10**9
    path.write_text(f"{a}\n")
    os.utime(path, ns=(old, old))
    rl = RevocationList(path)
    assert rl.revoked(a) and not rl.revoked(b)
    path.write_text(f"{b}\n")  # the same inode and size ...
    os.utime(path, ns=(old, old))  # ... and the same mtime
    assert rl.revoked(b) and not rl.revoked(a)


class _Stamped:
    """A revocation file whose stat fields the test sets (the kernel sets ctime and the clock's
    tick decides equal mtimes; here each is chosen), counting its reads."""

    def __init__(self, text: str, when: int) -> None:
        self.text = text
        self.fields = {"st_ino": 7, "st_mtime_ns": when, "st_ctime_ns": when, "st_size": len(text)}
        self.reads = 0

    def stat(self) -> Any:
        return type("Stat", (), dict(self.fields))()

    def read_text(self, encoding: str) -> str:
        self.reads += 1
        return self.text

    def __str__(self) -> str:
        return "revoked-jti"


@pytest.mark.parametrize("change", ["st_ino", "st_ctime_ns", "st_mtime_ns", "st_size", "recent", "recent_ctime"])
def test_the_revocation_stamp_misses_no_change(change: str) -> None:
    """Each field of the stamp on its own tells a rewrite (an inode: a file renamed into place;
    a ctime: any write, which no ``touch`` can set back); and a file stamped within the racy window
    (2 s) of being read -- its mtime, or its ctime alone (an mtime set back) -- is read again, since
    a later write in the same tick of a coarse clock would leave every field as it was (the "racy
    clean" file of git's index)."""
    a, b = "a" * 32, "b" * 32
    now, old = time.time_ns(), time.time_ns() - 3600 * 10**9
    f = _Stamped(f"{a}\n", now if change == "recent" else old)
    if change == "recent_ctime":
        f.fields["st_ctime_ns"] = now
    rl = RevocationList(f)  # type: ignore[arg-type]
    assert rl.jtis == {a}
    f.text = f"{b}\n"
    if change.startswith("st_"):
        f.fields[change] += 1
    assert rl.refresh() is True and rl.jtis == {b}


def test_a_settled_revocation_file_is_not_read_again() -> None:
    """The stamp still saves the reads: a file whose stamp is unchanged and older than the racy
    window is not read again, however often the list is asked."""
    f = _Stamped("a" * 32 + "\n", time.time_ns() - 3600 * 10**9)
    rl = RevocationList(f)  # type: ignore[arg-type]
    for _ in range(3):
        assert rl.revoked("a" * 32) and rl.refresh() is False
    assert f.reads == 1


def test_verify_refuses_a_revoked_jti_and_only_that(tmp_path: Path) -> None:
    path = tmp_path / "revoked-jti"
    auth = Authenticator(AuthConfig(), KEYS, clock=FakeClock(), revocations=RevocationList(path))
    bad, good = (auth.mint(scopes=["sync.subscribe"], streams=["s"], ttl_s=None) for _ in range(2))
    jti = auth.verify(bad).raw["jti"]
    traded = auth.websocket_token(auth.verify(bad))  # before the revocation
    no_jti = sign({"iss": LOCAL, "sub": "legacy", "aud": ["spacetimedb"], "iat": T0})
    path.write_text(f"{jti}\n")
    assert refused(auth, bad) == f"token revoked (jti {jti})"
    assert refused(auth, traded) == f"token revoked (jti {jti})"
    assert auth.verify(good).claims.identity and auth.verify(no_jti).claims.identity
