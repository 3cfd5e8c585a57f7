"""Playing a shard's taps: its terminals, its cards held in memory, the journal of what was approved.

Every tap is the real protocol through the mock reader: the card applet signs a real voucher, the terminal checks
the card's certificate chain and the voucher and records the payment in its sealed ledger (a counter through
:class:`~pos.payment.session.PaymentSession`, a gate through :class:`~pos.gate.ticket_gate.Gate`). Two things are
the fleet's own, for speed, and are not what a terminal or a card does:

- **the cards live in memory** in the shard's process (a :class:`~wallet.card.WalletApplet` each, never saved):
  they are the fleet's scratch wallets, issued for the run and checked against the operator at its end;
- **each terminal's ledger runs in batch mode** (:meth:`pos.ledger.Ledger.batch`): the transactions of up to
  ``BATCH_TAPS`` of its taps commit together, sealed and checked as one by one, durable at each flush and at the end
  of the day; between batches the ledger checkpoints its write-ahead log as a terminal does between taps. A gate's
  pass database still commits each sale.

Every approved payment is written to the terminal's journal (``HOME/fleet/journal/TID.txt``, one line: voucher id,
amount, wallet, original or clone), which the books are checked against; lines are buffered per terminal and
appended in blocks, so neither the journal nor anything else held grows with the number of taps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ecny_nfc.mock import Faults, MockReader
from pos.fleet.plan import Tap, is_gate
from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.ledger import Ledger
from pos.ledger.batch import Batch
from pos.payment.session import PaymentSession, TerminalContext
from wallet.card import CardState, WalletApplet
from wallet.protocol import INS_PAY

BATCH_TAPS = 64  # a terminal's taps per durable commit of its ledger
CACHE_KIB = 256  # each open ledger's page cache (a shard holds hundreds open)
JOURNAL_LINES = 64  # lines buffered per terminal before they are appended to its journal


@dataclass
class ShardResult:
    shard: int
    taps: int = 0
    approved: int = 0
    declined: int = 0
    torn: int = 0
    declines: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the shard process's CPU time while it played
    rss_mb: float = 0.0  # the shard process's peak resident memory so far


class Cards:
    """The shard's wallets in memory: wallet number -> the original card's applet and, for a cloned wallet, its
    copy's (same key, same state when copied)."""

    def __init__(self) -> None:
        self.originals: dict[int, WalletApplet] = {}
        self.clones: dict[int, WalletApplet] = {}

    def add(self, wallet: int, state: CardState, *, clone: CardState | None = None) -> None:
        self.originals[wallet] = WalletApplet(state)
        if clone is not None:
            self.clones[wallet] = WalletApplet(clone)

    def applet(self, wallet: int, use_clone: bool) -> WalletApplet:
        return self.clones[wallet] if use_clone else self.originals[wallet]


class Journal:
    """Approved payments, one file per terminal, appended in blocks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, list[str]] = {}

    def path(self, terminal_id: str) -> Path:
        return self.folder / f"{terminal_id}.txt"

    def add(self, terminal_id: str, voucher_id: str, amount_fen: int, wallet: int, clone: bool) -> None:
        lines = self._held.setdefault(terminal_id, [])
        lines.append(f"{voucher_id} {amount_fen} {wallet} {int(clone)}\n")
        if len(lines) >= JOURNAL_LINES:
            self._write(terminal_id)

    def flush(self) -> None:
        for terminal_id in list(self._held):
            self._write(terminal_id)

    def _write(self, terminal_id: str) -> None:
        lines = self._held.pop(terminal_id, [])
        if lines:
            with self.path(terminal_id).open("a", encoding="utf-8") as f:
                f.writelines(lines)

    def read(self, terminal_id: str) -> list[tuple[str, int, int, bool]]:
        """One terminal's approved payments (voucher id, amount, wallet, clone)."""
        out = []
        with contextlib.suppress(FileNotFoundError), self.path(terminal_id).open(encoding="utf-8") as f:
            for line in f:
                vid, amount, wallet, clone = line.split()
                out.append((vid, int(amount), int(wallet), clone == "1"))
        return out


class FleetTerminal:
    """One open terminal of the shard, a counter (its payment context) or a gate, its ledger in batch mode while it
    plays."""

    def __init__(self, home: Home, terminal_id: str) -> None:
        self.terminal_id = terminal_id
        self.gate: Gate | None = None
        self.ctx: TerminalContext | None = None
        if is_gate(terminal_id):
            self.gate = Gate(home, terminal_id)
            self.ledger: Ledger = self.gate.ledger
            context = self.gate.ctx
        else:
            self.ledger = home.ledger(terminal_id)
            self.ctx = context = home.context(terminal_id, self.ledger)
        self.ledger.limit_cache(CACHE_KIB)
        # The clock offset learnt at the last sync, read once a day: a terminal reads it at every tap (a sync may run
        # in another process), but a shard's terminals only sync between its days.
        self._home = home
        self._ahead: tuple[int | None] | None = None
        context.clock_ahead_ms = self._clock_ahead_ms
        self._batch: Batch | None = None
        self._held = 0

    def _clock_ahead_ms(self) -> int | None:
        if self._ahead is None:
            self._ahead = (self._home.clock_ahead_ms(self.terminal_id),)
        return self._ahead[0]

    def pay(self, reader: MockReader, amount_fen: int) -> tuple[bool, str | None, int, str]:
        """One charge (a gate: one ticket): (approved, voucher id, amount, decline reason)."""
        if self._batch is None:
            self._batch = self.ledger.batch()
            self._batch.begin()
        if self.gate is not None:
            decision = self.gate.admit(reader, "adult", 1, timeout=1.0)
            out = decision.outcome if decision is not None else None
            if out is None:
                return False, None, 0, decision.code if decision is not None else "no_card"
        else:
            assert self.ctx is not None
            out = PaymentSession(self.ctx, reader).pay(amount_fen, timeout=1.0)
        self._held += 1
        if self._held >= BATCH_TAPS:
            self._batch.end()
            self.ledger.checkpoint()  # the WAL into the database between taps, as a terminal does when idle
            self._batch.begin()
            self._held = 0
        reason = out.reason.value if out.reason is not None else ""
        return out.approved, out.voucher_id, out.amount_fen, reason

    def end_batch(self) -> None:
        """Commit what the batch holds and leave batch mode (before a sync: other connections write then)."""
        if self._batch is not None:
            batch, self._batch = self._batch, None
            batch.end()
            self._held = 0
        self._ahead = None  # a sync may come next: read the offset again

    def close(self) -> None:
        self.end_batch()
        if self.gate is not None:
            self.gate.close()
        else:
            self.ledger.close()


def play_tap(term: FleetTerminal, cards: Cards, tap: Tap, result: ShardResult, journal: Journal) -> None:
    """Present the tap's card (torn mid-PAY and presented again, when the tap is a tear) and charge it."""
    applet = cards.applet(tap.wallet, tap.use_clone)
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
        assert voucher_id is not None
        result.approved += 1
        journal.add(term.terminal_id, voucher_id, amount, tap.wallet, tap.use_clone)
    else:
        result.declined += 1
        result.declines[reason] = result.declines.get(reason, 0) + 1
