"""Discount claims judged at settlement, in the batch's transaction, after its vouchers (:mod:`bank.commit`).

The card paid the net amount and signed for it; the voucher settles on its own whatever happens to its claim. The
claim (:mod:`wire.claims`) asks the campaign to pay the merchant the discount, so that the merchant is credited the
gross. Judged once per voucher, for the vouchers this batch settled (a re-upload is answered from the claim on
file), in upload order. A claim is **refused** (the merchant keeps only the net, nothing is taken from the budget)
when:

- ``bad_claim_signature``: the uploading terminal's key did not sign it for this voucher;
- ``bad_claim``: its gross is not the voucher's amount plus its discount;
- ``unknown_campaign``, ``not_eligible`` (the merchant is not in the campaign), ``outside_dates`` (the voucher's day
  is not within the campaign's days), ``wrong_discount`` (not the campaign's discount, or a gross under its
  minimum);
- ``over_budget``: the discount is more than the terminal's outstanding share and the budget that no terminal
  holds (a terminal that gave more than its share).

Otherwise it is **paid**: the campaign's ``spent`` grows by the discount, the terminal's share shrinks by it, the
merchant's account is credited it (settled = gross; one ``payment`` movement of its corporate wallet per batch,
reference ``VOUCHER:discount`` for the batch's first paid claim), and the voucher's ``discount`` column holds it (the
statement's gross is ``amount_fen + discount``). A wallet's
claims of one campaign and day beyond ``per_wallet_per_day`` are paid too, and **flagged** ``repeat_wallet_day``:
offline terminals cannot know what a wallet got elsewhere, the merchant gave the discount in good faith, and the
funder sees the flagged claims in ``pos campaign list`` (docs/campaigns.md).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, select, update

from bank import accounts
from bank.auth import TerminalRecord
from bank.campaigns import lock_campaigns, outstanding
from bank.parse import Judged
from bank.schema import campaign_claims, campaign_shares, campaigns, read_only, terminals, vouchers
from bank.store import Store
from wire.claims import DiscountClaim, verify_claim
from wire.models import DiscountTotals

BAD_SIGNATURE = "bad_claim_signature"
BAD_CLAIM = "bad_claim"
UNKNOWN_CAMPAIGN = "unknown_campaign"
NOT_ELIGIBLE = "not_eligible"
OUTSIDE_DATES = "outside_dates"
WRONG_DISCOUNT = "wrong_discount"
OVER_BUDGET = "over_budget"
REPEAT_WALLET_DAY = "repeat_wallet_day"

_keys: dict[tuple[str, bytes], ec.EllipticCurvePublicKey] = {}


def answer(campaign_id: str, discount_fen: int, status: str, reason: str | None, flag: str | None) -> dict[str, Any]:
    """A claim's answer (:class:`wire.models.ClaimAnswer` as JSON)."""
    return {"campaign_id": campaign_id, "discount_fen": discount_fen, "status": status, "reason": reason,
            "flag": flag}


def check_signatures(store: Store, terminal: TerminalRecord, judged: list[Judged]) -> None:
    """Mark the claims of ``judged`` the uploading terminal's key signed for their vouchers (``claim_signed``); before
    the batch's transaction, so the signatures are not checked while it holds the database."""
    if not judged:
        return
    key = store.read(lambda conn: _terminal_key(conn, terminal.terminal_id))
    for j in judged:
        j.claim_signed = (key is not None and j.claim is not None
                          and verify_claim(key, terminal.terminal_id, j.vhash, j.claim))


def _terminal_key(conn: Connection, terminal_id: str) -> ec.EllipticCurvePublicKey | None:
    """The terminal's public key from its certificate on file (checked when the request was authenticated)."""
    der = conn.execute(select(terminals.c.cert_der).where(terminals.c.terminal_id == terminal_id)).scalar()
    if der is None:
        return None
    key = _keys.get((terminal_id, der))
    if key is None:
        public = x509.load_der_x509_certificate(der).public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            return None
        key = _keys[(terminal_id, der)] = public
    return key


def settle_claims(conn: Connection, terminal: TerminalRecord, judged: list[Judged], t: int) -> None:
    """Judge the claims of the vouchers this batch settled and answer every claim of a settled or duplicate voucher
    (``j.claim_answer``); in the caller's transaction (run again whole after a race)."""
    for j in judged:
        j.claim_answer = None  # an earlier run of this transaction may have answered it
    mine = [j for j in judged if j.claim is not None and j.voucher_id and j.status in ("settled", "duplicate")]
    if not mine:
        return
    k = campaign_claims.c
    on_file = {r.voucher_id: r for r in conn.execute(select(campaign_claims).where(
        k.voucher_id.in_([j.voucher_id for j in mine]))).all()}
    fresh = []
    for j in mine:
        row = on_file.get(j.voucher_id)
        if row is not None:
            j.claim_answer = answer(row.campaign_id, row.discount_fen, row.status, row.reason, row.flag)
        elif j.status == "settled":
            fresh.append(j)
    if not fresh:
        return
    claims: list[tuple[Judged, DiscountClaim]] = [(j, j.claim) for j in fresh if j.claim is not None]
    ids = {c.campaign_id for _, c in claims}
    rows = lock_campaigns(conn, ids)
    spent = {cid: int(r.spent_fen) for cid, r in rows.items()}
    held = outstanding(conn, rows)
    s = campaign_shares.c
    share = {cid: (int(g), int(c)) for cid, g, c in conn.execute(select(s.campaign_id, s.granted_fen, s.claimed_fen)
                                                                 .where(s.terminal_id == terminal.terminal_id,
                                                                        s.campaign_id.in_(list(rows)))).all()}
    wallets = sorted({j.wallet_id for j, _ in claims if j.wallet_id})
    days = sorted({j.day for j, _ in claims})
    paid_before: dict[tuple[str, str, str], int] = defaultdict(int)
    if rows:
        for cid, wid, day, n in conn.execute(select(k.campaign_id, k.wallet_id, k.day, func.count()).where(
                k.campaign_id.in_(list(rows)), k.wallet_id.in_(wallets), k.day.in_(days), k.status == "paid")
                .group_by(k.campaign_id, k.wallet_id, k.day)).all():
            paid_before[(cid, wid, day)] = int(n)
    new_rows: list[dict[str, Any]] = []
    claimed: dict[str, int] = defaultdict(int)
    paid_total = 0
    for j, c in claims:
        assert j.wallet_id is not None and j.voucher_id is not None
        r = rows.get(c.campaign_id)
        reason: str | None = None
        flag: str | None = None
        if not j.claim_signed:  # checked before the transaction (check_signatures)
            reason = BAD_SIGNATURE
        elif c.gross_fen != j.amount_fen + c.discount_fen:
            reason = BAD_CLAIM
        elif r is None:
            reason = UNKNOWN_CAMPAIGN
        elif terminal.merchant_id not in json.loads(r.merchants):
            reason = NOT_ELIGIBLE
        elif not r.start_day <= j.day <= r.end_day:
            reason = OUTSIDE_DATES
        elif c.discount_fen != r.discount_fen or c.gross_fen < r.min_amount_fen:
            reason = WRONG_DISCOUNT
        else:
            granted, used = share.get(c.campaign_id, (0, 0))
            mine_left = max(0, granted - used - claimed[c.campaign_id])
            free = r.budget_fen - spent[c.campaign_id] - held.get(c.campaign_id, 0)
            if c.discount_fen > mine_left + max(0, free):
                reason = OVER_BUDGET
            else:
                held[c.campaign_id] = held.get(c.campaign_id, 0) - min(c.discount_fen, mine_left)
                spent[c.campaign_id] += c.discount_fen
                claimed[c.campaign_id] += c.discount_fen
                wallet_day = (c.campaign_id, j.wallet_id, j.day)
                if paid_before[wallet_day] >= r.per_wallet_per_day:
                    flag = REPEAT_WALLET_DAY
                paid_before[wallet_day] += 1
                paid_total += c.discount_fen
        status = "refused" if reason else "paid"
        j.claim_answer = answer(c.campaign_id, c.discount_fen, status, reason, flag)
        new_rows.append({"voucher_id": j.voucher_id, "campaign_id": c.campaign_id,
                         "terminal_id": terminal.terminal_id, "merchant_id": terminal.merchant_id,
                         "wallet_id": j.wallet_id, "day": j.day, "gross_fen": c.gross_fen,
                         "discount_fen": c.discount_fen, "status": status, "reason": reason, "flag": flag,
                         "created_ms": t})
    conn.execute(insert(campaign_claims), new_rows)
    paid = [{"v": r["voucher_id"], "d": r["discount_fen"]} for r in new_rows if r["status"] == "paid"]
    if paid:
        conn.execute(update(vouchers).where(vouchers.c.voucher_id == bindparam("v")).values(discount=bindparam("d")),
                     paid)
    for cid, fen in claimed.items():
        conn.execute(update(campaigns).where(campaigns.c.campaign_id == cid).values(spent_fen=spent[cid]))
        if cid in share:
            conn.execute(update(campaign_shares).where(s.campaign_id == cid, s.terminal_id == terminal.terminal_id)
                         .values(claimed_fen=s.claimed_fen + fen))
    if paid_total:  # one movement of the corporate wallet, part of the batch's payments (the vouchers' gross)
        first = next(r["voucher_id"] for r in new_rows if r["status"] == "paid")
        accounts.credit(conn, terminal.merchant_id, paid_total, 0, kind="payment", reference=f"{first}:discount",
                        terminal_id=terminal.terminal_id, at_ms=t)


def day_totals(engine: Engine, terminal_id: str, day: str) -> DiscountTotals:
    """A terminal's discount claims of one day (by the voucher's day): paid, flagged, refused."""
    k = campaign_claims.c
    with read_only(engine) as conn:
        rows = conn.execute(select(k.status, k.flag, func.count(), func.coalesce(func.sum(k.discount_fen), 0))
                            .where(and_(k.terminal_id == terminal_id, k.day == day))
                            .group_by(k.status, k.flag)).all()
    out = {"paid": 0, "paid_fen": 0, "flagged": 0, "refused": 0, "refused_fen": 0}
    for status, flag, n, fen in rows:
        out[status] += int(n)
        out[status + "_fen"] += int(fen)
        if flag:
            out["flagged"] += int(n)
    return DiscountTotals(**out)
