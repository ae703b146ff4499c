"""Ed25519 verification under wattproof's one acceptance rule: the reference every verifier follows.

Owns: the rule (docs/wire-format.md, "Signature"; TEAM decision 1) and its reference implementation
on libsodium through PyNaCl. A signature is accepted when
  * the public key A is 32 bytes encoding, canonically, a point of prime order L (on the curve, in the
    main subgroup, not of small order) — ``crypto_core_ed25519_is_valid_point``;
  * the signature is 64 bytes R || S with S canonical (S < L) and R not of small order, and the
    cofactorless RFC 8032 equation [S]B = R + [k]A holds with R compared byte for byte with the
    canonical encoding of [S]B - [k]A (so a non-canonical R never passes) — libsodium's
    ``crypto_sign_open`` (its strict mode, the default: libsodium is not built with ED25519_COMPAT).
With A of prime order, the equation forces R to be of prime order too, so cofactored and cofactorless
checks (and the batch check of ``ledger/native``, which refuses any R with a torsion component) agree.

``key_problem`` says in words why a key is refused (registration uses it); ``verify`` never raises.
Must not: know about frames, the network or the store.
"""

from __future__ import annotations

from functools import lru_cache

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_sign_open,
)
from nacl.exceptions import BadSignatureError, CryptoError

P = 2**255 - 19  # the field prime
L = 2**252 + 27742317777372353535851937790883648493  # the prime order of the base point

# y coordinates (mod p) of the eight points of small order: 1 (the identity), p - 1 (order 2), 0 (order 4)
# and the two of order 8 (the same list as libsodium's ge25519_has_small_order; data, not arithmetic).
_SMALL_ORDER_Y = frozenset({
    0, 1, P - 1,
    2707385501144840649318225287225658788936804267575313519463743609750303402022,
    55188659117513257062467267217118295137698188065244968500265048394206261417927,
})


@lru_cache(maxsize=65536)
def key_problem(public_key: bytes) -> str | None:
    """Why ``public_key`` cannot verify any signature under the rule, in words; None when it can."""
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        size = len(public_key) if isinstance(public_key, bytes | bytearray) else type(public_key).__name__
        return f"an Ed25519 public key is 32 bytes, not {size}"
    if crypto_core_ed25519_is_valid_point(public_key):
        return None
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    if y >= P:
        return "not a canonical point encoding (y is not below 2^255 - 19)"
    if y in _SMALL_ORDER_Y:
        return "a point of small order (it would verify forged signatures)"
    try:
        crypto_core_ed25519_add(public_key, public_key)  # decodes the point: fails when off the curve
    except (CryptoError, RuntimeError, ValueError):
        return "not a point on the Ed25519 curve"
    return "a point with a torsion component (not in the prime-order subgroup)"


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is an Ed25519 signature of ``message`` by ``public_key`` under the rule."""
    if not isinstance(signature, bytes) or len(signature) != 64 or key_problem(public_key) is not None:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True
