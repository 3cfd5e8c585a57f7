"""The history, receipt, refund and end-of-day report screens."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from pos.money import fen_to_yuan_text, format_fen, parse_yuan
from pos.printer import Document, receipt_doc, refund_slip_doc
from pos.printer.slips import Shop, last4
from pos.records import STATUSES, Tx, balance_after, find, load_sale, transactions
from pos.sync import clockskew
from pos.ui.app import TerminalApp, TerminalScreen, error_text
from pos.ui.history.printing import print_document
from pos.ui.widgets import KeyBar, StatusBar
from wallet.errors import EcnyError, InvalidInput

FILTERS = ("all", *STATUSES)


def pad(text: str, width: int = 18) -> str:
    """Left-justify ``text`` to ``width`` terminal cells (CJK characters take two)."""
    return text + " " * max(1, width - cell_len(text))


def shop_of(app: TerminalApp) -> Shop:
    rt = app.runtime
    return Shop(rt.merchant, rt.terminal, rt.home.config.operator)


def receipt_for(app: TerminalApp, voucher_id: str) -> Document | None:
    """The receipt of a payment taken here, in the app's language (None when the ledger has no such payment)."""
    rt = app.runtime
    with rt.home.ledger(rt.terminal_id) as ledger:
        tx = find(ledger, voucher_id)
        balance = balance_after(ledger, voucher_id)
    if tx is None:
        return None
    fee = tx.amount_fen * rt.home.config.operator.fee_bps // 10_000
    sale = load_sale(rt.home.terminal_dir(rt.terminal_id), voucher_id)
    return receipt_doc(tx, sale, shop_of(app), app.lang, balance_after_fen=balance, fee_fen=fee)


def print_receipt(app: TerminalApp, voucher_id: str) -> bool:
    """Print a payment's receipt (printer and HOME/receipts/VOUCHER.txt) without waiting; False when not found."""
    doc = receipt_for(app, voucher_id)
    if doc is None:
        return False
    print_document(app, doc, app.runtime.home.root / "receipts" / f"{voucher_id}.txt")
    return True


class ReceiptScreen(TerminalScreen):
    """One transaction's receipt; P prints it (the printer when one is set, and HOME/receipts/VOUCHER.txt)."""

    KEYS: ClassVar = [("P", "key.print_paper"), ("Esc", "key.back"), ("F1", "key.help"), ("F3", "key.language")]
    BINDINGS: ClassVar = [Binding("p", "print", show=False), Binding("escape,enter", "back", show=False)]

    def __init__(self, voucher_id: str) -> None:
        super().__init__()
        self.voucher_id = voucher_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="receipt-box"):
            yield Static(id="receipt")
        yield KeyBar(self.KEYS)

    def text(self) -> str:
        doc = receipt_for(self.tapp, self.voucher_id)
        return self.t("receipt.missing", voucher=self.voucher_id) if doc is None else doc.text()

    def retranslate(self) -> None:
        super().retranslate()
        self.query_one("#receipt", Static).update(self.text())

    def action_print(self) -> None:
        if not print_receipt(self.tapp, self.voucher_id):
            self.app.bell()

    def action_back(self) -> None:
        self.app.pop_screen()


class RefundScreen(ModalScreen[int | None]):
    """Ask for the refund amount (full by default)."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", show=False)]

    def __init__(self, tx: Tx) -> None:
        super().__init__()
        self.tx = tx

    def compose(self) -> ComposeResult:
        app: TerminalApp = self.app  # type: ignore[assignment]
        left = self.tx.amount_fen - self.tx.refunded_fen
        with Vertical(id="refund"):
            yield Static(app.t("refund.title", voucher=self.tx.voucher_id, amount=format_fen(left)))
            box = Input(value=fen_to_yuan_text(left), id="refund-amount")
            box.cursor_blink = False
            yield box
            yield Static(app.t("refund.where"), classes="hint")
            yield Static(app.t("refund.hint"), classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        app: TerminalApp = self.app  # type: ignore[assignment]
        try:
            fen = parse_yuan(event.value)
        except InvalidInput as exc:
            self.notify(str(exc), severity="error")
            return
        if fen > self.tx.amount_fen - self.tx.refunded_fen:
            self.notify(app.t("refund.too_much"), severity="error")
            return
        self.dismiss(fen)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RefundDone(Message):
    def __init__(self, result: dict[str, Any] | None, error: str | None) -> None:
        super().__init__()
        self.result = result
        self.error = error


class HistoryScreen(TerminalScreen):
    """Today's transactions: search box, status filter, open a receipt, refund."""

    KEYS: ClassVar = [("Enter", "key.open"), ("F4", "key.filter"), ("F8", "key.refund"), ("Esc", "key.back"),
                      ("F1", "key.help"), ("F3", "key.language")]
    KEY_HELP: ClassVar = [("abc 123", "help.search"), ("↑ ↓", "help.rows")]
    BINDINGS: ClassVar = [
        Binding("escape", "back", show=False),
        Binding("f4", "filter", show=False),
        Binding("f8", "refund", show=False),
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter = "all"
        self._refunding = ""
        self.rows: list[Tx] = []
        self.shown: list[Tx] = []

    def compose(self) -> ComposeResult:
        yield Static(id="history-title", classes="label")
        search = Input(id="search")
        search.cursor_blink = False
        yield search
        table: DataTable[Any] = DataTable(id="history", cursor_type="row")
        table.can_focus = False
        yield table
        yield StatusBar()
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        self.load()
        self.query_one("#search", Input).focus()

    def load(self) -> None:
        rt = self.tapp.runtime
        ahead = rt.home.clock_ahead_ms(rt.terminal_id)  # the business day: pos.sync.clockskew
        with rt.home.ledger(rt.terminal_id) as ledger:
            self.rows = transactions(ledger, clockskew.today(ahead, self.tapp.now()), ahead)
        self.retranslate()

    def retranslate(self) -> None:
        super().retranslate()
        self.query_one("#search", Input).placeholder = self.t("history.search")
        self.query_one("#history-title", Static).update(
            self.t("history.title", filter=self.t("filter." + self.filter)))
        table = self.query_one("#history", DataTable)
        table.clear(columns=True)
        for key, width in (("history.time", 8), ("history.amount", 12), ("history.wallet", 9),
                           ("history.status", 9), ("history.voucher", 25)):  # 80 columns, a scrollbar included
            table.add_column(self.t(key), width=width)
        search = self.query_one("#search", Input).value
        self.shown = [t for t in self.rows if (self.filter == "all" or t.status == self.filter) and t.matches(search)]
        for t in self.shown:
            status = self.t("filter." + t.status) + ("↩" if t.refunded_fen else "")
            table.add_row(f"{t.time:%H:%M:%S}", Text(format_fen(t.amount_fen), justify="right"),
                          last4(t.wallet_id), status, t.voucher_id)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.retranslate()

    def selected(self) -> Tx | None:
        table = self.query_one("#history", DataTable)
        if not self.shown:
            return None
        return self.shown[min(table.cursor_row, len(self.shown) - 1)]

    def action_move(self, step: int) -> None:
        table = self.query_one("#history", DataTable)
        table.move_cursor(row=max(0, table.cursor_row + step))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        tx = self.selected()
        if tx is None:
            return self.app.bell()
        self.app.push_screen(ReceiptScreen(tx.voucher_id))

    def action_filter(self) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self.retranslate()

    def action_refund(self) -> None:
        tx = self.selected()
        if tx is None or tx.refunded_fen >= tx.amount_fen:
            return self.app.bell()

        def chosen(fen: int | None) -> None:
            if fen:
                self._refunding = tx.voucher_id
                self.notify(self.t("refund.sending"))
                self._refund(tx.voucher_id, fen)

        self.app.push_screen(RefundScreen(tx), chosen)

    @work(thread=True, group="refund", exit_on_error=False)
    def _refund(self, voucher_id: str, amount_fen: int) -> None:
        try:
            result = self.tapp.services.refund(voucher_id, amount_fen)
            self.post_message(RefundDone(result, None))
        except EcnyError as exc:
            self.post_message(RefundDone(None, error_text(self.tapp, exc)))

    def on_refund_done(self, message: RefundDone) -> None:
        if message.error:
            self.notify(message.error, title=self.t("refund.failed"), severity="error")
            return
        r = message.result or {}
        self.notify(self.t("refund.done", amount=format_fen(int(r.get("amount_fen") or 0))))
        tx = next((t for t in self.rows if t.voucher_id == r.get("voucher_id", self._refunding)), None)
        if tx is not None:  # the refund slip, on paper when a printer is set
            slip = refund_slip_doc(tx, r, shop_of(self.tapp), self.tapp.lang, self.tapp.now())
            name = str(r.get("refund_id") or f"{tx.voucher_id}-refund")
            print_document(self.tapp, slip, self.tapp.runtime.home.root / "receipts" / f"{name}.txt",
                           saved_key="slip.saved")
        self.load()
        self.tapp.poll_status()

    def synced(self) -> None:
        self.load()  # statuses moved: pending -> settled / rejected

    def action_back(self) -> None:
        self.app.pop_screen()
