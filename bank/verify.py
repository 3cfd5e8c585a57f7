"""Settlement's cryptographic checks: its card's certificate chain at the voucher's time, the
wallet id, the card's signature and the tier's limits, on the settling thread and a few helpers.

`cryptography` releases the GIL while it verifies, so the checks of one card overlap with those of another and
with the Python work of the thread that holds the GIL.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from bank.clock import ms
from bank.parse import Judged
from bank.reasons import (
    BAD_SIGNATURE,
    BAD_VOUCHER,
    OVER_OFFLINE_LIMIT,
    OVER_SINGLE_LIMIT,
    WALLET_MISMATCH,
)
from wallet import suites
from wallet.certs import WalletCertInfo, chain_validity, verify_wallet_certificate
from wallet.errors import CertificateError, SignatureError
from wallet.limits import TIER_LIMITS
from wire.batch import UploadItem

VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))  # the settling thread and its helpers
VERIFY_CHUNK = 32  # vouchers per verification task (whole cards)
MAX_CACHED_CHAINS = 100_000

Ready = tuple[Judged, ec.EllipticCurvePublicKey, int, bytes]  # a voucher whose chain passed: key, tier, leaf


class Verifier:
    """Re-verifies vouchers against the operator's ``roots``; caches each card's verified chain."""

    def __init__(self, roots: tuple[bytes, ...], offline_single_max: int | None,
                 threads: int = VERIFY_THREADS) -> None:
        self.roots = roots
        self.offline_single_max = offline_single_max
        self.threads = threads
        self.pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._chains: dict[tuple[bytes, bytes], tuple[int, int, WalletCertInfo]] = {}  # card -> window (ms), info

    def start(self) -> None:
        """Start the helper threads now rather than in the first batch."""
        pool = self._pool()
        if pool is not None:
            for f in [pool.submit(time.sleep, 0.01) for _ in range(self.threads - 1)]:
                f.result()

    def close(self) -> None:
        with self._pool_lock:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None

    def verify_all(self, todo: list[Judged], items: Sequence[UploadItem]) -> None:
        """Re-verify every voucher of ``todo`` on this thread and ``threads - 1`` helpers, in two passes.

        First the certificate chain at the voucher's time and the wallet id, whole cards per task (a new
        card's chain is verified once, by one thread); then the signatures and limits of the vouchers that passed,
        in chunks. A voucher's verdict depends on that voucher alone, the same as one by one in any order; the
        order of its checks (hence the reason code) is chain, wallet id, signature, limits.
        """
        cards: dict[tuple[bytes, bytes], list[Judged]] = {}
        for j in todo:
            item = items[j.index]
            cards.setdefault((item.cert_der, item.issuer_der), []).append(j)
        if self.threads <= 1 or len(todo) <= VERIFY_CHUNK:
            ready: list[Ready] = []
            for card, group in cards.items():
                self._check_card(card, group, ready)
            self._check_signatures(ready)
            return
        tasks: list[list[tuple[tuple[bytes, bytes], list[Judged]]]] = [[]]
        size = 0
        for card_group in cards.items():
            if size >= VERIFY_CHUNK:
                tasks.append([])
                size = 0
            tasks[-1].append(card_group)
            size += len(card_group[1])
        passed: list[list[Ready]] = [[] for _ in tasks]

        def chains(k: int) -> None:
            for card, group in tasks[k]:
                self._check_card(card, group, passed[k])

        self._shared(chains, range(len(tasks)))
        ready = [r for out in passed for r in out]
        self._shared(self._check_signatures, [ready[i:i + VERIFY_CHUNK] for i in range(0, len(ready), VERIFY_CHUNK)])

    def _shared(self, fn: Callable[[Any], None], tasks: Iterable[Any]) -> None:
        """Run ``fn(task)`` for every task on this thread and the helpers, each task once, until none is left."""
        queue = iter(tasks)  # the iterator hands each task to exactly one thread (its next() holds the GIL)

        def work() -> None:
            for task in queue:
                fn(task)

        pool = self._pool()
        helpers = [pool.submit(work) for _ in range(self.threads - 1)] if pool is not None else []
        try:
            work()
        finally:
            for f in helpers:
                f.result()

    def _pool(self) -> ThreadPoolExecutor | None:
        if self.threads <= 1:
            return None
        with self._pool_lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="verify")
            return self.pool

    def _check_card(self, card: tuple[bytes, bytes], group: list[Judged], out: list[Ready]) -> None:
        """Each voucher's card's chain at the voucher's time and the wallet id. A voucher that passes goes
        to ``out`` with its card's key and tier; one that fails is rejected. The chain is verified once per card
        (see :meth:`_card_window`); each voucher is then only checked against the chain's validity window."""
        leaf, issuer = card
        window: tuple[int, int, WalletCertInfo] | None = None
        for j in group:
            ts = j.timestamp_ms  # a timestamp never rejects a voucher (bank.timerules flags it for review)
            if window is None or not window[0] <= ts <= window[1]:
                try:
                    window = self._card_window(leaf, issuer, ts)
                except CertificateError as exc:
                    j.status, j.reason = "rejected", exc.reason
                    continue
            info = window[2]
            if info.wallet_id != j.wallet_id:
                j.status, j.reason = "rejected", WALLET_MISMATCH
                continue
            out.append((j, info.public_key, info.tier, leaf))

    def _check_signatures(self, chunk: list[Ready]) -> None:
        """The card's signature (:func:`wallet.suites.verify`, as the terminal checks it), then the tier's single
        limit and the offline cap, for each voucher of ``chunk`` (runs on any thread; the loop does little besides
        the signature check, which releases the GIL)."""
        verify, offline_max = suites.verify, self.offline_single_max
        for j, key, tier, leaf in chunk:
            try:
                verify(key, j.body_raw, j.signature, j.suite)
            except SignatureError:
                j.status, j.reason = "rejected", BAD_SIGNATURE
                continue
            limits = TIER_LIMITS.get(tier)
            amount = j.amount_fen
            if limits is None:
                j.status, j.reason = "rejected", BAD_VOUCHER
            elif limits.single_max is not None and amount > limits.single_max:
                j.status, j.reason = "rejected", OVER_SINGLE_LIMIT
            elif offline_max is not None and amount > offline_max:
                j.status, j.reason = "rejected", OVER_OFFLINE_LIMIT
            j.tier = tier
            j.cert_der = leaf

    def _card_window(self, leaf: bytes, issuer: bytes, ts: int) -> tuple[int, int, WalletCertInfo]:
        """A card's chain verified at ``ts`` (ms), once per card: cached with the window (ms) in which every
        certificate of the chain is valid. Raises :class:`CertificateError` when the chain fails at ``ts``."""
        hit = self._chains.get((leaf, issuer))
        if hit is not None and hit[0] <= ts <= hit[1]:
            return hit
        at = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        info = verify_wallet_certificate(leaf, (issuer,), self.roots, at)
        not_before, not_after = chain_validity(leaf, (issuer,), self.roots)
        if len(self._chains) > MAX_CACHED_CHAINS:
            self._chains.clear()
        hit = self._chains[(leaf, issuer)] = (ms(not_before), ms(not_after), info)
        return hit
