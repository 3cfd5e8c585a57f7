"""The bodies of the terminal–operator API, as pydantic models both sides use: the operator declares them (requests
it accepts, answers it gives) and the terminal's client parses answers into them.

Field names and order are the JSON on the wire. Answers read by attribute (``answer.results``); they also read as
a mapping of plain JSON values (``answer["results"]``, ``answer.get("reason")``, ``{**answer}``) for code written
against the JSON objects.
"""

from __future__ import annotations

from collections.abc import KeysView
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from wire.batch import MAX_BATCH

HEX = r"^([0-9a-f]{2})*$"
FINGERPRINT = r"^[0-9a-f]{64}$"


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data (models as dicts, tuples as lists)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class WireModel(BaseModel):
    """A JSON object of the API; readable by attribute, or as a read-only mapping of its JSON values."""

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return _plain(getattr(self, key))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in type(self).model_fields else default

    def __contains__(self, key: object) -> bool:
        return key in type(self).model_fields

    def keys(self) -> KeysView[str]:
        return type(self).model_fields.keys()

    def to_json(self) -> dict[str, Any]:
        """The JSON object, as plain data."""
        return self.model_dump(mode="json")


# -- requests -------------------------------------------------------------------------------------------------------
class ClaimUpload(BaseModel):
    """A discounted payment's claim on its campaign, signed by the terminal (see wire/claims.py)."""

    campaign_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    gross_fen: int = Field(gt=1, le=10**12)
    discount_fen: int = Field(gt=0, le=0xFFFFFFFF)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="64 bytes r||s, hex")


class VoucherUpload(BaseModel):
    voucher: str = Field(pattern=HEX, max_length=4096, description="the voucher TLV, hex")
    cert: str = Field(pattern=FINGERPRINT, description="SHA-256 fingerprint of the wallet certificate")
    issuer: str = Field(pattern=FINGERPRINT, description="SHA-256 fingerprint of the issuing CA certificate")
    claim: ClaimUpload | None = None


class SettlementRequest(BaseModel):
    vouchers: list[VoucherUpload] = Field(max_length=MAX_BATCH)
    certificates: dict[str, Annotated[str, Field(pattern=HEX, max_length=8192)]] = Field(
        description="DER certificates by fingerprint, hex")


class RefundRequest(BaseModel):
    refund_id: str = Field(min_length=1, max_length=80)
    voucher_id: str = Field(pattern=r"^\d{16}-\d{8}$")
    amount_fen: int | None = Field(default=None, gt=0, le=10**12)


class ProvisionRequest(BaseModel):
    terminal_id: str = Field(pattern=r"^[A-Z0-9]{8}$")
    public_key_pem: str = Field(max_length=4096)


class WalletRequest(BaseModel):
    wallet_id: str = Field(pattern=r"^\d{16}$")
    tier: int = Field(ge=1, le=4)
    certificate: str = Field(pattern=HEX, max_length=8192)
    opening_balance_fen: int = Field(ge=0, le=10**12)


class LoadTokenRequest(BaseModel):
    amount_fen: int = Field(gt=0, le=10**12)
    after_counter: int = Field(default=0, ge=0, le=0xFFFFFFFF)


# -- answers --------------------------------------------------------------------------------------------------------
class ClaimAnswer(WireModel):
    campaign_id: str
    discount_fen: int
    status: str = Field(description="paid (the merchant is credited the discount) | refused (it is not)")
    reason: str | None = Field(description="why a claim was refused (docs/campaigns.md)")
    flag: str | None = Field(description="repeat_wallet_day: paid, over the campaign's per-wallet daily count")


class VoucherAnswer(WireModel):
    voucher_id: str | None
    status: str = Field(description="settled | duplicate | rejected")
    reason: str | None
    flag: str | None = Field(default=None, description="review_timestamp: settled or rejected as usual, its "
                                                       "timestamp to be reviewed (see docs/operator.md, Time)")
    claim: ClaimAnswer | None = Field(default=None, description="the discount claim's outcome (settled vouchers)")


class SettlementAnswer(WireModel):
    results: list[VoucherAnswer]
    denylist_version: int


class DenylistAnswer(WireModel):
    version: int
    since: int
    added: list[str]
    removed: list[str]


class RefundAnswer(WireModel):
    refund_id: str
    voucher_id: str
    status: str = Field(description="refunded")
    amount_fen: int
    refunded_total_fen: int
    remaining_fen: int
    wallet_id: str
    day: str
    created_ms: int
    replayed: bool


class SettledTotals(WireModel):
    count: int
    total_fen: int
    fee_fen: int
    net_fen: int


class RejectedTotals(WireModel):
    count: int
    total_fen: int
    reasons: dict[str, int]


class RefundTotals(WireModel):
    count: int
    total_fen: int


class DiscountTotals(WireModel):
    """A day's discount claims of a terminal: paid (of them flagged) and refused, counts and fen."""

    paid: int
    paid_fen: int
    flagged: int
    refused: int
    refused_fen: int


class ReportAnswer(WireModel):
    terminal_id: str
    merchant_id: str
    date: str
    count: int
    total_fen: int
    settled: SettledTotals
    rejected: RejectedTotals
    refunds: RefundTotals
    vouchers: list[tuple[str | None, int, str]] = Field(description="[voucher id, amount, settled | rejected:REASON]")
    refund_list: list[tuple[str, str, int]] = Field(description="[refund id, voucher id, amount]")
    flags: list[tuple[str | None, str | None, int, str, str, int]] = Field(
        default_factory=list, description="vouchers to review: [voucher id, wallet id, amount, settled | "
                                          "rejected:REASON, flag, the terminal's clock skew in ms at upload]")
    discounts: DiscountTotals | None = Field(default=None, description="the day's discount claims (campaigns)")


class ProvisionAnswer(WireModel):
    terminal_id: str
    merchant_id: str
    certificate: str = Field(description="the terminal certificate, PEM")
    chain: str = Field(description="the terminal CA certificate, PEM")
    root: str = Field(description="the operator root certificate, PEM")


class TerminalStatus(WireModel):
    terminal_id: str
    status: str


class WalletRegistered(WireModel):
    wallet_id: str
    tier: int
    status: str = Field(description="registered")


class WalletAnswer(WireModel):
    wallet_id: str
    tier: int
    status: str = Field(description="active | revoked")
    loaded_fen: int | None = Field(description="null when the operator never saw the wallet's opening balance")
    spent_fen: int
    online_fen: int
    load_counter: int
    revoked_reason: str | None


class LoadTokenAnswer(WireModel):
    wallet_id: str
    load_counter: int
    amount_fen: int
    token: str = Field(description="the signed load token, hex")


class LoadAnswer(WireModel):
    wallet_id: str
    load_counter: int
    amount_fen: int
    status: str = Field(description="issued | confirmed | cancelled")


class AccountAnswer(WireModel):
    merchant_id: str
    balance_fen: int
    settled_fen: int
    fee_fen: int
    refunded_fen: int


class ErrorDetail(WireModel):
    code: str
    message: str


class ErrorAnswer(WireModel):
    error: ErrorDetail


class Health(WireModel):
    status: str


# -- reconciliation of what is still unresolved (bank.reconcile; docs/operator.md, "Reconciliation") ---------------
class UnresolvedItem(BaseModel):
    """One charge a terminal could not settle: an ``unresolved`` ledger entry, or an ``open`` intent whose wallet and
    counter it knows (the card left mid-PAY, or its process died after PAY was sent) and the card has not brought
    back yet."""

    intent: int = Field(ge=1, le=2**63 - 1, description="the intent's ledger seq at the terminal")
    state: Literal["unresolved", "open"]
    wallet_id: str | None = Field(default=None, pattern=r"^\d{16}$")
    counter: int | None = Field(default=None, ge=1, le=0xFFFFFFFF, description="the counter its PAY would produce")
    amount_fen: int = Field(gt=0, le=10**12)
    challenge: str = Field(pattern=r"^[0-9a-f]{32}$", description="the PAY's challenge, hex")
    problem: str = Field(default="", max_length=200)
    time: str = Field(default="", max_length=40, description="when the charge started (the terminal's clock)")

    @model_validator(mode="after")
    def _wallet_and_counter(self) -> UnresolvedItem:
        if (self.wallet_id is None) != (self.counter is None):
            raise ValueError("wallet_id and counter go together")
        return self


class UnresolvedReport(BaseModel):
    """Everything a terminal holds unresolved now (what it reported before and no longer lists is dropped)."""

    items: list[UnresolvedItem] = Field(max_length=MAX_BATCH)


class ReconciledItem(WireModel):
    terminal_id: str
    intent: int
    state: str = Field(description="unresolved | open, as the terminal reported it")
    wallet_id: str | None
    counter: int | None
    amount_fen: int
    status: str = Field(description="matched | waiting | settled | paid_elsewhere | no_wallet")
    chain: str | None = Field(default=None, description="matched: agrees | differs | unknown (the balance chain "
                                                        "across the gap against the amounts reported)")
    gap_fen: int | None = Field(default=None, description="what left the card across the gap, net of loads")
    paid_to: str | None = Field(default=None, description="paid_elsewhere/settled: the terminal paid at that counter")
    next: str = Field(description="what happens next")


class CounterGap(WireModel):
    wallet_id: str
    first: int = Field(description="a run of counters never settled while a later one is: first..last")
    last: int
    gap_fen: int | None = Field(description="what left the card across the run, net of loads (null: the balance "
                                            "before the run is unknown)")
    next_terminal: str = Field(description="where the card's next settled payment was made")
    reported: int = Field(description="how many counters of the run terminals reported (see items)")
    next: str


class ChainBreak(WireModel):
    wallet_id: str
    counter: int
    previous: int = Field(description="the counter before it (0: the opening balance)")
    expected_fen: int = Field(description="the balance after the previous payment, minus this one's amount")
    balance_after_fen: int = Field(description="what the card signed")
    terminal_id: str
    next: str


class TerminalReconciliation(WireModel):
    terminal_id: str
    items: list[ReconciledItem]
    gaps: list[CounterGap] = Field(description="runs of missing counters in the wallets of these items that terminals "
                                               "have not reported whole")


class Reconciliation(WireModel):
    wallets: int = Field(description="wallets checked")
    vouchers: int = Field(description="settled vouchers checked")
    items: list[ReconciledItem] = Field(description="every terminal's reported items")
    gaps: list[CounterGap] = Field(description="the first `limit` runs of missing counters")
    gaps_total: int
    breaks: list[ChainBreak] = Field(description="the first `limit` balance-after figures that do not chain")
    breaks_total: int
