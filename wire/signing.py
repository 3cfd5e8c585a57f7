"""Terminal authentication: every request is signed with the terminal's P-256 key (shared by client and server).

Headers::

    X-Ecny-Terminal   the terminal id (its certificate is on file at the operator since provisioning)
    X-Ecny-Time       the terminal's clock in ms since the epoch (must be within ``MAX_SKEW_MS`` of the operator's)
    X-Ecny-Nonce      32 hex digits, never reused by that terminal (the operator remembers them past the skew window)
    X-Ecny-Signature  base64 of r||s (suite 1, ECDSA P-256 SHA-256) over :func:`signing_string`

The signed string binds the method, the path, the query, the time, the nonce and the SHA-256 of the body, so a
captured request cannot be replayed, redirected or altered. Plain HTTP on loopback is enough for the simulator: the
scheme authenticates, it does not encrypt. Admin (back-office) calls use a bearer token instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets

from cryptography.hazmat.primitives.asymmetric import ec

from wallet import clock, suites

H_TERMINAL = "X-Ecny-Terminal"
H_TIME = "X-Ecny-Time"
H_NONCE = "X-Ecny-Nonce"
H_SIGNATURE = "X-Ecny-Signature"
MAX_SKEW_MS = 300_000
SCHEME = "ECNY-SIG-1"


def signing_string(method: str, path: str, query: str, time_ms: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes a terminal signs for one request."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([SCHEME, method.upper(), path, query, str(time_ms), nonce, digest]).encode()


def sign_request(key: ec.EllipticCurvePrivateKey, terminal_id: str, method: str, path: str, query: str,
                 body: bytes, now_ms: int | None = None) -> dict[str, str]:
    """The authentication headers for one request."""
    t = clock.now_ms() if now_ms is None else now_ms
    nonce = secrets.token_hex(16)
    sig = suites.sign(key, signing_string(method, path, query, t, nonce, body))
    return {H_TERMINAL: terminal_id, H_TIME: str(t), H_NONCE: nonce, H_SIGNATURE: base64.b64encode(sig).decode()}


def decode_signature(text: str) -> bytes:
    """Base64 signature bytes; raises ValueError when malformed."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("signature is not base64") from exc
