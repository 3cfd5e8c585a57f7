"""What a receipt, a refund slip and the end-of-day report say, in the clerk's language, as printable documents."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pos.config import Merchant, OperatorSettings, Terminal
from pos.i18n import tr
from pos.money import format_fen
from pos.printer.document import Document, Line
from pos.records import STATUSES, Sale, Tx


def last4(wallet_id: str) -> str:
    """The wallet as receipts show it: its last 4 digits."""
    return f"**** {wallet_id[-4:]}" if wallet_id else "-"


def operator_label(operator: OperatorSettings, lang: str) -> str:
    """The operator (acquirer) code from merchants.yaml, else the operator's name."""
    return operator.code or operator.name.get(lang)


@dataclass(frozen=True)
class Shop:
    """Who issues the slip: the merchant, the terminal and the operator that acquires its payments."""

    merchant: Merchant
    terminal: Terminal
    operator: OperatorSettings


def _head(doc: Document, shop: Shop, lang: str, title: str, time: dt.datetime) -> None:
    doc.add(shop.merchant.name.get(lang), align="center", bold=True)
    doc.add(title, align="center")
    doc.rule()
    doc.pair(tr("receipt.merchant", lang), shop.merchant.id)
    doc.pair(tr("receipt.terminal", lang), shop.terminal.id)
    doc.pair(tr("receipt.operator", lang), operator_label(shop.operator, lang))
    doc.pair(tr("receipt.time", lang), f"{time:%Y-%m-%d %H:%M:%S}")
    doc.rule()


def receipt_doc(tx: Tx, sale: Sale, shop: Shop, lang: str, *, balance_after_fen: int | None = None,
                fee_fen: int = 0) -> Document:
    """The customer's receipt: items, the total, what the wallet has left (balance, offline payments), the voucher
    id and its QR code."""
    doc = Document()
    _head(doc, shop, lang, tr("receipt.title", lang), tx.time)
    for item in sale.items:
        doc.add(item.name(lang))
        doc.pair(f"  {item.qty} × {format_fen(item.price_fen)}", format_fen(item.total_fen))
    if sale.items:
        doc.rule()
    if tx.discount_fen:  # an instant discount: the gross, the campaign's part, then what the card paid
        doc.pair(tr("receipt.gross", lang), format_fen(tx.amount_fen + tx.discount_fen))
        doc.pair(tr("receipt.discount", lang), "-" + format_fen(tx.discount_fen))
        doc.pair(tr("receipt.campaign", lang), tx.campaign_id or "-")
    doc.add(tr("receipt.amount", lang), bold=True)
    doc.add(format_fen(tx.amount_fen), align="right", big=True)
    doc.pair(tr("receipt.wallet", lang), last4(tx.wallet_id))
    if balance_after_fen is not None:
        doc.pair(tr("receipt.balance", lang), format_fen(balance_after_fen))
    if sale.offline_left is not None:
        doc.pair(tr("receipt.offline_left", lang), tr("receipt.offline_n", lang, n=sale.offline_left))
    doc.pair(tr("receipt.status", lang), tr("status." + tx.status, lang))
    doc.pair(tr("receipt.fee", lang), format_fen(fee_fen))
    if tx.refunded_fen:
        doc.pair(tr("receipt.refunded", lang), format_fen(tx.refunded_fen))
    doc.rule()
    doc.add(tr("receipt.voucher", lang))
    doc.add(tx.voucher_id)
    doc.lines.append(Line(align="center", qr=tx.voucher_id))
    doc.add(tr("receipt.thanks", lang), align="center")
    return doc


def refund_slip_doc(tx: Tx, refund: dict[str, Any], shop: Shop, lang: str, time: dt.datetime) -> Document:
    """The refund slip: which payment, how much went back and where the money goes."""
    doc = Document()
    _head(doc, shop, lang, tr("slip.refund_title", lang), time)
    doc.pair(tr("receipt.voucher", lang), "")
    doc.add(tx.voucher_id)
    if refund.get("refund_id"):
        doc.pair(tr("slip.refund_id", lang), "")
        doc.add(str(refund["refund_id"]))
    doc.pair(tr("receipt.wallet", lang), last4(tx.wallet_id))
    doc.pair(tr("slip.paid", lang), format_fen(tx.amount_fen))
    doc.add(tr("slip.refunded", lang), bold=True)
    doc.add(format_fen(int(refund.get("amount_fen", 0))), align="right", big=True)
    if refund.get("remaining_fen") is not None:
        doc.pair(tr("slip.remaining", lang), format_fen(int(refund["remaining_fen"])))
    doc.rule()
    doc.add(tr("refund.where", lang))
    doc.lines.append(Line(align="center", qr=tx.voucher_id))
    return doc


def day_report_doc(report: dict[str, Any], shop: Shop, lang: str, time: dt.datetime) -> Document:
    """End of day: totals net of refunds, the charges that took no money and torn taps (each explained in one line),
    and sales by item."""
    doc = Document()
    _head(doc, shop, lang, tr("eod.title", lang, day=report["day"]), time)
    doc.pair(tr("report.all", lang), f"{report['count']}  {format_fen(report['total_fen'])}", bold=True)
    for status in STATUSES:
        b = report["by_status"][status]
        doc.pair("  " + tr("status." + status, lang), f"{b['count']}  {format_fen(b['total_fen'])}")
    doc.pair(tr("eod.refunds", lang), f"{report['refund_count']}  {format_fen(-report['refunded_fen'])}")
    doc.pair(tr("eod.net", lang), format_fen(report["net_fen"]), bold=True)
    doc.add(tr("eod.net_note", lang))
    d = report.get("discounts") or {}
    if d.get("count"):  # instant discounts: what the campaigns owe the merchant on top of what cards paid
        doc.pair(tr("eod.discounts", lang), f"{d['count']}  {format_fen(d['total_fen'])}", bold=True)
        doc.add(tr("eod.discounts_note", lang), indent=2)
        if d.get("refused"):
            doc.pair(tr("eod.discounts_refused", lang), f"{d['refused']}  {format_fen(d['refused_fen'])}")
            doc.add(tr("eod.discounts_refused_note", lang), indent=2)
    doc.rule()
    for key in ("declined", "voided", "unresolved", "open_intents"):
        doc.pair(tr(f"eod.{key}", lang), str(report[key]), bold=True)
        doc.add(tr(f"eod.{key}_note", lang), indent=2)
    if "online_tickets" in report:  # a gate of a spot that sells online (pos.gate.online_tickets.day_summary)
        o = report["online_tickets"]
        doc.pair(tr("eod.online_tickets", lang), tr("eod.online_tickets_value", lang, entries=o["entries"],
                                                      orders=o["orders"]), bold=True)
    doc.rule()
    doc.add(tr("eod.items", lang), bold=True)
    if not report["items"]:
        doc.add(tr("eod.no_items", lang), indent=2)
    for it in report["items"]:
        doc.add(it["name_zh"] if lang.startswith("zh") else it["name_en"])
        doc.pair(f"  × {it['qty']}", format_fen(it["total_fen"]))
    return doc
