"""The counter's result panel: approved (green) or declined (red) with the reason in plain words and the next step."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.widgets import Digits, Static

from pos.money import fen_to_yuan_text, format_fen
from pos.payment.outcome import Outcome
from pos.ui.history import ReceiptScreen
from pos.ui.widgets.bars import Keys
from pos.ui.widgets.panel import Panel
from wallet.ids import mask_wallet_id

if TYPE_CHECKING:
    from pos.ui.clerk.screens import CounterScreen

APPROVED_KEYS: Keys = [("Enter", "key.next_sale"), ("R", "key.receipt"), ("F1", "key.help"), ("F2", "key.tester"),
                       ("F3", "key.language")]
DECLINED_KEYS: Keys = [("Enter", "key.back"), ("F1", "key.help"), ("F2", "key.tester"), ("F3", "key.language")]


class ResultPanel(Panel):
    """The outcome of the last charge: what the customer's wallet says (amount, balance left, offline payments left,
    voucher), or why it was declined and what to do next. Enter goes back to the entry (a new sale after an approval;
    the amount kept after a decline); R opens the receipt."""

    BINDINGS: ClassVar = [Binding("enter,escape", "done", show=False), Binding("r", "receipt", show=False)]

    outcome: Outcome | None = None

    @property
    def keys(self) -> Keys:
        return APPROVED_KEYS if self.outcome is not None and self.outcome.approved else DECLINED_KEYS

    def compose(self) -> ComposeResult:
        with Vertical(id="result"):
            yield Static(id="verdict")
            with Center():
                yield Digits("0.00", id="result-amount")
            yield Static(id="details")

    def show(self, outcome: Outcome) -> None:
        """Fill the panel with ``outcome`` (before it is displayed)."""
        self.outcome = outcome
        box = self.query_one("#result", Vertical)
        box.set_class(outcome.approved, "approved")
        box.set_class(not outcome.approved, "declined")
        self.query_one("#result-amount", Digits).update(fen_to_yuan_text(outcome.amount_fen))
        self.retranslate()

    def retranslate(self) -> None:
        o = self.outcome
        if o is None:
            return
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
                details.append(self.t("label", label=label), style="bold")
                details.append(value + "\n")
            if o.recovered:
                details.append(o.recovery_note(lang) + "\n", style="bold")
                details.append(self.t("label", label=self.t("result.recovered")) + ", ".join(o.recovered) + "\n")
        else:
            assert o.reason is not None
            verdict = Text("✘ " + self.t("result.declined"), style="bold", justify="center")
            details = Text(justify="center")
            if o.kept_voucher_id:  # the card paid, the disk refused the payment: kept, written once space is freed
                verdict = Text("⚠ " + self.t("result.kept"), style="bold", justify="center")
                details.append(o.message(lang) + "\n", style="bold")
                details.append(self.t("result.next", step=self.t("result.kept_next")) + "\n")
                details.append(self.t("label", label=self.t("result.voucher")) + o.kept_voucher_id + "\n")
            elif o.pending_recovery:  # the torn wallet did not come back: what that means for the customer
                details.append(o.reason.message(lang) + "\n", style="bold")
                details.append(self.t("result.settles_next_tap") + "\n")
            else:
                details.append(o.message(lang) + "\n", style="bold")
                step = o.reason.next_step(lang)
                if step:
                    details.append(self.t("result.next", step=step) + "\n")
            details.append(self.t("label", label=self.t("result.amount")) + format_fen(o.amount_fen) + "\n")
            if o.wallet_id:
                details.append(self.t("label", label=self.t("result.wallet")) + mask_wallet_id(o.wallet_id) + "\n")
        self.query_one("#verdict", Static).update(verdict)
        self.query_one("#details", Static).update(details)

    def action_done(self) -> None:
        screen: CounterScreen = self.screen  # type: ignore[assignment]
        o = self.outcome  # a kept payment was paid too: the sale is over
        screen.show_entry(new_sale=o is not None and (o.approved or bool(o.kept_voucher_id)))
        self.tapp.poll_status()

    def action_receipt(self) -> None:
        if self.outcome is not None and self.outcome.approved and self.outcome.voucher_id:
            self.app.push_screen(ReceiptScreen(self.outcome.voucher_id))
