"""Settlement's cryptographic checks: its card's certificate chain at the voucher's time, the
wallet id, the card's signature and the tier's limits, on the settling thread and a few helpers.

`cryptography` releases the GIL while it verifies, so the checks of one card overlap with those of another and
with the Python work of the thread that holds the GIL.

Each card's verified chain is remembered in a bounded :class:`bank.chaincache.ChainCache` (the cards used most
recently), so a card's chain is verified once while the card keeps coming back, and the operator's memory does not
grow with the number of cards it has seen.
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

from bank.chaincache import CHAIN_CACHE_SIZE, KEY_CACHE_SIZE, ChainCache, Window, card_digest
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
from wallet.certs import chain_validity, verify_wallet_certificate
from wallet.errors import CertificateError, SignatureError
from wallet.limits import TIER_LIMITS
from wire.batch import UploadItem

VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))  # the settling thread and its helpers
VERIFY_CHUNK = 32  # vouchers per verification task (whole cards)

Ready = tuple[Judged, ec.EllipticCurvePublicKey, int, bytes]  # a voucher whose chain passed: key, tier, leaf


class Verifier:
    """Re-verifies vouchers against the operator's ``roots``; caches the verified chains of the ``chain_cache``
    cards used most recently and the key objects of ``key_cache`` of them (see :mod:`bank.chaincache`)."""

    def __init__(self, roots: tuple[bytes, ...], offline_single_max: int | None,
                 threads: int = VERIFY_THREADS, chain_cache: int = CHAIN_CACHE_SIZE,
                 key_cache: int = KEY_CACHE_SIZE) -> None:
        self.roots = roots
        self.offline_single_max = offline_single_max
        self.threads = threads
        self.pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.chains = ChainCache(chain_cache, key_cache)

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
        digest = card_digest(leaf, issuer)
        window: Window | None = None
        key: ec.EllipticCurvePublicKey | None = None
        for j in group:
            ts = j.timestamp_ms  # a timestamp never rejects a voucher (bank.timerules flags it for review)
            if window is None or not window.not_before <= ts <= window.not_after:
                try:
                    window, key = self._card_window(digest, leaf, issuer, ts, key)
                except CertificateError as exc:
                    j.status, j.reason = "rejected", exc.reason
                    continue
            if window.wallet_id != j.wallet_id:
                j.status, j.reason = "rejected", WALLET_MISMATCH
                continue
            assert key is not None
            out.append((j, key, window.tier, leaf))

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

    def _card_window(self, digest: bytes, leaf: bytes, issuer: bytes, ts: int,
                     key: ec.EllipticCurvePublicKey | None) -> tuple[Window, ec.EllipticCurvePublicKey]:
        """A card's chain verified at ``ts`` (ms), once per card while it stays in the cache, with the window (ms)
        in which every certificate of the chain is valid, and the card's key (``key`` when the caller already
        has it). Raises :class:`CertificateError` when the chain fails at ``ts``."""
        hit = self.chains.get(digest)
        if hit is not None and hit[0].not_before <= ts <= hit[0].not_after:
            window, kept = hit
            return window, key or kept or self.chains.key(digest, window)
        at = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        info = verify_wallet_certificate(leaf, (issuer,), self.roots, at)
        not_before, not_after = chain_validity(leaf, (issuer,), self.roots)
        window = Window(ms(not_before), ms(not_after), info.wallet_id, info.tier, info.public_point)
        self.chains.put(digest, window, info.public_key)
        return window, info.public_key
