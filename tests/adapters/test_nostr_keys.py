"""BIP-340 signing and verification against the published test vectors and a pure-Python second
opinion, and the signing-key file (mode 0600, one-line errors for every way it can be wrong)."""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import bip340_ref

from adapters.nostr.errors import KeyFileError, NostrUsageError
from adapters.nostr.keys import (
    KEY_FILE_MODE,
    SigningKey,
    create_key_file,
    load_key_file,
    load_or_create_key_file,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parent / "data" / "bip340-test-vectors.csv"
VECTORS_SHA256 = "34c9d1d9c3a88d524bc80778540dc43f8306ec249a7485293063c376db851c2d"


def _rows() -> list[dict[str, str]]:
    with VECTORS.open(newline="") as f:
        return list(csv.DictReader(f))


ROWS = _rows()


def test_the_vector_file_is_the_published_one() -> None:
    assert hashlib.sha256(VECTORS.read_bytes()).hexdigest() == VECTORS_SHA256
    assert [int(r["index"]) for r in ROWS] == list(range(19))
    assert sum(r["verification result"] == "TRUE" for r in ROWS) == 9


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"vector{r['index']}")
def test_bip340_vector(row: dict[str, str]) -> None:
    pubkey = bytes.fromhex(row["public key"])
    message = bytes.fromhex(row["message"])
    sig = bytes.fromhex(row["signature"])
    expected = row["verification result"] == "TRUE"
    assert verify_signature(pubkey, message, sig) is expected, row["comment"]
    assert bip340_ref.verify(pubkey, message, sig) is expected, row["comment"]
    if row["secret key"]:
        secret = bytes.fromhex(row["secret key"])
        aux = bytes.fromhex(row["aux_rand"])
        assert bip340_ref.public_key(secret) == pubkey
        assert bip340_ref.sign(secret, message, aux) == sig
        key = SigningKey(secret)
        assert key.public_key == pubkey
        if len(message) == 32:
            assert key.sign(message, aux) == sig
        else:  # vectors 15-18: messages of 0, 1, 17 and 100 bytes; coincurve signs 32-byte messages only
            with pytest.raises(NostrUsageError, match="32-byte message"):
                key.sign(message, aux)


def test_every_vector_signing_case_with_a_32_byte_message_is_signed_by_the_client() -> None:
    signable = [r for r in ROWS if r["secret key"] and len(bytes.fromhex(r["message"])) == 32]
    assert [int(r["index"]) for r in signable] == [0, 1, 2, 3]


@settings(max_examples=25)
@given(secret=st.binary(min_size=32, max_size=32), message=st.binary(min_size=32, max_size=32),
       aux=st.binary(min_size=32, max_size=32))
def test_the_client_and_the_reference_sign_identically(secret: bytes, message: bytes, aux: bytes) -> None:
    d = int.from_bytes(secret, "big")
    if not 1 <= d < bip340_ref.N:
        with pytest.raises(NostrUsageError):
            SigningKey(secret)
        return
    key = SigningKey(secret)
    sig = key.sign(message, aux)
    assert key.public_key == bip340_ref.public_key(secret)
    assert sig == bip340_ref.sign(secret, message, aux)
    assert bip340_ref.verify(key.public_key, message, sig)
    flipped = bytes([sig[0]]) + bytes([sig[1] ^ 1]) + sig[2:]
    assert not verify_signature(key.public_key, message, flipped)
    assert not bip340_ref.verify(key.public_key, message, flipped)


def test_aux_rand_fixes_the_signature_and_its_absence_draws_a_fresh_one() -> None:
    key = SigningKey.generate()
    message = hashlib.sha256(b"m").digest()
    fixed = bytes(32)
    assert key.sign(message, fixed) == key.sign(message, fixed)
    a, b = key.sign(message), key.sign(message)
    assert a != b
    assert verify_signature(key.public_key, message, a) and verify_signature(key.public_key, message, b)
    assert key.sign(message, fixed) != key.sign(message, b"\x01" * 32)


@pytest.mark.parametrize(("secret", "match"), [
    (b"\x01" * 31, "exactly 32 bytes"),
    (bytes(32), "not a valid secp256k1 secret key"),
    (bip340_ref.N.to_bytes(32, "big"), "not a valid secp256k1 secret key"),
    (b"\xff" * 32, "not a valid secp256k1 secret key"),
])
def test_signing_key_rejects_bad_secrets(secret: bytes, match: str) -> None:
    with pytest.raises(NostrUsageError, match=match):
        SigningKey(secret)


def test_signing_key_misuse() -> None:
    key = SigningKey.generate()
    with pytest.raises(NostrUsageError, match="32-byte message"):
        key.sign(b"short")
    with pytest.raises(NostrUsageError, match="aux_rand"):
        key.sign(bytes(32), b"\x00" * 31)
    with pytest.raises(NostrUsageError, match="64 hex"):
        SigningKey.from_hex("xyz")
    assert SigningKey.from_hex(key.secret_hex()).public_key == key.public_key
    assert key.secret_hex() not in repr(key) and key.public_key_hex in repr(key)
    assert (bip340_ref.N - 1).to_bytes(32, "big") and SigningKey((bip340_ref.N - 1).to_bytes(32, "big"))


def test_verify_signature_answers_false_never_raises() -> None:
    key = SigningKey.generate()
    message = bytes(32)
    sig = key.sign(message, bytes(32))
    assert verify_signature(key.public_key, message, sig)
    assert not verify_signature(key.public_key[:31], message, sig)
    assert not verify_signature(key.public_key, message, sig[:63])
    off_curve = bytes.fromhex("EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34")
    assert not verify_signature(off_curve, message, sig)
    assert not verify_signature(b"\xff" * 32, message, sig)
    assert not verify_signature(key.public_key, b"\x01" * 32, sig)


# ------------------------------------------------------------------------------------------ key file


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text and text
    return text


def test_create_key_file_writes_mode_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "nostr.key"
    old = os.umask(0)
    try:
        key = create_key_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == KEY_FILE_MODE == 0o600
    assert path.read_text() == key.secret_hex() + "\n"
    assert load_key_file(path).public_key == key.public_key


def test_create_key_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "nostr.key"
    key = create_key_file(path)
    with pytest.raises(KeyFileError, match="already exists") as info:
        create_key_file(path)
    _one_line(info.value)
    assert load_key_file(path).public_key == key.public_key


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "nostr.key"
    first = load_or_create_key_file(path)
    assert load_or_create_key_file(path).public_key == first.public_key
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        load_or_create_key_file(path)  # a bad existing file is an error, never replaced


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found") as info:
        load_key_file(tmp_path / "absent.key")
    assert str(tmp_path / "absent.key") in _one_line(info.value)


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a regular file") as info:
        load_key_file(tmp_path)
    _one_line(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o700 | 0o004])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = SigningKey.generate()
    path = _write(tmp_path / "k", key.secret_hex().encode(), mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600") as info:
        load_key_file(path)
    assert key.secret_hex() not in _one_line(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    key = SigningKey.generate()
    path = _write(tmp_path / "k", key.secret_hex().encode() + b"\n", mode)
    assert load_key_file(path).public_key == key.public_key


def test_unreadable_key_file_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "k", SigningKey.generate().secret_hex().encode())
    real_open = os.open

    def denying_open(p: object, flags: int, *args: int) -> int:
        if os.fspath(p) == os.fspath(path):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied")
        return real_open(p, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denying_open)
    with pytest.raises(KeyFileError, match="cannot read it \\(permission denied\\)") as info:
        load_key_file(path)
    _one_line(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway; the monkeypatched test covers it")
def test_unreadable_key_file_for_real(tmp_path: Path) -> None:
    path = _write(tmp_path / "k", SigningKey.generate().secret_hex().encode(), 0o000)
    with pytest.raises(KeyFileError, match="permission denied"):
        load_key_file(path)


SECRET = "8ab23381c3906bf3c6c52b1eec799acc930990408a588397101d42cc37029037"


@pytest.mark.parametrize(("data", "match"), [
    (b"", "found an empty file"),
    (b"\n\n", "found an empty file"),
    (SECRET[:63].encode(), "found 63 characters"),
    ((SECRET + "0").encode(), "found 65 characters"),
    (SECRET.replace("8", "g", 1).encode(), "expected one line of 64 hex digits"),
    ((SECRET + "\n" + SECRET).encode(), "found 129 characters"),
    ("é".encode() + SECRET.encode(), "non-ASCII"),
    (b"\xff\xfe", "non-ASCII"),
    (b"nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5", "nsec1.*not supported"),
    (b"0" * 64, "not a valid secp256k1 secret key"),
    (b"f" * 64, "not a valid secp256k1 secret key"),
    (b"a" * 5000, "larger than 4096 bytes"),
])
def test_malformed_key_files(tmp_path: Path, data: bytes, match: str) -> None:
    path = _write(tmp_path / "k", data)
    with pytest.raises(KeyFileError, match=match) as info:
        load_key_file(path)
    text = _one_line(info.value)
    assert "malformed" in text and str(path) in text
    assert SECRET not in text and SECRET[:63] not in text


def test_key_file_tolerates_surrounding_whitespace_and_upper_case(tmp_path: Path) -> None:
    path = _write(tmp_path / "k", b"  " + SECRET.upper().encode() + b"\r\n")
    assert load_key_file(path).secret_hex() == SECRET


def test_key_file_errors_are_usage_errors() -> None:
    assert issubclass(KeyFileError, NostrUsageError) and issubclass(KeyFileError, ValueError)


def test_the_nostr_key_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.cli import main

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["nostr-key", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    path = tmp_path / "bridge.key"
    assert cli("--key-file", str(path)) == (2, "", f"syncref nostr-key: signing key file {path}: not found "
                                                   f"(create one with: syncref nostr-key --create --key-file {path})\n")
    code, out, err = cli("--create", "--key-file", str(path))
    assert code == 0 and err == ""
    pubkey = out.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pubkey == load_key_file(path).public_key_hex == bip340_ref.public_key(bytes.fromhex(path.read_text())).hex()
    assert cli("--key-file", str(path)) == (0, pubkey + "\n", "")
    assert cli("--create", "--key-file", str(path)) == (0, pubkey + "\n", "")  # never replaced
    path.chmod(0o644)
    code, out, err = cli("--key-file", str(path))
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "chmod 600" in err
