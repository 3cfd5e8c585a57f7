"""A shard's back office and books: registering its wallets, syncing its terminals (some through an operator
outage), and checking its books against the operator.

Wallets are registered in batches of ``REGISTER_BATCH`` in one transaction each (a card whose wallet id the operator
has on file already is issued again under a random id, and its batch registered again), by the operator's back office
in-process on the operator's own database (``local``: what an issuer's import of a card batch does; the fleet's
embedded operator serves that database), or one by one over HTTP (an operator at a URL). Syncs and reports always
go over HTTP.

A shard's books balance when every approved payment in its terminals' journals is in its terminal's operator
report (settled, or rejected as a clone's double spend), no voucher is settled twice, every clone that spent at two
terminals is on the operator's denylist, every terminal's report matches the operator's, and every honest card's
balance agrees with what the operator settled from it, both in the reports and in the wallet's record. The books
hold one terminal's report at a time and, per wallet, a byte per voucher counter: nothing grows with the taps but
that byte.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from pos.fleet.plan import OPENING_FEN, FleetOptions, cloned, terminal_ids
from pos.fleet.play import Cards, Journal
from pos.home import Home
from pos.ledger import LedgerTampered
from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy
from pos.sync.reports import reconcile
from pos.sync.upload import sync_once
from wallet.card import CardState
from wallet.errors import WalletIdTaken
from wallet.ids import parse_voucher_id
from wallet.issuance import register_issued
from wire.models import ReportAnswer, WalletAnswer

REGISTER_BATCH = 1000
SYNC_THREADS = 4
SYNC_RETRY = RetryPolicy(attempts=6, base=0.05, cap=1.0)
DOUBLE_SPEND = "double_spend"


class BackOffice(Protocol):
    """What the books need of an operator's back office: register wallets, read what wallets have spent."""

    def register(self, batch: Sequence[tuple[str, int, bytes, int]]) -> None: ...

    def spent(self, wallet_ids: Sequence[str]) -> dict[str, int]: ...


class _Http:
    """The back office over HTTP (an operator at a URL): one request per wallet."""

    def __init__(self, home: Home, url: str) -> None:
        self._local = threading.local()
        self._clients: list[OperatorClient] = []
        self._home, self._url = home, url

    def _client(self) -> OperatorClient:
        cli = getattr(self._local, "cli", None)
        if cli is None:
            cli = self._local.cli = OperatorClient.for_admin(self._home, self._url, retry=SYNC_RETRY)
            self._clients.append(cli)
        return cli

    def register(self, batch: Sequence[tuple[str, int, bytes, int]]) -> None:
        def one(w: tuple[str, int, bytes, int]) -> str | None:
            try:
                self._client().register_wallet(*w)
            except WalletIdTaken:
                return w[0]
            return None

        with ThreadPoolExecutor(SYNC_THREADS) as pool:
            taken = [t for t in pool.map(one, batch) if t is not None]
        if taken:
            raise WalletIdTaken.of(taken)

    def spent(self, wallet_ids: Sequence[str]) -> dict[str, int]:
        with ThreadPoolExecutor(SYNC_THREADS) as pool:
            answers: list[WalletAnswer] = list(pool.map(lambda w: self._client().wallet(w), wallet_ids))
        return {a.wallet_id: a.spent_fen for a in answers}

    def close(self) -> None:
        for cli in self._clients:
            cli.close()


class _Local:
    """The operator's back office in-process, on the database the fleet's operator serves."""

    def __init__(self, op: Any) -> None:
        self._op = op

    def register(self, batch: Sequence[tuple[str, int, bytes, int]]) -> None:
        self._op.register_wallets(batch)

    def spent(self, wallet_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = self._op.wallets_spent(wallet_ids)
        return out


@contextmanager
def back_office(home: Home, url: str, local: bool, db_url: str | None) -> Iterator[BackOffice]:
    """The operator's back office: in-process on its database (``local``, ``db_url`` or the home's SQLite), or
    over HTTP at ``url``."""
    if local:
        from pos.composition import local_operator

        with local_operator(home, db_url) as op:
            yield _Local(op)
        return
    http = _Http(home, url)
    try:
        yield http
    finally:
        http.close()


def register_all(office: BackOffice, states: Iterator[CardState], reissue: Callable[[CardState], CardState],
                 registered: Callable[[CardState], None]) -> int:
    """Register the cards' wallets in batches; a card whose wallet id the operator has on file already is issued
    again (``reissue``, :func:`wallet.issuance.register_issued`). ``registered(state)`` gets each card as
    registered. Returns how many."""
    def register(batch: list[CardState]) -> None:
        office.register([(s.wallet_id, s.tier, s.cert_der, s.balance_fen) for s in batch])

    batch: list[CardState] = []
    done = 0
    for state in states:
        batch.append(state)
        if len(batch) >= REGISTER_BATCH:
            done += _register_batch(batch, register, reissue, registered)
            batch = []
    if batch:
        done += _register_batch(batch, register, reissue, registered)
    return done


def _register_batch(batch: list[CardState], register: Callable[[list[CardState]], None],
                    reissue: Callable[[CardState], CardState], registered: Callable[[CardState], None]) -> int:
    for state in register_issued(batch, register, reissue):
        registered(state)
    return len(batch)


def outage_terminals(opts: FleetOptions) -> set[str]:
    """The terminals whose first sync meets an operator outage (chosen from the seed)."""
    tids = terminal_ids(opts)
    return set(random.Random(opts.seed + 1).sample(tids, round(opts.outages * len(tids))))


class _Outage(httpx.BaseTransport):
    """The operator answers the first ``answered`` requests, then is gone (connection refused)."""

    def __init__(self, answered: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.left = answered

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.left <= 0:
            raise httpx.ConnectError("operator outage (fleet simulator)", request=request)
        self.left -= 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@dataclass
class SyncTotals:
    uploaded: int = 0
    settled: int = 0
    duplicates: int = 0
    rejected: int = 0
    outages: int = 0
    pending: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def sync_terminals(home: Home, opts: FleetOptions, tids: list[str], url: str, with_outages: bool) -> SyncTotals:
    """Sync the terminals, several at once; a terminal chosen for an outage first syncs through one that cuts the
    operator off after its first batch, then again."""
    down = outage_terminals(opts) & set(tids) if with_outages else set()
    totals = SyncTotals()
    lock = threading.Lock()

    def one(tid: str) -> None:
        if tid in down:
            try:
                sync_once(home, tid, url, transport=_Outage(1), retry=RetryPolicy(attempts=1), batch_size=5)
            except OperatorUnavailable:
                with lock:
                    totals.outages += 1
        try:
            r = sync_once(home, tid, url, retry=SYNC_RETRY)
        except Exception as exc:  # a terminal that cannot sync is a failure of the run, not of the simulator
            with lock:
                totals.failures.append(f"{tid}: {type(exc).__name__}: {exc}")
            return
        with lock:
            totals.uploaded += r.uploaded
            totals.settled += r.settled
            totals.duplicates += r.duplicate
            totals.rejected += len(r.rejected)
            totals.pending += r.pending

    with ThreadPoolExecutor(SYNC_THREADS) as pool:
        list(pool.map(one, tids))
    return totals


class _ReportOnce(OperatorClient):
    """A terminal's client that fetches its report once: for the reconciliation, then for the books."""

    kept: ReportAnswer | None = None

    def report(self, day: str) -> ReportAnswer:
        if self.kept is None or self.kept.date != day:
            self.kept = super().report(day)
        return self.kept


@dataclass
class _TerminalBooks:
    matches: bool
    lost: int = 0
    double_spends: int = 0
    clone_spends: list[tuple[int, bool]] = field(default_factory=list)  # (wallet, by the clone) of cloned wallets
    settled: list[tuple[str, int, int]] = field(default_factory=list)  # (wallet id, counter, amount)


def _terminal_books(home: Home, opts: FleetOptions, tid: str, url: str, day: str,
                    journal: Journal) -> _TerminalBooks:
    with _ReportOnce.for_terminal(home, tid, url, retry=SYNC_RETRY) as cli:
        assert isinstance(cli, _ReportOnce)
        try:
            matches = bool(reconcile(home, tid, day, client=cli)["matches"])
        except LedgerTampered:  # a ledger that fails verification refuses to report: its books cannot match
            matches = False
        report = cli.report(day)
    books = _TerminalBooks(matches)
    outcome: dict[str, str] = {}
    for vid, amount, label in report.vouchers:
        if vid is None:
            continue
        outcome[vid] = label
        parts = parse_voucher_id(vid) if label == "settled" else None
        if parts is not None:
            books.settled.append((parts[0], parts[1], amount))
    for vid, _amount, wallet, clone in journal.read(tid):
        found = outcome.get(vid)
        if found is None or (found != "settled" and DOUBLE_SPEND not in found and not cloned(opts, wallet)):
            books.lost += 1
        elif DOUBLE_SPEND in found:
            books.double_spends += 1
        if cloned(opts, wallet):
            books.clone_spends.append((wallet, clone))
    return books


def check_books(home: Home, opts: FleetOptions, tids: list[str], url: str, day: str, journal: Journal,
                cards: Cards, office: BackOffice, say: Callable[[str], None]) -> dict[str, Any]:
    """A shard's books (see the module docstring): its terminals, its cards, the operator's records of them."""
    by_id = {a.state.wallet_id: w for w, a in cards.originals.items()}
    counters: dict[int, bytearray] = {}  # wallet -> settled count per counter
    settled_fen: dict[int, int] = {}
    spent_by: dict[int, set[bool]] = {}  # cloned wallet -> who spent (original False, clone True)
    lost = double_spends = matches = strays = settled = 0
    chunks = [tids[i:i + 4 * SYNC_THREADS] for i in range(0, len(tids), 4 * SYNC_THREADS)]
    with ThreadPoolExecutor(SYNC_THREADS) as pool:
        # a few terminals at a time: a terminal's books hold its day, and finished ones must not pile up unread
        every = (books for chunk in chunks for books in pool.map(
            lambda t: _terminal_books(home, opts, t, url, day, journal), chunk))
        for books in every:
            matches += books.matches
            lost += books.lost
            double_spends += books.double_spends
            for wallet, clone in books.clone_spends:
                spent_by.setdefault(wallet, set()).add(clone)
            settled += len(books.settled)
            for wallet_id, counter, amount in books.settled:
                w = by_id.get(wallet_id, -1)
                if w < 0:  # settled from a wallet this shard never issued
                    strays += 1
                    continue
                seen = counters.setdefault(w, bytearray())
                if len(seen) <= counter:
                    seen.extend(bytes(counter + 1 - len(seen)))
                seen[counter] = min(255, seen[counter] + 1)
                settled_fen[w] = settled_fen.get(w, 0) + amount
    say("checking the cards against the operator's wallet records")
    doubled = sum(n - 1 for seen in counters.values() for n in seen if n > 1)
    with OperatorClient.for_terminal(home, tids[0], url, retry=SYNC_RETRY) as cli:
        denied = set(cli.denylist(0).added)
    balance_errors = clones_caught = 0
    spent_on_file = office.spent([a.state.wallet_id for a in cards.originals.values()])
    for w, applet in cards.originals.items():
        state = applet.state
        on_file = spent_on_file.get(state.wallet_id, -1)
        if cloned(opts, w):
            spent = 2 * OPENING_FEN - state.balance_fen - cards.clones[w].state.balance_fen
            balance_errors += on_file > spent or settled_fen.get(w, 0) != on_file
            clones_caught += len(spent_by.get(w, ())) == 2 and state.wallet_id in denied
        else:
            spent = OPENING_FEN - state.balance_fen
            balance_errors += on_file != spent or settled_fen.get(w, 0) != spent
    clones_spent = sum(1 for s in spent_by.values() if len(s) == 2)
    return {"settled": settled, "lost": lost, "doubled": doubled, "double_spends": double_spends,
            "clones": clones_caught, "clones_spent": clones_spent, "balance_errors": balance_errors,
            "reports_matching": matches, "strays": strays}

