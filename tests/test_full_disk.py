"""A full disk under the terminal never loses or doubles money and never escapes untyped.

A small tmpfs holds the home; a filler file leaves a chosen number of KiB free, stepping through every write of a
tap (the intent, the card's new state, the pay-sent mark, the payment) and of a sync (the settlements). Whatever
fails fails typed (a :class:`~wallet.errors.StorageError` or a decline), and once space is freed the next tap or sync
leaves the card's debits equal to the ledger's payments, each voucher settled once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pos.cards.manage import issue_cards, tap_mock_card
from pos.home import Home
from pos.ledger import LedgerStorageError
from wallet.errors import EcnyError, StorageError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")

OPENING = 100_000


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def fill(mnt: Path, free_kib: int) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free_kib * 1024))
    return filler


def ledger_payments(home: Home, terminal_id: str) -> int:
    with home.ledger(terminal_id, readonly=True) as led:
        return sum(e.amount_fen for e in led.entries(kind="payment"))


@pytest.mark.parametrize("free_kib", range(0, 72, 8))
def test_a_tap_on_a_full_disk_fails_typed_and_the_next_tap_keeps_the_books(tmp_path: Path, free_kib: int) -> None:
    with small_disk(tmp_path) as mnt:
        home = Home(mnt / "home")
        issue_cards(home, 4, OPENING, 1, register=False)
        assert tap_mock_card(home, "CMGQ0001", "c0001", 100).approved
        filler = fill(mnt, free_kib)
        try:
            outcome = tap_mock_card(home, "CMGQ0001", "c0001", 200)
            assert outcome.approved or outcome.reason is not None
        except EcnyError as exc:  # typed, saying what to do; never a bare OSError or sqlite3 error
            assert isinstance(exc, StorageError) and "free some space" in str(exc)
        filler.unlink()
        assert tap_mock_card(home, "CMGQ0001", "c0001", 300).approved
        debited = OPENING - home.cards.load("c0001").balance_fen
        assert debited == ledger_payments(home, "CMGQ0001")  # nothing the card paid is missing from the ledger


def test_a_ledger_write_the_disk_refuses_is_typed_and_writes_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path) as mnt:
        home = Home(mnt / "home")
        issue_cards(home, 4, OPENING, 1, register=False)
        assert tap_mock_card(home, "CMGQ0001", "c0001", 100).approved
        with home.ledger("CMGQ0001") as led:
            before = led.count()
            filler = fill(mnt, 0)
            with pytest.raises(LedgerStorageError, match="free some space"):
                led.append("void", data={"pad": "x" * 200_000})
            filler.unlink()
            assert led.count() == before
            led.verify(full=True)


@pytest.mark.parametrize("free_kib", [0, 8, 16, 32])
def test_a_sync_on_a_full_disk_fails_typed_and_the_next_settles_each_voucher_once(tmp_path: Path,
                                                                                    free_kib: int) -> None:
    from tests.support.shop import shop_session

    with small_disk(tmp_path) as mnt, shop_session(Home(mnt / "home"), f"sqlite:///{tmp_path}/op.db") as shop:
        shop.provision("CMGQ0001")
        (card,) = shop.cards(1)
        vouchers = {shop.pay("CMGQ0001", card, 100 + i).voucher_id for i in range(5)}
        filler = fill(mnt, free_kib)
        try:  # the operator settles first; then the terminal's write of the settlements fails
            shop.sync("CMGQ0001")
            failed = False
        except StorageError:
            failed = True
        assert failed or free_kib > 0  # with no space left at all the round cannot have been recorded
        filler.unlink()
        assert shop.sync("CMGQ0001").pending == 0
        with shop.home.ledger("CMGQ0001", readonly=True) as led:
            recorded = [e.voucher_id for e in led.entries(kind="settlement")]
        assert sorted(recorded) == sorted(vouchers)  # each voucher's settlement recorded once
        with shop.admin() as admin:
            assert admin.wallet(shop.home.cards.load(card).wallet_id).spent_fen == sum(range(100, 105))


def test_a_payment_the_full_disk_refused_after_pay_is_written_once_space_is_freed(tmp_path: Path) -> None:
    """The disk fills right after the card answers PAY: the charge says pending_recovery and keeps the voucher;
    space freed, a sync round writes it (one voucher in the outbox), the card's next tap adds nothing, and the
    operator settles it once (the in-memory queue: pos/payment/unwritten.py)."""
    from ecny_nfc.mock import MockReader
    from pos.payment.checkout import take_payment
    from pos.payment.unwritten import KEPT
    from pos.sync.loop import SyncLoop
    from tests.support.shop import shop_session

    with small_disk(tmp_path) as mnt, shop_session(Home(mnt / "home"), f"sqlite:///{tmp_path}/op.db") as shop:
        home = shop.home
        shop.provision("CMGQ0001")
        (card,) = shop.cards(1)
        shop.pay("CMGQ0001", card, 100)
        shop.sync("CMGQ0001")
        fillers: list[Path] = []
        with home.cards.open(card) as applet:
            reader = MockReader()
            reader.present(applet)
            out = take_payment(home, "CMGQ0001", reader, 700, timeout=1,
                               after_pay=lambda: fillers.append(fill(mnt, 0)))
        assert out.pending_recovery and out.kept_voucher_id and not out.approved
        vid = out.kept_voucher_id
        fillers[0].unlink()
        outbox: list[list[str | None]] = []

        def round_() -> object:
            with home.ledger("CMGQ0001") as led:
                outbox.append([e.voucher_id for e in led.outbox()])
            return shop.sync("CMGQ0001")

        try:
            assert SyncLoop(home, "CMGQ0001", shop.url, sync=round_).run_round()
        finally:
            KEPT.clear()
        assert outbox == [[vid]]
        again = shop.pay("CMGQ0001", card, 50)
        assert again.recovered == [] and shop.sync("CMGQ0001").settled == 1
        with home.ledger("CMGQ0001", readonly=True) as led:
            paid = [e.voucher_id for e in led.entries(kind="payment")]
            settled = [e.voucher_id for e in led.entries(kind="settlement")]
            assert paid.count(vid) == 1 and settled.count(vid) == 1 and led.outbox() == []
        assert OPENING - home.cards.load(card).balance_fen == ledger_payments(home, "CMGQ0001") == 850
        with shop.admin() as admin:
            assert admin.wallet(home.cards.load(card).wallet_id).spent_fen == 850
