"""The mock card store: atomic files, locks, ids allocated once under concurrency, corrupted files refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pos.cards.manage import issue_cards
from pos.home import Home
from wallet.errors import CardKeyError, CardNotFound, CardStoreError, InvalidInput


def test_issue_and_reload(tmp_path: Path) -> None:
    home = Home(tmp_path)
    [card] = issue_cards(home, 2, 123_45)
    again = home.cards.load(card.card_id)
    assert again == card
    assert oct((tmp_path / "cards" / f"{card.card_id}.json").stat().st_mode & 0o777) == "0o600"


def test_corrupted_card_file_is_a_clear_error_and_stays_untouched(tmp_path: Path) -> None:
    home = Home(tmp_path)
    [card] = issue_cards(home, 4, 100)
    path = tmp_path / "cards" / f"{card.card_id}.json"
    path.write_text('{"card_id": "c0001", "wallet_id": ')
    with pytest.raises(CardStoreError, match="corrupted"):
        home.cards.load(card.card_id)
    with pytest.raises(CardStoreError), home.cards.open(card.card_id):
        pass
    assert path.read_text() == '{"card_id": "c0001", "wallet_id": '


def test_card_file_with_a_damaged_key_is_refused_when_the_card_powers_up(tmp_path: Path) -> None:
    home = Home(tmp_path)
    [card] = issue_cards(home, 4, 100)
    path = tmp_path / "cards" / f"{card.card_id}.json"
    doc = json.loads(path.read_text())
    doc["key_pem"] = doc["key_pem"].replace("A", "B", 8)
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    with pytest.raises(CardKeyError, match="private key does not load"), home.cards.open(card.card_id):
        pass
    assert path.read_bytes() == before


def test_unknown_and_malformed_ids(tmp_path: Path) -> None:
    store = Home(tmp_path).cards
    with pytest.raises(CardNotFound):
        store.load("c0001")
    for bad in ("../x", "c1", "C0001", "c0001.json"):
        with pytest.raises(InvalidInput):
            store.load(bad)


def test_a_card_is_in_one_field_at_a_time(tmp_path: Path) -> None:
    home = Home(tmp_path)
    [card] = issue_cards(home, 4, 100)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with home.cards.open(card.card_id):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(5)
    with pytest.raises(CardStoreError, match="busy"), home.cards.open(card.card_id, timeout=0.1):
        pass
    release.set()
    t.join()
    with home.cards.open(card.card_id, timeout=1) as applet:
        assert applet.state.card_id == card.card_id


def test_concurrent_issuing_allocates_distinct_ids(tmp_path: Path) -> None:
    env = {**os.environ, "POS_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "pos.cli.main", "card", "issue", "--tier", "4", "--balance", "1", "--count", "3",
           "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    ids = [c["card_id"] for p in procs for c in json.loads(p.communicate(timeout=60)[0])["cards"]]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert sorted(ids) == [f"c{n:04d}" for n in range(1, 13)]
    wallets = {Home(tmp_path).cards.load(i).wallet_id for i in ids}
    assert len(wallets) == 12


def test_a_full_disk_leaves_no_card_of_the_batch_and_no_reserved_id(tmp_path: Path, monkeypatch) -> None:
    import errno

    import wallet.store
    from wallet.errors import StorageError

    home = Home(tmp_path)
    issue_cards(home, 4, 100, register=False)
    real = wallet.store.write_atomic
    calls = []

    def full_on_third(path: Path, data: bytes, mode: int = 0o644) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data, mode)

    monkeypatch.setattr(wallet.store, "write_atomic", full_on_third)
    with pytest.raises(StorageError, match="is full"):
        issue_cards(home, 4, 100, count=5, register=False)
    with pytest.raises(StorageError, match="is full"):
        calls.clear()
        calls.extend([tmp_path, tmp_path])
        home.cards.clone("c0001")
    assert sorted(p.name for p in (tmp_path / "cards").iterdir() if not p.name.endswith(".lock")) == ["c0001.json"]
    monkeypatch.setattr(wallet.store, "write_atomic", real)
    assert [c.card_id for c in issue_cards(home, 4, 100, count=2, register=False)] == ["c0002", "c0003"]


def test_unknown_or_bad_card_ids_make_no_lock_files(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    issue_cards(home, 4, 100, register=False)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(CardNotFound):
        home.cards.clone("c0099")
    with pytest.raises(InvalidInput):
        home.cards.clone("../../x")
    with pytest.raises(CardNotFound), home.cards.open("c0098"):
        pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_batch_lists_the_card_directory_once_and_numbers_after_what_is_there(tmp_path: Path, monkeypatch) -> None:
    """Issuing a batch reads the card directory once, not once per card (10,000 cards stay linear), and the ids
    still follow the highest number on file, reservations included."""
    from wallet.store import CardStore

    home = Home(tmp_path)
    home.cards.root.mkdir(parents=True, exist_ok=True)
    (home.cards.root / "c0007.reserved").touch()  # a reservation on file: its number is taken
    listings = []
    real_ids = CardStore.ids

    def ids(self):  # type: ignore[no-untyped-def]
        listings.append(1)
        return real_ids(self)

    monkeypatch.setattr(CardStore, "ids", ids)
    issued = issue_cards(home, 4, 10_000, 5)
    assert [s.card_id for s in issued] == ["c0008", "c0009", "c0010", "c0011", "c0012"]
    assert len(listings) == 1
    listings.clear()
    assert [s.card_id for s in issue_cards(home, 4, 10_000, 2)] == ["c0013", "c0014"]
    assert len(listings) == 1
