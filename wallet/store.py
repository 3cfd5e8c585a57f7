"""The mock card store: cards persist as JSON files under ``HOME/cards`` so separate commands share card state.

Each card has its own lock file: a card is in one reader's field at a time, and concurrent commands on the same
card run one after the other. Writes are atomic (temp file, fsync, rename), so a crash never leaves a torn file.
Reading (:meth:`CardStore.ids`, :meth:`CardStore.load`) takes no lock and creates nothing, so a read-only copy of a
home can be listed. A full or read-only disk raises :class:`~wallet.errors.StorageError` naming the path; a card
file that is not a card (bad JSON, a field of the wrong type) raises :class:`CorruptedCard` naming the file.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from filelock import FileLock, Timeout

from wallet.card import CardState, WalletApplet
from wallet.errors import CardBusy, CardNotFound, CardStoreError, EcnyError, InvalidInput, StorageError
from wallet.files import write_atomic
from wallet.keys import key_to_pem, new_key

_CARD_ID = re.compile(r"^c\d{4,9}$")


class BadPath(InvalidInput):
    """A path the user chose cannot be used (no permission, a file where a directory belongs, missing)."""


class CorruptedFile(InvalidInput):
    """A stored file (a card, a certificate store) is damaged; the message names it and says what to do."""


class CorruptedCard(CardStoreError, CorruptedFile):
    """A card file is not a card: not JSON, or a field of the wrong type. The message names the file."""


def os_error(exc: OSError, path: object) -> EcnyError:
    """An ``OSError`` met at ``path`` as a typed error that says what to do: a full, read-only or failing disk is
    :class:`StorageError` (the operation failed; retry once the disk is fixed), a path that cannot be used is
    :class:`BadPath` (bad input)."""
    where = exc.filename or path
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"the disk holding {where} is full: free some space, then run the same command again "
                            "(nothing was half-written)", str(where))
    if exc.errno == errno.EROFS:
        return StorageError(f"{where} is on a read-only file system: make it writable or use another --home, then "
                            "run the same command again", str(where))
    if exc.errno in (errno.EACCES, errno.EPERM):
        return BadPath(f"no permission to write {where}: use a --home you can write, or fix its permissions")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return BadPath(f"{where}: a file is in the way of a directory ({what}): use another --home")
    if exc.errno == errno.EISDIR:
        return BadPath(f"{where} is a directory, not a file")
    if exc.errno == errno.ENOENT:
        return BadPath(f"{where} does not exist and cannot be created here")
    return StorageError(f"cannot use {where}: {what}", str(where))


def _check_types(state: CardState) -> None:
    """Refuse a card whose fields have the wrong JSON types (e.g. ``"balance_fen": "lots"``)."""
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        kinds = str(f.type).replace(" ", "").split("|")
        ok = (("None" in kinds and value is None)
              or ("int" in kinds and isinstance(value, int) and not isinstance(value, bool) and value >= 0)
              or ("str" in kinds and isinstance(value, str))
              or ("bytes" in kinds and isinstance(value, bytes))
              or (str(f.type).startswith("dict") and isinstance(value, dict))
              or (str(f.type).startswith("tuple[tuple[bytes") and isinstance(value, tuple)
                  and all(isinstance(e, tuple) and all(isinstance(b, bytes) for b in e) for e in value)))
        if not ok:
            raise ValueError(f"{f.name} is {value!r}, expected {f.type}")


class CardStore:
    """Cards under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._next: int | None = None  # inside :meth:`allocating`: the next card number (0: not read yet)

    def _path(self, card_id: str) -> Path:
        if not _CARD_ID.match(card_id):
            raise InvalidInput(f"card id {card_id!r} is not of the form c0001")
        return self.root / f"{card_id}.json"

    def _lock(self, card_id: str) -> FileLock:
        self._path(card_id)  # refuses ids that are not c0001-like (no ../ lock files outside the store)
        return FileLock(str(self.root / f".{card_id}.lock"))

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.stem for p in self.root.glob("c*.json") if _CARD_ID.match(p.stem))

    def load(self, card_id: str) -> CardState:
        """Read a card's state (a consistent snapshot: files are replaced atomically)."""
        path = self._path(card_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CardNotFound(f"no card {card_id!r} in {self.root}") from None
        except OSError as exc:
            raise os_error(exc, path) from exc
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            state = CardState.from_json(data)
            _check_types(state)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise CorruptedCard(f"card file {path} is corrupted: {exc}") from exc
        return state

    def save(self, state: CardState) -> None:
        path = self._path(state.card_id)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(state.to_json(), indent=1).encode(), mode=0o600)
        except OSError as exc:
            raise os_error(exc, path) from exc

    def remove(self, card_id: str) -> None:
        """Delete a card file (undoing a batch that could not be written whole)."""
        self._path(card_id).unlink(missing_ok=True)

    def new_id(self) -> str:
        """Allocate the next card id (callers hold :meth:`allocating`)."""
        n = self._next
        if not n:  # the directory is listed once per allocation, not once per card
            numbers = [int(i[1:]) for i in self.ids()]
            reserved = [int(p.stem[1:]) for p in self.root.glob("c*.reserved")]
            n = max(numbers + reserved, default=0) + 1
        if self._next is not None:
            self._next = n + 1
        card_id = f"c{n:04d}"
        try:
            (self.root / f"{card_id}.reserved").touch()
        except OSError as exc:
            raise os_error(exc, self.root) from exc
        return card_id

    @contextmanager
    def allocating(self) -> Iterator[None]:
        """Hold the store-wide lock while allocating ids and writing new cards; reservations end with it, whether
        the cards were written or not."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.root / ".store.lock"), timeout=30)
            lock.acquire()
        except Timeout as exc:
            raise CardStoreError(f"card store {self.root} is locked by another command") from exc
        except OSError as exc:
            raise os_error(exc, self.root) from exc
        self._next = 0
        try:
            yield
        finally:
            self._next = None
            for p in self.root.glob("c*.reserved"):
                p.unlink(missing_ok=True)
            lock.release()

    def add(self, state: CardState) -> None:
        """Store a new card, refusing to overwrite an existing one."""
        if self._path(state.card_id).exists():
            raise CardStoreError(f"card {state.card_id} already exists")
        self.save(state)

    def clone(self, card_id: str, *, with_key: bool = True) -> CardState:
        """A tester's attack card: the same keys, wallet id and state as ``card_id`` under a new card id. Without
        the key, it copies only what a card shows (id, certificate, state) and holds a key of its own: it reads as
        the original, but cannot sign as it."""
        self.load(card_id)  # an unknown or corrupted card fails here, before any lock file is made
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
        self.load(card_id)  # an unknown or corrupted card fails before its lock file is made
        try:
            lock = self._lock(card_id).acquire(timeout=timeout)
        except Timeout as exc:
            raise CardBusy(card_id) from exc
        except OSError as exc:
            raise os_error(exc, self.root) from exc
        with lock:
            yield WalletApplet(self.load(card_id), persist=self.save)
