"""A load the card store cannot keep (issue 16, point 6): the card never took it, so the command fails typed
(storage, exit 1, the path) and the operator does not count the money as loaded."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import wallet.store
from pos.cli.main import main
from pos.home import Home
from tests.support.shop import shop_session


def test_a_load_the_full_card_store_refused_is_not_counted(tmp_path: Path, monkeypatch, capsys) -> None:
    with shop_session(Home(tmp_path / "home")) as shop:
        (card,) = shop.cards(1, balance_fen=1000)
        wallet_id = shop.home.cards.load(card).wallet_id

        def full(path: Path, data: bytes, mode: int = 0o644) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(wallet.store, "write_atomic", full)
        capsys.readouterr()
        code = main(["--home", str(shop.home.root), "card", "load", card, "--amount", "5", "--json"])
        err = json.loads(capsys.readouterr().out)
        assert code == 1 and err["code"] == "storage" and "is full: free some space" in err["error"]
        assert str(shop.home.root / "cards" / f"{card}.json") in err["error"]
        monkeypatch.undo()
        assert shop.home.cards.load(card).balance_fen == 1000
        with shop.admin() as admin:
            w = admin.wallet(wallet_id)
            assert (w.loaded_fen, w.load_counter) == (1000, 1)  # the token was issued, never counted as loaded
        assert main(["--home", str(shop.home.root), "card", "load", card, "--amount", "5", "--json"]) == 0
        with shop.admin() as admin:
            assert admin.wallet(wallet_id).loaded_fen == 1500  # the next load is counted once the card takes it
