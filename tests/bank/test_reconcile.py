"""The operator's reconciliation (bank.reconcile): gaps in a wallet's settled counters, balance-after figures that do
not chain (loads taken into account), the terminals' reported charges matched with them; and the revocation rule:
a voucher taken after the terminal had the denylist version that revoked its wallet is rejected ``wallet_revoked``."""

from __future__ import annotations

import secrets

import pytest

from bank.reconcile import Paid, check_wallet
from pos.cards.manage import apply_load
from pos.ledger import Entry
from pos.sync.client import OperatorBadInput, OperatorRefused
from pos.sync.upload import known_versions
from tests.bank.test_hardening import _signed, _typed
from tests.support.shop import Shop

T1, T2, T3 = "CMGQ0001", "CMGQ0002", "ZZYS0001"


def _p(counter: int, amount: int, after: int, tid: str = T1) -> Paid:
    return Paid(counter, amount, after, tid)


def test_the_chain_rules_on_their_own() -> None:
    w = "0" * 16
    # opening 100, paid 10 (90), a load of 50 taken before paying 20 (120): chains
    assert check_wallet(w, [_p(1, 10, 90), _p(2, 20, 120)], 100, [50]) == ([], [])
    # the same rise with no load on file: a break at 2, against 90 - 20
    gaps, breaks = check_wallet(w, [_p(1, 10, 90), _p(2, 20, 120)], 100, [])
    assert gaps == [] and [(b.counter, b.previous, b.expected_fen, b.balance_after_fen) for b in breaks] == [
        (2, 1, 70, 120)]
    # a token never taken is skipped, two taken together explain one rise, and each token counts once
    rises = [_p(1, 10, 90), _p(2, 10, 110), _p(3, 10, 130)]  # two rises of 30
    assert check_wallet(w, rises[:2], 100, [7, 15, 15]) == ([], [])
    assert [b.counter for b in check_wallet(w, rises, 100, [7, 15, 15])[1]] == [3]
    assert [b.counter for b in check_wallet(w, rises, 100, [30])[1]] == [3]
    assert check_wallet(w, rises, 100, [30, 7, 30]) == ([], [])
    # a drop with no payment for it is a break too (the card lost money, or is a clone)
    assert [b.counter for b in check_wallet(w, [_p(1, 10, 90), _p(2, 10, 70)], 100, [])[1]] == [2]
    # the first payment chains from the opening balance
    assert [b.previous for b in check_wallet(w, [_p(1, 10, 95)], 100, [])[1]] == [0]
    # gaps: what the missing counters took (net of loads); unknown without the balance before them
    gaps, _ = check_wallet(w, [_p(1, 10, 90), _p(4, 5, 60, T2)], 100, [])
    assert [(g.first, g.last, g.gap_fen, g.next_terminal) for g in gaps] == [(2, 3, 25, T2)]
    gaps, breaks = check_wallet(w, [_p(3, 5, 60)], None, [])
    assert [(g.first, g.last, g.gap_fen) for g in gaps] == [(1, 2, None)] and breaks == []


def test_a_payment_is_declared_under_the_denylist_version_its_charge_started_with() -> None:
    def e(seq: int, intent: int) -> Entry:
        return Entry(seq, "", "payment", f"v{seq}", "w", seq, 1, {"intent": intent}, "", "")

    class Led:
        def denylist_history(self) -> list[tuple[int, int]]:
            return [(5, 1), (9, 2)]

    outbox = [e(3, 2), e(7, 6), e(8, 4), e(11, 10), e(12, 10), e(13, 12)]  # seq 8: intent before the denylist
    chunks, versions = known_versions(Led(), outbox, batch_size=2)  # type: ignore[arg-type]
    assert [[x.seq for x in c] for c in chunks] == [[3], [7], [8], [11, 12], [13]]
    assert [versions[c[0].seq] for c in chunks] == [0, 1, 0, 2, 2]


def test_loads_between_payments_chain_and_a_clone_breaks_the_chain(shop: Shop) -> None:
    (card,) = shop.cards(1, balance_fen=10_000)
    shop.pay(T1, card, 1_000)
    apply_load(shop.home, card, amount_fen=5_000)
    shop.pay(T2, card, 2_000)
    wallet = shop.home.cards.load(card).wallet_id
    clone = shop.home.cards.clone(card).card_id  # with the key and the state: balance 12,000 after counter 2
    shop.pay(T1, card, 500)  # counter 3: 11,500
    shop.pay(T3, clone, 3_000)  # counter 3 again, at a terminal that never syncs here
    shop.pay(T2, clone, 1_000)  # counter 4: 8,000, which does not follow from 11,500 - 1,000
    for tid in (T1, T2):
        shop.sync(tid)
    with shop.admin() as adm:
        from pos.sync.unresolved import operator_reconciliation

        rec = operator_reconciliation(adm)
        assert rec["vouchers"] == 4 and rec["gaps_total"] == 0 and rec["items"] == []
        assert [(b["wallet_id"], b["counter"], b["previous"], b["expected_fen"], b["balance_after_fen"],
                 b["terminal_id"]) for b in rec["breaks"]] == [(wallet, 4, 3, 10_500, 8_000, T2)]
        assert operator_reconciliation(adm, wallet_id="0" * 16)["vouchers"] == 0


def _item(intent: int, amount: int, wallet: str | None = None, counter: int | None = None,
          challenge: str | None = None, state: str = "unresolved") -> dict:
    return {"intent": intent, "state": state, "wallet_id": wallet, "counter": counter, "amount_fen": amount,
            "challenge": challenge or secrets.token_hex(16), "problem": "", "time": ""}


def test_each_reported_item_gets_what_the_books_say(shop: Shop) -> None:
    a, b = shop.cards(2, balance_fen=10_000)
    paid = shop.pay(T1, a, 700)  # counter 1 of a, here
    shop.pay(T2, a, 300)  # counter 2 of a, elsewhere
    shop.pay(T3, b, 100)  # counter 1 of b, at a terminal that does not sync: a gap at the operator
    shop.pay(T2, b, 200)
    wa, wb = (shop.home.cards.load(c).wallet_id for c in (a, b))
    for tid in (T1, T2):
        shop.sync(tid)
    with shop.home.ledger(T1) as led:
        mine = led.payment(paid.voucher_id)
        challenge = led.entry(mine.data["intent"]).data["challenge"]
    with shop.client(T1) as c:
        ans = c.call("POST", "/v1/reconciliation", {"items": [
            _item(1, 700, wa, 1, challenge), _item(2, 300, wa, 2), _item(3, 999, wa, 9), _item(4, 40),
            _item(5, 200, wb, 1, state="open")]})
    got = {i["intent"]: (i["status"], i["chain"], i["paid_to"]) for i in ans["items"]}
    assert got == {1: ("settled", None, T1), 2: ("paid_elsewhere", None, T2), 3: ("waiting", None, None),
                   4: ("no_wallet", None, None), 5: ("matched", "differs", None)}
    assert ans["items"][4]["gap_fen"] == 100 and "review" in ans["items"][4]["next"]
    assert "recovers it" in ans["items"][4]["next"]  # still open at the terminal: the card may come back
    assert ans["gaps"] == []  # the one gap in these wallets is reported
    with shop.client(T2) as c:  # a report replaces the terminal's own, and only its own
        assert c.call("POST", "/v1/reconciliation", {"items": []}) == {"terminal_id": T2, "items": [], "gaps": []}
    with shop.admin() as adm:
        from pos.sync.unresolved import operator_reconciliation

        rec = operator_reconciliation(adm)
        assert [i["intent"] for i in rec["items"]] == [1, 2, 3, 4, 5]
        assert [(g["wallet_id"], g["first"], g["reported"]) for g in rec["gaps"]] == [(wb, 1, 1)]
    with shop.client(T1) as c:
        c.call("POST", "/v1/reconciliation", {"items": [_item(1, 700, wa, 1, challenge)]})
        assert [i["intent"] for i in operator_reconciliation(shop.admin())["items"]] == [1]


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_reports_are_signed_and_checked_before_anything_is_written(shop: Shop) -> None:
    bad = b'{"items": [{"intent": 1, "state": "open", "wallet_id": "0991000000000000", "amount_fen": 5, ' \
          b'"challenge": "00000000000000000000000000000000"}]}'
    _typed(_signed(shop, T1, "POST", "/v1/reconciliation", bad), 400, "bad_request")  # a wallet without its counter
    import httpx

    _typed(httpx.post(shop.url + "/v1/reconciliation", content=b'{"items": []}'), 401)
    _typed(httpx.get(shop.url + "/v1/admin/reconciliation"), 401)
    with shop.admin() as adm:
        adm.revoke_terminal(T2)
    with shop.client(T2) as c, pytest.raises(OperatorRefused) as err:
        c.call("POST", "/v1/reconciliation", {"items": []})
    assert err.value.status == 403
    _typed(_signed(shop, T1, "POST", "/v1/settlements", b'{"vouchers": [], "certificates": {}}',
                   query="denylist_version=-1"), 400, "bad_request")
    _typed(_signed(shop, T1, "POST", "/v1/settlements", b'{"vouchers": [], "certificates": {}}',
                   query=f"denylist_version={2**63}"), 400, "bad_request")
    _typed(httpx.post(shop.url + "/v1/settlements?denylist_version=x", content=b"{}"), 401)  # unsigned: 401 first
    with shop.admin() as adm, pytest.raises(OperatorBadInput):
        adm.call("GET", "/v1/admin/reconciliation", params={"limit": 0}, signed=False)


def test_a_voucher_taken_after_the_terminal_knew_of_the_revocation_is_rejected(shop: Shop, monkeypatch) -> None:
    (card,) = shop.cards(1)
    clone = shop.home.cards.clone(card).card_id
    shop.pay(T1, card, 5_000)
    shop.pay(T2, clone, 7_000)  # the same counter: a double spend, caught at T2's sync
    shop.sync(T1)
    assert shop.sync(T2).denylist_version == 1
    wallet = shop.home.cards.load(card).wallet_id
    before = shop.pay(T3, card, 100)  # T3 has not heard yet: taken in good faith
    with shop.home.ledger(T3) as led:  # the denylist reaches T3 before its vouchers go up
        led.apply_denylist(1, [wallet])
    from pos.ledger import Ledger

    monkeypatch.setattr(Ledger, "wallet_standing", lambda self, w: (False, 0))  # a terminal that ignores it
    after = shop.pay(T3, card, 200)
    monkeypatch.undo()
    res = shop.sync(T3)
    assert res.settled == 1 and res.rejected == [{"voucher_id": after.voucher_id, "reason": "wallet_revoked"}]
    with shop.home.ledger(T3) as led:
        assert led.latest_settlement(before.voucher_id).data["status"] == "settled"
    with shop.client(T3) as c:  # the rejection is final: re-declaring an older version changes nothing
        with shop.home.ledger(T3) as led:
            e = led.payment(after.voucher_id)
            certs = {fp: led.certificate(fp).hex() for fp in (e.data["cert"], e.data["issuer"])}
        again = c.settle([{"voucher": e.data["voucher"], "cert": e.data["cert"], "issuer": e.data["issuer"]}],
                         certs)
    assert [(r["status"], r["reason"]) for r in again["results"]] == [("rejected", "wallet_revoked")]
