"""Terminal authentication: every request is signed with the terminal's P-256 key (shared by client and server).

Headers::

    X-Ecny-Terminal   the terminal id (its certificate is on file at the operator since provisioning)
    X-Ecny-Time       the terminal's clock in ms since the epoch (must be within ``MAX_SKEW_MS`` of the operator's)
    X-Ecny-Nonce      32 hex digits, never reused by that terminal (the operator remembers them past the skew window)
    X-Ecny-Signature  base64 of r||s (suite 1, ECDSA P-256 SHA-256) over :func:`signing_string`
    X-Ecny-Clock-Correction  optional: ms the terminal added to its own clock to get X-Ecny-Time (the offset it
                      learnt from the operator; signed with the time). The operator measures the terminal's clock
                      as time - correction.

Every operator answer (errors included) carries ``X-Ecny-Operator-Time``: the operator's clock in ms when it
answered. A terminal learns its clock offset from it (:func:`offset_from`); a request whose time is off by more than
``MAX_SKEW_MS`` is answered 401 ``clock_skew`` (with that header), so the terminal learns the offset, re-signs with
its corrected time and says its clock is wrong, rather than failing silently.

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
H_CORRECTION = "X-Ecny-Clock-Correction"
H_OPERATOR_TIME = "X-Ecny-Operator-Time"
MAX_SKEW_MS = 300_000
SCHEME = "ECNY-SIG-1"


def signing_string(method: str, path: str, query: str, time_ms: int, nonce: str, body: bytes,
                   correction_ms: int = 0) -> bytes:
    """The exact bytes a terminal signs for one request (the time line is ``TIME`` or, with a clock correction,
    ``TIME;CORRECTION``)."""
    digest = hashlib.sha256(body).hexdigest()
    when = f"{time_ms};{correction_ms}" if correction_ms else str(time_ms)
    return "\n".join([SCHEME, method.upper(), path, query, when, nonce, digest]).encode()


def sign_request(key: ec.EllipticCurvePrivateKey, terminal_id: str, method: str, path: str, query: str,
                 body: bytes, now_ms: int | None = None, correction_ms: int = 0) -> dict[str, str]:
    """The authentication headers for one request: the time is the terminal's clock (``now_ms``, else
    :func:`wallet.clock.now_ms`) plus ``correction_ms``, the offset it learnt from the operator."""
    t = (clock.now_ms() if now_ms is None else now_ms) + correction_ms
    nonce = secrets.token_hex(16)
    sig = suites.sign(key, signing_string(method, path, query, t, nonce, body, correction_ms))
    headers = {H_TERMINAL: terminal_id, H_TIME: str(t), H_NONCE: nonce, H_SIGNATURE: base64.b64encode(sig).decode()}
    if correction_ms:
        headers[H_CORRECTION] = str(correction_ms)
    return headers


def offset_from(operator_time_ms: int, sent_ms: int, received_ms: int) -> int:
    """The terminal clock's correction (operator time minus terminal time, ms) from one exchange: the operator's
    answer time against the middle of the terminal's send and receive times. Positive: the terminal is behind."""
    return operator_time_ms - (sent_ms + received_ms) // 2


def parse_correction(text: str) -> int:
    """A clock correction header as an int; ValueError when malformed (at most ~30 years either way)."""
    body = text[1:] if text[:1] == "-" else text
    if not body.isascii() or not body.isdigit() or len(body) > 12:
        raise ValueError(text)
    return int(text)


def decode_signature(text: str) -> bytes:
    """Base64 signature bytes; raises ValueError when malformed."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("signature is not base64") from exc
