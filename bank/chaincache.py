"""The cards' verified certificate chains that settlement remembers, in a bounded amount of memory.

Settlement verifies a card's chain once and then checks each of the card's vouchers against the chain's validity
window (:mod:`bank.verify`). What it remembers of a card is a :class:`Window`: that window, the wallet id and tier
the certificate names and the card's public key as its 65-byte point, under a digest of the two certificates
(:func:`card_digest`), about 0.5 KB with the cache's bookkeeping. The ``size`` cards used most recently are kept,
the least recently used goes first: at the default 100,000, about 50 MB at most, however many cards the operator
has seen. A card that left the cache is verified again from its certificates when it comes back.

A ``cryptography`` key object costs about 2.3 KB more (OpenSSL's own memory), so only the ``keys`` most recently
used cards keep theirs (4,096 by default: about 10 MB); for another card in the cache the key is rebuilt from its
point (about 10 µs, with its first signature check, against the 100 µs or so of verifying the chain again).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec

CHAIN_CACHE_SIZE = 100_000  # cards whose verified chain is remembered (about 0.5 KB each)
KEY_CACHE_SIZE = 4_096  # of those, the most recently used ones whose key object is kept (about 2.3 KB each)


class Window(NamedTuple):
    """A card's verified chain: the window (ms) in which every certificate of it is valid, the wallet id and tier
    its certificate names and the card's public key (an uncompressed P-256 point)."""

    not_before: int
    not_after: int
    wallet_id: str
    tier: int
    point: bytes


def card_digest(leaf: bytes, issuer: bytes) -> bytes:
    """What a card's chain is cached under: SHA-256 over the two certificates, the leaf's length first (so no other
    split of the same bytes into a leaf and an issuer has the same digest)."""
    return hashlib.sha256(len(leaf).to_bytes(4, "big") + leaf + issuer).digest()


class ChainCache:
    """The windows of the ``size`` cards used most recently and the key objects of the ``keys`` most recently used
    of them (never more than ``size``), least recently used out first; safe to share between threads."""

    def __init__(self, size: int = CHAIN_CACHE_SIZE, keys: int = KEY_CACHE_SIZE) -> None:
        if size < 0 or keys < 0:
            raise ValueError("a chain cache holds 0 or more cards")
        self.size = size
        self.key_size = min(keys, size)
        self._windows: OrderedDict[bytes, Window] = OrderedDict()
        self._keys: OrderedDict[bytes, ec.EllipticCurvePublicKey] = OrderedDict()  # a subset of _windows'
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, digest: object) -> bool:
        return digest in self._windows

    def keys_held(self) -> int:
        """How many cards keep their key object."""
        return len(self._keys)

    def get(self, digest: bytes) -> tuple[Window, ec.EllipticCurvePublicKey | None] | None:
        """The card's window and its key object if kept (else see :meth:`key`), or None when the card is not
        cached; the card is now the most recently used."""
        with self._lock:
            window = self._windows.get(digest)
            if window is None:
                return None
            self._windows.move_to_end(digest)
            key = self._keys.get(digest)
            if key is not None:
                self._keys.move_to_end(digest)
            return window, key

    def key(self, digest: bytes, window: Window) -> ec.EllipticCurvePublicKey:
        """The key of a cached card whose key object was not kept, rebuilt from the point of its ``window`` (then
        kept, as the most recently used)."""
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), window.point)
        with self._lock:
            if digest in self._windows:
                self._hold(digest, key)
        return key

    def put(self, digest: bytes, window: Window, key: ec.EllipticCurvePublicKey) -> None:
        """Remember a card's verified chain and its key, as the most recently used card."""
        with self._lock:
            self._windows[digest] = window
            self._windows.move_to_end(digest)
            self._hold(digest, key)
            while len(self._windows) > self.size:
                gone, _ = self._windows.popitem(last=False)
                self._keys.pop(gone, None)

    def _hold(self, digest: bytes, key: ec.EllipticCurvePublicKey) -> None:
        if self.key_size == 0:
            return
        self._keys[digest] = key
        self._keys.move_to_end(digest)
        while len(self._keys) > self.key_size:
            self._keys.popitem(last=False)
