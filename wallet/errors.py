"""The one exception hierarchy of ecny-pos.

Every error the project raises on purpose derives from :class:`EcnyError`, so a caller (the CLI, the UI, a test)
can catch them all in one place and tell them apart by type.
"""

from __future__ import annotations

from collections.abc import Sequence


class EcnyError(Exception):
    """Base class of every error ecny-pos raises on purpose."""


class InvalidInput(EcnyError):
    """A value given by a user or a file is malformed or out of range (CLI exit status 2)."""


class EncodingError(EcnyError):
    """Bytes that should hold a TLV structure, an APDU or a voucher do not parse."""


class ApduError(EncodingError):
    """A command or response APDU is malformed."""


class CertificateError(EcnyError):
    """A certificate or certificate chain does not verify. ``reason`` is a decline reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SignatureError(EcnyError):
    """A signature does not verify, or names an algorithm suite we do not accept."""


class CardStoreError(EcnyError):
    """The mock card store cannot find, lock or persist a card."""


class CardBusy(CardStoreError):
    """The card is locked by another tap (another process or thread holds it in the field)."""

    def __init__(self, card_id: str) -> None:
        super().__init__(f"card {card_id} is busy in another tap")
        self.card_id = card_id


class CardNotFound(CardStoreError, InvalidInput):
    """No card with that id in the store."""


class CardKeyError(CardStoreError):
    """A card's stored private key does not load (a damaged card file)."""


class StorageError(EcnyError):
    """The disk refused a write or a read (full, read-only, I/O error): nothing was half-written; ``path`` says
    where, and the message what to do (CLI exit status 1: the operation failed, the input was fine)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class WalletIdTaken(EcnyError):
    """The operator has a wallet id on file with another card's certificate: the card that drew it must be issued
    again under a fresh id. ``wallet_ids``: the ids refused."""

    def __init__(self, message: str, wallet_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.wallet_ids = tuple(wallet_ids)

    @classmethod
    def of(cls, wallet_ids: Sequence[str]) -> WalletIdTaken:
        """The refusal of ``wallet_ids`` (at least one), said by the first."""
        return cls(f"the operator has wallet {wallet_ids[0]} on file with another certificate", wallet_ids)


class WalletIdsExhausted(EcnyError):
    """A card drew wallet ids the operator had on file every time it was issued again, up to the issuer's bound
    (:data:`wallet.issuance.ISSUE_ATTEMPTS`): the issue failed."""
