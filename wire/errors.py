"""Typed errors of the operator, as they travel: each maps to one HTTP status and one stable error code in the
body ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from collections.abc import Sequence

from wallet.errors import EcnyError, InvalidInput, WalletIdTaken


class OperatorError(EcnyError):
    """An operator call failed. ``status`` is the HTTP status, ``code`` the stable error code in the body."""

    status = 500
    code = "operator_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": str(self)}}


class BadRequest(OperatorError, InvalidInput):
    """The request is malformed or out of range (400); nothing was changed."""

    status = 400
    code = "bad_request"


class Unauthenticated(OperatorError):
    """The caller could not be authenticated (401): unknown terminal, bad signature, stale or replayed request."""

    status = 401
    code = "unauthenticated"


class Forbidden(OperatorError):
    """The caller is known but may not do this (403): revoked terminal, another merchant's voucher or report."""

    status = 403
    code = "forbidden"


class NotFound(OperatorError, InvalidInput):
    """The thing asked for does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(OperatorError):
    """The request contradicts what the operator already recorded (409), e.g. a refund over the original."""

    status = 409
    code = "conflict"


class WalletExists(Conflict, WalletIdTaken):
    """A wallet id the registration names is on file with another certificate (409 ``wallet_exists``): the operator
    keeps the wallet it has; the issuer issues the card again under a fresh id. ``wallet_ids``: the ids refused."""

    code = "wallet_exists"

    def __init__(self, message: str, wallet_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.wallet_ids = tuple(wallet_ids)


class UnsupportedMediaType(OperatorError):
    """The request body is in a format this call does not take (415); nothing was changed."""

    status = 415
    code = "unsupported_media_type"


class MethodNotAllowed(OperatorError):
    """The path exists but does not take this method (405)."""

    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(OperatorError):
    """The request body is over the operator's size cap for this call (413); it was not read any further."""

    status = 413
    code = "payload_too_large"


class InternalError(OperatorError):
    """Something unexpected went wrong inside the operator (500); what the request changed was rolled back."""

    status = 500
    code = "internal_error"


class ServiceUnavailable(OperatorError):
    """The operator cannot reach its database right now (503); nothing was changed. Retry after
    ``retry_after`` seconds (the ``Retry-After`` header)."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after
