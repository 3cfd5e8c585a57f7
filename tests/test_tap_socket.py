"""``pos card tap`` against a running terminal over HOME/run/TID.sock, and the clear error when none runs."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecny_nfc.mock import MockReader
from pos.cards.manage import issue_cards
from pos.cards.tap_socket import TapRefused, TapServer, TerminalNotRunning, send_tap, socket_path
from pos.cli.main import main
from pos.home import Home
from pos.payment.outcome import Outcome
from pos.runtime import Runtime
from wallet.errors import EcnyError

TID = "CMGQ0001"


@pytest.fixture
def home() -> Iterator[Home]:
    root = Path(tempfile.mkdtemp(prefix="pos", dir="/tmp"))  # Unix socket paths must stay short
    h = Home(root)
    issue_cards(h, 4, 100_000, 1)
    yield h
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def terminal(home: Home) -> Iterator[Runtime]:
    rt = Runtime(home, TID, MockReader())
    rt.listen()
    yield rt
    rt.close()


def charging(rt: Runtime, amount_fen: int) -> tuple[threading.Thread, list[Outcome]]:
    """A terminal thread that takes one payment; waits until it is armed."""
    out: list[Outcome] = []
    t = threading.Thread(target=lambda: out.append(rt.charge(amount_fen, 5.0, threading.Event())))
    t.start()
    while not rt.broker.armed:  # type: ignore[union-attr]
        threading.Event().wait(0.01)
    return t, out


def test_no_running_terminal_is_a_clear_error(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TerminalNotRunning, match=f"no terminal {TID} is running") as raised:
        send_tap(home, TID, "c0001", timeout=1)
    assert raised.value.terminal_id == TID and raised.value.path == str(socket_path(home, TID))
    assert main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID]) == 1
    assert f"no terminal {TID} is running" in capsys.readouterr().err
    path = socket_path(home, TID)  # a socket file left by a terminal that died: nobody answers
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    assert main(["--home", str(home.root), "--json", "card", "tap", "c0001", "--terminal", TID]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"code": "terminal_not_running", "error": err.removeprefix("pos: error: ").strip()}
    assert f"nothing answers at {path}: Connection refused" in err and f"`pos run --terminal {TID}`" in err


def test_a_home_too_deep_for_a_socket_is_said_not_a_traceback(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    home = Home(tmp_path / ("x" * 100))
    issue_cards(home, 4, 100, 1)
    assert main(["--home", str(home.root), "--json", "card", "tap", "c0001", "--terminal", TID]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["code"] == "terminal_not_running" and "Traceback" not in err
    assert "too long for a Unix socket" in err and "use a shorter --home" in err


def test_tap_from_another_shell_gives_the_pay_json(terminal: Runtime, home: Home,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    t, out = charging(terminal, 1230)
    code = main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID, "--json"])
    t.join(5)
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["status"] == "approved" and printed["amount_fen"] == 1230
    assert printed == out[0].to_json("en")  # the same object as `pos pay --json`
    assert home.cards.load("c0001").balance_fen == 100_000 - 1230


def test_a_running_terminal_keeps_one_ledger_connection_across_customers(terminal: Runtime, home: Home,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The next customer's charge starts on the last one's connection and context (warm caches, learnt issuers),
    and still sees what another process wrote in between: a denylist a sync brought."""
    t, out = charging(terminal, 100)
    assert main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID]) == 0
    t.join(5)
    assert out[0].approved
    checkout = terminal._checkout
    assert checkout is not None
    with home.ledger(TID) as other:
        other.apply_denylist(1, [out[0].wallet_id])
    t, out = charging(terminal, 200)
    assert main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID]) == 1
    t.join(5)
    assert out[0].reason.value == "denylisted"
    assert terminal._checkout is checkout
    with home.ledger(TID) as other:
        assert [e.amount_fen for e in other.entries(kind="payment")] == [100]
        other.verify()
    capsys.readouterr()


def test_a_terminal_not_waiting_refuses_the_tap(terminal: Runtime, home: Home,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TapRefused, match="not waiting") as raised:
        send_tap(home, TID, "c0001", timeout=2)
    assert raised.value.why == "not_waiting" and raised.value.terminal_id == TID
    assert main(["--home", str(home.root), "--json", "card", "tap", "c0001", "--terminal", TID]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "tap_refused"
    with pytest.raises(EcnyError):
        send_tap(home, TID, "c0099", timeout=1)  # unknown card: refused before the socket


def test_stale_socket_is_replaced_and_a_second_terminal_is_refused(home: Home) -> None:
    path = socket_path(home, TID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("left over by a crash")
    rt = Runtime(home, TID, MockReader())
    rt.listen()
    try:
        assert path.is_socket()
        other = Runtime(home, TID, MockReader())
        with pytest.raises(EcnyError, match="already running"):
            TapServer(home, TID, other.broker).start()  # type: ignore[arg-type]
    finally:
        rt.close()
    assert not path.exists()


def test_a_charge_after_the_terminal_closed_is_refused_cleanly(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    rt = Runtime(home, TID, MockReader())
    rt.listen()
    t, out = charging(rt, 100)
    assert main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID]) == 0
    t.join(5)
    assert out[0].approved
    checkout = rt._checkout
    rt.close()
    assert checkout is not None
    checkout.idle()  # a worker finishing after the close: nothing to do, no error
    late = rt.charge(100, 0.1, threading.Event())
    assert late.reason is not None and late.reason.value == "terminal_error" and "shutting down" in late.detail
    assert rt._checkout is checkout  # no new connection opened after the close
    capsys.readouterr()


def test_pos_card_tap_finishes_a_torn_tap_while_the_terminal_waits(terminal: Runtime, home: Home,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The card leaves after PAY: the terminal waits for the same wallet, and `pos card tap` in that wait is taken
    (not 'not waiting for a tap'); both taps get the approval. The tapper is told when its card left the field."""
    from ecny_nfc.mock import Faults
    from pos.payment import control as stages
    from pos.payment.control import ChargeControl
    from wallet.protocol import INS_PAY

    control = ChargeControl()
    out: list[Outcome] = []
    t = threading.Thread(target=lambda: out.append(terminal.charge(2000, 30.0, control)))
    t.start()
    while not terminal.broker.armed:  # type: ignore[union-attr]
        threading.Event().wait(0.01)
    left = threading.Event()
    first: list[dict] = []
    tapper = threading.Thread(target=lambda: first.append(terminal.broker.tap(  # type: ignore[union-attr]
        "c0001", Faults(tear_at=INS_PAY), timeout=30, on_left=left.set)))
    tapper.start()
    assert left.wait(10)
    for _ in range(2000):  # the terminal notes the tear just after the card left
        if control.stage == stages.RETAP:
            break
        threading.Event().wait(0.005)
    assert control.stage == stages.RETAP
    code = main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID, "--json"])
    t.join(10)
    tapper.join(10)
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["status"] == "approved" and printed["torn"]
    assert first == [printed] and out[0].approved
    assert home.cards.load("c0001").balance_fen == 100_000 - 2000


def test_pos_card_tap_names_a_recovered_amount(terminal: Runtime, home: Home,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A torn payment the clerk gave up on is recovered by the wallet's next tap: `pos card tap` says how much."""
    from ecny_nfc.mock import Faults
    from pos.payment import control as stages
    from pos.payment.control import ChargeControl
    from wallet.protocol import INS_PAY

    control = ChargeControl()
    t = threading.Thread(target=lambda: terminal.charge(2000, 30.0, control))
    t.start()
    while not terminal.broker.armed:  # type: ignore[union-attr]
        threading.Event().wait(0.01)
    tapper = threading.Thread(target=lambda: terminal.broker.tap(  # type: ignore[union-attr]
        "c0001", Faults(tear_at=INS_PAY), timeout=30))
    tapper.start()
    for _ in range(2000):  # the terminal notes the tear just after the card left
        if control.stage == stages.RETAP:
            break
        threading.Event().wait(0.005)
    assert control.stage == stages.RETAP
    control.request_cancel()  # the clerk gives up waiting
    t.join(10)
    tapper.join(10)
    t, out = charging(terminal, 300)
    code = main(["--home", str(home.root), "card", "tap", "c0001", "--terminal", TID])
    t.join(5)
    printed = capsys.readouterr().out
    assert code == 0 and out[0].approved
    assert "APPROVED ¥3.00" in printed and "(recovered ¥20.00 from an earlier torn tap)" in printed
    assert home.cards.load("c0001").balance_fen == 100_000 - 2300
