"""Nostr keys: BIP-340 Schnorr signing and verification over secp256k1, and the key file.

The cryptography is libsecp256k1's, through ``coincurve``: a :class:`SigningKey` holds a 32-byte
secret scalar and signs 32-byte messages (a Nostr event id) with BIP-340, whose public key is the
32-byte x coordinate ("x-only") of the key's point.  :func:`verify_signature` checks a BIP-340
signature over a message of any length and answers ``False`` -- never an exception -- for a public
key that is not on the curve, a signature of the wrong length or one that does not verify.

BIP-340 mixes 32 bytes of auxiliary randomness (``aux_rand``) into the nonce.  Fresh randomness
(the default) hardens signing against side channels; a fixed ``aux_rand`` makes the signature a
deterministic function of key and message, which is what lets the bridge republish *the same*
signed event after a crash (docs/bridge.md).  The nonce stays secret either way, because it is
derived from the secret key.

The key file holds the secret as 64 hex digits on one line and must not be readable by group or
others: :func:`create_key_file` writes it with mode 0600 (like the server's JWT key), and
:func:`load_key_file` refuses, with a one-line :class:`KeyFileError`, a file that is missing, not
a regular file, unreadable, readable by others, or not a valid secp256k1 secret.  The messages
never echo the file's content.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from coincurve import PrivateKey, PublicKeyXOnly

from adapters.fsutil import fsync_dir
from adapters.nostr.errors import KeyFileError, NostrUsageError

__all__ = [
    "KEY_FILE_MODE",
    "SigningKey",
    "create_key_file",
    "load_key_file",
    "load_or_create_key_file",
    "verify_signature",
]

KEY_FILE_MODE = 0o600
_MAX_KEY_FILE_BYTES = 4096
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class SigningKey:
    """A secp256k1 secret key that signs with BIP-340; ``repr`` shows only the public key."""

    __slots__ = ("_key", "_public")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise NostrUsageError("a secp256k1 secret key is exactly 32 bytes")
        try:
            self._key = PrivateKey(secret)
        except ValueError:
            raise NostrUsageError("not a valid secp256k1 secret key (zero, or not below the curve order)") from None
        self._public: bytes = self._key.public_key_xonly.format()

    @classmethod
    def generate(cls) -> SigningKey:
        while True:  # a random 32-byte string is out of range with probability ~2^-128
            with contextlib.suppress(NostrUsageError):
                return cls(os.urandom(32))

    @classmethod
    def from_hex(cls, text: str) -> SigningKey:
        if not _HEX64.fullmatch(text):
            raise NostrUsageError("a secp256k1 secret key is 64 hex digits")
        return cls(bytes.fromhex(text))

    @property
    def public_key(self) -> bytes:
        """The 32-byte x-only public key."""
        return self._public

    @property
    def public_key_hex(self) -> str:
        """The public key as Nostr writes it: 64 lowercase hex digits."""
        return self._public.hex()

    def secret_hex(self) -> str:
        return self._key.secret.hex()

    def sign(self, message: bytes, aux_rand: bytes | None = None) -> bytes:
        """The 64-byte BIP-340 signature of a 32-byte ``message``.

        ``aux_rand``: 32 bytes, or ``None`` for 32 fresh random bytes."""
        if not isinstance(message, bytes) or len(message) != 32:
            raise NostrUsageError("BIP-340 signing here takes a 32-byte message (a Nostr event id)")
        if aux_rand is None:
            aux_rand = os.urandom(32)
        elif not isinstance(aux_rand, bytes) or len(aux_rand) != 32:
            raise NostrUsageError("BIP-340 aux_rand is exactly 32 bytes")
        return self._key.sign_schnorr(message, aux_rand)

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key_hex})"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """BIP-340 verification: ``True`` iff ``signature`` is valid for ``message`` under ``public_key``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        key = PublicKeyXOnly(public_key)
    except ValueError:  # not the x coordinate of a curve point
        return False
    return key.verify(signature, message)


def create_key_file(path: Path) -> SigningKey:
    """Generate a key and write it to a new file ``path`` with mode 0600; never overwrites."""
    key = SigningKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"signing key file {path}: already exists (refusing to overwrite a key)") from None
    except OSError as exc:
        raise KeyFileError(f"signing key file {path}: cannot create it ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), KEY_FILE_MODE)  # the umask may have taken bits away, never added
            f.write(key.secret_hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise KeyFileError(f"signing key file {path}: cannot write it ({exc.strerror})") from None
    fsync_dir(path.parent)
    return key


def load_key_file(path: Path) -> SigningKey:
    """The key in ``path``; :class:`KeyFileError` (one line, naming the file) for any problem."""
    where = f"signing key file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{where}: not found (create one with: syncref nostr-key --create --key-file {path})") \
            from None
    except PermissionError:
        raise KeyFileError(f"{where}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise KeyFileError(f"{where}: cannot open it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{where}: not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{where}: mode {mode:04o} lets other users read the secret key; "
                               f"make it private (chmod 600 {path})")
        try:
            raw = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyFileError(f"{where}: cannot read it ({exc.strerror})") from None
    finally:
        os.close(fd)
    return _parse_key_text(raw, where)


def load_or_create_key_file(path: Path) -> SigningKey:
    """Load ``path``, or create it (mode 0600) when it does not exist yet."""
    try:
        return load_key_file(path)
    except KeyFileError:
        if path.exists() or path.is_symlink():
            raise
    try:
        return create_key_file(path)
    except KeyFileError:
        if path.exists():  # another process created it first: use theirs
            return load_key_file(path)
        raise


def _parse_key_text(raw: bytes, where: str) -> SigningKey:
    expected = "expected one line of 64 hex digits (a secp256k1 secret key)"
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{where}: malformed: {expected}, the file is larger than {_MAX_KEY_FILE_BYTES} bytes")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(f"{where}: malformed: {expected}, found non-ASCII bytes") from None
    if not _HEX64.fullmatch(text):
        hint = "; bech32 'nsec1...' keys are not supported, write the hex form" if text.startswith("nsec1") else ""
        shape = "an empty file" if not text else f"{len(text)} characters"
        raise KeyFileError(f"{where}: malformed: {expected}, found {shape}{hint}")
    try:
        return SigningKey(bytes.fromhex(text))
    except NostrUsageError:
        raise KeyFileError(f"{where}: malformed: the 64 hex digits are not a valid secp256k1 secret key "
                           "(zero, or not below the curve order)") from None


