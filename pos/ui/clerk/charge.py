"""The charge in progress (waiting for a tap, a torn wallet's re-tap); Ctrl+Q in the middle of one quits once it is
decided (the question is :class:`pos.ui.quit.QuitScreen`).

The panel renders the charge's :class:`~pos.payment.control.ChargeControl`: where the charge stands (waiting for
a card, reading it, paying, waiting for the torn wallet) and the one deadline the session waits to. Esc cancels
until PAY is sent; after that the panel says the payment is completing, and the screen shows its outcome.

The reader's wait starts in a worker thread when the clerk presses Enter (a new screen would start it only once it
was mounted and painted), and the outcome goes to the screen at once: whatever a sale still has to do (its record,
the receipt, the sync) runs after the result is painted (:meth:`pos.ui.clerk.screens.CounterScreen.charge_decided`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Digits, Static

from pos.money import fen_to_yuan_text, format_fen
from pos.payment import control as stages
from pos.payment.control import ChargeControl
from pos.payment.outcome import Outcome
from pos.records import Item
from pos.ui.widgets import KeyBar, Keys
from pos.ui.widgets.panel import Panel

if TYPE_CHECKING:
    from pos.ui.clerk.screens import CounterScreen


class ChargeDone(Message):
    """The reader worker's decision."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class ChargePanel(Panel):
    """请碰一碰 / Tap the wallet: waits in a worker thread; Esc cancels until PAY is sent; gives up after the tap
    timeout. After a tear it asks for the same wallet and counts down the session's recovery wait."""

    KEYS: ClassVar = [("Esc", "key.cancel"), ("F1", "key.help"), ("F2", "key.tester"), ("F3", "key.language"),
                      ("^Q", "key.quit_ctrl")]
    RETAP_KEYS: ClassVar = [("Esc", "key.stop_waiting"), *KEYS[1:]]
    BINDINGS: ClassVar = [Binding("escape", "cancel", show=False)]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.amount_fen = 0
        self.items: tuple[Item, ...] = ()  # the cart, kept with the payment for its receipt
        self.cancel = threading.Event()
        self.control = ChargeControl(self.cancel)
        self._started = 0.0
        self._done = True
        self._quit = False  # Ctrl+Q came during the charge: quit once it is over
        self._ticker: Timer | None = None

    @property
    def timeout(self) -> float:
        return self.tapp.charge_timeout  # type: ignore[attr-defined]

    @property
    def in_progress(self) -> bool:
        """Whether a charge is open and its worker has not decided yet."""
        return not self._done

    @property
    def quitting(self) -> bool:
        """Whether Ctrl+Q came during this charge."""
        return self._quit

    @property
    def keys(self) -> Keys:
        """Esc cancels the charge; while the torn wallet is awaited it stops waiting."""
        return list(self.RETAP_KEYS if self.control.stage == stages.RETAP else self.KEYS)

    def compose(self) -> ComposeResult:
        with Vertical(id="charge"):
            yield Static(id="prompt")
            yield Static(id="prompt-other")
            with Center():
                yield Digits("0.00", id="charge-amount")
            yield Static(id="charge-text")
            discount = Static(id="discount")  # an instant discount (pos.payment.discounts), once the charge has one
            discount.display = False
            yield discount
            yield Static(id="countdown")

    def start(self, amount_fen: int, items: tuple[Item, ...] = ()) -> None:
        """Open a charge of ``amount_fen``: the reader starts waiting now, in a worker thread."""
        self.amount_fen, self.items = amount_fen, items
        self.cancel = threading.Event()
        self.control = ChargeControl(self.cancel, clock=self.tapp.runtime.monotonic)
        self._started = self.control.clock()
        self._done, self._quit = False, False
        self._wait(amount_fen, self.timeout)
        self.query_one("#charge-amount", Digits).update(fen_to_yuan_text(amount_fen))
        self.query_one("#charge-text", Static).update(Text(format_fen(amount_fen), style="bold", justify="center"))
        self.retranslate()
        if self._ticker is None:
            self._ticker = self.set_interval(0.25, self._tick)
        else:
            self._ticker.resume()

    def on_unmount(self) -> None:
        self.cancel.set()  # before PAY the reader stops at once; a PAY under way still completes and is recorded

    def retranslate(self) -> None:
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
        if line.display != (offer is not None):
            line.display = offer is not None
        if offer is not None:
            line.update(Text(offer.line(self.tapp.lang), style="bold green", justify="center"))
        if self.display and (bar := self.screen.query_one(KeyBar)).keys != self.keys:
            bar.keys = self.keys
            bar.retranslate()

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
        self.control.request_cancel()  # before PAY it stops the charge; after, the panel says it is completing
        self._tick()

    def quit_when_done(self) -> None:
        """Ctrl+Q: cancel if PAY is not sent yet; either way quit (or ask) once the charge is decided."""
        self._quit = True
        self.control.request_cancel()
        self._tick()

    def on_charge_done(self, message: ChargeDone) -> None:
        self._done = True
        if self._ticker is not None:
            self._ticker.pause()
        screen: CounterScreen = self.screen  # type: ignore[assignment]
        screen.charge_decided(message.outcome, self.items, quit_after=self._quit)
