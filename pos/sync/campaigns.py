"""Instant discounts at sync: the discount claims that go up with the vouchers, and the campaigns that come back.

**Claims.** Each uploaded payment that carries a discount (``data.discount``, :mod:`pos.payment.discounts`) goes up
with a claim signed by the terminal's key over the voucher's hash, the campaign and both amounts
(:mod:`wire.claims`); the batch is then version 2. The operator's answer for it (paid, flagged or refused) is kept in
the voucher's ``settlement`` entry as ``claim``.

**Campaigns.** After the upload, the terminal asks ``POST /v1/campaigns/shares`` for its merchant's campaigns, each
with a fresh share of its budget, and records them as one ``campaigns`` entry with ``upload_seq``: the newest ledger
entry when the upload began. Every discount of a payment recorded after it counts against the new share (one taken
while the sync ran counts against both the old share and the new one: the terminal errs on the side of the budget).
A terminal with no campaign, before and after, writes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from pos.ledger import Entry, Ledger
from pos.sync.client import OperatorRefused
from wallet.errors import EcnyError
from wire.campaigns import CampaignShares
from wire.claims import DiscountClaim, sign_claim


class CampaignSyncError(EcnyError):
    """A discount claim cannot be made (no terminal key), or the operator's campaigns answer does not fit."""


def claim_for(entry: Entry, cli: Any) -> DiscountClaim | None:
    """The signed claim of a discounted payment entry (None for a payment without a discount)."""
    given = entry.data.get("discount")
    if not given:
        return None
    key, terminal_id = getattr(cli, "key", None), getattr(cli, "terminal_id", None)
    if key is None or terminal_id is None:
        raise CampaignSyncError(f"payment {entry.voucher_id} has a discount but the operator client cannot sign "
                                "its claim (no terminal key)")
    vhash = hashlib.sha256(bytes.fromhex(entry.data["voucher"])).hexdigest()
    return sign_claim(key, terminal_id, vhash, str(given["campaign_id"]), int(given["gross_fen"]),
                      int(given["discount_fen"]))


def refresh(cli: Any, ledger: Ledger, upload_seq: int) -> int:
    """Ask for the terminal's campaigns and shares and record them; the number of campaigns the terminal applies.
    An operator that refuses the call (one without campaigns) grants nothing new: the last shares stay in force on
    both sides."""
    last = ledger.latest_campaigns()
    try:
        answer = CampaignShares.model_validate(cli.call("POST", "/v1/campaigns/shares", {}))
    except OperatorRefused:
        return len(last.data.get("campaigns", [])) if last is not None else 0
    except ValidationError as exc:
        raise CampaignSyncError(f"the operator's campaigns answer does not fit: {exc.errors()[0]['msg']}") from None
    campaigns = [c.to_json() for c in answer.campaigns]
    if campaigns or (last is not None and last.data.get("campaigns")):
        ledger.append("campaigns", data={"upload_seq": upload_seq, "day": answer.day, "campaigns": campaigns})
    return len(campaigns)
