"""Transactions as the clerk sees them: today's payments with settlement status, receipts, the end-of-day report.

Built from the terminal ledger (plain Python, no Textual), plus each sale's record: what the cart held and what the
wallet said (offline payments left), kept beside the ledger as ``terminals/ID/sales/VOUCHER.json`` so a reprint shows
the same item lines. A payment's settlement status is its latest
``settlement`` entry (settled | duplicate | rejected), else "pending"; ``refund`` entries add up per voucher. A
payment belongs to its business day, the one the operator counts it in (:func:`pos.sync.clockskew.payment_day`: its
voucher's day, corrected by the terminal's clock error when that is over 5 minutes), as in the terminal's sync report.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pos.config import Product
from pos.ledger import Ledger
from pos.money import format_fen
from pos.sync import clockskew
from wallet.card import CHINA_TZ
from wallet.files import write_atomic

STATUSES = ("pending", "settled", "rejected")


@dataclass(frozen=True)
class Tx:
    """One payment taken at this terminal."""

    seq: int
    voucher_id: str
    time: dt.datetime  # China Standard Time
    amount_fen: int
    wallet_id: str
    status: str  # pending | settled | rejected
    refunded_fen: int = 0
    discount_fen: int = 0  # an instant discount (pos.payment.discounts): the gross is amount_fen + discount_fen
    campaign_id: str | None = None

    def matches(self, text: str) -> bool:
        """Whether a search text matches the voucher id, the wallet id or the amount."""
        t = text.strip().lower().removeprefix("¥")
        return not t or t in self.voucher_id.lower() or t in self.wallet_id or t in format_fen(self.amount_fen)


def parse_time(text: str) -> dt.datetime:
    """A ledger time (UTC ISO with Z) in China Standard Time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(CHINA_TZ)


def transactions(ledger: Ledger, day: dt.date | None = None, ahead_ms: int | None = None) -> list[Tx]:
    """Payments (newest first), optionally only those of business day ``day`` (``ahead_ms``: the terminal's learnt
    clock offset, :func:`pos.sync.clockskew.payment_day`)."""
    status: dict[str, str] = {}
    refunded: dict[str, int] = {}
    settlements = list(ledger.entries(kind="settlement"))
    days = clockskew.settled_days(settlements)
    for e in settlements:
        if e.voucher_id:
            s = str(e.data.get("status", "settled"))
            status[e.voucher_id] = "rejected" if s == "rejected" else "settled"
    for e in ledger.entries(kind="refund"):
        if e.voucher_id:
            refunded[e.voucher_id] = refunded.get(e.voucher_id, 0) + abs(e.amount_fen)
    out = []
    day_text = day.isoformat() if day is not None else None
    for e in ledger.entries(kind="payment"):
        if day_text is not None and clockskew.payment_day(e, ahead_ms, days) != day_text:
            continue
        t = parse_time(e.time)
        vid = e.voucher_id or ""
        given = e.data.get("discount") or {}
        out.append(Tx(e.seq, vid, t, e.amount_fen, e.wallet_id or "", status.get(vid, "pending"),
                      refunded.get(vid, 0), int(given.get("discount_fen", 0)), given.get("campaign_id")))
    out.reverse()
    return out


def find(ledger: Ledger, voucher_id: str) -> Tx | None:
    """One payment by voucher id, any day."""
    return next((t for t in transactions(ledger) if t.voucher_id == voucher_id), None)


@dataclass(frozen=True)
class Item:
    """One cart line: the product, its names in both languages, how many and the unit price."""

    sku: str
    name_zh: str
    name_en: str
    qty: int
    price_fen: int

    def name(self, lang: str) -> str:
        return self.name_zh if lang.startswith("zh") else self.name_en

    @property
    def total_fen(self) -> int:
        return self.qty * self.price_fen


@dataclass(frozen=True)
class Sale:
    """What a receipt shows beyond the ledger's payment entry: the items and the wallet's offline payments left."""

    voucher_id: str
    items: tuple[Item, ...] = ()
    offline_left: int | None = None


def cart_items(catalog: list[Product], cart: dict[str, int]) -> tuple[Item, ...]:
    """The cart (sku -> quantity) as item lines, in catalog order."""
    return tuple(Item(p.sku, p.name.zh, p.name.en, cart[p.sku], p.price) for p in catalog if cart.get(p.sku))


def sales_dir(terminal_dir: Path) -> Path:
    return terminal_dir / "sales"


def save_sale(terminal_dir: Path, sale: Sale) -> Path:
    """Keep a sale's record (atomic): ``terminal_dir/sales/VOUCHER.json``."""
    d = sales_dir(terminal_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{sale.voucher_id}.json"
    data = {"voucher_id": sale.voucher_id, "items": [asdict(i) for i in sale.items], "offline_left": sale.offline_left}
    write_atomic(path, json.dumps(data, ensure_ascii=False).encode(), mode=0o644)
    return path


def load_sale(terminal_dir: Path, voucher_id: str) -> Sale:
    """A sale's record; a payment without one (a typed amount, another tool) has no item lines."""
    path = sales_dir(terminal_dir) / f"{voucher_id}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = tuple(Item(str(i["sku"]), str(i["name_zh"]), str(i["name_en"]), int(i["qty"]), int(i["price_fen"]))
                      for i in data.get("items", []))
        left = data.get("offline_left")
        return Sale(voucher_id, items, int(left) if left is not None else None)
    except (OSError, ValueError, KeyError, TypeError):
        return Sale(voucher_id)


def last_voucher(ledger: Ledger) -> str | None:
    """The voucher id of the newest payment taken here (any day), for a reprint."""
    payments = [e for e in ledger.entries(kind="payment") if e.voucher_id]
    return payments[-1].voucher_id if payments else None


def balance_after(ledger: Ledger, voucher_id: str) -> int | None:
    """The wallet's balance after this payment, as its voucher says."""
    e = ledger.payment(voucher_id)
    value = e.data.get("balance_after_fen") if e is not None else None
    return int(value) if value is not None else None


NO_PAY = "no PAY was sent"


def day_report(ledger: Ledger, day: dt.date, terminal_dir: Path | None = None,
               ahead_ms: int | None = None) -> dict[str, Any]:
    """Counts and totals by status for ``day``, refunds, the charges that took no money, torn taps, and sales by
    item (from the sale records in ``terminal_dir``). Payments count on their business day (``ahead_ms``: the
    terminal's learnt clock offset); unresolved charges and voids have no voucher: they count on the day of their
    entry. The ledger is verified first: one that fails raises :class:`~pos.ledger.LedgerTampered`,
    naming the terminal, what is wrong and what to do."""
    ledger.check()
    txs = transactions(ledger, day, ahead_ms)
    by: dict[str, dict[str, int]] = {s: {"count": 0, "total_fen": 0} for s in STATUSES}
    for t in txs:
        by[t.status]["count"] += 1
        by[t.status]["total_fen"] += t.amount_fen

    def today(kind: str) -> list[Any]:
        return [e for e in ledger.entries(kind=kind) if parse_time(e.time).date() == day]

    voids = today("void")
    declined = sum(1 for e in voids if e.data.get("proof") == NO_PAY)
    refunds = [e for e in ledger.entries(kind="refund") if refund_day(e) == day.isoformat()]
    refunded = sum(abs(e.amount_fen) for e in refunds)
    items: dict[str, dict[str, Any]] = {}
    if terminal_dir is not None:
        for t in txs:
            if t.status == "rejected":
                continue
            for i in load_sale(terminal_dir, t.voucher_id).items:
                row = items.setdefault(i.sku, {"sku": i.sku, "name_zh": i.name_zh, "name_en": i.name_en,
                                               "qty": 0, "total_fen": 0})
                row["qty"] += i.qty
                row["total_fen"] += i.total_fen
    total = sum(t.amount_fen for t in txs)
    return {"day": day.isoformat(), "count": len(txs), "total_fen": total, "by_status": by,
            "discounts": discount_totals(ledger, [t for t in txs if t.status != "rejected"]),
            "refunded_fen": refunded, "refund_count": len(refunds),
            "net_fen": total - by["rejected"]["total_fen"] - refunded,
            "declined": declined, "voided": len(voids) - declined, "unresolved": len(today("unresolved")),
            "open_intents": len(ledger.open_intents()), "items": sorted(items.values(), key=lambda r: r["sku"])}


def discount_totals(ledger: Ledger, txs: list[Tx]) -> dict[str, int]:
    """The instant discounts of ``txs``: how many, how much, and those the operator refused to pay (its answers
    recorded at sync)."""
    given = [t for t in txs if t.discount_fen]
    refused = []
    if given:
        ids = {t.voucher_id for t in given}
        refused_ids = {e.voucher_id for e in ledger.entries(kind="settlement")
                       if e.voucher_id in ids and (e.data.get("claim") or {}).get("status") == "refused"}
        refused = [t for t in given if t.voucher_id in refused_ids]
    return {"count": len(given), "total_fen": sum(t.discount_fen for t in given), "refused": len(refused),
            "refused_fen": sum(t.discount_fen for t in refused)}


def refund_day(entry: Any) -> str:
    """The day a refund counts on: the day the operator gave it, else the day it was recorded here."""
    return str(entry.data.get("day") or parse_time(entry.time).date().isoformat())
