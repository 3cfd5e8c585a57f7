"""Red packets, end to end through the CLI: granted at the operator, received at the wallet's next load (on the
load token, shown on the load's receipt and by `pos card show`), held while the tier's balance cap would break,
back to waiting when the card refuses the load, returned to the funder after they expire, granted once per grant
id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pos.cli.main import main
from pos.home import Home
from tests.support.shop import Shop, shop_session
from tests.test_tickets import Cli as TicketCli
from wallet import clock

DAY = "2026-05-01"


class Cli(TicketCli):
    """The tickets tests' CLI, with a card's red packets."""

    def packets(self, card: str) -> list[tuple[int, str]]:
        return [(p["amount_fen"], p["status"]) for p in self("card", "show", card)[1]["red_packets"]]


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Cli, Shop, clock.VirtualClock]]:
    root = tmp_path / "home"
    vc = clock.VirtualClock.at(f"{DAY}T09:00")
    with clock.use(vc), shop_session(Home(root)) as shop:
        shop.provision("CMGQ0001")
        cli = Cli(root, capsys)
        assert cli("card", "issue", "--tier", "4", "--balance", "9995")[0] == 0  # c0001: ¥5.00 under the cap
        assert cli("card", "issue", "--tier", "4", "--balance", "100")[0] == 0  # c0002
        yield cli, shop, vc


def test_a_red_packet_is_received_at_the_next_load_and_held_while_the_cap_would_break(world, capsys) -> None:
    cli, _, _ = world
    code, granted = cli("campaign", "red-packet", "--cards", "c0001,c0002", "--amount", "8.88", "--expires",
                        "2026-05-03")
    assert code == 0 and [(p["card_id"], p["status"]) for p in granted["packets"]] == [
        ("c0001", "waiting"), ("c0002", "waiting")]

    code, loaded = cli("card", "load", "c0002", "--amount", "1")
    assert code == 0 and loaded["red_packet_fen"] == 888 and loaded["balance_fen"] == 10_000 + 100 + 888
    assert cli.packets("c0002") == [(888, "received")]
    main(["--home", str(cli.root), "card", "load", "c0002", "--amount", "1"])  # the receipt of a plain load
    assert "red packets" not in capsys.readouterr().out

    code, held = cli("card", "load", "c0001", "--amount", "1")  # ¥9,996.00 + ¥8.88 would pass ¥10,000.00
    assert code == 0 and held["red_packet_fen"] == 0 and held["balance_fen"] == 999_600
    assert cli.packets("c0001") == [(888, "waiting")]

    assert cli("pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "100")[0] == 0
    code, _ = cli("card", "load", "c0001", "--amount", "1")  # the payment is not settled: the operator still
    assert cli.packets("c0001") == [(888, "waiting")]  # counts it as balance, so the packet still waits
    cli("sync", "--terminal", "CMGQ0001")
    main(["--home", str(cli.root), "card", "load", "c0001", "--amount", "1"])
    assert "+ red packets ¥8.88" in capsys.readouterr().out
    assert cli.packets("c0001") == [(888, "received")]
    assert cli("card", "show", "c0001")[1]["balance_fen"] == 999_600 - 10_000 + 100 + 100 + 888


def test_a_refused_load_puts_the_packet_back_and_an_expired_one_returns_to_its_funder(world) -> None:
    cli, shop, vc = world
    _, shown = cli("card", "show", "c0002")
    wallet = shown["wallet_id"]
    cli("campaign", "red-packet", "--cards", "c0002", "--amount", "2", "--expires", DAY, "--funder",
        "320508000000101")
    with shop.admin() as admin:
        token = admin.load_token(wallet, 100, shown["load_counter"])  # a token the card is never shown
        assert token.amount_fen == 100 + 200
        assert cli.packets("c0002") == [(200, "on_load")]
        admin.cancel_load(wallet, token.load_counter)  # the card refused it
    assert cli.packets("c0002") == [(200, "waiting")]
    vc.advance(24 * 3_600_000)  # the day after it expired
    shown = cli("card", "show", "c0002")[1]
    assert [(p["status"], p["funder"]) for p in shown["red_packets"]] == [("returned", "320508000000101")]
    code, loaded = cli("card", "load", "c0002", "--amount", "1")
    assert code == 0 and loaded["red_packet_fen"] == 0 and loaded["balance_fen"] == 10_000 + 100


def test_grants_are_checked_and_made_once(world) -> None:
    cli, shop, _ = world
    code, over = cli("campaign", "red-packet", "--cards", "c0002", "--amount", "10000.01", "--expires", DAY)
    assert code == 1 and over["reason"] == "over_balance_limit"  # tier 4 could never receive it
    assert cli("campaign", "red-packet", "--cards", "c0002", "--amount", "1", "--expires", "2026-04-30")[0] == 2
    assert cli("campaign", "red-packet", "--cards", "c0002,c0002", "--amount", "1", "--expires", DAY)[0] == 2
    assert cli("campaign", "red-packet", "--cards", "c0009", "--amount", "1", "--expires", DAY)[0] == 2
    assert cli("campaign", "red-packet", "--cards", "c0002", "--amount", "1", "--expires", DAY, "--funder",
               "999999999999999")[0] == 2
    wallet = cli("card", "show", "c0002")[1]["wallet_id"]
    body = {"grant_id": "RPREPLAY0001", "wallet_ids": [wallet], "amount_fen": 300, "expires": DAY}
    with shop.admin() as admin:
        first = admin.call("POST", "/v1/admin/red-packets", body, signed=False)
        second = admin.call("POST", "/v1/admin/red-packets", body, signed=False)
    assert (first["replayed"], second["replayed"]) == (False, True)
    assert cli.packets("c0002") == [(300, "waiting")]
    assert cli("card", "load", "c0002", "--amount", "1")[1]["red_packet_fen"] == 300  # once
