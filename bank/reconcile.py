"""Reconciliation of what is still unresolved: a wallet's settled counters with a gap, balance-after figures that do
not chain, matched with the charges terminals report they could not settle (docs/operator.md, "Reconciliation").

Nothing here runs on the settlement path: it reads what settlement wrote, when a terminal reports (at sync and for
``pos report``) or the back office asks (``GET /v1/admin/reconciliation``).

- **Gaps.** A card counts its payments 1, 2, 3, ... A counter never settled while a later one of the same wallet
  is, is missing: runs of them are gaps (``first..last``). A gap is not yet a loss: the voucher may still sit in a
  terminal's outbox.
- **The balance chain.** The card signs its balance after each payment. For consecutive counters ``p``, ``c``:
  ``balance_after(p) - amount(c) + loads == balance_after(c)``, ``loads`` being load tokens on file and not cancelled,
  in load-counter order, each taken once (one the card never took may be skipped). Before counter 1 the balance is
  the opening balance (what was loaded, less the confirmed loads) when the operator knows it. A pair that does not
  chain is a break. Refunds go to the wallet's online balance, never to the card, so they never enter the chain.
  Across a gap, ``balance_after(p) - amount(c) - balance_after(c)`` is what the missing payments took, net of loads.
- **A terminal's item** (wallet ``W``, counter ``c``, amount, challenge) is ``settled`` when ``W-c`` is on file with
  its challenge and terminal, ``paid_elsewhere`` when ``W-c`` is on file for another charge (this one was never
  paid), ``matched`` when ``c`` is in a gap of ``W`` (the chain ``agrees`` when every counter of the gap is reported
  and their amounts add up to what left the card, ``differs`` when they do not, else ``unknown``), ``waiting`` when
  no later payment of ``W`` is settled yet, and ``no_wallet`` when the terminal never learnt which card it was.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.schema import load_tokens, unresolved_reports, vouchers, wallets
from bank.store import Store
from wallet.errors import EncodingError
from wallet.ids import voucher_id
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.models import (
    ChainBreak,
    CounterGap,
    ReconciledItem,
    Reconciliation,
    TerminalReconciliation,
    UnresolvedItem,
)

CHUNK = 500  # values per IN list
DEFAULT_LIMIT = 1000  # gaps and breaks listed by the back-office view
MAX_RUN = 4096  # a longer run of missing counters is not compared counter by counter


def yuan(fen: int) -> str:
    """1234 -> '¥12.34', -50 -> '-¥0.50' (as the terminal writes amounts)."""
    return f"{'-' if fen < 0 else ''}¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


@dataclass(frozen=True, slots=True)
class Paid:
    """A settled payment as the chain needs it."""

    counter: int
    amount_fen: int
    balance_after_fen: int
    terminal_id: str


@dataclass(frozen=True, slots=True)
class Gap:
    wallet_id: str
    first: int
    last: int
    gap_fen: int | None
    next_terminal: str


@dataclass
class Scan:
    """What a pass over wallets found."""

    wallets: int = 0
    vouchers: int = 0
    gaps: list[Gap] = field(default_factory=list)
    breaks: list[ChainBreak] = field(default_factory=list)


def check_wallet(wallet_id: str, paid: Iterable[Paid], opening_fen: int | None,
                 loads: list[int]) -> tuple[list[Gap], list[ChainBreak]]:
    """The gaps and breaks of one wallet's settled payments (in counter order) from its opening balance (None:
    unknown) and the amounts of its load tokens not cancelled (in load-counter order)."""
    gaps: list[Gap] = []
    breaks: list[ChainBreak] = []
    prev, balance = 0, opening_fen
    taken = 0  # load tokens before this index are accounted for
    for p in paid:
        if p.counter > prev + 1:
            gap_fen = None if balance is None else balance - p.amount_fen - p.balance_after_fen
            gaps.append(Gap(wallet_id, prev + 1, p.counter - 1, gap_fen, p.terminal_id))
        elif balance is not None and p.balance_after_fen != balance - p.amount_fen:
            after = _take_loads(loads, taken, p.balance_after_fen - (balance - p.amount_fen))
            if after is None:
                breaks.append(ChainBreak(
                    wallet_id=wallet_id, counter=p.counter, previous=prev, expected_fen=balance - p.amount_fen,
                    balance_after_fen=p.balance_after_fen, terminal_id=p.terminal_id,
                    next=f"review wallet {wallet_id}: its balance after payment {p.counter} does not follow from "
                         f"{'its opening balance' if prev == 0 else f'payment {prev}'} and its loads "
                         "(a card fault or a clone)"))
            else:
                taken = after
        prev, balance = p.counter, p.balance_after_fen
    return gaps, breaks


def _take_loads(loads: list[int], start: int, delta: int) -> int | None:
    """The index after a run of consecutive loads (from ``start`` on, skipping any before it) adding up to
    ``delta``, or None when none does (or ``delta`` is not a rise)."""
    if delta <= 0:
        return None
    for a in range(start, len(loads)):
        total = 0
        for b in range(a, len(loads)):
            total += loads[b]
            if total >= delta:
                if total == delta:
                    return b + 1
                break
    return None


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def _template() -> tuple[int, int, bytes]:
    """Where a suite-1 voucher on the fixed template keeps its balance after payment: (voucher size, offset of the
    8-byte value, the tag and length bytes just before it)."""
    marker = 0x0102030405060708
    body = VoucherBody(wallet_id="0" * 16, counter=1, amount_fen=1, currency=CNY, merchant_id="0" * 15,
                       terminal_id="0" * 8, challenge=bytes(16), timestamp_ms=0, balance_after_fen=marker)
    raw = Voucher(body, bytes(64)).encode()
    at = raw.index(marker.to_bytes(8, "big"))
    return len(raw), at, raw[at - 3:at]


_SIZE, _AT, _HEAD = _template()


def _balance_after(raw: bytes) -> int:
    """The balance the card signed after the payment: read in place on the template (settlement decoded every
    settled voucher strictly already), else decoded."""
    if len(raw) == _SIZE and raw[_AT - 3:_AT] == _HEAD:
        return int.from_bytes(raw[_AT:_AT + 8], "big")
    try:
        return Voucher.decode(raw).body.balance_after_fen
    except EncodingError:  # never expected of a settled voucher
        return -1


def scan(conn: Connection, wallet_ids: Collection[str] | None = None) -> Scan:
    """Check the wallets ``wallet_ids`` (None: every wallet with a settled payment), one wallet at a time."""
    out = Scan()
    if wallet_ids is not None and not wallet_ids:
        return out
    ids = None if wallet_ids is None else sorted(wallet_ids)
    openings: dict[str, int | None] = {}
    loads: dict[str, list[int]] = defaultdict(list)
    confirmed: dict[str, int] = defaultdict(int)
    for part in ([None] if ids is None else _chunks(ids)):
        w = select(wallets.c.wallet_id, wallets.c.loaded_fen)
        t = select(load_tokens.c.wallet_id, load_tokens.c.amount_fen, load_tokens.c.status).where(
            load_tokens.c.status != "cancelled").order_by(load_tokens.c.wallet_id, load_tokens.c.load_counter)
        if part is not None:
            w, t = w.where(wallets.c.wallet_id.in_(part)), t.where(load_tokens.c.wallet_id.in_(part))
        openings.update((r[0], r[1]) for r in conn.execute(w))
        for wid, amount, status in conn.execute(t):
            loads[wid].append(int(amount))
            if status == "confirmed":
                confirmed[wid] += int(amount)

    def finish(wid: str, paid: list[Paid]) -> None:
        loaded = openings.get(wid)
        gaps, breaks = check_wallet(wid, paid, None if loaded is None else loaded - confirmed[wid], loads[wid])
        out.wallets += 1
        out.vouchers += len(paid)
        out.gaps += gaps
        out.breaks += breaks

    cols = (vouchers.c.wallet_id, vouchers.c.counter, vouchers.c.amount_fen, vouchers.c.terminal_id,
            vouchers.c.voucher)
    for part in ([None] if ids is None else _chunks(ids)):
        q = select(*cols).order_by(vouchers.c.wallet_id, vouchers.c.counter)
        if part is not None:
            q = q.where(vouchers.c.wallet_id.in_(part))
        current: str | None = None
        paid: list[Paid] = []
        for wid, counter, amount, tid, raw in conn.execution_options(yield_per=2000).execute(q):
            if wid != current:
                if current is not None:
                    finish(current, paid)
                current, paid = wid, []
            paid.append(Paid(int(counter), int(amount), _balance_after(bytes(raw)), tid))
        if current is not None:
            finish(current, paid)
    return out


def _settled(conn: Connection, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, bytes]]:
    """The settled payments at ``keys`` (wallet, counter): their terminal and challenge."""
    ids = sorted({voucher_id(w, c) for w, c in keys})
    out: dict[tuple[str, int], tuple[str, bytes]] = {}
    for part in _chunks(ids):
        for wid, counter, tid, raw in conn.execute(select(
                vouchers.c.wallet_id, vouchers.c.counter, vouchers.c.terminal_id, vouchers.c.voucher)
                .where(vouchers.c.voucher_id.in_(part))):
            try:
                challenge = Voucher.decode(bytes(raw)).body.challenge
            except EncodingError:
                challenge = b""
            out[(wid, int(counter))] = (tid, challenge)
    return out


def match(rows: Sequence[Any], found: Scan, settled: dict[tuple[str, int], tuple[str, bytes]],
          reports: Sequence[Any] | None = None) -> list[ReconciledItem]:
    """Each reported row (of ``unresolved_reports``) with what the operator's books say of it; ``reports``: every
    terminal's rows for those wallets (default ``rows``), whose amounts the balance chain across a gap is held to."""
    by_wallet: dict[str, list[Gap]] = defaultdict(list)
    for g in found.gaps:
        by_wallet[g.wallet_id].append(g)
    reported: dict[tuple[str, int], int] = {}
    for r in rows if reports is None else reports:
        if r.wallet_id is not None:
            reported.setdefault((r.wallet_id, int(r.counter)), int(r.amount_fen))
    items = []
    for r in rows:
        gap = None
        if r.wallet_id is not None:
            gap = next((g for g in by_wallet.get(r.wallet_id, ()) if g.first <= r.counter <= g.last), None)
        base: dict[str, Any] = {"terminal_id": r.terminal_id, "intent": int(r.intent_seq), "state": r.state,
                                "wallet_id": r.wallet_id, "counter": None if r.counter is None else int(r.counter),
                                "amount_fen": int(r.amount_fen)}
        items.append(ReconciledItem(**base, **_judge(r, gap, reported, settled)))
    return items


def _judge(r: Any, gap: Gap | None, reported: dict[tuple[str, int], int],
           settled: dict[tuple[str, int], tuple[str, bytes]]) -> dict[str, Any]:
    amount = yuan(int(r.amount_fen))
    back = (f"; the card's next tap at {r.terminal_id} recovers it" if r.state == "open" else "")
    if r.wallet_id is None:
        return {"status": "no_wallet",
                "next": f"no card answered this {amount} charge: the back office compares it with unmatched gaps "
                        f"of {amount}"}
    key = (r.wallet_id, int(r.counter))
    if key in settled:
        tid, challenge = settled[key]
        if tid == r.terminal_id and challenge.hex() == r.challenge:
            return {"status": "settled", "paid_to": tid, "next": "settled: the voucher reached the operator, "
                                                                 "nothing is owed"}
        return {"status": "paid_elsewhere", "paid_to": tid,
                "next": f"never paid: the card's payment {r.counter} was another charge (at {tid}); nothing is owed "
                        "for this one"}
    if gap is None:
        return {"status": "waiting", "next": f"no later payment of wallet {r.wallet_id} is settled yet: once one "
                                             f"is, counter {r.counter} shows as a gap and is matched here{back}"}
    amounts = ([reported.get((gap.wallet_id, c)) for c in range(gap.first, gap.last + 1)]
               if gap.last - gap.first < MAX_RUN else [None])
    chain = ("unknown" if gap.gap_fen is None or None in amounts
             else "agrees" if sum(a or 0 for a in amounts) == gap.gap_fen else "differs")
    if chain == "agrees":
        nxt = (f"the card's balance shows {yuan(gap.gap_fen or 0)} left it at counter{'s' if len(amounts) > 1 else ''}"
               f" {gap.first}{'' if gap.first == gap.last else f'-{gap.last}'} and no terminal uploaded it: to be "
               f"credited to {r.terminal_id}'s merchant ({amount}) by the back office on review, unless the voucher "
               f"is uploaded first{back}")
    elif chain == "differs":
        nxt = (f"review: the card's balance shows {yuan(gap.gap_fen or 0)} left it across counters {gap.first}-"
               f"{gap.last}, the terminals reported {yuan(sum(a or 0 for a in amounts))}{back}")
    else:
        nxt = (f"review: counter {r.counter} is missing, but the balance chain cannot confirm {amount} (the balance "
               f"before it is unknown, or other counters of the gap are unreported){back}")
    return {"status": "matched", "chain": chain, "gap_fen": gap.gap_fen, "next": nxt}


def gap_answer(g: Gap, reported: int) -> CounterGap:
    span = f"counter {g.first}" if g.first == g.last else f"counters {g.first}-{g.last}"
    return CounterGap(wallet_id=g.wallet_id, first=g.first, last=g.last, gap_fen=g.gap_fen,
                      next_terminal=g.next_terminal, reported=reported,
                      next=f"no terminal has uploaded {span} of wallet {g.wallet_id}: a terminal that has not synced "
                           "may still hold it; those a terminal reported are listed with it")


def _gaps(found: Scan, rows: Sequence[Any], wallets_of: set[str] | None = None) -> list[CounterGap]:
    keys = {(r.wallet_id, int(r.counter)) for r in rows if r.wallet_id is not None}
    out = []
    for g in found.gaps:
        if wallets_of is not None and g.wallet_id not in wallets_of:
            continue
        n = sum((g.wallet_id, c) in keys for c in range(g.first, g.last + 1)) if g.last - g.first < MAX_RUN else 0
        if wallets_of is None or n < g.last - g.first + 1:
            out.append(gap_answer(g, n))
    return out


class Reconciler:
    """Terminals' reports of what they could not settle, and the books checked against them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def report(self, terminal: TerminalRecord, items: list[UnresolvedItem]) -> TerminalReconciliation:
        """Replace what ``terminal`` reported with ``items``, and answer each with what the books say."""
        tid, t = terminal.terminal_id, now_ms()
        rows = [{"terminal_id": tid, "intent_seq": i.intent, "merchant_id": terminal.merchant_id, "state": i.state,
                 "wallet_id": i.wallet_id, "counter": i.counter, "amount_fen": i.amount_fen,
                 "challenge": i.challenge, "problem": i.problem, "created": i.time, "reported_ms": t}
                for i in {i.intent: i for i in items}.values()]

        def write(conn: Connection) -> None:
            conn.execute(delete(unresolved_reports).where(unresolved_reports.c.terminal_id == tid))
            if rows:
                conn.execute(insert(unresolved_reports), rows)

        self.store.write(write)

        def read(conn: Connection) -> TerminalReconciliation:
            mine = conn.execute(select(unresolved_reports).where(unresolved_reports.c.terminal_id == tid)
                                .order_by(unresolved_reports.c.intent_seq)).all()
            wids = {r.wallet_id for r in mine if r.wallet_id is not None}
            found = scan(conn, wids)
            reports = _reports(conn, wids) if wids else []
            settled = _settled(conn, ((r.wallet_id, int(r.counter)) for r in mine if r.wallet_id is not None))
            return TerminalReconciliation(terminal_id=tid, items=match(mine, found, settled, reports),
                                          gaps=_gaps(found, reports, wids))

        answer: TerminalReconciliation = self.store.read(read)
        return answer

    def view(self, wallet_id: str | None = None, limit: int = DEFAULT_LIMIT) -> Reconciliation:
        """The back office's view: every wallet (or one), every terminal's report."""

        def read(conn: Connection) -> Reconciliation:
            q = select(unresolved_reports).order_by(unresolved_reports.c.terminal_id, unresolved_reports.c.intent_seq)
            if wallet_id is not None:
                q = q.where(unresolved_reports.c.wallet_id == wallet_id)
            rows = conn.execute(q).all()
            found = scan(conn, None if wallet_id is None else {wallet_id})
            settled = _settled(conn, ((r.wallet_id, int(r.counter)) for r in rows if r.wallet_id is not None))
            gaps = _gaps(found, rows)
            return Reconciliation(wallets=found.wallets, vouchers=found.vouchers, items=match(rows, found, settled),
                                  gaps=gaps[:limit], gaps_total=len(gaps), breaks=found.breaks[:limit],
                                  breaks_total=len(found.breaks))

        answer: Reconciliation = self.store.read(read)
        return answer


def _reports(conn: Connection, wallet_ids: Collection[str]) -> list[Any]:
    rows: list[Any] = []
    for part in _chunks(sorted(wallet_ids)):
        rows += conn.execute(select(unresolved_reports).where(unresolved_reports.c.wallet_id.in_(part))).all()
    return rows
