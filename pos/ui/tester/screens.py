"""The tester panel's screens: mock cards to tap with a fault for the next tap, and the APDU trace of the last tap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from ecny_nfc.mock import Faults
from pos.cards.manage import describe_card
from pos.cards.tap_socket import TapRefused
from pos.money import format_fen
from pos.printer.slips import last4
from pos.ui.app import TerminalScreen
from pos.ui.tester.scenario import SCREEN_NAME, ScenarioScreen
from pos.ui.widgets import KeyBar
from wallet.errors import CardBusy, EcnyError

KEYLESS_NOTE = "clone without the key"  # what the card store notes on a copy without the key (wallet.store)
FAULTS = ("none", "tear", "corrupt", "slow", "clone", "clone_keyless")
SLOW_STEP_S = 0.5
REFUSED = {"not_waiting": "tester.refused_not_waiting", "no_decision": "tester.refused_no_decision",
           "stopped": "tester.refused_stopped"}  # TapRefused.why -> what the panel says


class TapDone(Message):
    def __init__(self, card_id: str, result: dict[str, Any] | None, error: EcnyError | None) -> None:
        super().__init__()
        self.card_id = card_id
        self.result = result
        self.error = error


class TapLeft(Message):
    """The tapped card left the field mid-tap (torn): the terminal waits for it again."""

    def __init__(self, card_id: str) -> None:
        super().__init__()
        self.card_id = card_id


class TesterScreen(TerminalScreen):
    """Pick a card, pick a fault, tap. The fault applies to the next tap only."""

    __test__ = False  # not a pytest class despite the name

    KEYS: ClassVar = [("Enter", "key.tap"), ("F4", "key.fault"), ("+-", "key.fault_n"), ("A", "key.trace"),
                      ("S", "key.scenario"), ("Esc", "key.close"), ("F3", "key.language")]
    BINDINGS: ClassVar = [
        Binding("escape,f2", "close", show=False),
        Binding("enter", "tap", show=False),
        Binding("f4", "next_fault", show=False),
        Binding("plus,right,equals_sign", "fault_n(1)", show=False),
        Binding("minus,left", "fault_n(-1)", show=False),
        Binding("a", "trace", show=False),
        Binding("s", "scenario", show=False),
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.fault = "none"
        self.fault_n = 3
        self.cards: list[dict[str, Any]] = []
        self.last: Callable[[], str | Text] | None = None  # what the last tap did, said in the current language

    def compose(self) -> ComposeResult:
        yield Static(id="tester-title", classes="label")
        table: DataTable[Any] = DataTable(id="cards", cursor_type="row")
        table.can_focus = False
        yield table
        yield Static(id="fault")
        yield Static(id="tap-result")
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        self.load()

    def load(self) -> None:
        store = self.tapp.runtime.home.cards
        self.cards = [describe_card(store.load(i)) for i in store.ids()]
        self.retranslate()

    def retranslate(self) -> None:
        super().retranslate()
        rt = self.tapp.runtime
        self.query_one("#tester-title", Static).update(self.t("tester.title", terminal=rt.terminal_id))
        table = self.query_one("#cards", DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        for key, width in (("tester.card", 6), ("tester.wallet", 9), ("tester.tier", 4), ("tester.balance", 11),
                           ("tester.counter", 6), ("tester.state", 21)):  # 80 columns, a scrollbar included
            table.add_column(self.t(key), width=width)
        for c in self.cards:
            state = self.t("tester.active" if c["status"] == "active" else "tester.blocked")
            if c["clone_of"]:
                keyless = c.get("note") == KEYLESS_NOTE
                state = self.t("tester.clone_keyless_of" if keyless else "tester.clone_of", card=c["clone_of"])
            table.add_row(c["card_id"], last4(c["wallet_id"]), str(c["tier"]),
                          Text(format_fen(c["balance_fen"]), justify="right"), str(c["counter"]), state)
        if self.cards:
            table.move_cursor(row=min(row, len(self.cards) - 1))
        self._draw_fault()
        self.query_one("#tap-result", Static).update(self.last() if self.last else self._waiting_hint())

    def _waiting_hint(self) -> str:
        broker = self.tapp.runtime.broker
        if broker is None:
            return self.t("tester.no_mock")
        return self.t("tester.armed" if broker.armed else "tester.not_armed")

    def _draw_fault(self) -> None:
        text = Text()
        text.append(self.t("label", label=self.t("tester.next_fault")), style="bold")
        text.append(self.t("fault." + self.fault, n=self.fault_n, s=f"{self.fault_n * SLOW_STEP_S:g}"),
                    style="bold yellow" if self.fault != "none" else "")
        self.query_one("#fault", Static).update(text)

    def faults(self) -> Faults | None:
        """The fault chosen for the next tap."""
        if self.fault == "tear":
            return Faults(tear_after=self.fault_n)
        if self.fault == "corrupt":
            return Faults(corrupt_response=self.fault_n)
        if self.fault == "slow":
            return Faults(delay=self.fault_n * SLOW_STEP_S)
        return None

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_move(self, step: int) -> None:
        table = self.query_one("#cards", DataTable)
        table.move_cursor(row=max(0, table.cursor_row + step))

    def action_next_fault(self) -> None:
        self.fault = FAULTS[(FAULTS.index(self.fault) + 1) % len(FAULTS)]
        self._draw_fault()

    def action_fault_n(self, step: int) -> None:
        self.fault_n = max(1, min(20, self.fault_n + step))
        self._draw_fault()

    def action_trace(self) -> None:
        self.app.push_screen(TraceScreen())

    def action_scenario(self) -> None:
        """The scenario runner: one per app, kept with its transcript while the panel is closed."""
        if not self.app.is_screen_installed(SCREEN_NAME):
            self.app.install_screen(ScenarioScreen(), SCREEN_NAME)
        self.app.push_screen(SCREEN_NAME)

    def action_tap(self) -> None:
        broker = self.tapp.runtime.broker
        if broker is None:  # a real reader: there is nothing to present a mock card to
            self.notify(self.t("tester.no_mock"), severity="warning")
            return self.app.bell()
        if not self.cards:
            return self.app.bell()
        if not broker.armed:
            self.notify(self.t("tester.not_armed"), severity="warning")
            return None
        card_id = self.cards[self.query_one("#cards", DataTable).cursor_row]["card_id"]
        clone = {"clone": "with_key", "clone_keyless": "without_key"}.get(self.fault)
        faults = self.faults()
        self.fault = "none"  # a fault is for one tap
        self.last = lambda: self.t("tester.tapping", card=card_id)
        self.retranslate()
        self._tap(card_id, faults, clone)
        return None

    @work(thread=True, group="tap", exit_on_error=False)
    def _tap(self, card_id: str, faults: Faults | None, clone: str | None) -> None:
        rt = self.tapp.runtime
        assert rt.broker is not None
        try:
            if clone is not None:
                card_id = rt.home.cards.clone(card_id, with_key=clone == "with_key").card_id
            result = rt.broker.tap(card_id, faults=faults, timeout=max(5.0, self.tapp.charge_timeout_s()),
                                   on_left=lambda: self.post_message(TapLeft(card_id)))
            self.post_message(TapDone(card_id, result, None))
        except EcnyError as exc:
            self.post_message(TapDone(card_id, None, exc))

    def on_tap_left(self, message: TapLeft) -> None:
        self.last = lambda: self.t("tester.left_field", card=message.card_id)
        self.load()

    def on_tap_done(self, message: TapDone) -> None:
        if message.error is not None:
            error = message.error
            self.last = lambda: self.tap_failed(message.card_id, error)
        else:
            result = message.result or {}
            self.last = lambda: f"{message.card_id} → {self.tapp.describe_tap(result)}"
        self.load()

    def tap_failed(self, card_id: str, exc: EcnyError) -> Text:
        """Why a tap from the panel did not reach a decision, in the current language, and what to do; the error's
        own (English) words in a second, dim line when the first line does not already say it all."""
        terminal = self.tapp.runtime.terminal_id
        if isinstance(exc, TapRefused) and exc.why in REFUSED:
            line, detail = self.t(REFUSED[exc.why], card=card_id, terminal=terminal, s=f"{exc.seconds:g}"), ""
        elif isinstance(exc, CardBusy):
            line, detail = self.t("tester.card_busy", card=card_id), ""
        else:
            line, detail = self.t("tester.tap_failed", card=card_id, terminal=terminal), str(exc)
        text = Text(line, style="bold yellow")
        if detail:
            text.append("\n" + detail, style="dim")
        return text


class TraceScreen(TerminalScreen):
    """Each command and response of the last tap in hex, with a one-line meaning."""

    KEYS: ClassVar = [("Esc", "key.back"), ("F3", "key.language")]
    BINDINGS: ClassVar = [Binding("escape,a", "back", show=False)]

    def compose(self) -> ComposeResult:
        yield Static(id="trace-title", classes="label")
        with VerticalScroll(id="trace-box"):
            yield Static(id="trace")
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        self.retranslate()
        self.query_one("#trace-box").focus()

    def retranslate(self) -> None:
        super().retranslate()
        trace = self.tapp.runtime.last_trace
        self.query_one("#trace-title", Static).update(self.t("trace.title", n=len(trace)))
        if not trace:
            self.query_one("#trace", Static).update(self.t("trace.empty"))
            return
        text = Text()
        for i, e in enumerate(trace, 1):
            text.append(f"{i:>2}. {e.meaning}", style="bold")
            text.append(f"  ({e.ms:.1f} ms)\n", style="dim")
            text.append("  > " + e.command.hex(" ").upper() + "\n", style="cyan")
            resp = e.response.hex(" ").upper() if e.response is not None else self.t("trace.no_answer")
            text.append("  < " + resp + "\n", style="green" if e.response is not None else "red")
        self.query_one("#trace", Static).update(text)

    def action_back(self) -> None:
        self.app.pop_screen()
