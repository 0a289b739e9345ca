"""A second opinion on BIP-340: Schnorr signatures over secp256k1 in plain Python integers.

Written from the BIP's algorithm description (tagged hashes; Jacobian double-and-add, affine addition), sharing no
code with libsecp256k1/``coincurve``, which :mod:`adapters.nostr.keys` uses.  Slow (milliseconds
per operation) and not constant-time: for tests only.  Messages may have any length.
"""

from __future__ import annotations

import hashlib

P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
     0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)

Point = tuple[int, int] | None


def tagged_hash(tag: str, data: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + data).digest()


def _add(a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and a[1] != b[1]:
        return None
    slope = (3 * a[0] * a[0], 2 * a[1]) if a == b else (b[1] - a[1], b[0] - a[0])
    lam = slope[0] * pow(slope[1], -1, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return x, (lam * (a[0] - x) - a[1]) % P


def _mul(point: Point, k: int) -> Point:
    """``k * point`` by double-and-add in Jacobian coordinates (one inversion at the end)."""
    if point is None or k % N == 0:
        return None
    acc: tuple[int, int, int] | None = None
    base = (point[0], point[1], 1)
    for bit in bin(k)[2:]:
        acc = _jdouble(acc)
        if bit == "1":
            acc = _jadd(acc, base)
    if acc is None or acc[2] == 0:
        return None
    zinv = pow(acc[2], -1, P)
    return acc[0] * zinv * zinv % P, acc[1] * zinv * zinv * zinv % P


def _jdouble(a: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    if a is None or a[1] == 0:
        return None
    x, y, z = a
    ysq = y * y % P
    s = 4 * x * ysq % P
    m = 3 * x * x % P
    nx = (m * m - 2 * s) % P
    return nx, (m * (s - nx) - 8 * ysq * ysq) % P, 2 * y * z % P


def _jadd(a: tuple[int, int, int] | None, b: tuple[int, int, int]) -> tuple[int, int, int] | None:
    if a is None:
        return b
    x1, y1, z1 = a
    x2, y2, z2 = b
    z1sq, z2sq = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2sq % P, x2 * z1sq % P
    s1, s2 = y1 * z2sq * z2 % P, y2 * z1sq * z1 % P
    if u1 == u2:
        return _jdouble(a) if s1 == s2 else None
    h, r = (u2 - u1) % P, (s2 - s1) % P
    h2 = h * h % P
    h3 = h * h2 % P
    nx = (r * r - h3 - 2 * u1 * h2) % P
    return nx, (r * (u1 * h2 - nx) - s1 * h3) % P, h * z1 * z2 % P


def _lift_x(x: int) -> Point:
    if x >= P:
        return None
    y_sq = (pow(x, 3, P) + 7) % P
    y = pow(y_sq, (P + 1) // 4, P)
    if pow(y, 2, P) != y_sq:
        return None
    return x, y if y % 2 == 0 else P - y


def public_key(secret: bytes) -> bytes:
    d = int.from_bytes(secret, "big")
    if not 1 <= d < N:
        raise ValueError("secret key out of range")
    point = _mul(G, d)
    assert point is not None
    return point[0].to_bytes(32, "big")


def sign(secret: bytes, message: bytes, aux_rand: bytes) -> bytes:
    d0 = int.from_bytes(secret, "big")
    if not 1 <= d0 < N:
        raise ValueError("secret key out of range")
    if len(aux_rand) != 32:
        raise ValueError("aux_rand is 32 bytes")
    point = _mul(G, d0)
    assert point is not None
    d = d0 if point[1] % 2 == 0 else N - d0
    t = (d ^ int.from_bytes(tagged_hash("BIP0340/aux", aux_rand), "big")).to_bytes(32, "big")
    pk = point[0].to_bytes(32, "big")
    k0 = int.from_bytes(tagged_hash("BIP0340/nonce", t + pk + message), "big") % N
    if k0 == 0:
        raise ValueError("nonce is zero")
    r = _mul(G, k0)
    assert r is not None
    k = k0 if r[1] % 2 == 0 else N - k0
    rx = r[0].to_bytes(32, "big")
    e = int.from_bytes(tagged_hash("BIP0340/challenge", rx + pk + message), "big") % N
    sig = rx + ((k + e * d) % N).to_bytes(32, "big")
    if not verify(pk, message, sig):
        raise AssertionError("the reference produced a signature it cannot verify")
    return sig


def verify(pubkey: bytes, message: bytes, sig: bytes) -> bool:
    if len(pubkey) != 32 or len(sig) != 64:
        return False
    point = _lift_x(int.from_bytes(pubkey, "big"))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if point is None or r >= P or s >= N:
        return False
    e = int.from_bytes(tagged_hash("BIP0340/challenge", sig[:32] + pubkey + message), "big") % N
    big_r = _add(_mul(G, s), _mul(point, N - e))
    return big_r is not None and big_r[1] % 2 == 0 and big_r[0] == r
