"""A shard of the fleet: the terminals ``index % shards == shard`` play their taps, offline, in one process.

Each terminal's ledger is its own file, so shards never share one; cards are shared, and the card store locks a
card for the length of a tap. Every approved payment is written to the shard's journal (one line: terminal, voucher
id, amount, wallet, original or clone), which the books are checked against.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ecny_nfc.mock import Faults, MockReader
from pos.fleet.plan import FleetOptions, Tap, card_id, clone_card_id, is_gate, taps, terminal_ids
from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.ledger import Ledger
from pos.payment.session import PaymentSession, TerminalContext
from wallet.protocol import INS_PAY
from wallet.store import CardStore

PROGRESS_EVERY = 2000


@dataclass
class ShardResult:
    shard: int
    taps: int = 0
    approved: int = 0
    declined: int = 0
    torn: int = 0
    declines: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class _Terminal:
    """One open terminal of the shard: a counter (its payment context) or a gate."""

    def __init__(self, home: Home, terminal_id: str) -> None:
        self.terminal_id = terminal_id
        self.gate: Gate | None = None
        self.ledger: Ledger | None = None
        self.ctx: TerminalContext | None = None
        if is_gate(terminal_id):
            self.gate = Gate(home, terminal_id)
        else:
            self.ledger = home.ledger(terminal_id)
            self.ctx = home.context(terminal_id, self.ledger)
            self.ctx.recovery_timeout = 1.0

    def pay(self, reader: MockReader, amount_fen: int) -> tuple[bool, str | None, int, str]:
        """(approved, voucher id, amount, decline reason)."""
        if self.gate is not None:
            decision = self.gate.admit(reader, "adult", 1, timeout=1.0)
            out = decision.outcome if decision is not None else None
            if out is None:
                return False, None, 0, decision.code if decision is not None else "no_card"
        else:
            assert self.ctx is not None
            out = PaymentSession(self.ctx, reader).pay(amount_fen, timeout=1.0)
        reason = out.reason.value if out.reason is not None else ""
        return out.approved, out.voucher_id, out.amount_fen, reason

    def close(self) -> None:
        if self.gate is not None:
            self.gate.close()
        if self.ledger is not None:
            self.ledger.close()


def play_shard(home_dir: str, opts: FleetOptions, shard: int, day: int, journal: str) -> ShardResult:
    """Play the shard's taps of ``day``; append approved payments to ``journal``. Runs in a pool process."""
    t0 = time.perf_counter()
    home = Home(Path(home_dir))
    tids = terminal_ids(opts)
    mine = {i for i in range(len(tids)) if i % opts.shards == shard}
    result = ShardResult(shard)
    terminals: dict[int, _Terminal] = {}
    cards = home.cards
    try:
        with open(journal, "a", encoding="utf-8") as out:
            for tap in taps(opts):
                if tap.day != day or tap.terminal not in mine:
                    continue
                term = terminals.get(tap.terminal) or terminals.setdefault(tap.terminal,
                                                                           _Terminal(home, tids[tap.terminal]))
                _play(cards, term, tap, result, out)
                if result.taps % PROGRESS_EVERY == 0:
                    print(f"  shard {shard}: {result.taps} taps played, {result.approved} approved",
                          file=sys.stderr, flush=True)
    finally:
        for term in terminals.values():
            term.close()
    result.seconds = time.perf_counter() - t0
    return result


def _play(cards: CardStore, term: _Terminal, tap: Tap, result: ShardResult, out: TextIO) -> None:
    cid = clone_card_id(tap.wallet) if tap.use_clone else card_id(tap.wallet)
    with cards.open(cid) as applet:
        reader = MockReader()
        if tap.tear:
            reader.present(applet, Faults(tear_at=INS_PAY))
            reader.present(applet)  # the customer taps again
        else:
            reader.present(applet)
        approved, voucher_id, amount, reason = term.pay(reader, tap.amount_fen)
    result.taps += 1
    result.torn += tap.tear
    if approved:
        result.approved += 1
        print(term.terminal_id, voucher_id, amount, tap.wallet, int(tap.use_clone), file=out)
    else:
        result.declined += 1
        result.declines[reason] = result.declines.get(reason, 0) + 1
