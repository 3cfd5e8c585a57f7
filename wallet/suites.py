"""Algorithm suites. Every signed structure names its suite; only known suites verify.

Suite 1: ECDSA over P-256 with SHA-256, signature as fixed 64-byte r||s (one canonical length, easy to bound).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from wallet.errors import SignatureError

ECDSA_P256_SHA256 = 1
SUITE_NAMES = {ECDSA_P256_SHA256: "ECDSA-P256-SHA256"}
DEFAULT_SUITE = ECDSA_P256_SHA256
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # immutable; built once (building one per call shows in a tap's profile)


def sign(key: ec.EllipticCurvePrivateKey, data: bytes, suite: int = DEFAULT_SUITE) -> bytes:
    """Sign ``data`` with ``key`` under ``suite``."""
    if suite != ECDSA_P256_SHA256:
        raise SignatureError(f"unsupported algorithm suite {suite}")
    r, s = decode_dss_signature(key.sign(data, _ECDSA_SHA256))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(public_key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes, suite: int) -> None:
    """Verify ``signature`` over ``data``; raise :class:`SignatureError` when it does not verify."""
    if suite != ECDSA_P256_SHA256:
        raise SignatureError(f"unsupported algorithm suite {suite}")
    if len(signature) != 64:
        raise SignatureError("signature must be 64 bytes (r||s)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify") from exc
