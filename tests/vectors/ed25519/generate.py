"""Regenerate our own Ed25519 edge-case vectors (run from the repository root):

    .venv/bin/python -m tests.vectors.ed25519.generate

``own_cases.json`` holds signatures that only the holder of a key can build (the key's scalar is
derived from a published test seed on purpose) and public keys no device may register, each with a
``desc`` and what the acceptance rule (device/ed25519.py) must decide; SOURCE.md says why.
The constructions are also used by the tests to sign frames with the same edge cases.
Built with libsodium's scalar and point operations (PyNaCl): no curve arithmetic of our own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
)

HERE = Path(__file__).parent
L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19

# Encodings of the points of small order (libsodium's blocklist, speccheck): name -> (hex, order).
IDENTITY = "01" + "00" * 31
SMALL_ORDER = {
    "identity (order 1)": (IDENTITY, 1),
    "y = p - 1 (order 2)": ("ec" + "ff" * 30 + "7f", 2),
    "y = 0 (order 4)": ("00" * 32, 4),
    "y = 0, sign bit set (order 4)": ("00" * 31 + "80", 4),
    "order 8, first": ("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", 8),
    "order 8, first with sign bit": ("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", 8),
    "order 8, second": ("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", 8),
    "order 8, second with sign bit": ("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", 8),
}


def scalar(label: str) -> bytes:
    """A test scalar (32 bytes, reduced mod L) derived from ``label``: published on purpose."""
    return crypto_core_ed25519_scalar_reduce(hashlib.sha512(b"wattproof ed25519 test " + label.encode()).digest())


def public_key(a: bytes) -> bytes:
    return crypto_scalarmult_ed25519_base_noclamp(a)


def sign_with_nonce_point(a: bytes, msg: bytes, r_bytes: bytes, r: bytes | None) -> bytes:
    """R || S with the given R bytes and S = r + k a (r = 0 when None), k = SHA-512(R || A || M) mod L:
    what the holder of scalar key ``a`` signs when it chooses R itself."""
    k = crypto_core_ed25519_scalar_reduce(hashlib.sha512(r_bytes + public_key(a) + msg).digest())
    ka = crypto_core_ed25519_scalar_mul(k, a)
    s = ka if r is None else crypto_core_ed25519_scalar_add(r, ka)
    return r_bytes + s


def sign_plain(a: bytes, msg: bytes, label: str = "nonce") -> bytes:
    r = scalar(label + msg.hex())
    return sign_with_nonce_point(a, msg, public_key(r), r)


def sign_torsion_nonce(a: bytes, msg: bytes, torsion_hex: str) -> bytes:
    """R = [r]B + T (T of small order): valid for a cofactored check, refused by the cofactorless one;
    a random-linear-combination batch may accept it depending on the other signatures of the batch."""
    r = scalar("torsion" + torsion_hex + msg.hex())
    return sign_with_nonce_point(a, msg, crypto_core_ed25519_add(public_key(r), bytes.fromhex(torsion_hex)), r)


def signature_cases(a: bytes, msg: bytes) -> dict[str, tuple[str, bytes, bool]]:
    """name -> (desc, signature, accepted by the rule) for key ``a`` over ``msg``."""
    good = sign_plain(a, msg)
    s = int.from_bytes(good[32:], "little")
    cases = {
        "valid": ("an ordinary signature", good, True),
        "s_plus_l": ("S + L: the same signature with a non-canonical S", good[:32] + (s + L).to_bytes(32, "little"), False),
        "s_high_bit": ("S with its top bit set", good[:32] + (s | 1 << 255).to_bytes(32, "little"), False),
        "identity_nonce": ("R = the identity, S = k a: [S]B - [k]A = R holds, R of small order",
                           sign_with_nonce_point(a, msg, bytes.fromhex(IDENTITY), None), False),
        "identity_nonce_sign_bit": ("R = y 1 with the sign bit of x set (x = 0: not canonical), S = k a, as "
                                    "Wycheproof tcId 151; a lenient decoder reads the identity",
                                    sign_with_nonce_point(a, msg, bytes.fromhex("01" + "00" * 30 + "80"), None),
                                    False),
    }
    for i, (name, (hex_, order)) in enumerate(SMALL_ORDER.items()):
        if order > 1:
            cases[f"torsion_nonce_{i}"] = (
                f"R = [r]B + {name}, S = r + k a: valid only for a cofactored check",
                sign_torsion_nonce(a, msg, hex_), False)
    return cases


def key_cases(a: bytes) -> dict[str, tuple[str, bytes, str]]:
    """name -> (desc, public key, words the refusal must contain) for keys no device may register."""
    cases = {f"small_order_{i}": (f"a point of small order: {name}", bytes.fromhex(hex_), "small order")
             for i, (name, (hex_, _)) in enumerate(SMALL_ORDER.items())}
    good = public_key(a)
    for name, (hex_, order) in SMALL_ORDER.items():
        if order == 8 and "sign bit" not in name:
            cases[f"mixed_order_{name.split(', ')[1]}"] = (
                "A + a point of order 8 (mixed order: a torsion component)",
                crypto_core_ed25519_add(good, bytes.fromhex(hex_)), "torsion component")
    cases["y_p_plus_1"] = ("y = p + 1, a non-canonical spelling of the identity",
                           (P + 1).to_bytes(32, "little"), "not a canonical")
    cases["y_all_ones"] = ("y = 2^255 - 1: not below p", b"\xff" * 32, "not a canonical")
    cases["off_curve"] = ("y = 2: no x satisfies the curve equation", (2).to_bytes(32, "little"), "not a point")
    cases["short"] = ("31 bytes", good[:31], "32 bytes")
    return cases


KEY = scalar("device key")
MESSAGE = b"wattproof ed25519 edge cases"


def main() -> None:
    doc = {
        "desc": "wattproof's own Ed25519 edge cases (tests/vectors/ed25519/generate.py); scalar key "
                "derived from a published label; expected = the acceptance rule's verdict",
        "public_key_hex": public_key(KEY).hex(),
        "message_hex": MESSAGE.hex(),
        "signatures": [{"name": n, "desc": d, "sig_hex": s.hex(), "expected": "accept" if ok else "refuse",
                        "error": None if ok else "bad_signature"}
                       for n, (d, s, ok) in signature_cases(KEY, MESSAGE).items()],
        "keys": [{"name": n, "desc": d, "public_key_hex": k.hex(), "refused_because": why}
                 for n, (d, k, why) in key_cases(KEY).items()],
    }
    (HERE / "own_cases.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
