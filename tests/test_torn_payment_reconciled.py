"""Issue 11's torn payment end to end through the CLI, with the operator: the terminal dies right after the card
answers PAY (¥20 at CMGQ0001), the customer pays ¥5 at CMGQ0002. Either the next tap at CMGQ0001 recovers the ¥20
from the card's log and the books balance, or (the card's log no longer reaches it, or the card never comes back)
the operator finds the gap in the wallet's counters, the balance chain says ¥20 left the card there, and
``pos report`` shows it matched with CMGQ0001's unresolved charge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import pos.cards.manage
from pos.cli.main import main
from pos.home import Home
from tests.support.shop import Shop, shop_session

T1, T2, MERCHANT = "CMGQ0001", "CMGQ0002", "320508000000101"


class Died(BaseException):
    """The terminal's process 'died' (in-process stand-in for os._exit in --power-loss)."""


@pytest.fixture
def shop(home: Home) -> Iterator[Shop]:
    with shop_session(home) as s:
        s.provision(T1, T2)
        yield s


def cli(shop: Shop, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["--home", str(shop.home.root), *args])
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out


def pay_and_die_in_a_process(shop: Shop) -> None:
    """``pos pay --power-loss`` as the issue runs it: a process that dies (137) right after the card answers PAY."""
    env = {**os.environ, "POS_HOME": str(shop.home.root), "POS_OPERATOR_URL": shop.url}
    died = subprocess.run([sys.executable, "-m", "pos.cli.main", "pay", "--terminal", T1, "--card", "c0001",
                           "--amount", "20", "--power-loss", "--json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert died.returncode == 137 and died.stdout == "", died.stderr


def pay_and_die_here(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same ``pos pay --power-loss``, in this process: the terminal 'dies' (an exception no handler takes)
    right after the card answers PAY, before it records anything; its intent stays open with its pay-sent mark."""
    def die() -> None:
        raise Died

    monkeypatch.setattr(pos.cards.manage, "_power_loss", die)
    with pytest.raises(Died):
        main(["--home", str(shop.home.root), "pay", "--terminal", T1, "--card", "c0001", "--amount", "20",
              "--power-loss"])
    monkeypatch.undo()


def test_the_next_tap_recovers_the_torn_twenty_and_the_books_balance(shop: Shop, capsys, monkeypatch) -> None:
    assert cli(shop, capsys, "card", "issue", "--tier", "4", "--balance", "100", "--json")[0] == 0
    pay_and_die_here(shop, monkeypatch)
    assert cli(shop, capsys, "pay", "--terminal", T2, "--card", "c0001", "--amount", "5", "--json")[1][
        "status"] == "approved"
    assert cli(shop, capsys, "sync", "--terminal", T2, "--json")[1]["settled"] == 1
    code, back = cli(shop, capsys, "pay", "--terminal", T1, "--card", "c0001", "--amount", "1", "--json")
    wallet = back["wallet_id"]
    assert code == 0 and back["recovered"] == [f"{wallet}-00000001"]
    assert cli(shop, capsys, "sync", "--terminal", T1, "--json")[1]["settled"] == 2
    code, rep = cli(shop, capsys, "report", "--terminal", T1, "--json")
    assert code == 0 and rep["matches"] and rep["unresolved"] == {"items": [], "gaps": []}
    code, rec = cli(shop, capsys, "operator", "reconcile", "--json")
    assert code == 0 and (rec["gaps_total"], rec["breaks_total"], rec["items"]) == (0, 0, [])
    with shop.admin() as adm:
        assert adm.account(MERCHANT)["settled_fen"] == 2_000 + 500 + 100  # every fen the card paid, settled


@pytest.mark.parametrize("comes_back", [True, False], ids=["log-exceeded", "card-never-back"])
def test_an_unrecoverable_torn_payment_is_flagged_and_matched_in_pos_report(shop: Shop, capsys, monkeypatch,
                                                                             comes_back: bool) -> None:
    assert cli(shop, capsys, "card", "issue", "--tier", "4", "--balance", "100", "--json")[0] == 0
    shop.home.cards.save(shop.home.cards.load("c0001").evolve(log_depth=1))  # its log keeps one payment
    if comes_back:
        pay_and_die_in_a_process(shop)  # the command, in a process that really dies
    else:
        pay_and_die_here(shop, monkeypatch)
    assert cli(shop, capsys, "pay", "--terminal", T2, "--card", "c0001", "--amount", "5", "--json")[1][
        "status"] == "approved"
    wallet = shop.home.cards.load("c0001").wallet_id
    assert cli(shop, capsys, "sync", "--terminal", T2, "--json")[1]["settled"] == 1
    if comes_back:  # too late: the card's log holds only its payment 2
        code, back = cli(shop, capsys, "pay", "--terminal", T1, "--card", "c0001", "--amount", "1", "--json")
        assert code == 0 and back["recovered"] == []
        with shop.home.ledger(T1) as led:
            (entry,) = led.unresolved()
            assert (entry.wallet_id, entry.counter, entry.amount_fen) == (wallet, 1, 2_000)
    synced = cli(shop, capsys, "sync", "--terminal", T1, "--json")[1]
    assert synced["unresolved"] == 1 and synced["settled"] == (1 if comes_back else 0)
    assert cli(shop, capsys, "sync", "--terminal", T1, "--json")[1]["unresolved"] is None  # unchanged: not re-sent

    code, rep = cli(shop, capsys, "report", "--terminal", T1, "--json")
    assert code == 0 and rep["matches"]
    (item,) = rep["unresolved"]["items"]
    assert {k: item[k] for k in ("terminal_id", "wallet_id", "counter", "amount_fen", "status", "chain", "gap_fen",
                                 "state")} == {
        "terminal_id": T1, "wallet_id": wallet, "counter": 1, "amount_fen": 2_000, "status": "matched",
        "chain": "agrees", "gap_fen": 2_000, "state": "unresolved" if comes_back else "open"}
    assert f"credited to {T1}'s merchant (¥20.00)" in item["next"] and item["problem"]
    assert rep["unresolved"]["gaps"] == []  # the one gap is the one this terminal reported
    code, text = cli(shop, capsys, "report", "--terminal", T1)
    assert f"MATCHED {T1} intent {item['intent']}" in text and f"wallet {wallet} counter 1 ¥20.00" in text

    code, rec = cli(shop, capsys, "operator", "reconcile", "--json")
    assert code == 1 and rec["breaks_total"] == 0 and [i["status"] for i in rec["items"]] == ["matched"]
    assert [(g["wallet_id"], g["first"], g["last"], g["gap_fen"], g["next_terminal"], g["reported"])
            for g in rec["gaps"]] == [(wallet, 1, 1, 2_000, T2, 1)]
