"""Transactions as the clerk sees them: today's payments with settlement status, receipts, the end-of-day report.

Built from the terminal ledger only (plain Python, no Textual). A payment's settlement status is its latest
``settlement`` entry (settled | duplicate | rejected), else "pending"; ``refund`` entries add up per voucher. A
payment belongs to the day of its voucher (:func:`pos.ledger.payment_day`), as in the terminal's sync report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pos.config import Merchant, Terminal
from pos.i18n import tr
from pos.ledger import Ledger, payment_day
from pos.money import format_fen
from wallet.card import CHINA_TZ
from wallet.files import write_atomic
from wallet.ids import mask_wallet_id

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

    def matches(self, text: str) -> bool:
        """Whether a search text matches the voucher id, the wallet id or the amount."""
        t = text.strip().lower().removeprefix("¥")
        return not t or t in self.voucher_id.lower() or t in self.wallet_id or t in format_fen(self.amount_fen)


def parse_time(text: str) -> dt.datetime:
    """A ledger time (UTC ISO with Z) in China Standard Time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(CHINA_TZ)


def transactions(ledger: Ledger, day: dt.date | None = None) -> list[Tx]:
    """Payments (newest first), optionally only those of ``day`` (their voucher's China Standard Time day)."""
    status: dict[str, str] = {}
    refunded: dict[str, int] = {}
    for e in ledger.entries(kind="settlement"):
        if e.voucher_id:
            s = str(e.data.get("status", "settled"))
            status[e.voucher_id] = "rejected" if s == "rejected" else "settled"
    for e in ledger.entries(kind="refund"):
        if e.voucher_id:
            refunded[e.voucher_id] = refunded.get(e.voucher_id, 0) + abs(e.amount_fen)
    out = []
    day_text = day.isoformat() if day is not None else None
    for e in ledger.entries(kind="payment"):
        if day_text is not None and payment_day(e) != day_text:
            continue
        t = parse_time(e.time)
        vid = e.voucher_id or ""
        out.append(Tx(e.seq, vid, t, e.amount_fen, e.wallet_id or "", status.get(vid, "pending"),
                      refunded.get(vid, 0)))
    out.reverse()
    return out


def find(ledger: Ledger, voucher_id: str) -> Tx | None:
    """One payment by voucher id, any day."""
    return next((t for t in transactions(ledger) if t.voucher_id == voucher_id), None)


def receipt_text(tx: Tx, merchant: Merchant, terminal: Terminal, lang: str, fee_fen: int = 0) -> str:
    """A plain-text receipt, 40 columns wide."""
    lines = [
        merchant.name.get(lang),
        tr("receipt.title", lang),
        "-" * 40,
        f"{tr('receipt.merchant', lang)}: {merchant.id}",
        f"{tr('receipt.terminal', lang)}: {terminal.id}",
        f"{tr('receipt.time', lang)}: {tx.time:%Y-%m-%d %H:%M:%S}",
        f"{tr('receipt.amount', lang)}: {format_fen(tx.amount_fen)}",
        f"{tr('receipt.wallet', lang)}: {mask_wallet_id(tx.wallet_id)}",
        f"{tr('receipt.voucher', lang)}: {tx.voucher_id}",
        f"{tr('receipt.status', lang)}: {tr('status.' + tx.status, lang)}",
        f"{tr('receipt.fee', lang)}: {format_fen(fee_fen)}",
    ]
    if tx.refunded_fen:
        lines.append(f"{tr('receipt.refunded', lang)}: {format_fen(tx.refunded_fen)}")
    lines += ["-" * 40, tr("receipt.thanks", lang)]
    return "\n".join(lines)


def save_receipt(receipts_dir: Path, tx: Tx, text: str) -> Path:
    """Write a receipt to ``receipts_dir/VOUCHER.txt`` (atomic) and return the path."""
    receipts_dir.mkdir(parents=True, exist_ok=True)
    path = receipts_dir / f"{tx.voucher_id}.txt"
    write_atomic(path, (text + "\n").encode(), mode=0o644)
    return path


def day_report(ledger: Ledger, day: dt.date) -> dict[str, Any]:
    """Counts and totals by status for ``day``, plus torn-tap and refund figures. Unresolved charges have no
    voucher: they count on the day of their entry. The ledger is verified first: one that fails raises
    :class:`~pos.ledger.LedgerTampered`, naming the terminal, what is wrong and what to do."""
    ledger.check()
    txs = transactions(ledger, day)
    by: dict[str, dict[str, int]] = {s: {"count": 0, "total_fen": 0} for s in STATUSES}
    for t in txs:
        by[t.status]["count"] += 1
        by[t.status]["total_fen"] += t.amount_fen
    unresolved = sum(1 for e in ledger.entries(kind="unresolved") if parse_time(e.time).date() == day)
    return {"day": day.isoformat(), "count": len(txs), "total_fen": sum(t.amount_fen for t in txs),
            "by_status": by, "refunded_fen": sum(t.refunded_fen for t in txs), "unresolved": unresolved,
            "open_intents": len(ledger.open_intents())}
