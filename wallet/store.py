"""The mock card store: cards persist as JSON files under ``HOME/cards`` so separate commands share card state.

Each card has its own lock file: a card is in one reader's field at a time, and concurrent commands on the same
card run one after the other. Writes are atomic (temp file, fsync, rename), so a crash never leaves a torn file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from filelock import FileLock, Timeout

from wallet.card import CardState, WalletApplet
from wallet.certs import key_to_pem, new_key, write_atomic
from wallet.errors import CardNotFound, CardStoreError, InvalidInput

_CARD_ID = re.compile(r"^c\d{4,9}$")


class CardStore:
    """Cards under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, card_id: str) -> Path:
        if not _CARD_ID.match(card_id):
            raise InvalidInput(f"card id {card_id!r} is not of the form c0001")
        return self.root / f"{card_id}.json"

    def _lock(self, card_id: str) -> FileLock:
        return FileLock(str(self.root / f".{card_id}.lock"))

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.stem for p in self.root.glob("c*.json") if _CARD_ID.match(p.stem))

    def load(self, card_id: str) -> CardState:
        """Read a card's state (a consistent snapshot: files are replaced atomically)."""
        path = self._path(card_id)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            raise CardNotFound(f"no card {card_id!r} in {self.root}") from None
        try:
            return CardState.from_json(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise CardStoreError(f"card file {path} is corrupted: {exc}") from exc

    def save(self, state: CardState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(state.card_id), json.dumps(state.to_json(), indent=1).encode(), mode=0o600)

    def new_id(self) -> str:
        """Allocate the next card id (callers hold :meth:`allocating`)."""
        numbers = [int(i[1:]) for i in self.ids()]
        reserved = [int(p.stem[1:]) for p in self.root.glob("c*.reserved")]
        n = max(numbers + reserved, default=0) + 1
        card_id = f"c{n:04d}"
        (self.root / f"{card_id}.reserved").touch()
        return card_id

    @contextmanager
    def allocating(self) -> Iterator[None]:
        """Hold the store-wide lock while allocating ids and writing new cards."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.root / ".store.lock"), timeout=30):
                yield
                for p in self.root.glob("c*.reserved"):
                    p.unlink(missing_ok=True)
        except Timeout as exc:
            raise CardStoreError(f"card store {self.root} is locked by another command") from exc

    def add(self, state: CardState) -> None:
        """Store a new card, refusing to overwrite an existing one."""
        if self._path(state.card_id).exists():
            raise CardStoreError(f"card {state.card_id} already exists")
        self.save(state)

    def clone(self, card_id: str, *, with_key: bool = True) -> CardState:
        """A tester's attack card: the same keys, wallet id and state as ``card_id`` under a new card id. Without
        the key, it copies only what a card shows (id, certificate, state) and holds a key of its own: it reads as
        the original, but cannot sign as it."""
        with self.allocating():
            with self._lock(card_id):
                original = self.load(card_id)
            clone = replace(original, card_id=self.new_id(), clone_of=card_id)
            if not with_key:
                clone = replace(clone, key_pem=key_to_pem(new_key()).decode(), note="clone without the key")
            self.add(clone)
        return clone

    @contextmanager
    def open(self, card_id: str, timeout: float = 30.0) -> Iterator[WalletApplet]:
        """Lock a card and yield its applet; every state change it makes is saved before it is answered."""
        path = self._path(card_id)
        if not path.exists():
            raise CardNotFound(f"no card {card_id!r} in {self.root}")
        try:
            with self._lock(card_id).acquire(timeout=timeout):
                yield WalletApplet(self.load(card_id), persist=self.save)
        except Timeout as exc:
            raise CardStoreError(f"card {card_id} is busy in another tap") from exc
