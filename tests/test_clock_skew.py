"""Terminals whose clock is wrong (issue 16): the terminal learns its offset from the operator at every sync, signs
with its corrected time, warns, and stops selling offline beyond the strict bound; the operator never rejects a
voucher the card paid for its timestamp (it settles it flagged ``review_timestamp``) and counts the daily limit on
the day corrected by the skew it measured.

Time is virtual (:mod:`wallet.clock`); the terminal's skew is injected per thread: the test's thread (the terminal,
its card and its sync client) reads the virtual clock plus the skew, the embedded operator's threads read it as is.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pos.home import Home
from pos.sync import clockskew
from pos.sync.reports import reconcile  # the report path the CLI uses
from tests.support.shop import Shop, shop_session
from wallet import clock
from wallet.clock import VirtualClock

T_OK, T_SKEW = "CMGQ0001", "CMGQ0002"
HOUR = 3_600_000
REPO = Path(__file__).resolve().parents[1]


class TerminalSkew:
    """A virtual clock seen ``skew`` ms ahead by the thread that made it (the terminal side), as is by others."""

    def __init__(self, base: VirtualClock) -> None:
        self.base = base
        self.skew = 0
        self.terminal = threading.current_thread()

    def now_ms(self) -> int:
        return self.base.ms + (self.skew if threading.current_thread() is self.terminal else 0)


@pytest.fixture
def wide_home(tmp_path: Path) -> Home:
    """A home whose offline caps let a tier-4 wallet spend its whole day offline (¥2,000 a payment)."""
    text = (REPO / "merchants.yaml").read_text()
    text = text.replace("offline_single_max: 500.00", "offline_single_max: 2000.00")
    text = text.replace("offline_cumulative_max: 5000.00", "offline_cumulative_max: 20000.00")
    text = text.replace("offline_count_max: 10", "offline_count_max: 50")
    cfg = tmp_path / "merchants.yaml"
    cfg.write_text(text)
    return Home(tmp_path / "home", config_path=cfg)


@pytest.fixture
def world(wide_home: Home) -> Iterator[tuple[Shop, TerminalSkew]]:
    tclock = TerminalSkew(VirtualClock.at("2026-03-01T21:30"))  # China time
    with clock.use(tclock), shop_session(wide_home) as shop:
        shop.provision(T_OK, T_SKEW)
        yield shop, tclock


def _day_report(shop: Shop, tid: str, day: str) -> dict:
    with shop.client(tid) as cli:
        return cli.report(day).to_json()


def test_plus_25h_vouchers_settle_flagged_and_nothing_stays_in_the_outbox(world) -> None:
    shop, tclock = world
    (card,) = shop.cards(1, tier=4, balance_fen=100_000)
    tclock.skew = 25 * HOUR
    paid = shop.pay(T_SKEW, card, 5000)  # no offset learnt yet: it sells as today (its today)
    result = shop.sync(T_SKEW)  # the first request is refused clock_skew; the client learns, re-signs, uploads
    assert (result.settled, result.rejected) == (1, [])
    assert result.flagged == [{"voucher_id": paid.voucher_id, "status": "settled", "flag": "review_timestamp"}]
    assert result.clock_ahead_ms is not None and abs(result.clock_ahead_ms - 25 * HOUR) < 60_000
    with shop.home.ledger(T_SKEW) as led:
        assert led.outbox() == []
        (answer,) = [e for e in led.entries(kind="settlement") if e.voucher_id == paid.voucher_id]
        assert answer.data["status"] == "settled" and answer.data["flag"] == "review_timestamp"
    assert shop.sync(T_SKEW).uploaded == 0  # settled flagged: never uploaded again
    # the operator's report counts it on the real day (the timestamp corrected by the measured skew), flagged
    rep = _day_report(shop, T_SKEW, "2026-03-01")
    assert rep["settled"]["count"] == 1
    assert [(f[0], f[1], f[2], f[3], f[4]) for f in rep["flags"]] == [
        (paid.voucher_id, paid.wallet_id, 5000, "settled", "review_timestamp")]
    assert abs(rep["flags"][0][5] - 25 * HOUR) < 60_000
    with shop.admin() as adm:
        assert adm.account("320508000000101")["settled_fen"] == 5000
    # now it knows: it stops selling offline, in both languages, before the card is asked to pay
    stopped = shop.pay(T_SKEW, card, 100, approved=False)
    assert stopped.reason is not None and stopped.reason.value == "clock_skew"
    assert stopped.reason.message("en") == "the terminal's clock is wrong: set the time, then sync"
    assert "校时" in stopped.reason.message("zh-CN")
    with shop.home.cards.open(card) as applet:
        assert applet.state.balance_fen == 100_000 - 5000  # declined before PAY: nothing charged
    # the clerk sets the time; the next sync learns the clock is right and it sells again
    tclock.skew = 0
    assert abs(shop.sync(T_SKEW).clock_ahead_ms or 0) < 60_000
    assert shop.pay(T_SKEW, card, 100).approved


def test_plus_2h_terminal_warns_learns_and_stops_offline_sales(world) -> None:
    shop, tclock = world
    (card,) = shop.cards(1, tier=4)
    tclock.skew = 2 * HOUR
    assert shop.home.clock_ahead_ms(T_SKEW) is None  # never learnt: sells as today
    paid = shop.pay(T_SKEW, card, 700)
    result = shop.sync(T_SKEW)
    assert result.settled == 1 and result.flagged[0]["voucher_id"] == paid.voucher_id
    ahead = shop.home.clock_ahead_ms(T_SKEW)
    assert ahead is not None and abs(ahead - 2 * HOUR) < 60_000
    cfg = shop.home.config.clock
    assert clockskew.level(ahead, cfg.warn_ms, cfg.stop_ms) == clockskew.STOP
    assert clockskew.describe(ahead, "en") == "clock 2 h ahead: set the time"
    assert clockskew.describe(ahead, "zh-CN") == "时钟快 2 小时：请校时"
    assert shop.pay(T_SKEW, card, 100, approved=False).reason.value == "clock_skew"
    # a correct terminal is not affected and its vouchers are not flagged
    tclock.skew = 0
    ok = shop.pay(T_OK, card, 300)
    r = shop.sync(T_OK)
    assert r.settled == 1 and r.flagged == [] and ok.approved
    assert abs(shop.home.clock_ahead_ms(T_OK) or 0) < 60_000


def test_skew_between_the_bounds_warns_but_sells(world) -> None:
    shop, tclock = world
    (card,) = shop.cards(1, tier=4)
    tclock.skew = 10 * 60_000  # 10 min: over the 5 min warning, under the 1 h stop
    shop.sync(T_SKEW)
    ahead = shop.home.clock_ahead_ms(T_SKEW)
    cfg = shop.home.config.clock
    assert clockskew.level(ahead, cfg.warn_ms, cfg.stop_ms) == clockskew.WARN
    assert clockskew.describe(ahead, "en") == "clock 10 min ahead: set the time"
    assert shop.pay(T_SKEW, card, 100).approved


def test_tier4_daily_limit_counts_the_corrected_day_across_a_correct_and_a_plus_2h_terminal(world) -> None:
    """¥5,000 at a correct terminal at 21:30, then ¥4,000 within the hour at a terminal 2 h ahead (past midnight on
    its clock). The operator puts the second on the real day: over the tier's ¥5,000 daily cap, rejected
    ``over_daily_limit``, and flagged for review per wallet and terminal."""
    shop, tclock = world
    (card,) = shop.cards(1, tier=4, balance_fen=1_000_000)
    for amount in (200_000, 200_000, 100_000):  # ¥5,000 (tier 4 pays at most ¥2,000 at a time)
        shop.pay(T_OK, card, amount)
    tclock.base.advance(30 * 60_000)
    tclock.skew = 2 * HOUR  # 22:00 real, 00:00 next day on this terminal
    late = [shop.pay(T_SKEW, card, a) for a in (200_000, 200_000)]  # the card's day moved on: it paid
    assert shop.sync(T_OK).settled == 3
    r = shop.sync(T_SKEW)
    assert r.settled == 0 and {x["reason"] for x in r.rejected} == {"over_daily_limit"}
    assert {f["voucher_id"] for f in r.flagged} == {o.voucher_id for o in late}
    with shop.home.ledger(T_SKEW) as led:
        assert led.outbox() == []  # answered for good
    rep = _day_report(shop, T_SKEW, "2026-03-01")  # on the real day, not the terminal's
    assert rep["rejected"]["reasons"] == {"over_daily_limit": 2}
    assert {(f[1], f[3], f[4]) for f in rep["flags"]} == {(late[0].wallet_id, "rejected:over_daily_limit",
                                                           "review_timestamp")}
    assert _day_report(shop, T_SKEW, "2026-03-02")["count"] == 0
    with shop.admin() as adm:
        assert adm.account("320508000000101")["settled_fen"] == 500_000


def test_a_correct_clock_settles_on_its_own_day_unflagged(world) -> None:
    shop, _ = world
    (card,) = shop.cards(1, tier=4)
    shop.pay(T_OK, card, 100)
    r = shop.sync(T_OK)
    assert r.settled == 1 and r.flagged == []
    assert _day_report(shop, T_OK, "2026-03-01")["flags"] == []


def test_status_bar_warns_of_a_wrong_clock_in_both_languages(tmp_path: Path) -> None:
    """The status bar, from the offset the last sync learnt: nothing when never learnt or right, a warning beyond
    5 min, "offline sales stopped" instead of online beyond 1 h."""
    import asyncio

    from pos.ui.clerk import ClerkApp, CounterScreen
    from tests.ui.conftest import COUNTER, FakeServices, make_config, runtime, showing, text_of, until

    home = Home(tmp_path / "home", make_config(tmp_path))

    async def scenario() -> None:
        app = ClerkApp(runtime(home), lang="en", services=FakeServices(), status_interval=0)
        async with app.run_test(size=(160, 24)) as pilot:
            await until(pilot, lambda: showing(app, CounterScreen))

            def bar() -> str:
                app.redraw_status()
                return text_of(app.screen.query_one("StatusBar"))

            assert "clock" not in bar()  # never learnt: nothing to say
            for ahead, expect, stopped in ((60_000, None, False), (10 * 60_000, "clock 10 min ahead", False),
                                           (2 * HOUR, "clock 2 h ahead: set the time", True),
                                           (-3 * HOUR, "clock 3 h behind: set the time", True)):
                clockskew.save(home, COUNTER, clockskew.ClockState(-ahead, 0))
                text = bar()
                assert (expect in text) if expect else ("clock" not in text), text
                assert ("offline sales stopped" in text) is stopped, text
            app.action_switch_language()
            await pilot.pause()
            assert "时钟慢 3 小时：请校时" in bar() and "已停止离线收款" in bar()

    asyncio.run(scenario())


def test_pos_report_shows_the_flags(world, capsys) -> None:
    from pos.cli.main import main

    shop, tclock = world
    (card,) = shop.cards(1, tier=4)
    tclock.skew = 2 * HOUR
    paid = shop.pay(T_SKEW, card, 700)
    shop.sync(T_SKEW)
    main(["--home", str(shop.home.root), "report", "--terminal", T_SKEW, "--date", "2026-03-01"])
    out = capsys.readouterr().out
    assert f"FLAGGED review_timestamp: {paid.voucher_id} wallet {paid.wallet_id}" in out and "+2.0 h" in out


def _books(shop: Shop, tid: str, day: str | None) -> dict:
    return reconcile(shop.home, tid, day, shop.url)


def test_pos_report_counts_a_plus_2h_terminals_voucher_in_the_operators_day_around_midnight(world) -> None:
    """22:30 real, 00:30 the next day on a terminal 2 h ahead: the operator counts the voucher on the real day
    (its timestamp less the skew it measured), and so do ``pos report`` and the clerk's end of day on the
    terminal, with the day the upload recorded; that stays so after the clock is set right."""
    from pos.records import day_report

    shop, tclock = world
    (card,) = shop.cards(1, tier=4)
    tclock.base.advance(60 * 60_000)  # 22:30 on 2026-03-01, China time
    tclock.skew = 2 * HOUR  # 00:30 on 2026-03-02 on the terminal's clock
    paid = shop.pay(T_SKEW, card, 700)  # no offset learnt yet: it sells
    assert shop.sync(T_SKEW).settled == 1
    ahead = shop.home.clock_ahead_ms(T_SKEW)
    day = _books(shop, T_SKEW, "2026-03-01")
    assert day["matches"] and day["terminal"]["count"] == day["operator"]["count"] == 1, day["differences"]
    assert day["terminal"]["total_fen"] == 700
    after = _books(shop, T_SKEW, "2026-03-02")
    assert after["matches"] and after["terminal"]["count"] == after["operator"]["count"] == 0
    assert _books(shop, T_SKEW, None)["date"] == "2026-03-01"  # "today" is today on the corrected clock
    with shop.home.ledger(T_SKEW, readonly=True) as led:
        (answer,) = led.entries(kind="settlement")
        assert answer.voucher_id == paid.voucher_id and answer.data["day"] == "2026-03-01"
        assert day_report(led, dt.date(2026, 3, 1), ahead_ms=ahead)["count"] == 1
        assert day_report(led, dt.date(2026, 3, 2), ahead_ms=ahead)["count"] == 0
    tclock.skew = 0  # the time is set right; the next sync learns it
    assert abs(shop.sync(T_SKEW).clock_ahead_ms or 0) < 60_000
    again = _books(shop, T_SKEW, "2026-03-01")
    assert again["matches"] and again["terminal"]["count"] == 1  # the recorded day, not today's offset


def test_a_voucher_still_in_the_outbox_counts_on_the_day_its_upload_will_get(wide_home: Home) -> None:
    """A terminal allowed to sell 2 h ahead (stop bound raised): after a sync has learnt the offset, a voucher not
    uploaded yet already counts on the corrected day, as "not uploaded yet" on the same day as the operator
    will count it, and matches once uploaded."""
    text = wide_home.config_path.read_text().replace("stop_skew_s: 3600", "stop_skew_s: 86400")  # type: ignore[union-attr]
    wide_home.config_path.write_text(text)  # type: ignore[union-attr]
    home = Home(wide_home.root, config_path=wide_home.config_path)
    tclock = TerminalSkew(VirtualClock.at("2026-03-01T22:30"))
    with clock.use(tclock), shop_session(home) as shop:
        shop.provision(T_SKEW)
        (card,) = shop.cards(1, tier=4)
        tclock.skew = 2 * HOUR
        shop.sync(T_SKEW)  # learns the offset
        paid = shop.pay(T_SKEW, card, 900)
        before = _books(shop, T_SKEW, "2026-03-01")
        assert [(d["voucher_id"], d["terminal"], d["operator"]) for d in before["differences"]] == [
            (paid.voucher_id, "pending", "missing")]
        assert _books(shop, T_SKEW, "2026-03-02")["terminal"]["count"] == 0
        shop.sync(T_SKEW)
        assert _books(shop, T_SKEW, "2026-03-01")["matches"]
