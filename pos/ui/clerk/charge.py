"""The charge in progress (waiting for a tap, a torn wallet's re-tap), its result, and quitting in the middle of one.

The screen renders the charge's :class:`~pos.payment.control.ChargeControl`: where the charge stands (waiting for
a card, reading it, paying, waiting for the torn wallet) and the one deadline the session waits to. Esc cancels
until PAY is sent; after that the screen says the payment is completing and shows its outcome.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Digits, Static

from pos.money import fen_to_yuan_text, format_fen
from pos.payment import control as stages
from pos.payment.control import ChargeControl
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from pos.records import Item, Sale, save_sale
from pos.ui.app import TerminalApp, TerminalScreen
from pos.ui.history import ReceiptScreen
from pos.ui.history.screens import print_receipt
from pos.ui.widgets import KeyBar
from wallet.ids import mask_wallet_id


class ChargeDone(Message):
    """The reader worker's decision."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class ChargeScreen(TerminalScreen):
    """请碰一碰 / Tap the wallet: waits in a worker thread; Esc cancels until PAY is sent; gives up after the tap
    timeout. After a tear it asks for the same wallet and counts down the session's recovery wait."""

    KEYS: ClassVar = [("Esc", "key.cancel"), ("F1", "key.help"), ("F2", "key.tester"), ("F3", "key.language"),
                      ("^Q", "key.quit_ctrl")]
    BINDINGS: ClassVar = [Binding("escape", "cancel", show=False)]

    def __init__(self, amount_fen: int, items: tuple[Item, ...] = ()) -> None:
        super().__init__()
        self.amount_fen = amount_fen
        self.items = items  # the cart, kept with the payment for its receipt
        self.cancel = threading.Event()
        self.control = ChargeControl(self.cancel)
        self._started = 0.0
        self._done = False
        self._quit = False  # Ctrl+Q came during the charge: quit once it is over

    @property
    def timeout(self) -> float:
        return self.tapp.charge_timeout  # type: ignore[attr-defined]

    @property
    def in_progress(self) -> bool:
        """Whether the charge's worker has not decided yet."""
        return self.is_ready and not self._done

    def compose(self) -> ComposeResult:
        with Vertical(id="charge"):
            yield Static(id="prompt")
            yield Static(id="prompt-other")
            with Center():
                yield Digits(fen_to_yuan_text(self.amount_fen), id="charge-amount")
            yield Static(Text(format_fen(self.amount_fen), style="bold", justify="center"), id="charge-text")
            discount = Static(id="discount")  # an instant discount (pos.payment.discounts), once the charge has one
            discount.display = False
            yield discount
            yield Static(id="countdown")
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        self.control.clock = self.tapp.runtime.monotonic
        self._started = self.control.clock()
        self.retranslate()
        self.set_interval(0.25, self._tick)
        self._wait(self.amount_fen, self.timeout)

    def on_unmount(self) -> None:
        self.cancel.set()  # before PAY the reader stops at once; a PAY under way still completes and is recorded

    def retranslate(self) -> None:
        super().retranslate()
        self._tick()

    def _tick(self) -> None:
        c = self.control
        retap = c.stage == stages.RETAP
        self.query_one("#prompt", Static).update(
            Text(self.t("charge.retap" if retap else "charge.tap"), style="bold", justify="center"))
        self.query_one("#prompt-other", Static).update(
            Text(self.t("charge.retap_hint" if retap else "charge.tap_hint"), justify="center"))
        self.query_one("#countdown", Static).update(Text(self.status_line(), justify="center"))
        offer = c.offer
        line = self.query_one("#discount", Static)
        line.display = offer is not None
        if offer is not None:
            line.update(Text(offer.line(self.tapp.lang), style="bold green", justify="center"))

    def status_line(self) -> str:
        """The line under the amount: the countdown of the current wait, or what the charge is doing."""
        c = self.control
        if self._done:
            return ""
        if c.paying:
            if self._quit:
                return self.t("charge.completing") + " · " + self.t("charge.quit_after")
            return self.t("charge.completing") if self.cancel.is_set() else self.t("charge.reading")
        if self.cancel.is_set():
            return self.t("charge.cancelling")
        if c.stage == stages.READING:
            return self.t("charge.reading")
        left = c.seconds_left()
        if left is None:  # the worker has not started waiting yet
            left = max(0.0, self.timeout - (c.clock() - self._started))
        key = "charge.retap_countdown" if c.stage == stages.RETAP else "charge.countdown"
        return self.t(key, s=round(left))

    @work(thread=True, group="charge", exit_on_error=False)
    def _wait(self, amount_fen: int, timeout: float) -> None:
        outcome = self.tapp.runtime.charge(amount_fen, timeout, self.control)
        self.post_message(ChargeDone(outcome))

    def action_cancel(self) -> None:
        self.control.request_cancel()  # before PAY it stops the charge; after, the screen says it is completing
        self._tick()

    def quit_when_done(self) -> None:
        """Ctrl+Q: cancel if PAY is not sent yet; either way quit (or ask) once the charge is decided."""
        self._quit = True
        self.control.request_cancel()
        self._tick()

    def on_charge_done(self, message: ChargeDone) -> None:
        self._done = True
        outcome = message.outcome
        self.tapp.sale_decided(outcome.approved)
        while self.app.screen is not self:  # e.g. the tester panel opened over this screen
            self.app.pop_screen()
        if outcome.reason is Reason.CANCELLED:
            if self._quit:
                self.app.exit()
                return
            self.app.pop_screen()
            self.app.notify(self.t("charge.cancelled"))
            return
        if outcome.approved and outcome.voucher_id:
            self._keep_sale(outcome)
        self.app.switch_screen(ResultScreen(outcome))
        if outcome.approved and outcome.voucher_id and getattr(self.app, "printer", None) is not None:
            print_receipt(self.tapp, outcome.voucher_id)  # the sale is approved and recorded: now the paper
        if self._quit:
            self.app.push_screen(QuitScreen())


    def _keep_sale(self, outcome: Outcome) -> None:
        """The sale's record for its receipt: the items and the wallet's offline payments left."""
        rt = self.tapp.runtime
        try:
            save_sale(rt.home.terminal_dir(rt.terminal_id), Sale(outcome.voucher_id or "", self.items,
                                                                outcome.offline_left))
        except OSError as exc:  # the payment is recorded; only its item lines are lost
            self.notify(str(exc), severity="warning")


class ResultScreen(TerminalScreen):
    """Approved (green) or declined (red) with the reason in plain words and the next step."""

    BINDINGS: ClassVar = [Binding("enter,escape", "done", show=False), Binding("r", "receipt", show=False)]

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome
        self.keys = ([("Enter", "key.next_sale"), ("R", "key.receipt"), ("F1", "key.help"), ("F2", "key.tester"),
                      ("F3", "key.language")]
                     if outcome.approved else [("Enter", "key.back"), ("F1", "key.help"), ("F2", "key.tester"),
                                               ("F3", "key.language")])

    def compose(self) -> ComposeResult:
        with Vertical(id="result", classes="approved" if self.outcome.approved else "declined"):
            yield Static(id="verdict")
            with Center():
                yield Digits(fen_to_yuan_text(self.outcome.amount_fen), id="result-amount")
            yield Static(id="details")
        yield KeyBar(self.keys)

    def ready(self) -> None:
        self.retranslate()

    def retranslate(self) -> None:
        super().retranslate()
        o = self.outcome
        lang = self.tapp.lang
        if o.approved:
            verdict = Text("✔ " + self.t("result.approved"), style="bold", justify="center")
            rows = [(self.t("result.amount"), format_fen(o.amount_fen)),
                    *([(self.t("result.discount"), self.t("result.discount_value", discount=format_fen(
                        o.discount_fen), gross=format_fen(o.amount_fen + o.discount_fen)))] if o.discount_fen else []),
                    (self.t("result.wallet"), mask_wallet_id(o.wallet_id) if o.wallet_id else "-"),
                    (self.t("result.balance"), format_fen(o.balance_after_fen or 0))]
            if o.offline_left is not None:
                rows.append((self.t("result.offline_left"), self.t("result.offline_n", n=o.offline_left)))
            rows.append((self.t("result.voucher"), o.voucher_id or "-"))
            details = Text(justify="center")
            for label, value in rows:
                details.append(f"{label}: ", style="bold")
                details.append(value + "\n")
            if o.recovered:
                details.append(o.recovery_note(lang) + "\n", style="bold")
                details.append(f"{self.t('result.recovered')}: {', '.join(o.recovered)}\n")
        else:
            assert o.reason is not None
            verdict = Text("✘ " + self.t("result.declined"), style="bold", justify="center")
            details = Text(justify="center")
            if o.kept_voucher_id:  # the card paid, the disk refused the payment: kept, written once space is freed
                verdict = Text("⚠ " + self.t("result.kept"), style="bold", justify="center")
                details.append(o.message(lang) + "\n", style="bold")
                details.append(self.t("result.next", step=self.t("result.kept_next")) + "\n")
                details.append(f"{self.t('result.voucher')}: {o.kept_voucher_id}\n")
            elif o.pending_recovery:  # the torn wallet did not come back: what that means for the customer
                details.append(o.reason.message(lang) + "\n", style="bold")
                details.append(self.t("result.settles_next_tap") + "\n")
            else:
                details.append(o.message(lang) + "\n", style="bold")
                step = o.reason.next_step(lang)
                if step:
                    details.append(self.t("result.next", step=step) + "\n")
            details.append(f"{self.t('result.amount')}: {format_fen(o.amount_fen)}\n")
            if o.wallet_id:
                details.append(f"{self.t('result.wallet')}: {mask_wallet_id(o.wallet_id)}\n")
        self.query_one("#verdict", Static).update(verdict)
        self.query_one("#details", Static).update(details)

    def action_done(self) -> None:
        self.app.pop_screen()
        new_sale = getattr(self.app.screen, "new_sale", None)  # back on the counter: clear the sale just paid
        if (self.outcome.approved or self.outcome.kept_voucher_id) and callable(new_sale):  # kept: paid too
            new_sale()
        self.tapp.poll_status()

    def action_receipt(self) -> None:
        if self.outcome.approved and self.outcome.voucher_id:
            self.app.push_screen(ReceiptScreen(self.outcome.voucher_id))


class QuitScreen(ModalScreen[None]):
    """Quit the terminal? Asked over the outcome of a payment that Ctrl+Q could not cancel."""

    BINDINGS: ClassVar = [Binding("enter", "quit_now", show=False), Binding("escape", "stay", show=False)]

    def compose(self) -> ComposeResult:
        app: TerminalApp = self.app  # type: ignore[assignment]
        with Vertical(id="quit-box"):
            yield Static(Text(app.t("quit.title"), style="bold", justify="center"), id="quit-title")
            yield Static(Text(app.t("quit.hint"), justify="center"), id="quit-hint")

    def action_quit_now(self) -> None:
        self.app.exit()

    def action_stay(self) -> None:
        self.app.pop_screen()
