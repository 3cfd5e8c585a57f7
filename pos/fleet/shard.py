"""One shard of a fleet run: its terminals, its wallets (cards in memory), its taps, its syncs and its books, in one
process for the whole run (:func:`serve`, driven over a pipe by :mod:`pos.fleet.run`), or in the caller's process
when the run has one shard.

A shard owns the terminals and wallets :mod:`pos.fleet.plan` gives it. It provisions its terminals, issues its
wallets (they stay in its memory, see :mod:`pos.fleet.play`) and registers them with the operator, plays its taps
day by day from one pass over the seed's tap sequence (the next day resumes where the last stopped), syncs its
terminals at the end of each day and checks its books (:mod:`pos.fleet.books`).
"""

from __future__ import annotations

import gc
import resource
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pos.fleet.books import (
    SYNC_THREADS,
    SyncTotals,
    back_office,
    check_books,
    register_all,
    sync_terminals,
)
from pos.fleet.plan import (
    OPENING_FEN,
    FleetOptions,
    Tap,
    card_id,
    clone_card_id,
    cloned,
    shard_terminals,
    shard_wallets,
    taps,
    wallet_id,
)
from pos.fleet.play import Cards, FleetTerminal, Journal, ShardResult, play_tap
from pos.home import Home
from pos.sync.client import provision_terminal
from wallet.card import CardState
from wallet.issuance import issue_card
from wallet.pki import cert_der

PROGRESS_LINES = 20  # progress lines per shard and day


@dataclass(frozen=True)
class ShardSpec:
    """What a shard process is started with."""

    home: str
    options: FleetOptions
    shard: int
    url: str
    local_back_office: bool  # register and look up wallets in-process on the operator's database
    db_url: str | None
    progress: bool
    wallet_base: int = 0  # the run's first wallet id (plan.wallet_id)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Shard:
    """A shard's state across the run (see the module docstring)."""

    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self.opts = spec.options
        self.home = Home(Path(spec.home))
        self.mine = dict(shard_terminals(self.opts, spec.shard))
        self.cards = Cards()
        self.terminals: dict[int, FleetTerminal] = {}
        self.journal = Journal(self.home.root / "fleet" / "journal")
        self._taps: Iterator[Tap] = taps(self.opts)
        self._next: Tap | None = None

    def _say(self, text: str) -> None:
        if self.spec.progress:
            print(f"  shard {self.spec.shard}: {text}", file=sys.stderr, flush=True)

    def _office(self) -> Any:
        return back_office(self.home, self.spec.url, self.spec.local_back_office, self.spec.db_url)

    def issue(self) -> int:
        """Provision the shard's terminals, issue its wallets (and the clones' copies), register them. The run's
        wallet ids are consecutive; a card whose id the operator has on file already (an earlier run's on the same
        database) is issued again under a random one (:func:`pos.fleet.books.register_all`)."""
        with ThreadPoolExecutor(SYNC_THREADS) as pool:
            list(pool.map(lambda tid: provision_terminal(self.home, tid, self.spec.url), self.mine.values()))
        pki, caps = self.home.pki, self.home.config.risk.caps
        issuer_der = cert_der(pki.wallet_ca.cert)  # one copy for every card
        mine = shard_wallets(self.opts, self.spec.shard)
        number = {card_id(w): w for w in mine}
        every = max(1, len(mine) // 10)

        def issue(w: int, wallet: str | None) -> CardState:
            state = issue_card(pki, card_id(w), 1, OPENING_FEN, caps, wallet_id=wallet)
            state.issuer_der = issuer_der
            return state

        def registered(state: CardState) -> None:
            w = number[state.card_id]
            copy = replace(state, card_id=clone_card_id(w), clone_of=state.card_id) if cloned(self.opts, w) \
                else None
            self.cards.add(w, state, clone=copy)
            if len(self.cards.originals) % every == 0:
                self._say(f"{len(self.cards.originals)}/{len(mine)} wallets issued and registered")

        with self._office() as office:
            done = register_all(office, (issue(w, wallet_id(self.spec.wallet_base, w)) for w in mine),
                                lambda old: issue(number[old.card_id], None), registered)
        gc.collect()
        gc.freeze()  # the cards stay for the run: out of the collector's scans, as a terminal's start-up objects
        return done

    def play(self, day: int) -> ShardResult:
        """Play the shard's taps of ``day``, then commit every terminal's batch."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = ShardResult(self.spec.shard)
        shards, shard = self.opts.shards, self.spec.shard
        every = max(1, self.opts.taps // self.opts.days // shards // PROGRESS_LINES)
        while True:
            tap = self._next if self._next is not None else next(self._taps, None)
            self._next = None
            if tap is None:
                break
            if tap.day != day:
                self._next = tap
                break
            if tap.terminal % shards != shard:
                continue
            term = self.terminals.get(tap.terminal)
            if term is None:
                term = self.terminals[tap.terminal] = FleetTerminal(self.home, self.mine[tap.terminal])
            play_tap(term, self.cards, tap, result, self.journal)
            if result.taps % every == 0:
                self._say(f"{result.taps} taps played, {result.approved} approved")
        for term in self.terminals.values():
            term.end_batch()
        self.journal.flush()
        result.seconds = time.perf_counter() - t0
        result.cpu_seconds = time.process_time() - cpu0
        result.rss_mb = peak_rss_mb()
        return result

    def sync(self, with_outages: bool) -> SyncTotals:
        t0 = time.perf_counter()
        totals = sync_terminals(self.home, self.opts, list(self.mine.values()), self.spec.url, with_outages)
        totals.seconds = time.perf_counter() - t0
        return totals

    def books(self, day: str) -> dict[str, Any]:
        with self._office() as office:
            return check_books(self.home, self.opts, list(self.mine.values()), self.spec.url, day, self.journal,
                               self.cards, office, self._say)

    def rss(self) -> float:
        return peak_rss_mb()

    def close(self) -> None:
        for term in self.terminals.values():
            term.close()
        self.terminals.clear()


def serve(conn: Connection, spec: ShardSpec) -> None:
    """A shard process: build the shard, then run the calls ``(method name, arguments)`` that come over ``conn``
    and answer each ``("ok", result)`` or ``("error", traceback)``, until ``close``."""
    try:
        shard = Shard(spec)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        conn.send(("ok", None))
        while True:
            name, args = conn.recv()
            try:
                answer = ("ok", getattr(shard, name)(*args))
            except Exception:
                answer = ("error", traceback.format_exc())
            conn.send(answer)
            if name == "close":
                return
    except (EOFError, BrokenPipeError, KeyboardInterrupt):  # the run is gone: close the ledgers and go quietly
        shard.close()
