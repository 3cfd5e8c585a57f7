"""The counter's entry panel: type an amount or build a cart from the catalog; Enter asks the screen to charge it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Digits, Static

from pos.config import Product
from pos.money import MAX_AMOUNT_FEN, fen_to_yuan_text, format_fen, parse_yuan
from pos.records import cart_items
from pos.ui.widgets.panel import Panel
from wallet.errors import InvalidInput

if TYPE_CHECKING:
    from pos.ui.clerk.screens import CounterScreen

MAX_TYPED = 11  # "99999999.99"
NAME_WIDTH = 20  # catalog names longer than this wrap (a 30-character name takes two lines)
PRICE_WIDTH = 10  # "¥99,999.99"
QTY_WIDTH = 3  # "×99"


def yuan_digits(fen: int) -> str:
    """1230 -> '12.30' for the big display."""
    return fen_to_yuan_text(fen)


class EntryPanel(Panel):
    """Ready for the next sale: the amount typed or the cart's total, the catalog with the quantities."""

    # The footer (80 columns hold no more); F1 lists these and KEY_HELP.
    KEYS: ClassVar = [("Enter", "key.charge"), ("F1", "key.help"), ("F3", "key.language"), ("F4", "key.history"),
                      ("F6", "key.report"), ("F7", "key.reprint"), ("^Q", "key.quit_ctrl")]
    KEY_HELP: ClassVar = [("Esc", "key.clear"), ("F2", "key.tester"), ("F5", "key.sync"), ("0-9 .", "help.digits"),
                          ("↑ ↓", "help.arrows"), ("+ −", "help.plus_minus")]
    BINDINGS: ClassVar = [
        *[Binding(str(d), f"type('{d}')", show=False) for d in range(10)],
        Binding("full_stop", "type('.')", show=False),
        Binding("backspace", "backspace", show=False),
        Binding("escape,delete", "clear", show=False),
        Binding("enter", "charge", show=False),
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("plus,right,equals_sign", "add(1)", show=False),
        Binding("minus,left", "add(-1)", show=False),
        Binding("f4", "screen.history", show=False),
        Binding("f6", "screen.report", show=False),
        Binding("f7", "screen.reprint", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.typed = ""
        self.cart: dict[str, int] = {}

    @property
    def catalog(self) -> list[Product]:
        return list(self.tapp.runtime.merchant.catalog)

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield Static(id="amount-label", classes="label")
                yield Digits("0.00", id="amount")
                yield Static(id="amount-text")
                yield Static(id="hint", classes="hint")
            with Vertical(id="right"):
                yield Static(id="catalog-label", classes="label")
                table: DataTable[Any] = DataTable(id="catalog", cursor_type="row", show_header=False)
                table.can_focus = False
                yield table
                yield Static(id="cart-total")

    def fill(self) -> None:
        """The catalog's rows (once, when the screen is mounted), then every text."""
        table = self.query_one("#catalog", DataTable)
        table.add_column("", key="name", width=NAME_WIDTH)
        table.add_column("", key="price", width=PRICE_WIDTH)
        table.add_column("", key="qty", width=QTY_WIDTH)
        for p in self.catalog:
            table.add_row(Text(p.name.get(self.tapp.lang)), Text(format_fen(p.price), justify="right"), "",
                          key=p.sku, height=None)  # a long name wraps onto a second line, never cut
        self.retranslate()

    # -- drawing ----------------------------------------------------------------------------------------------------
    @property
    def amount_fen(self) -> int:
        """What Enter would charge: the cart total, else the typed amount (0 when nothing valid)."""
        if self.cart:
            prices = {p.sku: p.price for p in self.catalog}
            return sum(prices[s] * q for s, q in self.cart.items())
        try:
            return parse_yuan(self.typed) if self.typed else 0
        except InvalidInput:
            return 0

    @property
    def offline_cap(self) -> int:
        """The terminal's offline cap for one payment (merchants.yaml ``risk.offline_single_max``)."""
        return int(self.tapp.runtime.home.config.risk.offline_single_max)

    def retranslate(self) -> None:
        lang = self.tapp.lang
        self.query_one("#amount-label", Static).update(self.t("counter.amount"))
        self.query_one("#catalog-label", Static).update(self.t("counter.catalog"))
        table = self.query_one("#catalog", DataTable)
        if table.columns:
            for p in self.catalog:
                table.update_cell(p.sku, "name", Text(p.name.get(lang)), update_width=False)
        self.redraw()

    def redraw(self) -> None:
        fen = self.amount_fen
        self.query_one("#amount", Digits).update(yuan_digits(fen))
        self.query_one("#amount-text", Static).update(Text(format_fen(fen), style="bold"))
        cap = self.offline_cap
        hint: Text | str
        if fen > cap:  # the tap would be declined: say so now, with what to do
            hint = Text(self.t("guard.over_cap", cap=format_fen(cap)), style="bold yellow")
        elif self.cart:
            n = sum(self.cart.values())
            hint = self.t("counter.hint_cart_one") if n == 1 else self.t("counter.hint_cart", n=n)
        elif self.typed:
            hint = self.t("counter.hint_typed")
        else:
            hint = self.t("counter.hint_empty")
        self.query_one("#hint", Static).update(hint)
        table = self.query_one("#catalog", DataTable)
        if table.columns:
            for p in self.catalog:
                q = self.cart.get(p.sku, 0)
                table.update_cell(p.sku, "qty", Text(f"×{q}" if q else "", style="bold"))
        total = self.t("counter.cart_total", amount=format_fen(fen)) if self.cart else self.t("counter.cart_empty")
        self.query_one("#cart-total", Static).update(total)

    # -- keys -------------------------------------------------------------------------------------------------------
    def action_type(self, ch: str) -> None:
        if self.cart:
            self.cart.clear()
            self.typed = ""
        t = self.typed
        if ch == ".":
            if "." in t:
                return self.app.bell()
            t = (t or "0") + "."
        else:
            if "." in t and len(t.split(".")[1]) >= 2:
                return self.app.bell()
            t = ch if t == "0" else t + ch
        if len(t) > MAX_TYPED or (t.replace(".", "").isdigit() and self._too_big(t)):
            return self.app.bell()
        self.typed = t
        self.redraw()

    @staticmethod
    def _too_big(t: str) -> bool:
        try:
            return parse_yuan(t.rstrip("."), allow_zero=True) > MAX_AMOUNT_FEN
        except InvalidInput:
            return True

    def action_backspace(self) -> None:
        self.typed = self.typed[:-1]
        self.redraw()

    def action_clear(self) -> None:
        self.typed = ""
        self.cart.clear()
        self.redraw()

    def action_move(self, step: int) -> None:
        table = self.query_one("#catalog", DataTable)
        if step < 0:
            table.action_cursor_up()
        else:
            table.action_cursor_down()

    def action_add(self, step: int) -> None:
        catalog = self.catalog
        if not catalog:
            return self.app.bell()
        table = self.query_one("#catalog", DataTable)
        sku = catalog[table.cursor_row].sku
        q = self.cart.get(sku, 0) + step
        if q < 0 or q > 99:
            return self.app.bell()
        self.typed = ""
        if q:
            self.cart[sku] = q
        else:
            self.cart.pop(sku, None)
        self.redraw()

    def action_charge(self) -> None:
        fen = self.amount_fen
        if fen <= 0:
            self.notify(self.t("counter.no_amount"), severity="warning")
            return self.app.bell()
        if fen > self.offline_cap:
            self.notify(self.t("guard.over_cap", cap=format_fen(self.offline_cap)), severity="warning")
            return self.app.bell()
        screen: CounterScreen = self.screen  # type: ignore[assignment]
        screen.start_charge(fen, cart_items(self.catalog, self.cart))
