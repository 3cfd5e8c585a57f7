"""Receipts, refund slips and the end-of-day report: what they say, in both languages."""

from __future__ import annotations

import datetime as dt

import pytest

from ecny_nfc.mock import Faults
from pos.home import Home
from pos.printer import day_report_doc, receipt_doc, refund_slip_doc
from pos.printer.slips import Shop
from pos.records import Sale, cart_items, day_report, find, load_sale, parse_time, save_sale, transactions
from tests.conftest import COUNTER, MERCHANT, Taps
from wallet.card import CHINA_TZ
from wallet.protocol import INS_PAY


def shop(home: Home) -> Shop:
    merchant, terminal = home.terminal(COUNTER)
    return Shop(merchant, terminal, home.config.operator)


def test_an_approved_payment_says_what_the_wallet_has_left(taps: Taps) -> None:
    card = taps.card(balance_fen=12_985 + 200)
    outcome = taps.pay(card, 200)
    assert outcome.approved
    assert outcome.balance_after_fen == 12_985
    assert outcome.offline_left == taps.ctx.caps.count_max - 1  # this payment used one of the offline payments
    assert outcome.to_json()["offline_left"] == outcome.offline_left


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_a_cart_receipt_has_items_wallet_figures_merchant_operator_and_voucher(taps: Taps, home: Home,
                                                                                lang: str) -> None:
    merchant, _ = home.terminal(COUNTER)
    items = cart_items(list(merchant.catalog), {"topup-30": 2, "cable": 1})
    amount = sum(i.total_fen for i in items)
    outcome = taps.pay(taps.card(balance_fen=100_000), amount)
    assert outcome.approved and outcome.voucher_id
    tdir = home.terminal_dir(COUNTER)
    save_sale(tdir, Sale(outcome.voucher_id, items, outcome.offline_left))
    tx = find(taps.ctx.ledger, outcome.voucher_id)
    assert tx is not None
    text = receipt_doc(tx, load_sale(tdir, tx.voucher_id), shop(home), lang,
                       balance_after_fen=outcome.balance_after_fen).text()
    zh = lang == "zh-CN"
    for expected in (MERCHANT, COUNTER, "ECNYDEMO01", tx.voucher_id, "**** " + tx.wallet_id[-4:], "¥79.90",
                     "¥30.00", "¥19.90", "¥920.10",  # items, total, balance left
                     "话费充值30元" if zh else "Phone top-up 30", "数据线" if zh else "USB-C cable",
                     "还可 9 笔" if zh else "9 left", "收单机构" if zh else "Operator"):
        assert expected in text, (expected, text)
    wallet_line = next(line for line in text.splitlines() if line.startswith("钱包" if zh else "Wallet"))
    assert wallet_line.endswith("**** " + tx.wallet_id[-4:])  # only the last 4 digits
    assert all(len(line) <= 40 for line in text.splitlines())


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_a_refund_slip_says_where_the_money_goes(taps: Taps, home: Home, lang: str) -> None:
    outcome = taps.pay(taps.card(), 5_000)
    tx = find(taps.ctx.ledger, outcome.voucher_id or "")
    assert tx is not None
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=CHINA_TZ)
    text = refund_slip_doc(tx, {"refund_id": "R1", "amount_fen": 2_000, "remaining_fen": 3_000}, shop(home), lang,
                           now).text()
    flowing = " ".join(text.split())
    for expected in (tx.voucher_id, "R1", "¥20.00", "¥30.00", "¥50.00", "2026-05-01 12:00:00",
                     "退回钱包在运营机构的在线余额" if lang == "zh-CN" else "online balance at the operator"):
        assert expected in flowing, (expected, text)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_end_of_day_is_net_of_refunds_and_counts_what_took_no_money(taps: Taps, home: Home, lang: str) -> None:
    merchant, _ = home.terminal(COUNTER)
    ledger = taps.ctx.ledger
    tdir = home.terminal_dir(COUNTER)
    card = taps.card(balance_fen=100_000)
    items = cart_items(list(merchant.catalog), {"topup-50": 1, "cable": 2})
    sold = taps.pay(card, sum(i.total_fen for i in items))
    save_sale(tdir, Sale(sold.voucher_id or "", items, sold.offline_left))
    typed = taps.pay(card, 1_000)
    assert sold.approved and typed.approved
    assert not taps.pay(taps.card(balance_fen=100), 1_000).approved  # declined: no money taken
    day = transactions(ledger)[0].time.date()
    ledger.append("refund", voucher_id=typed.voucher_id, wallet_id=typed.wallet_id, amount_fen=400,
                  data={"refund_id": "R1", "day": day.isoformat()})
    r = day_report(ledger, day, tdir)
    assert (r["count"], r["total_fen"], r["refund_count"], r["refunded_fen"]) == (2, 8_980 + 1_000, 1, 400)
    assert r["net_fen"] == 8_980 + 1_000 - 400
    assert (r["declined"], r["voided"], r["unresolved"], r["open_intents"]) == (1, 0, 0, 0)
    assert [(i["sku"], i["qty"], i["total_fen"]) for i in r["items"]] == [("cable", 2, 3_980), ("topup-50", 1, 5_000)]
    now = dt.datetime(2026, 5, 1, 22, 0, tzinfo=CHINA_TZ)
    text = day_report_doc(r, shop(home), lang, now).text()
    flowing = " ".join(text.split())
    zh = lang == "zh-CN"
    for expected in ("¥95.80", "-¥4.00", "¥99.80", "数据线" if zh else "USB-C cable",
                     "净收款" if zh else "Net (after refunds)", "钱包未扣款" if zh else "no money taken",
                     "下次碰卡时补记" if zh else "its next tap records it"):
        assert expected in flowing, (expected, text)


def test_a_torn_tap_left_open_counts_on_the_day_report(taps: Taps, home: Home) -> None:
    card = taps.card()
    out = taps.pay(card, 700, faults=Faults(tear_at=INS_PAY))
    assert not out.approved and out.pending_recovery
    day = parse_time(next(iter(taps.ctx.ledger.entries(kind="intent"))).time).date()
    r = day_report(taps.ctx.ledger, day, home.terminal_dir(COUNTER))
    assert r["open_intents"] == 1 and r["count"] == 0
