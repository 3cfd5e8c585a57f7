"""Instant discounts (消费立减金) end to end through the CLI: a campaign created at the operator, received at sync,
applied before the tap (the card pays the net), recorded (ledger, receipt, day report) and settled (the merchant is
credited the gross, the budget pays the discount); an offline terminal's share running out; a wallet's second
discount of the day at another terminal; tampered, replayed and over-share claims; bad campaign files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from pos.cli.main import main
from pos.composition import start_embedded_operator
from pos.home import Home
from pos.printer import day_report_doc, receipt_doc
from pos.printer.slips import Shop as SlipShop
from pos.records import day_report, find, load_sale, parse_time
from pos.sync.client import OperatorClient
from tests.support.shop import Shop, shop_session
from wallet import clock
from wallet.clock import VirtualClock
from wallet.keys import new_key
from wire.batch import encode_batch
from wire.claims import DiscountClaim, sign_claim

T1, T2 = "CMGQ0001", "CMGQ0002"
MERCHANT = "320508000000101"
CAMPAIGN = """\
id: spring-5-off
name: {zh: 春季消费立减, en: Spring instant discount}
funded_by: operator
discount: 5.00
min_amount: 30.00
per_wallet_per_day: 1
merchants: ["320508000000101"]
start: 2026-05-01
end: 2026-05-31
budget: %(budget)s
offline_share: 10.00
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Shop]:
    with clock.use(VirtualClock.at("2026-05-01T10:00")), shop_session(Home(tmp_path / "home")) as shop:
        shop.provision(T1, T2)
        yield shop


def pos(shop: Shop, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["--home", str(shop.home.root), *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def create(shop: Shop, capsys: pytest.CaptureFixture[str], tmp_path: Path, budget: str = "10000.00") -> None:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN % {"budget": budget}, encoding="utf-8")
    code, data = pos(shop, capsys, "campaign", "create", "--file", str(path))
    assert code == 0 and data["campaign_id"] == "spring-5-off" and data["created_by"] == "operator", data


def campaign(shop: Shop, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, data = pos(shop, capsys, "campaign", "list")
    assert code == 0
    (c,) = data["campaigns"]
    return c


def pay(shop: Shop, capsys: pytest.CaptureFixture[str], tid: str, card: str, yuan: str) -> dict[str, Any]:
    code, data = pos(shop, capsys, "pay", "--terminal", tid, "--card", card, "--amount", yuan)
    assert code == 0 and data["status"] == "approved", data
    return data


def settled_fen(shop: Shop) -> int:
    with shop.admin() as adm:
        return int(adm.account(MERCHANT)["settled_fen"])


def voucher_discounts(shop: Shop) -> dict[str, int]:
    engine = create_engine(f"sqlite:///{shop.home.root / 'operator' / 'operator.db'}")
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT voucher_id, discount FROM vouchers")).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_a_discount_is_shown_charged_net_recorded_and_settled_for_the_gross(world: Shop, capsys, tmp_path) -> None:
    shop = world
    (card,) = shop.cards(1)
    create(shop, capsys, tmp_path)
    assert pay(shop, capsys, T1, card, "35").get("discount_fen") is None  # no sync yet: no campaign here
    code, synced = pos(shop, capsys, "sync", "--terminal", T1)
    assert code == 0 and synced["campaigns"] == 1
    paid = pay(shop, capsys, T1, card, "35")
    assert (paid["amount_fen"], paid["gross_fen"], paid["discount_fen"]) == (3000, 3500, 500)
    assert paid["campaign_id"] == "spring-5-off" and "¥5.00" in paid["discount"]
    small = pay(shop, capsys, T1, card, "20")  # under the minimum: full price
    assert small["amount_fen"] == 2000 and "discount_fen" not in small
    assert shop.home.cards.load(card).balance_fen == 100_000 - 3500 - 3000 - 2000  # the card paid the net
    with shop.home.ledger(T1) as led:
        entry = led.payment(paid["voucher_id"])
        assert entry is not None and entry.amount_fen == 3000
        assert entry.data["discount"] == {"campaign_id": "spring-5-off", "gross_fen": 3500, "discount_fen": 500}
        led.verify(full=True)
        tx = find(led, paid["voucher_id"])
        report = day_report(led, parse_time(entry.time).date(), shop.home.terminal_dir(T1))
    assert tx is not None and tx.discount_fen == 500
    merchant, terminal = shop.home.terminal(T1)
    slip = SlipShop(merchant, terminal, shop.home.config.operator)
    receipt = receipt_doc(tx, load_sale(shop.home.terminal_dir(T1), tx.voucher_id), slip, "en").text()
    assert "Gross" in receipt and "¥35.00" in receipt and "-¥5.00" in receipt and "¥30.00" in receipt
    assert report["discounts"] == {"count": 1, "total_fen": 500, "refused": 0, "refused_fen": 0}
    eod = day_report_doc(report, slip, "en", tx.time).text()
    assert "Instant discounts" in eod
    assert "-¥0.00" not in eod and any(line.startswith("Refunds") and "¥0.00" in line for line in eod.splitlines())
    assert "消费立减" in day_report_doc(report, slip, "zh-CN", tx.time).text()

    code, synced = pos(shop, capsys, "sync", "--terminal", T1)
    assert code == 0 and [(c["voucher_id"], c["status"], c["flag"]) for c in synced["claims"]] == [
        (paid["voucher_id"], "paid", None)]
    assert settled_fen(shop) == 3500 + 3500 + 2000  # the gross: 3000 from the card, 500 from the campaign
    assert voucher_discounts(shop)[paid["voucher_id"]] == 500
    c = campaign(shop, capsys)
    assert (c["spent_fen"], c["paid"], c["flagged"], c["refused"]) == (500, 1, 0, 0)
    assert c["reserved_fen"] == 1000 and c["left_fen"] == 1_000_000 - 500 - 1000  # T1's fresh share
    code, rep = pos(shop, capsys, "report", "--terminal", T1, "--date", "2026-05-01")
    assert code == 0 and rep["matches"]
    assert rep["terminal"]["discounts"]["paid"] == 1 and rep["operator"]["discounts"]["paid_fen"] == 500


def test_an_offline_terminal_stops_discounting_when_its_share_is_gone_until_its_next_sync(
        world: Shop, capsys, tmp_path, monkeypatch) -> None:
    shop = world
    cards = shop.cards(4)
    create(shop, capsys, tmp_path)
    assert pos(shop, capsys, "sync", "--terminal", T1)[0] == 0  # a share of ¥10: two discounts
    shop.operator.stop()  # offline from here on: the share is all the terminal may give
    amounts = [pay(shop, capsys, T1, card, "35")["amount_fen"] for card in cards[:3]]
    assert amounts == [3000, 3000, 3500]  # the third at full price
    assert shop.home.cards.load(cards[2]).balance_fen == 100_000 - 3500
    back = start_embedded_operator(shop.home)  # the operator is back (same books)
    monkeypatch.setenv("POS_OPERATOR_URL", back.url)
    try:
        code, synced = pos(shop, capsys, "sync", "--terminal", T1)
        assert code == 0 and [c["status"] for c in synced["claims"]] == ["paid", "paid"]
        assert pay(shop, capsys, T1, cards[3], "35")["amount_fen"] == 3000  # a fresh share
        with OperatorClient.for_admin(shop.home, back.url) as adm:
            assert adm.account(MERCHANT)["settled_fen"] == 3 * 3500
        assert campaign(shop, capsys)["spent_fen"] == 1000
    finally:
        back.stop()


def test_a_wallets_second_discount_of_the_day_elsewhere_is_paid_and_flagged(world: Shop, capsys, tmp_path) -> None:
    shop = world
    card, other = shop.cards(2)
    create(shop, capsys, tmp_path)
    for tid in (T1, T2):
        pos(shop, capsys, "sync", "--terminal", tid)
    at_t1 = pay(shop, capsys, T1, card, "40")
    at_t2 = pay(shop, capsys, T2, card, "50")  # the same wallet, the same day, another terminal (offline)
    someone_else = pay(shop, capsys, T2, other, "30")
    assert at_t1["discount_fen"] == at_t2["discount_fen"] == someone_else["discount_fen"] == 500
    assert pos(shop, capsys, "sync", "--terminal", T1)[1]["claims"][0]["flag"] is None
    _, synced = pos(shop, capsys, "sync", "--terminal", T2)
    flags = {c["voucher_id"]: (c["status"], c["flag"]) for c in synced["claims"]}
    assert flags == {at_t2["voucher_id"]: ("paid", "repeat_wallet_day"), someone_else["voucher_id"]: ("paid", None)}
    assert settled_fen(shop) == 4000 + 5000 + 3000  # the merchant gets the gross of all three
    c = campaign(shop, capsys)
    assert (c["paid"], c["flagged"], c["spent_fen"]) == (3, 1, 1500)
    _, rep = pos(shop, capsys, "report", "--terminal", T2, "--date", "2026-05-01")
    assert rep["operator"]["discounts"]["flagged"] == 1 and rep["terminal"]["discounts"]["flagged"] == 1


def _upload(shop: Shop, tid: str, voucher_id: str, claim: DiscountClaim) -> dict[str, Any]:
    """Upload one recorded payment with the given claim, signed as the terminal (a terminal gone wrong)."""
    with shop.home.ledger(tid) as led:
        e = led.payment(voucher_id)
        assert e is not None
        ders = [led.certificate(e.data["cert"]), led.certificate(e.data["issuer"])]
    body = encode_batch(ders, [(bytes.fromhex(e.data["voucher"]), 0, 1)], [(0, claim)])  # type: ignore[list-item]
    with shop.client(tid) as cli:
        (answer,) = cli.settle_batch(body)["results"]
    return answer


def _vhash(shop: Shop, tid: str, voucher_id: str) -> str:
    import hashlib

    with shop.home.ledger(tid) as led:
        e = led.payment(voucher_id)
        assert e is not None
        return hashlib.sha256(bytes.fromhex(e.data["voucher"])).hexdigest()


def test_tampered_forged_and_replayed_claims_are_refused(world: Shop, capsys, tmp_path) -> None:
    shop = world
    cards = shop.cards(2)
    create(shop, capsys, tmp_path)
    pos(shop, capsys, "sync", "--terminal", T1)
    first, second = (pay(shop, capsys, T1, card, "35")["voucher_id"] for card in cards)
    with shop.client(T1) as cli:
        key = cli.key
    assert key is not None
    genuine = sign_claim(key, T1, _vhash(shop, T1, first), "spring-5-off", 3500, 500)
    tampered = DiscountClaim("spring-5-off", 3900, 900, genuine.signature)  # a bigger discount, same signature
    answer = _upload(shop, T1, first, tampered)
    assert answer["status"] == "settled"  # the card's payment stands on its own
    assert (answer["claim"]["status"], answer["claim"]["reason"]) == ("refused", "bad_claim_signature")
    assert _upload(shop, T1, first, genuine)["claim"]["reason"] == "bad_claim_signature"  # judged once per voucher
    forged = sign_claim(new_key(), T1, _vhash(shop, T1, second), "spring-5-off", 3500, 500)  # not T1's key
    assert _upload(shop, T1, second, forged)["claim"]["reason"] == "bad_claim_signature"
    _, synced = pos(shop, capsys, "sync", "--terminal", T1)  # the terminal's own uploads: answered from file
    assert [c["reason"] for c in synced["claims"]] == ["bad_claim_signature", "bad_claim_signature"]
    assert settled_fen(shop) == 2 * 3000  # the merchant keeps only the net
    assert voucher_discounts(shop) == {first: 0, second: 0}
    c = campaign(shop, capsys)
    assert (c["spent_fen"], c["paid"], c["refused"], c["refused_fen"]) == (0, 0, 2, 1400)


def test_claims_beyond_the_share_or_not_adding_up_are_refused(world: Shop, capsys, tmp_path) -> None:
    shop = world
    card, other = shop.cards(2)
    create(shop, capsys, tmp_path, budget="10.00")
    pos(shop, capsys, "sync", "--terminal", T1)  # T1's share is the whole budget
    _, synced = pos(shop, capsys, "sync", "--terminal", T2)
    assert synced["campaigns"] == 1
    with shop.home.ledger(T2) as led:
        from pos.payment.discounts import shares_left

        assert shares_left(led) == {"spring-5-off": 0}
    paid = pay(shop, capsys, T2, card, "35")
    assert "discount_fen" not in paid  # T2 keeps to its empty share
    with shop.client(T2) as cli:
        key = cli.key
    assert key is not None
    vid = paid["voucher_id"]
    claim = sign_claim(key, T2, _vhash(shop, T2, vid), "spring-5-off", 4000, 500)  # T2 gives one anyway
    answer = _upload(shop, T2, vid, claim)
    assert (answer["claim"]["status"], answer["claim"]["reason"]) == ("refused", "over_budget")
    vid2 = pay(shop, capsys, T2, other, "35")["voucher_id"]
    wrong = sign_claim(key, T2, _vhash(shop, T2, vid2), "spring-5-off", 3500, 500)  # 3500 + 500 is not 3500
    assert _upload(shop, T2, vid2, wrong)["claim"]["reason"] == "bad_claim"
    assert settled_fen(shop) == 2 * 3500 and campaign(shop, capsys)["spent_fen"] == 0


GOOD = CAMPAIGN % {"budget": "10000.00"}
BAD_FILES = {
    "unknown key": (GOOD + "colour: red\n", "colour"),
    "missing key": (GOOD.replace("budget: 10000.00\n", ""), "budget"),
    "discount not below the minimum": (GOOD.replace("min_amount: 30.00", "min_amount: 5.00"), "min_amount"),
    "end before start": (GOOD.replace("end: 2026-05-31", "end: 2026-04-30"), "end"),
    "no such day": (GOOD.replace("end: 2026-05-31", "end: 2026-02-30"), "end"),
    "already over": (GOOD.replace("start: 2026-05-01", "start: 2026-04-01").replace("2026-05-31", "2026-04-30"),
                     "past"),
    "unknown merchant": (GOOD.replace('["320508000000101"]', '["320508000000999"]'), "320508000000999"),
    "share over the budget": (GOOD.replace("budget: 10000.00", "budget: 8.00"), "offline_share"),
    "three decimals": (GOOD.replace("discount: 5.00", "discount: 5.001"), "discount"),
    "negative": (GOOD.replace("discount: 5.00", "discount: -5"), "discount"),
    "bad id": (GOOD.replace("id: spring-5-off", "id: Spring 5 off"), "id"),
    "duplicate key": (GOOD + "discount: 6.00\n", "duplicate"),
    "per wallet not a number": (GOOD.replace("per_wallet_per_day: 1", "per_wallet_per_day: '1'"),
                                "per_wallet_per_day"),
    "not a mapping": ("- spring\n", "mapping"),
    "not YAML": ("id: [\n", "YAML"),
}


def test_bad_campaign_files_are_refused_and_nothing_is_written(world: Shop, capsys, tmp_path) -> None:
    shop = world
    for name, (content, says) in BAD_FILES.items():
        path = tmp_path / "bad.yaml"
        path.write_text(content, encoding="utf-8")
        code, data = pos(shop, capsys, "campaign", "create", "--file", str(path))
        assert code == 2 and data["code"] == "invalid_input" and says in data["error"], (name, data)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"id": "x", "id": "y"}', encoding="utf-8")
    assert pos(shop, capsys, "campaign", "create", "--file", str(bad_json))[0] == 2
    assert pos(shop, capsys, "campaign", "create", "--file", str(tmp_path / "missing.yaml"))[0] == 2
    assert pos(shop, capsys, "campaign", "list")[1] == {"campaigns": []}
    good = tmp_path / "good.json"  # the same campaign in JSON; again: the same terms answer it as on file
    good.write_text(json.dumps({"id": "spring-5-off", "name": {"zh": "春季消费立减", "en": "Spring instant discount"},
                                "funded_by": MERCHANT, "discount": 5, "min_amount": "30", "merchants": [MERCHANT],
                                "start": "2026-05-01", "end": "2026-05-31", "budget": 10000.00}), encoding="utf-8")
    for _ in range(2):
        code, data = pos(shop, capsys, "campaign", "create", "--file", str(good))
        assert code == 0 and data["offline_share_fen"] == 5000 and data["funded_by"] == MERCHANT  # 10 discounts
    other = tmp_path / "other.yaml"
    other.write_text(GOOD, encoding="utf-8")  # another campaign under the same id
    code, data = pos(shop, capsys, "campaign", "create", "--file", str(other))
    assert code == 1 and data["reason"] == "campaign_exists"


def test_a_torn_discounted_payment_is_recovered_with_its_discount(world: Shop, capsys, tmp_path) -> None:
    shop = world
    (card,) = shop.cards(1)
    create(shop, capsys, tmp_path)
    pos(shop, capsys, "sync", "--terminal", T1)
    code, torn = pos(shop, capsys, "pay", "--terminal", T1, "--card", card, "--amount", "35", "--tear-after", "pay")
    assert code == 1 and torn["pending_recovery"] and torn["discount_fen"] == 500 and torn["amount_fen"] == 3000
    with shop.home.ledger(T1) as led:
        from pos.payment.discounts import shares_left

        assert shares_left(led) == {"spring-5-off": 500}  # the torn charge may have paid: its discount is held
    later = pay(shop, capsys, T1, card, "36")  # the next tap records the torn payment, then pays
    (recovered,) = later["recovered"]
    assert later["discount_fen"] == 500 and later["amount_fen"] == 3100
    with shop.home.ledger(T1) as led:
        entry = led.payment(recovered)
        assert entry is not None and entry.amount_fen == 3000 and entry.data["discount"]["discount_fen"] == 500
        assert shares_left(led) == {"spring-5-off": 0}
    assert pay(shop, capsys, T1, card, "35")["amount_fen"] == 3500  # the share of two is given
    _, synced = pos(shop, capsys, "sync", "--terminal", T1)
    assert [c["status"] for c in synced["claims"]] == ["paid", "paid"]
    assert settled_fen(shop) == 3500 + 3600 + 3500


def test_the_batch_carries_claims_only_in_version_2_and_refuses_malformed_ones() -> None:
    from wire.batch import decode_batch
    from wire.errors import BadRequest

    claim = DiscountClaim("spring-5-off", 3500, 500, bytes(64))
    v1 = encode_batch([b"c"], [(b"v1", 0, 0), (b"v2", 0, 0)])
    v2 = encode_batch([b"c"], [(b"v1", 0, 0), (b"v2", 0, 0)], [(1, claim)])
    assert v1[:4] == b"ECB1" and v2[:4] == b"ECB2"
    assert [i.claim for i in decode_batch(v1)] == [None, None]
    assert [i.claim for i in decode_batch(v2)] == [None, claim]
    bad = {
        "cut off": v2[:-1],
        "trailing": v2 + b"\x00",
        "index out of range": v2[:len(v1) + 2] + b"\x00\x05" + v2[len(v1) + 4:],
        "claims for a version 1 body": b"ECB1" + v2[4:],
        "bad campaign": encode_batch([b"c"], [(b"v1", 0, 0)], [(0, claim)]).replace(b"spring-5-off", b"Spring-5-off"),
    }
    for name, body in bad.items():
        with pytest.raises(BadRequest):
            decode_batch(body)
        assert name
    with pytest.raises(ValueError):
        encode_batch([b"c"], [(b"v1", 0, 0)], [(1, claim)])  # no voucher 1
    with pytest.raises(BadRequest):
        encode_batch([b"c"], [(b"v1", 0, 0), (b"v2", 0, 0)], [(0, DiscountClaim("x", 500, 500, bytes(64)))])
