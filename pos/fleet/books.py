"""Issuing and provisioning for a fleet, syncing it (some terminals through an operator outage) and checking the
books against the operator over HTTP.

The books balance when every approved payment in the shards' journals is in its terminal's operator report exactly
once (settled, or rejected as a clone's double spend), no voucher is settled at two terminals, every clone that
spent at two terminals is on the operator's denylist, every terminal's report matches the operator's, and every
honest card's balance agrees with what the operator settled from it.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from pos.fleet.plan import OPENING_FEN, FleetOptions, card_id, clone_card_id, cloned, terminal_ids
from pos.home import Home
from pos.ledger import LedgerTampered
from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy, provision_terminal
from pos.sync.reports import reconcile, today
from pos.sync.upload import sync_once
from wallet.card import CardState
from wallet.issuance import issue_card

ISSUE_CHUNK = 500
SYNC_THREADS = 4
SYNC_RETRY = RetryPolicy(attempts=6, base=0.05, cap=1.0)
DOUBLE_SPEND = "double_spend"


def issue_wallets(home: Home, opts: FleetOptions, url: str) -> int:
    """Issue the wallets (tier 1) into the card store, register them with the operator, copy the clones."""
    store = home.cards
    caps = home.config.risk.caps
    made = 0
    with OperatorClient.for_admin(home, url, retry=SYNC_RETRY) as admin:
        for start in range(0, opts.wallets, ISSUE_CHUNK):
            for w in range(start, min(opts.wallets, start + ISSUE_CHUNK)):
                state = issue_card(home.pki, card_id(w), 1, OPENING_FEN, caps)
                store.add(state)
                admin.register_wallet(state.wallet_id, state.tier, state.cert_der, state.balance_fen)
                if cloned(opts, w):
                    store.add(replace(state, card_id=clone_card_id(w), clone_of=state.card_id))
                made += 1
            print(f"  {made}/{opts.wallets} wallets issued", file=sys.stderr, flush=True)
    return made


def provision_all(home: Home, opts: FleetOptions, url: str) -> None:
    with ThreadPoolExecutor(SYNC_THREADS) as pool:
        list(pool.map(lambda tid: provision_terminal(home, tid, url), terminal_ids(opts)))


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
    failures: list[str] = field(default_factory=list)


def sync_shard(home_dir: str, opts: FleetOptions, shard: int, url: str, with_outages: bool) -> SyncTotals:
    """Sync the shard's terminals, several at once; a terminal chosen for an outage first syncs through one that
    cuts the operator off after its first batch, then again. Runs in a pool process."""
    home = Home(Path(home_dir))
    tids = [t for i, t in enumerate(terminal_ids(opts)) if i % opts.shards == shard]
    down = outage_terminals(opts) if with_outages else set()
    totals = SyncTotals()
    lock = threading.Lock()

    def one(tid: str) -> None:
        if tid in down:
            try:
                sync_once(home, tid, url, transport=_Outage(1), retry=RetryPolicy(attempts=1), batch_size=5)
            except OperatorUnavailable:
                totals.outages += 1
        try:
            r = sync_once(home, tid, url, retry=SYNC_RETRY)
        except Exception as exc:  # a terminal that cannot sync is a failure of the run, not of the simulator
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


def _journal(paths: list[Path]) -> Iterator[tuple[str, str, int, int, bool]]:
    for path in paths:
        if path.exists():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    tid, vid, amount, wallet, clone = line.split()
                    yield tid, vid, int(amount), int(wallet), clone == "1"


def check_books(home: Home, opts: FleetOptions, url: str, journals: list[Path]) -> dict[str, Any]:
    """Compare the journals, the terminals' ledgers and the cards with the operator (see the module docstring)."""
    day = today()
    tids = terminal_ids(opts)
    outcome: dict[str, dict[str, str]] = {}  # terminal -> voucher -> operator label
    matches = 0
    with ThreadPoolExecutor(SYNC_THREADS) as pool:
        for tid, data, report in pool.map(lambda t: _terminal_books(home, t, url, day), tids):
            matches += bool(data["matches"])
            outcome[tid] = report
    settled_at: dict[str, int] = {}
    for report in outcome.values():
        for vid, label in report.items():
            if label == "settled":
                settled_at[vid] = settled_at.get(vid, 0) + 1
    lost = doubled = double_spends = 0
    spent_by_clones: dict[int, set[bool]] = {}
    for tid, vid, _amount, wallet, clone in _journal(journals):
        found = outcome.get(tid, {}).get(vid)
        if found is None or (found != "settled" and DOUBLE_SPEND not in found and not cloned(opts, wallet)):
            lost += 1
        elif DOUBLE_SPEND in found:
            double_spends += 1
        if cloned(opts, wallet):
            spent_by_clones.setdefault(wallet, set()).add(clone)
    doubled = sum(n - 1 for n in settled_at.values() if n > 1)
    with OperatorClient.for_terminal(home, tids[0], url, retry=SYNC_RETRY) as cli:
        denied = set(cli.denylist(0).added)
    balance_errors = 0
    clones_caught = 0
    with OperatorClient.for_admin(home, url, retry=SYNC_RETRY) as admin:
        for w in range(opts.wallets):
            state = home.cards.load(card_id(w))
            on_file = admin.wallet(state.wallet_id)
            if cloned(opts, w):
                copy: CardState = home.cards.load(clone_card_id(w))
                spent = 2 * OPENING_FEN - state.balance_fen - copy.balance_fen
                balance_errors += on_file.spent_fen > spent
                clones_caught += len(spent_by_clones.get(w, ())) == 2 and state.wallet_id in denied
            else:
                balance_errors += on_file.spent_fen != OPENING_FEN - state.balance_fen
    clones_spent = sum(1 for s in spent_by_clones.values() if len(s) == 2)
    return {"lost": lost, "doubled": doubled, "double_spends": double_spends, "clones": clones_caught,
            "clones_spent": clones_spent, "balance_errors": balance_errors,
            "reports_match": matches == len(tids) and balance_errors == 0 and clones_caught == clones_spent,
            "reports_matching": matches}


def _terminal_books(home: Home, tid: str, url: str, day: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    try:
        data = reconcile(home, tid, day, url, retry=SYNC_RETRY)
    except LedgerTampered as exc:  # a ledger that fails verification refuses to report: its books cannot match
        data = {"matches": False, "problems": exc.problems}
    with OperatorClient.for_terminal(home, tid, url, retry=SYNC_RETRY) as cli:
        report = cli.report(day)
    return tid, data, {vid: label for vid, _amount, label in report.vouchers if vid}
