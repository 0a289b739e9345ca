"""Tokens: minting and verifying the JWTs that name a caller (DESIGN §4, Auth).

SpacetimeDB is the model (``crates/client-api/src/auth.rs``, ``crates/auth/src/identity.rs``,
``crates/core/src/auth/token_validation.rs``, ``crates/lib/src/identity.rs``); PyJWT and
``cryptography`` do every signature and encoding step, nothing here parses a JWT by hand.

Identity.  A caller's identity is derived from the ``iss`` and ``sub`` claims exactly as
``Identity::from_claims`` does (:func:`identity_from_claims`): two blake3 hashes, rendered as
64 lowercase hex digits starting ``c200``.  A token may carry ``hex_identity``; if it does it
must equal the derived one.  ``iss`` and ``sub`` must be 1..128 bytes, as in SpacetimeDB.

Minting.  The server keeps one ES256 (P-256) key in its data directory (:class:`KeyStore`).
:meth:`Authenticator.mint_identity` is SpacetimeDB's ``SpacetimeAuth::alloc``: ``sub`` a fresh
uuid4, ``iss`` the local issuer, ``aud = ["spacetimedb"]``, ``iat``, ``hex_identity``, plus the
OpenAgents claims ``oa_sync_scopes`` / ``oa_sync_streams`` from the policy defaults
(:data:`DEFAULT_SCOPES`, :data:`DEFAULT_STREAM_GRANTS`; ``{identity}`` in a grant template
becomes the new identity) or, with ``dev``, every scope and the grant ``*``.  By default a minted
identity token has no ``exp`` (``identity_ttl_s=None``), like SpacetimeDB's: the token *is* the
anonymous identity's credential, and SDKs store and reuse it.
:meth:`Authenticator.websocket_token` re-signs the caller's claims unchanged (same ``iss`` and
``sub``, so the same identity; scopes, grants and compatibility claims carried over) with a new
``iat`` and an ``exp`` 60 s ahead -- but never later than the original token's own ``exp``, so
a short-lived token cannot be stretched forever by trading it for websocket tokens (SpacetimeDB
does not cap; this is one deliberate difference).  The websocket token's ``exp`` bounds when it can
be *used* (to open a connection); the connection it opens is bounded by the token it was traded
for, whose expiry it carries as ``oa_conn_exp``: that token's :attr:`Verified.connection_exp`, a
number, or ``"none"`` when it had no ``exp`` (ADR-0004 decision 8 and its tenth-session amendment;
SpacetimeDB checks ``exp`` only at connect, so its connections outlive both tokens).

Verification (:meth:`Authenticator.verify`), in order:

1. the token must parse (three base64url segments, JSON object payload) and name an ``alg``
   and an ``iss`` string; otherwise 401;
2. the issuer picks the keys.  ``iss`` = the local issuer: our ES256 public key only.
   ``iss`` = the configured external issuer (the control service): its HS256 secret or its
   public key (ES256/ES384/ES512 or RS256, chosen from the key type), and also our own key,
   because websocket tokens for external callers keep their issuer but carry our signature
   (SpacetimeDB's ``FullTokenValidator`` tries the local key first for the same reason).  Any
   other issuer: 401.  The header's ``alg`` must be one of the algorithms those keys allow, and
   each key is only ever used with its own algorithm, so an HS256 token "signed" with our
   public key PEM is refused before any MAC is computed (algorithm confusion);
3. PyJWT checks the signature, that ``sub`` and ``iss`` are present, the issuer, and that
   ``aud`` includes the configured audience (``spacetimedb``);
4. ``exp``/``nbf``/``iat`` are checked here against the injected clock (so tests use a fake
   one), with 30 s leeway: expired when ``exp <= now - leeway``, not yet valid when
   ``nbf > now + leeway`` or ``iat > now + leeway``.  They must be JSON numbers a double holds
   (an integer past ~1.8e308 is a malformed claim, as NaN is);
5. every string in the payload (names and values, at any depth) must be text UTF-8 can carry:
   a JSON ``\ud800`` escape decodes to a lone surrogate, which no frame, log or record can hold
   (401 naming the claim);
6. a token whose ``jti`` is on the revocation list (:class:`RevocationList`, the file
   ``revoked-jti`` in the server's data directory) is refused, 401 ``token revoked``; minted
   tokens carry a fresh ``jti``, and a websocket token keeps its parent's, so revoking a token
   revokes everything traded for it.  The server re-reads the file when it changes and closes
   open connections whose token it now names (1008);
7. the OpenAgents claims are typed: ``oa_sync_scopes`` and ``oa_sync_streams`` lists of
   strings (absent = none; unknown scope names are kept, they simply grant nothing),
   ``oa_device_id``/``oa_session_id``/``oa_client_build_id``/``oa_protocol_version`` strings,
   ``oa_schema_version`` an integer, ``oa_conn_exp`` a number of seconds or ``"none"``.
   ``null`` counts as absent.  A wrong type is 401 naming the claim;
8. the connection bound (:attr:`Verified.connection_exp`): ``oa_conn_exp`` when the token was
   verified with our own key (we put it there, in :meth:`Authenticator.websocket_token`; an
   external issuer's key cannot extend or lift a bound with it, so on such a token the claim is
   only type-checked), else the token's own ``exp`` (``None``: no bound).

Every refusal is an :class:`AuthError` carrying its HTTP status: 401 for any token problem, 400
for an ``Authorization`` header that is not ``Bearer <token>`` (SpacetimeDB: "Authorization is
invalid: malformed token").  :meth:`Authenticator.token_from_request` takes the header first and
``?token=`` only when there is no header at all.  Mistakes of *this* side -- a bad
:class:`AuthConfig`, an unknown scope or a non-positive TTL passed to :meth:`Authenticator.mint`
-- raise :class:`AuthUsageError`, a ``LocalProtocolError`` that is also a ``ValueError``.

Everything is sans-I/O except :meth:`KeyStore.load_or_create`, which creates the key file with
mode 0600 atomically (written to a temporary file, fsynced, then hard-linked into place so two
servers starting at once cannot overwrite each other's key; where hard links are unsupported it
falls back to a rename) and refuses a corrupt file, or one group or others may read, with a
``ValueError`` naming it.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import blake3
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.fsutil import fsync_dir, make_data_dir
from spec.auth import Claims
from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import SCOPES
from spec.values import ZERO_IDENTITY, Identity, is_id

LOCAL_ISSUER = "syncref://local"
AUDIENCE = "spacetimedb"
KEY_FILE_NAME = "jwt-es256-key.pem"
MAX_TOKEN_CHARS = 16 * 1024
MAX_ISS_SUB_BYTES = 128  # SpacetimeDB's IncomingClaims limit
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 §3.2: a key of at least the hash size
MAX_TTL_S = 2**53 - 1  # the longest life mint gives a token (canonical JSON's integer bound; ~285 million years)

# What an identity minted by this server may do: use streams and presence, publish provider ads,
# request compute.  Not: sync.admin (epoch resets), bridge.* (the Nostr bridge's own token),
# compute.assign / compute.execute (the control service and providers).
DEFAULT_SCOPES: frozenset[str] = frozenset({
    "sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write", "provider.publish",
    "compute.request",
})
# A minted identity owns the namespace ``identity.<its hex>.`` and nothing else.
DEFAULT_STREAM_GRANTS: tuple[str, ...] = ("identity.{identity}.*",)
DEV_STREAM_GRANTS: tuple[str, ...] = ("*",)

_SCOPES_CLAIM = "oa_sync_scopes"
_STREAMS_CLAIM = "oa_sync_streams"
_SCHEMA_CLAIM = "oa_schema_version"
CONN_EXP_CLAIM = "oa_conn_exp"  # a websocket token's connection bound: its parent's exp, or "none"
_NO_CONN_EXP = "none"


class AuthError(RemoteProtocolError):
    """The caller's credentials were refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"AuthError({self.message!r}, status={self.status})"


class AuthUsageError(LocalProtocolError, ValueError):
    """A caller of this module erred (bad configuration, unknown scope, non-positive TTL).

    Also a ``ValueError``, so configuration loaders that catch ``ValueError`` report it."""


def identity_from_claims(issuer: str, subject: str) -> Identity:
    """SpacetimeDB's ``Identity::from_claims``: ``c2 00 ++ checksum[:4] ++ blake3(iss|sub)[:26]``, as hex."""
    id_hash: bytes = blake3.blake3(f"{issuer}|{subject}".encode()).digest()[:26]
    checksum: bytes = blake3.blake3(b"\xc2\x00" + id_hash).digest()[:4]
    return (b"\xc2\x00" + checksum + id_hash).hex()


def _check_scopes(scopes: Iterable[str], what: str) -> frozenset[str]:
    result = frozenset(scopes)
    unknown = sorted(result - set(SCOPES))
    if unknown:
        raise AuthUsageError(f"{what}: unknown scope(s) {unknown}; known: {list(SCOPES)}")
    return result


def _can_match_a_stream(grant: str) -> bool:
    """Whether ``grant`` (``{identity}`` filled in) covers at least one valid stream id: ``*``, an
    id, or an id's prefix followed by ``*`` (spec.auth.grant_matches: no regex, no inner glob)."""
    if grant.endswith("*"):
        prefix = grant[:-1]
        return prefix == "" or is_id(prefix)
    return is_id(grant)


def _check_streams(streams: Iterable[str], what: str) -> tuple[str, ...]:
    result = tuple(streams)
    if isinstance(streams, str) or not all(isinstance(s, str) and s for s in result):
        raise AuthUsageError(f"{what}: stream grants must be non-empty strings, got {streams!r}")
    for grant in result:
        if not _can_match_a_stream(grant.replace("{identity}", ZERO_IDENTITY)):
            raise AuthUsageError(
                f"{what}: stream grant {grant[:140]!r} can match no stream id (ids are 1-128 characters of "
                "[A-Za-z0-9._:-]; a grant is an id, or an id's prefix ending in *, e.g. 'team.*'; '{identity}' "
                "stands for the token's identity)")
    return result


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Who we are, whom else we trust, and what a freshly minted identity may do."""

    issuer: str = LOCAL_ISSUER
    audience: str = AUDIENCE
    leeway_s: int = 30
    external_issuer: str | None = None
    external_hs256_secret: bytes | None = None
    external_public_key_pem: bytes | None = None
    default_scopes: frozenset[str] = DEFAULT_SCOPES
    default_stream_grants: tuple[str, ...] = DEFAULT_STREAM_GRANTS
    dev: bool = False
    allow_anonymous: bool = False
    identity_ttl_s: int | None = None
    websocket_token_ttl_s: int = 60

    def __post_init__(self) -> None:
        if not self.issuer or len(self.issuer.encode()) > MAX_ISS_SUB_BYTES:
            raise AuthUsageError(f"issuer must be 1..{MAX_ISS_SUB_BYTES} bytes, got {self.issuer!r}")
        if not self.audience:
            raise AuthUsageError("audience must not be empty")
        if self.leeway_s < 0:
            raise AuthUsageError(f"leeway_s must be >= 0, got {self.leeway_s}")
        if self.identity_ttl_s is not None and self.identity_ttl_s <= 0:
            raise AuthUsageError(f"identity_ttl_s must be positive or None, got {self.identity_ttl_s}")
        if self.websocket_token_ttl_s <= 0:
            raise AuthUsageError(f"websocket_token_ttl_s must be positive, got {self.websocket_token_ttl_s}")
        _check_scopes(self.default_scopes, "default_scopes")
        _check_streams(self.default_stream_grants, "default_stream_grants ([auth] default_streams)")
        has_key = self.external_hs256_secret is not None or self.external_public_key_pem is not None
        if self.external_issuer is None:
            if has_key:
                raise AuthUsageError("an external secret or public key needs external_issuer")
            return
        if not self.external_issuer or len(self.external_issuer.encode()) > MAX_ISS_SUB_BYTES:
            raise AuthUsageError(f"external_issuer must be 1..{MAX_ISS_SUB_BYTES} bytes")
        if self.external_issuer == self.issuer:
            raise AuthUsageError(f"external_issuer must differ from the local issuer {self.issuer!r}")
        if not has_key:
            raise AuthUsageError(
                f"external issuer {self.external_issuer!r} needs external_hs256_secret or external_public_key_pem")
        if self.external_hs256_secret is not None and len(self.external_hs256_secret) < MIN_HS256_SECRET_BYTES:
            raise AuthUsageError(f"external_hs256_secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        if self.external_public_key_pem is not None:
            _public_key_algorithms(self.external_public_key_pem)  # refuse a bad key now, not at first use

    @property
    def anonymous_allowed(self) -> bool:
        """Whether a request without a token gets a freshly minted identity (else 401)."""
        return self.allow_anonymous or self.dev


def _read_with_mode(path: Path) -> tuple[bytes, int]:
    """A file's bytes and its permission bits, both through one descriptor."""
    with path.open("rb") as f:
        return f.read(), stat.S_IMODE(os.fstat(f.fileno()).st_mode)


def _refuse_readable(path: Path, mode: int, what: str) -> None:
    if mode & 0o077:  # whoever reads it mints any token (as the bridge's Nostr key file, refused)
        raise ValueError(f"{path}: mode {mode:04o} lets other users read {what}; make it private (chmod 600 {path})")


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of a file holding a secret (``what``: "the HS256 secret"); ``ValueError`` -- ``PATH:
    mode 0644 lets other users read WHAT; make it private (chmod 600 PATH)``, the signing key's
    words -- when group or others may read it.  ``OSError`` (missing, unreadable) passes through."""
    data, mode = _read_with_mode(path)
    _refuse_readable(path, mode, what)
    return data


class KeyStore:
    """The server's ES256 (P-256) signing key."""

    __slots__ = ("_private", "_public_pem")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(private_key.curve, ec.SECP256R1):
            raise AuthUsageError("KeyStore needs a P-256 (ES256) private key")
        self._private = private_key
        self._public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def generate(cls) -> KeyStore:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str = "private key") -> KeyStore:
        """Load an unencrypted PEM private key; ``ValueError`` naming ``source`` if it is not a P-256 key."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"{source}: not a valid unencrypted PEM private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{source}: the key is not an ES256 (P-256 EC) private key")
        return cls(key)

    @classmethod
    def _load_private(cls, path: Path) -> KeyStore:
        """The key at ``path``; ``ValueError`` when it is not one, or when others may read it."""
        data, mode = _read_with_mode(path)
        store = cls.from_pem(data, source=str(path))
        _refuse_readable(path, mode, "the signing key")
        return store

    @classmethod
    def load_or_create(cls, data_dir: Path) -> KeyStore:
        """The key at ``data_dir/jwt-es256-key.pem``, created (mode 0600, atomically) if absent."""
        path = data_dir / KEY_FILE_NAME
        try:
            return cls._load_private(path)
        except FileNotFoundError:
            pass
        make_data_dir(data_dir)
        store = cls.generate()
        fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE_NAME}.", suffix=".tmp", dir=data_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(store.private_key_pem())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # no-clobber "rename"
            except FileExistsError:  # another process created it first: use theirs
                return cls._load_private(path)
            except OSError:  # no hard links on this file system
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(data_dir)
        return store

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._private

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._private.public_key()

    def private_key_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def public_key_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM (what ``GET /v1/identity/public-key`` serves)."""
        return self._public_pem


REVOKED_JTI_FILE = "revoked-jti"
MAX_JTI_CHARS = 128
RACY_NS = 2 * 10**9  # a revocation file stamped this recently is read again (FAT's mtime tick is 2 s)


class RevocationList:
    """The ``jti`` values no longer accepted: one per line in a text file (blank lines and ``#``
    comments ignored), written by ``syncref token revoke`` or by hand.

    :meth:`refresh` re-reads the file when its stamp -- inode, mtime, ctime and size -- changed (a
    missing file is an empty list), and keeps a stamp only once it is ``RACY_NS`` old: a write in
    the same tick of the filesystem's clock as the read would leave every field as it was (git's
    "racy clean" index entries), so a file stamped that recently is read again at the next refresh.
    It returns whether the list changed; :meth:`revoked` refreshes first, so a revocation
    takes effect at the next authentication.  A file that cannot be read or holds a malformed line
    keeps the last good list (failing open on a typo would be wrong, failing closed would lock
    everyone out): :attr:`problem` says why, and the server logs it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.jtis: frozenset[str] = frozenset()
        self.problem: str | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self.refresh()

    def refresh(self) -> bool:
        if self.path is None:
            return False
        now = time.time_ns()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp, text, settled = (0, 0, 0, -1), "", True
        except OSError as exc:
            self.problem = f"{self.path}: cannot read it ({exc.strerror}); the previous list stays in force"
            return False
        else:
            # (the size and mtime alone missed a same-size edit that kept the mtime: a jti swapped
            # for another, all 32 hex digits long, with touch -r / cp -p, or in one clock tick)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            if stamp == self._seen:
                return False
            settled = now - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                self.problem = f"{self.path}: cannot read it ({why}); the previous list stays in force"
                return False
        if stamp == self._seen:
            return False
        self._seen = stamp if settled else None  # a racy stamp: read again next time
        jtis = set()
        for n, line in enumerate(text.splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            if len(entry) > MAX_JTI_CHARS or not entry.isascii() or not entry.isprintable() or " " in entry:
                self.problem = (f"{self.path}:{n}: not a jti (printable ASCII without spaces, at most "
                                f"{MAX_JTI_CHARS} characters); the previous list stays in force")
                return False
            jtis.add(entry)
        self.problem = None
        changed = frozenset(jtis) != self.jtis
        self.jtis = frozenset(jtis)
        return changed

    def revoked(self, jti: object) -> bool:
        self.refresh()
        return isinstance(jti, str) and jti in self.jtis


@dataclass(frozen=True, slots=True)
class Verified:
    """A token that passed :meth:`Authenticator.verify`: the typed claims, the raw payload, and when a
    connection opened with it must end (``connection_exp``, seconds since the epoch, before the leeway;
    ``None``: never).  That is the token's own ``exp``, except on a websocket token we signed, which
    carries the bound of the token it was traded for (``oa_conn_exp``)."""

    claims: Claims
    raw: Mapping[str, Any] = field(compare=False)
    connection_exp: float | None = field(compare=False)

    @property
    def identity(self) -> Identity:
        return self.claims.identity

    @property
    def issuer(self) -> str:
        return str(self.raw["iss"])

    @property
    def subject(self) -> str:
        return str(self.raw["sub"])


# A verification key and the only algorithm(s) it may be used with.
_KeyChoice = tuple[Any, tuple[str, ...]]


def _public_key_algorithms(pem: bytes) -> _KeyChoice:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuthUsageError(f"external_public_key_pem is not a PEM public key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        alg = by_curve.get(key.curve.name)
        if alg is None:
            raise AuthUsageError(f"external EC public key on unsupported curve {key.curve.name}")
        return key, (alg,)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise AuthUsageError(f"external RSA public key too small ({key.key_size} bits; need >= 2048)")
        return key, ("RS256",)
    raise AuthUsageError(f"external public key type {type(key).__name__} is not supported (EC or RSA)")


def _is_number(value: object) -> bool:
    """A JSON number a double holds (an integer past ~1.8e308 is not one: ``float`` overflows)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Authenticator:
    """Mints and verifies tokens for one server (sans-I/O; time comes from ``clock``)."""

    def __init__(self, config: AuthConfig, keys: KeyStore, clock: Callable[[], float] = time.time,
                 revocations: RevocationList | None = None) -> None:
        self.config = config
        self.keys = keys
        self._clock = clock
        self.revocations = revocations if revocations is not None else RevocationList(None)
        self._own_key = keys.public_key
        own: _KeyChoice = (self._own_key, ("ES256",))
        self._local_keys: tuple[_KeyChoice, ...] = (own,)
        external: list[_KeyChoice] = [own]  # our re-signed websocket tokens keep the external issuer
        if config.external_hs256_secret is not None:
            external.append((config.external_hs256_secret, ("HS256",)))
        if config.external_public_key_pem is not None:
            external.append(_public_key_algorithms(config.external_public_key_pem))
        self._external_keys: tuple[_KeyChoice, ...] = tuple(external)

    # -- minting -----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _sign(self, payload: Mapping[str, Any]) -> str:
        return jwt.encode(dict(payload), self.keys.private_key, algorithm="ES256")

    def _base_claims(self, subject: str, ttl_s: int | None) -> dict[str, Any]:
        now = self._now()
        claims: dict[str, Any] = {
            "hex_identity": identity_from_claims(self.config.issuer, subject),
            "sub": subject,
            "iss": self.config.issuer,
            "aud": [self.config.audience],
            "iat": now,
            "jti": uuid.uuid4().hex,  # what `syncref token revoke` names
        }
        if ttl_s is not None:
            claims["exp"] = now + ttl_s
        return claims

    def default_grants(self, identity: Identity) -> tuple[frozenset[str], tuple[str, ...]]:
        """The scopes and stream grants a minted identity gets (dev: everything)."""
        if self.config.dev:
            return frozenset(SCOPES), DEV_STREAM_GRANTS
        return self.config.default_scopes, tuple(
            t.replace("{identity}", identity) for t in self.config.default_stream_grants)

    def mint_identity(self) -> tuple[Identity, str]:
        """A new anonymous identity and its token (``POST /v1/identity``), with the default grants."""
        subject = str(uuid.uuid4())
        claims = self._base_claims(subject, self.config.identity_ttl_s)
        scopes, streams = self.default_grants(claims["hex_identity"])
        claims[_SCOPES_CLAIM] = sorted(scopes)
        claims[_STREAMS_CLAIM] = list(streams)
        return claims["hex_identity"], self._sign(claims)

    def mint(self, *, subject: str | None = None, scopes: Iterable[str], streams: Iterable[str],
             ttl_s: int | None, device_id: str | None = None, session_id: str | None = None,
             client_build_id: str | None = None, protocol_version: str | None = None,
             schema_version: int | None = None) -> str:
        """A token with explicit grants, for ``syncref token mint`` and tests.

        ``subject`` defaults to a fresh uuid4; ``{identity}`` in a stream grant becomes the
        identity hex.  Unknown scopes are refused (a typo would otherwise grant nothing)."""
        if subject is None:
            subject = str(uuid.uuid4())
        if not isinstance(streams, str):
            streams = tuple(streams)  # iterated twice below
        texts = {"subject": subject, "device_id": device_id, "session_id": session_id,
                 "client_build_id": client_build_id, "protocol_version": protocol_version}
        for name, text in [*texts.items(), *(("streams", g) for g in streams if isinstance(g, str))]:
            if isinstance(text, str) and _has_surrogate(text):
                raise AuthUsageError(f"{name} is not valid Unicode text (a lone surrogate, e.g. from a non-UTF-8 "
                                     "command-line argument)")
        if not subject or len(subject.encode()) > MAX_ISS_SUB_BYTES:
            raise AuthUsageError(f"subject must be 1..{MAX_ISS_SUB_BYTES} bytes, got {subject!r}")
        if ttl_s is not None and not 0 < ttl_s <= MAX_TTL_S:
            raise AuthUsageError(f"ttl_s must be 1..{MAX_TTL_S} seconds or None, got {str(ttl_s)[:40]}")
        if schema_version is not None and (isinstance(schema_version, bool) or not isinstance(schema_version, int)):
            raise AuthUsageError(f"schema_version must be an int, got {schema_version!r}")
        claims = self._base_claims(subject, ttl_s)
        identity: str = claims["hex_identity"]
        claims[_SCOPES_CLAIM] = sorted(_check_scopes(scopes, "mint"))
        claims[_STREAMS_CLAIM] = [s.replace("{identity}", identity) for s in _check_streams(streams, "mint")]
        extras = {"oa_device_id": device_id, "oa_session_id": session_id, "oa_client_build_id": client_build_id,
                  "oa_protocol_version": protocol_version, _SCHEMA_CLAIM: schema_version}
        claims.update({k: v for k, v in extras.items() if v is not None})
        return self._sign(claims)

    def websocket_token(self, parent: Verified) -> str:
        """The caller's verified claims re-signed with ``iat`` = now and ``exp`` = now + 60 s
        (capped at the original ``exp``): same issuer and subject, so the same identity.  It carries
        the parent's connection bound as ``oa_conn_exp`` (``"none"`` if it has none), replacing any
        ``oa_conn_exp`` the parent's payload held."""
        raw_claims = parent.raw
        if not isinstance(raw_claims.get("iss"), str) or not isinstance(raw_claims.get("sub"), str):
            raise AuthUsageError("websocket_token needs verified claims (with iss and sub)")
        now = self._now()
        exp = now + self.config.websocket_token_ttl_s
        original_exp: Any = raw_claims.get("exp")
        if _is_number(original_exp):
            exp = min(exp, int(original_exp))
        claims = dict(raw_claims)
        claims["iat"] = now
        claims["exp"] = exp
        claims[CONN_EXP_CLAIM] = _NO_CONN_EXP if parent.connection_exp is None else parent.connection_exp
        return self._sign(claims)

    # -- verification ------------------------------------------------------------------------

    def token_from_request(self, authorization_header: str | None, query_token: str | None) -> str | None:
        """The token of a request: ``Authorization: Bearer <t>`` wins over ``?token=``.

        A header that is present but not ``Bearer <token>`` is a 400, even with a query token."""
        if authorization_header is not None:
            scheme, _, token = authorization_header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
                raise AuthError("Authorization is invalid: expected 'Bearer <token>'", status=400)
            return token
        return query_token

    def authenticate(self, authorization_header: str | None, query_token: str | None) -> Verified | None:
        """:meth:`token_from_request` then :meth:`verify`; ``None`` when the request carries no token."""
        token = self.token_from_request(authorization_header, query_token)
        return None if token is None else self.verify(token)

    def verify(self, token: str) -> Verified:
        """The verified claims of ``token``, or :class:`AuthError` (401) saying why not."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"token too long ({len(token)} characters; limit {MAX_TOKEN_CHARS})")
        if not token.isascii():
            raise AuthError("token malformed: a JWT is ASCII (base64url segments)")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"token malformed: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("token malformed: header has no alg")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise AuthError("token missing claim 'iss'" if issuer is None else "malformed claim iss (must be a string)")
        if issuer == self.config.issuer:
            candidates = self._local_keys
        elif issuer == self.config.external_issuer:
            candidates = self._external_keys
        else:
            raise AuthError(f"token issuer {issuer[:MAX_ISS_SUB_BYTES]!r} is not trusted")
        usable = [key for key, algs in candidates if alg in algs]
        if not usable:
            allowed = sorted({a for _, algs in candidates for a in algs})
            raise AuthError(f"token algorithm {alg[:16]!r} is not accepted for this issuer (allowed: {allowed})")
        payload, ours = self._decode_signed(token, alg, usable, issuer)
        _check_text(payload)
        self._check_times(payload)
        if self.revocations.revoked(payload.get("jti")):
            raise AuthError(f"token revoked (jti {str(payload['jti'])[:MAX_JTI_CHARS]})")
        return Verified(claims=self._claims_of(payload), raw=MappingProxyType(payload),
                        connection_exp=_connection_exp(payload, ours))

    def _decode_signed(self, token: str, alg: str, keys: list[Any], issuer: str) -> tuple[dict[str, Any], bool]:
        """The payload, and whether our own key is the one that verified it."""
        options: Any = {"verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                        "verify_aud": True, "verify_iss": True, "verify_sub": True, "require": ["sub", "iss"]}
        for i, key in enumerate(keys):
            try:
                payload: dict[str, Any] = jwt.decode(token, key, algorithms=[alg], options=options,
                                                     audience=self.config.audience, issuer=issuer)
                return payload, key is self._own_key
            except jwt.InvalidSignatureError:
                if i + 1 < len(keys):
                    continue
                raise AuthError("token signature invalid") from None
            except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
                claim = getattr(exc, "claim", "aud")
                if claim != "aud":
                    raise AuthError(f"token missing claim {claim!r}") from None
                raise AuthError(f"token audience must include {self.config.audience!r}") from None
            except jwt.exceptions.InvalidSubjectError:
                raise AuthError("malformed claim sub (must be a string)") from None
            except jwt.PyJWTError as exc:
                raise AuthError(f"token invalid: {exc}") from None
        raise AssertionError("unreachable: no key tried")  # pragma: no cover

    def _check_times(self, payload: Mapping[str, Any]) -> None:
        now = self._clock()
        leeway = self.config.leeway_s
        for name in ("exp", "nbf", "iat"):
            if name in payload and not _is_number(payload[name]):
                raise AuthError(f"malformed claim {name} (must be a number of seconds)")
        if "exp" in payload and payload["exp"] <= now - leeway:
            raise AuthError("token expired")
        if "nbf" in payload and payload["nbf"] > now + leeway:
            raise AuthError("token not yet valid (nbf is in the future)")
        if "iat" in payload and payload["iat"] > now + leeway:
            raise AuthError("token not yet valid (iat is in the future)")

    def _claims_of(self, payload: Mapping[str, Any]) -> Claims:
        issuer: str = payload["iss"]
        subject: str = payload["sub"]
        for name, text in (("iss", issuer), ("sub", subject)):
            if not text or len(text.encode()) > MAX_ISS_SUB_BYTES:
                raise AuthError(f"malformed claim {name} (must be 1..{MAX_ISS_SUB_BYTES} bytes)")
        identity = identity_from_claims(issuer, subject)
        claimed = payload.get("hex_identity")
        if claimed is not None:
            if not isinstance(claimed, str):
                raise AuthError("malformed claim hex_identity (must be a hex string)")
            if claimed.lower().removeprefix("0x") != identity:
                raise AuthError("token hex_identity does not match the identity derived from iss and sub")
        schema_version = payload.get(_SCHEMA_CLAIM)
        if schema_version is not None and (isinstance(schema_version, bool) or not isinstance(schema_version, int)):
            raise AuthError(f"malformed claim {_SCHEMA_CLAIM} (must be an integer)")
        return Claims(identity=identity, scopes=frozenset(_string_list(payload, _SCOPES_CLAIM)),
                      streams=_string_list(payload, _STREAMS_CLAIM),
                      device_id=_optional_string(payload, "oa_device_id"),
                      session_id=_optional_string(payload, "oa_session_id"),
                      client_build_id=_optional_string(payload, "oa_client_build_id"),
                      protocol_version=_optional_string(payload, "oa_protocol_version"),
                      schema_version=schema_version)


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(payload: Mapping[str, Any], max_items: int = 100_000) -> None:
    """Every string of a claims payload (keys too, at any depth) must be text UTF-8 can carry: a
    JSON ``"\ud800"`` escape decodes to a lone surrogate, which no log, frame or record can hold.
    401 naming the top-level claim.  Walked without recursion, at most ``max_items`` values."""
    stack: list[tuple[str, Any]] = [(str(k), (k, v)) for k, v in payload.items()]
    seen = 0
    while stack:
        claim, item = stack.pop()
        seen += 1
        if seen > max_items:
            raise AuthError("token malformed: claims too large")
        if isinstance(item, tuple):  # (key, value) of an object
            key, value = item
            if isinstance(key, str) and _has_surrogate(key):
                raise AuthError("malformed claim name (not valid Unicode text)")
            stack.append((claim, value))
        elif isinstance(item, str):
            if _has_surrogate(item):
                raise AuthError(f"malformed claim {claim[:64].encode('utf-8', 'backslashreplace').decode()} "
                                "(not valid Unicode text: a lone surrogate)")
        elif isinstance(item, list):
            stack.extend((claim, v) for v in item)
        elif isinstance(item, dict):
            stack.extend((claim, (k, v)) for k, v in item.items())


def _connection_exp(payload: Mapping[str, Any], ours: bool) -> float | None:
    """When a connection opened with this (verified, time-checked) token ends: ``oa_conn_exp`` if our
    own key signed it, else the token's ``exp``.  The claim's type is checked whoever signed it."""
    claimed = payload.get(CONN_EXP_CLAIM)
    if claimed is not None and claimed != _NO_CONN_EXP and not _is_number(claimed):
        raise AuthError(f'malformed claim {CONN_EXP_CLAIM} (must be a number of seconds or "{_NO_CONN_EXP}")')
    if ours and claimed is not None:
        return None if claimed == _NO_CONN_EXP else float(claimed)
    exp = payload.get("exp")
    return None if exp is None else float(exp)


def _optional_string(payload: Mapping[str, Any], claim: str) -> str | None:
    value = payload.get(claim)
    if value is not None and not isinstance(value, str):
        raise AuthError(f"malformed claim {claim} (must be a string)")
    return value


def _string_list(payload: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    value = payload.get(claim)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(f"malformed claim {claim} (must be a list of strings)")
    return tuple(value)
