"""The headless demo: issue demo cards, take payments (approved, declined, torn and recovered), show the ledger."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ecny_nfc.mock import Faults, MockReader
from pos.cards.manage import apply_load, issue_cards
from pos.home import Home
from pos.i18n import tr
from pos.money import format_fen
from pos.payment.checkout import take_payment
from pos.payment.outcome import Outcome
from wallet.card import CardState
from wallet.protocol import INS_PAY

DEMO_CARDS: list[tuple[str, int, int, bool]] = [  # note, tier, balance in fen, expired certificate
    ("demo: tier 4 wallet (phone number only)", 4, 100_000, False),
    ("demo: tier 2 wallet (ID + bank account)", 2, 2_000_000, False),
    ("demo: nearly empty wallet", 4, 500, False),
    ("demo: wallet with an expired certificate", 4, 10_000, True),
]


def demo_cards(home: Home) -> list[CardState]:
    """The demo cards in this home, issued on first use."""
    store = home.cards
    existing = {s.note: s for s in (store.load(i) for i in store.ids()) if s.note.startswith("demo:")}
    out = []
    for note, tier, balance, expired in DEMO_CARDS:
        if note not in existing:
            existing[note] = issue_cards(home, tier, balance, expired=expired, note=note)[0]
        out.append(existing[note])
    return out


def _line(step: str, outcome: Outcome, lang: str) -> str:
    amount = format_fen(outcome.amount_fen)
    if outcome.approved:
        head = f"APPROVED {amount:>10}  balance after {format_fen(outcome.balance_after_fen or 0)}"
        tail = f"voucher {outcome.voucher_id}"
        if outcome.torn:
            tail += "  (torn tap recovered from the card's log with RECOVER: charged once)"
    else:
        assert outcome.reason is not None
        head = f"DECLINED {amount:>10}  {outcome.reason.value}"
        reason = outcome.reason
        tail = " / ".join(tr("decline.with_next", each, message=reason.message(each), next=reason.next_step(each))
                          for each in ("zh-CN", "en"))
    return f"  {step}\n      {head}\n      {tail}  ({outcome.elapsed_ms:.1f} ms)"


def run_demo(home: Home, args: argparse.Namespace) -> int:
    """Run the scripted demo; prints a narrative (or JSON with --json)."""
    cfg = home.config
    lang = cfg.language
    terminal_id = getattr(args, "terminal", None) or cfg.first_terminal("counter")
    merchant, _ = home.terminal(terminal_id)
    tier4, tier2, low, expired = demo_cards(home)
    for card in (tier4, tier2):  # a demo card that used up its offline allowance goes online and tops up
        if home.cards.load(card.card_id).offline_count >= cfg.risk.offline_count_max - 3:
            apply_load(home, card.card_id, amount_fen=10_000)
    results: list[tuple[str, Outcome]] = []

    def pay(step: str, card_id: str, amount: int, faults: Faults | None = None, retap: bool = False) -> None:
        with home.cards.open(card_id) as applet:
            reader = MockReader()
            reader.present(applet, faults)
            if retap:
                reader.present(applet)
            results.append((step, take_payment(home, terminal_id, reader, amount, timeout=2,
                                               recovery_timeout=2 if retap else 0)))

    pay("1. a tier 4 wallet buys a fast charger", tier4.card_id, 5990)
    pay("2. a nearly empty wallet tries a 30 yuan top-up", low.card_id, 3000)
    pay("3. a tier 2 wallet tries 600 yuan offline (over the 500 yuan offline cap)", tier2.card_id, 60_000)
    pay("4. a wallet whose certificate expired", expired.card_id, 1990)
    pay("5. the customer pulls the wallet away mid-payment, then taps again", tier4.card_id, 1990,
        Faults(tear_at=INS_PAY), retap=True)
    pay("6. a tier 2 wallet buys a phone case", tier2.card_id, 3900)

    with home.ledger(terminal_id) as ledger:
        entries = list(ledger.entries())[-12:]
        report = ledger.verify()
        status = ledger.sync_status()
    if args.json:
        data: dict[str, Any] = {
            "terminal_id": terminal_id, "merchant_id": merchant.id,
            "payments": [{"step": s, **o.to_json(lang)} for s, o in results],
            "ledger": {"entries": report.entries, "verified": True, "pending_count": status.pending_count,
                       "pending_fen": status.pending_fen},
        }
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    print(f"ecny-pos demo: {merchant.name.zh} / {merchant.name.en}, terminal {terminal_id}, home {home.root}")
    print("Cards: " + ", ".join(f"{c.card_id} ({c.note.removeprefix('demo: ')})" for c in (tier4, tier2, low, expired)))
    print()
    for step, outcome in results:
        print(_line(step, outcome, lang))
    print()
    print(f"Ledger of {terminal_id} (last {len(entries)} of {report.entries} entries; hash chain verified):")
    for e in entries:
        ref = e.voucher_id or e.wallet_id or ""
        print(f"  {e.seq:>5}  {e.time}  {e.kind:<8} {format_fen(e.amount_fen):>10}  {ref}")
    print(f"\nWaiting for settlement: {status.pending_count} payments, {format_fen(status.pending_fen)}.")
    print("Next: `pos card list`, `pos pay --terminal CMGQ0001 --card c0001 --amount 12.30 --trace`, "
          "`pos ledger verify --terminal CMGQ0001`.")
    return 0
