"""The gate's screens: ready (ticket, quantity, counts) and the full-screen OPEN / STOP readable from a metre away."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from pos.gate.decision import CAPACITY, GateDecision, places_left
from pos.money import format_fen
from pos.ui.app import TerminalScreen
from pos.ui.history import HistoryScreen, ReportScreen
from pos.ui.widgets import KeyBar, StatusBar

if TYPE_CHECKING:
    from pos.ui.gate.app import GateApp

# A 5-row block font for the two words a queue must read at a glance.
_FONT = {
    "O": ["█████", "█   █", "█   █", "█   █", "█████"],
    "P": ["████ ", "█   █", "████ ", "█    ", "█    "],
    "E": ["█████", "█    ", "████ ", "█    ", "█████"],
    "N": ["█   █", "██  █", "█ █ █", "█  ██", "█   █"],
    "S": ["█████", "█    ", "█████", "    █", "█████"],
    "T": ["█████", "  █  ", "  █  ", "  █  ", "  █  "],
}


def banner(word: str) -> str:
    """``word`` (letters of OPEN and STOP) in 5-row block letters."""
    return "\n".join("  ".join(_FONT[ch][row] for ch in word) for row in range(5))


MAX_QUANTITY = 9


def counts_text(app: GateApp, entries: int, remaining: int) -> Text:
    """"Entries today 3 · 2 places left" (or "· sold out")."""
    return Text(app.t("gate.counts", entries=entries, places=places_left(remaining, app.lang)), justify="center")


class GateScreen(TerminalScreen):
    """Ready: the selected ticket, quantity, entries today and remaining capacity; a red SOLD OUT when none is left
    (a visitor holding tickets still walks in; a tap that would buy is refused before any charge)."""

    # The footer names the quit key (80 columns hold no more); F1 lists these and KEY_HELP.
    KEYS: ClassVar = [("↑↓", "key.product"), ("+-", "key.quantity"), ("F1", "key.help"), ("F3", "key.language"),
                      ("F4", "key.history"), ("F6", "key.report"), ("^Q", "key.quit_ctrl")]
    KEY_HELP: ClassVar = [("F5", "key.sync"), ("F2", "key.tester")]
    BINDINGS: ClassVar = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("plus,right,equals_sign", "quantity(1)", show=False),
        Binding("minus,left", "quantity(-1)", show=False),
        Binding("f4", "history", show=False),
        Binding("f6", "report", show=False),
    ]

    @property
    def gapp(self) -> GateApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal(id="gate-body"):
            with Vertical(id="products-box"):
                yield Static(id="products-label", classes="label")
                table: DataTable[Any] = DataTable(id="products", cursor_type="row", show_header=False)
                table.can_focus = False
                yield table
                yield Static(id="quantity")
            with Vertical(id="ready-box"):
                yield Static(id="ready")
                yield Static(id="stats")
        yield StatusBar()
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        table = self.query_one("#products", DataTable)
        table.add_column("", key="name", width=14)  # 28 columns: name, price and their cell padding
        table.add_column("", key="price", width=10)
        for p in self.gapp.gate.products:
            table.add_row(Text(p.name.get(self.tapp.lang)), Text(format_fen(p.price), justify="right"), key=p.sku,
                          height=None)  # a long name wraps, never cut
        self.retranslate()

    def retranslate(self) -> None:
        super().retranslate()
        app = self.gapp
        lang = app.lang
        rt = app.runtime
        name = rt.terminal.name.get(lang) if rt.terminal.name else rt.terminal_id
        self.query_one("#title", Static).update(
            Text.assemble((f" {rt.merchant.name.get(lang)} ", "bold"), f"· {name} · {rt.terminal_id}"))
        self.query_one("#products-label", Static).update(self.t("gate.products"))
        table = self.query_one("#products", DataTable)
        for p in app.gate.products:
            table.update_cell(p.sku, "name", Text(p.name.get(lang)), update_width=False)
        self.redraw()

    def synced(self) -> None:
        """A sync may have brought online tickets or other gates' sales: the places left change."""
        self.gapp.counts = self.gapp.gate.stats()
        self.redraw()

    def redraw(self) -> None:
        app = self.gapp
        product = app.gate.product(app.sku)
        table = self.query_one("#products", DataTable)
        row = [p.sku for p in app.gate.products].index(app.sku)
        if table.cursor_row != row:
            table.move_cursor(row=row)  # the selection went back to the default after a visitor
        self.query_one("#quantity", Static).update(Text.assemble(
            (self.t("gate.quantity", n=app.quantity), "bold"), "  ",
            self.t("gate.to_pay", amount=format_fen(product.price * app.quantity))))
        entries, remaining = app.counts
        ready = Text(justify="center")
        if remaining <= 0:
            ready.append(f" {self.t('gate.sold_out_banner')} \n\n", style="bold white on red")
            ready.append(self.t("gate.sold_out_hint"))
        else:
            if app.quantity > remaining:
                short = GateDecision(False, CAPACITY, entries, remaining, tickets=app.quantity)
                ready.append(self.t("decline.with_next", message=short.message(app.lang),
                                    next=short.next_step(app.lang)) + "\n\n",
                             style="bold yellow")
            else:
                ready.append(self.t("gate.tap") + "\n\n", style="bold")
            ready.append(f"{product.name.get(app.lang)} × {app.quantity}\n", style="bold")
            ready.append(format_fen(product.price * app.quantity))
        self.query_one("#ready", Static).update(ready)
        self.query_one("#stats", Static).update(counts_text(app, entries, remaining))

    def action_move(self, step: int) -> None:
        app = self.gapp
        table = self.query_one("#products", DataTable)
        row = max(0, min(len(app.gate.products) - 1, table.cursor_row + step))
        app.sku = app.gate.products[row].sku
        self.redraw()

    def action_quantity(self, step: int) -> None:
        app = self.gapp
        quantity = app.quantity + step
        if not 1 <= quantity <= MAX_QUANTITY:
            return self.app.bell()
        app.quantity = quantity
        self.redraw()

    def action_history(self) -> None:
        self.app.push_screen(HistoryScreen())

    def action_report(self) -> None:
        self.app.push_screen(ReportScreen())


class GateResultScreen(TerminalScreen):
    """Full-screen OPEN (green) or STOP (red) with the reason in large text; back to ready by itself."""

    KEYS: ClassVar = [("Enter", "key.back"), ("↑↓ +-", "gate.next_visitor"), ("F2", "key.tester"),
                      ("F3", "key.language")]
    BINDINGS: ClassVar = [
        Binding("enter,escape", "back", show=False),
        Binding("up", "next('move', -1)", show=False),
        Binding("down", "next('move', 1)", show=False),
        Binding("plus,right,equals_sign", "next('quantity', 1)", show=False),
        Binding("minus,left", "next('quantity', -1)", show=False),
    ]

    def __init__(self, decision: GateDecision) -> None:
        super().__init__()
        self.decision = decision

    def compose(self) -> ComposeResult:
        with Vertical(id="gate-result", classes="open" if self.decision.open else "stop"):
            yield Static(banner("OPEN" if self.decision.open else "STOP"), id="banner")
            yield Static(id="word")
            yield Static(id="reason")
            yield Static(id="result-stats")
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        self.retranslate()
        app: GateApp = self.app  # type: ignore[assignment]
        self.set_timer(app.hold_s, self.action_back)

    def retranslate(self) -> None:
        super().retranslate()
        d = self.decision
        lang = self.tapp.lang
        self.query_one("#word", Static).update(
            Text(self.t("gate.open" if d.open else "gate.stop"), style="bold", justify="center"))
        reason = Text(justify="center")
        reason.append(d.message(lang) + "\n", style="bold")
        if step := d.next_step(lang):
            reason.append(step)
        self.query_one("#reason", Static).update(reason)
        self.query_one("#result-stats", Static).update(counts_text(self.app, d.entries_today,  # type: ignore[arg-type]
                                                                   d.remaining))

    def action_back(self) -> None:
        if self.is_current:
            self.app.pop_screen()

    def action_next(self, action: str, step: int) -> None:
        """↑↓ + - on a result: back to ready for the next visitor, with that key applied."""
        self.action_back()
        ready = self.app.screen
        if isinstance(ready, GateScreen) and action == "move":
            ready.action_move(step)
        elif isinstance(ready, GateScreen):
            ready.action_quantity(step)
