"""Instant-discount claims settled on PostgreSQL (the SQLite cases are tests/test_campaigns.py): a discounted payment
credited the gross, the campaign's budget charged, a second discount of the wallet that day paid and flagged, and the
merchant's statement whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from pos.campaign_file import load_campaign
from pos.cards.manage import tap_mock_card
from pos.home import Home
from tests.support.shop import shop_session
from wallet import clock
from wallet.clock import VirtualClock
from wire.campaigns import CampaignAnswer, CampaignList

CAMPAIGN = """\
id: may-5-off
name: {zh: 五月立减, en: May discount}
funded_by: operator
discount: 5.00
min_amount: 30.00
merchants: ["320508000000101"]
start: 2026-05-01
end: 2026-05-31
budget: 100.00
offline_share: 20.00
"""


@pytest.mark.parametrize("operator_db", ["postgresql"], indirect=True)  # SQLite: tests/test_campaigns.py
def test_claims_settle_on_postgresql(tmp_path: Path, operator_db: str) -> None:
    home = Home(tmp_path / "home")
    (tmp_path / "c.yaml").write_text(CAMPAIGN, encoding="utf-8")
    with clock.use(VirtualClock.at("2026-05-01T10:00")), shop_session(home, operator_db) as shop:
        shop.provision("CMGQ0001", "CMGQ0002")
        (card,) = shop.cards(1)
        req = load_campaign(tmp_path / "c.yaml", home.config, clock.now_ms())
        with shop.admin() as adm:
            made = CampaignAnswer.model_validate(adm.call("POST", "/v1/admin/campaigns", req.model_dump(),
                                                          signed=False))
            assert made.status == "running" and made.left_fen == 10_000
        for tid in ("CMGQ0001", "CMGQ0002"):
            assert shop.sync(tid).campaigns == 1
        paid = [tap_mock_card(home, tid, card, 3500) for tid in ("CMGQ0001", "CMGQ0002")]
        assert [(o.amount_fen, o.discount_fen) for o in paid] == [(3000, 500), (3000, 500)]
        claims = [shop.sync(tid).claims for tid in ("CMGQ0001", "CMGQ0002")]
        assert [(c["status"], c["flag"]) for (c,) in claims] == [("paid", None), ("paid", "repeat_wallet_day")]
        with shop.admin() as adm:
            assert adm.account("320508000000101")["settled_fen"] == 2 * 3500
            (c,) = CampaignList.model_validate(adm.call("GET", "/v1/admin/campaigns", signed=False)).campaigns
            statement = adm.call("GET", "/v1/admin/merchants/320508000000101/statements/2026-05-01", signed=False)
        assert (c.spent_fen, c.paid, c.flagged, c.reserved_fen) == (1000, 2, 1, 4000)
        assert c.left_fen == 10_000 - 1000 - 4000
        totals = statement["totals"]  # the corporate wallet's day: the gross, its discounts, no extra line
        assert (totals["gross_fen"], totals["discount_fen"], totals["net_fen"]) == (7000, 1000, 7000)
        assert statement["closing_fen"] == 7000 and [x["kind"] for s in statement["stores"] for x in s["lines"]] == [
            "payments", "payments"]
