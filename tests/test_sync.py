"""Store-and-forward over real HTTP: the clone double spend caught and shut out everywhere, reconciliation,
progress, the background loop."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from pos.cli.main import main
from pos.home import Home
from pos.sync.loop import SyncLoop
from pos.sync.reports import reconcile
from pos.sync.upload import SyncProgress, sync_once
from tests.support.shop import Shop, shop_session

T1, T2, T3 = "CMGQ0001", "CMGQ0002", "ZZYS0001"


@pytest.fixture
def shop(home: Home) -> Iterator[Shop]:
    with shop_session(home) as s:
        s.provision(T1, T2, T3)
        yield s


def test_clone_double_spend_caught_and_denylisted_everywhere(shop: Shop, capsys) -> None:
    (card,) = shop.cards(1)
    clone = shop.home.cards.clone(card).card_id
    a = shop.pay(T1, card, 5000)  # both approved offline: same wallet, same counter, different payments
    b = shop.pay(T2, clone, 7000)
    assert a.voucher_id == b.voucher_id
    r1, r2 = shop.sync(T1), shop.sync(T2)
    assert (r1.settled, r1.rejected) == (1, [])
    assert (r2.settled, r2.rejected) == (0, [{"voucher_id": b.voucher_id, "reason": "double_spend"}])
    assert r2.denylist_version == 1
    with shop.admin() as adm:
        assert adm.account("320508000000101")["settled_fen"] == 5000
        assert adm.wallet(a.wallet_id)["status"] == "revoked"
    # a third terminal, of another merchant, still accepts the original card until it syncs...
    assert shop.pay(T3, card, 100).approved
    code = main(["--home", str(shop.home.root), "sync", "--terminal", T3, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["denylist_version"] == 1 and out["settled"] == 1
    assert set(out) >= {"uploaded", "settled", "duplicate", "rejected", "denylist_version", "pending"}
    # ...and then declines it offline
    declined = shop.pay(T3, card, 100, approved=False)
    assert declined.reason is not None and declined.reason.value == "denylisted"
    # T1 synced before the double spend was found: its denylist is behind until its next sync
    shop.sync(T1)
    assert shop.pay(T1, card, 100, approved=False).reason.value == "denylisted"


def test_reconciliation_matches_then_flags_a_pending_voucher(shop: Shop, capsys) -> None:
    (card,) = shop.cards(1)
    for amount in (1000, 2050):
        shop.pay(T1, card, amount)
    shop.sync(T1)
    rep = reconcile(shop.home, T1)
    assert rep["matches"] and rep["differences"] == []
    assert rep["terminal"]["settled"] == {"count": 2, "total_fen": 3050}
    assert rep["operator"]["settled"]["total_fen"] == 3050
    late = shop.pay(T1, card, 99)  # taken offline, not synced yet
    code = main(["--home", str(shop.home.root), "report", "--terminal", T1, "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert code == 1 and rep["matches"] is False
    assert rep["differences"] == [{"voucher_id": late.voucher_id, "field": "status", "terminal": "pending",
                                   "operator": "missing", "note": "not uploaded yet: run pos sync"}]
    assert rep["terminal"]["pending"] == {"count": 1, "total_fen": 99}


def test_reconciliation_flags_a_settlement_the_ledger_never_recorded(shop: Shop) -> None:
    (card,) = shop.cards(1)
    out = shop.pay(T1, card, 500)
    with shop.home.ledger(T1) as led, shop.client(T1) as c:  # uploaded, but the answer never reached the ledger
        e = led.payment(out.voucher_id)
        certs = {fp: led.certificate(fp).hex() for fp in (e.data["cert"], e.data["issuer"])}
        c.settle([{"voucher": e.data["voucher"], "cert": e.data["cert"], "issuer": e.data["issuer"]}], certs)
    rep = reconcile(shop.home, T1)
    assert not rep["matches"]
    assert rep["differences"][0]["terminal"] == "pending" and rep["differences"][0]["operator"] == "settled"
    assert shop.sync(T1).duplicate == 1  # the next sync records it; then the two agree
    assert reconcile(shop.home, T1)["matches"]


def test_progress_reports_count_and_amount_left(shop: Shop) -> None:
    cards = shop.cards(2)
    amounts = [100, 200, 300, 400, 500]
    for i, amount in enumerate(amounts):
        shop.pay(T1, cards[i % 2], amount)
    seen: list[SyncProgress] = []
    result = sync_once(shop.home, T1, shop.url, seen.append, batch_size=2)
    assert result.settled == 5 and result.pending == 0
    assert [(p.done, p.left_count, p.left_fen) for p in seen] == [(0, 5, 1500), (2, 3, 1200), (4, 1, 500),
                                                                   (5, 0, 0)]


def test_sync_reads_the_outbox_page_by_page_up_to_where_it_started(shop: Shop, monkeypatch) -> None:
    """A sync never holds the whole outbox: it reads it a few batches at a time, up to the last entry on file when
    it started; a payment taken during the sync waits for the next one. Each voucher is settled exactly once."""
    from pos.ledger import Ledger
    from pos.sync import upload

    cards = shop.cards(2)
    for i, amount in enumerate([100, 200, 300, 400, 500]):
        shop.pay(T1, cards[i % 2], amount)
    monkeypatch.setattr(upload, "PAGE_BATCHES", 1)
    pages: list[int] = []
    real_page = Ledger.outbox_page

    def page(self, after_seq: int, through_seq: int, limit: int):  # type: ignore[no-untyped-def]
        got = real_page(self, after_seq, through_seq, limit)
        pages.append(len(got))
        return got

    def whole(self, limit=None):  # type: ignore[no-untyped-def]
        raise AssertionError("the sync read the whole outbox")

    monkeypatch.setattr(Ledger, "outbox_page", page)
    monkeypatch.setattr(Ledger, "outbox", whole)
    paid_during: list[str] = []

    def progress(p: SyncProgress) -> None:
        if p.done and not paid_during:  # the clerk takes a payment while the sync runs
            paid_during.append(shop.pay(T1, cards[0], 700).voucher_id or "")

    first = sync_once(shop.home, T1, shop.url, progress, batch_size=2)
    assert pages == [2, 2, 1, 0]  # pages of one batch of two, never more
    assert (first.settled, first.pending, first.pending_fen) == (5, 1, 700)
    second = sync_once(shop.home, T1, shop.url, batch_size=2)
    assert (second.settled, second.duplicate, second.pending) == (1, 0, 0)
    with shop.admin() as adm:
        assert adm.account("320508000000101")["settled_fen"] == 2200


def test_background_loop_syncs_and_can_be_triggered(shop: Shop) -> None:
    (card,) = shop.cards(1)
    done = threading.Event()
    results = []

    def on_result(r) -> None:
        results.append(r)
        if r.settled:
            done.set()

    loop = SyncLoop(shop.home, T1, shop.url, interval=60, on_result=on_result).start()
    try:
        shop.pay(T1, card, 321)
        loop.trigger()
        assert done.wait(10)
    finally:
        loop.stop()
    assert sum(r.settled for r in results) == 1
    with shop.home.ledger(T1) as led:
        assert led.sync_status().pending_count == 0
        assert len(list(led.entries(kind="settlement"))) == 1


def test_two_syncs_racing_on_one_terminal_record_each_settlement_once(shop: Shop) -> None:
    """A second sync of the same terminal runs to its end while the first one's batch is with the operator: both
    uploaded the same outbox, and the first one's answers (``duplicate``) find the settlements recorded already."""
    (card,) = shop.cards(1)
    vouchers = [shop.pay(T1, card, amount).voucher_id for amount in (100, 250)]

    class RacedClient:
        """The operator client of the first sync: the second sync runs inside its first batch upload."""

        def __init__(self, inner) -> None:
            self.inner = inner
            self.raced = False

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

        def settle_batch(self, body: bytes, **kwargs):
            if not self.raced:
                self.raced = True
                other = sync_once(shop.home, T1, client=self.inner)
                assert (other.uploaded, other.settled) == (2, 2)
            return self.inner.settle_batch(body, **kwargs)

    with shop.client(T1) as c:
        raced = RacedClient(c)
        first = sync_once(shop.home, T1, client=raced)
    assert raced.raced and (first.uploaded, first.settled, first.duplicate) == (2, 0, 2)
    with shop.home.ledger(T1) as led:
        settlements = [e.voucher_id for e in led.entries(kind="settlement")]
        assert sorted(settlements) == sorted(vouchers)  # one each, the second sync's
        assert [e.data["status"] for e in led.entries(kind="settlement")] == ["settled", "settled"]
        assert led.outbox() == []
        led.verify()
