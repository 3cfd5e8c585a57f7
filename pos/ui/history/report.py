"""The end-of-day report screen: the printable report, then the operator's reconciliation, said in the clerk's
language (a payment not uploaded yet is pending, not a mismatch)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from pos.gate.online_tickets import day_summary as online_day_summary
from pos.money import format_fen
from pos.printer import Document, day_report_doc
from pos.records import day_report
from pos.sync import clockskew
from pos.ui.app import TerminalScreen, error_text
from pos.ui.history.printing import print_document
from pos.ui.history.screens import shop_of
from pos.ui.widgets import KeyBar, StatusBar
from wallet.errors import EcnyError


class ReconcileDone(Message):
    def __init__(self, result: dict[str, Any] | None, error: str | None) -> None:
        super().__init__()
        self.result = result
        self.error = error


def waiting_for_sync(difference: dict[str, Any]) -> bool:
    """A reconciliation difference that the next sync resolves: a payment still pending here (not uploaded yet, or
    settled by the operator and not recorded here yet)."""
    return difference.get("field") == "status" and difference.get("terminal") == "pending"


def difference_text(app: Any, d: dict[str, Any]) -> str:
    """One reconciliation difference in the clerk's language: which payment or refund, here and at the operator."""
    def status(label: Any) -> str:
        return str(app.t(f"status.{label}")) if label in ("pending", "settled", "rejected", "missing") else str(label)

    def money(fen: Any) -> str:
        return format_fen(int(fen)) if fen is not None else str(app.t("status.missing"))

    field = d.get("field")
    if field == "status" and d.get("voucher_id") is None:
        return str(app.t("report.diff_unparsed"))
    what = str(d.get("voucher_id") or d.get("refund_id") or "?")
    if field == "amount_fen":
        return str(app.t("report.diff_amount", id=what, here=money(d.get("terminal")), there=money(d.get("operator"))))
    if field == "refund":
        return str(app.t("report.diff_refund", id=what, here=money(d.get("terminal")), there=money(d.get("operator"))))
    return str(app.t("report.diff_status", id=what, here=status(d.get("terminal")), there=status(d.get("operator"))))


class ReportScreen(TerminalScreen):
    """End of day: totals net of refunds, the charges that took no money, torn taps and sales by item (the printable
    report, P prints it), then the operator's reconciliation when it answers. Payments not
    uploaded yet are said as such ("3 payments not uploaded yet: F5 syncs now"), not as a mismatch; after a sync the
    report and the reconciliation are read again."""

    KEYS: ClassVar = [("P", "key.print_paper"), ("Esc", "key.back"), ("F5", "key.sync"), ("F1", "key.help"),
                      ("F3", "key.language")]
    BINDINGS: ClassVar = [Binding("escape,enter", "back", show=False), Binding("p", "print", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.report: dict[str, Any] = {}
        self.reconciliation: dict[str, Any] | None = None
        self.reconcile_error: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="report")
        yield StatusBar()
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        rt = self.tapp.runtime
        ahead = rt.home.clock_ahead_ms(rt.terminal_id)  # the business day, as the operator counts it
        day = clockskew.today(ahead, self.tapp.now())
        with rt.home.ledger(rt.terminal_id) as ledger:
            self.report = day_report(ledger, day, rt.home.terminal_dir(rt.terminal_id), ahead)
        self.report.update(online_day_summary(rt.home, rt.terminal_id, day))  # a gate's online tickets used
        self.retranslate()
        self._reconcile(day.isoformat())

    def synced(self) -> None:
        self.reconciliation, self.reconcile_error = None, None
        self.ready()

    @work(thread=True, group="reconcile", exit_on_error=False)
    def _reconcile(self, day: str) -> None:
        try:
            self.post_message(ReconcileDone(self.tapp.services.reconcile(day), None))
        except EcnyError as exc:
            self.post_message(ReconcileDone(None, error_text(self.tapp, exc)))

    def on_reconcile_done(self, message: ReconcileDone) -> None:
        self.reconciliation = message.result
        self.reconcile_error = message.error
        self.retranslate()

    def retranslate(self) -> None:
        super().retranslate()
        r = self.report
        if not r:
            return
        text = Text(self.doc().text() + "\n\n")
        text.append(self.t("label", label=self.t("report.reconciliation")), style="bold")
        pending = r["by_status"]["pending"]["count"]
        if self.reconciliation is not None:
            rec = self.reconciliation
            diffs = rec.get("differences") or []
            real = [d for d in diffs if not waiting_for_sync(d)]
            if rec.get("matches", rec.get("ok")):
                text.append(self.t("report.matched") + "\n", style="green")
            elif real:
                text.append(self.t("report.mismatch") + "\n", style="red")
            else:
                text.append(self.t("report.after_sync") + "\n", style="yellow")
            op = rec.get("operator") or {}
            if "count" in op:
                text.append(f"  {self.t('label', label=self.t('report.operator'))}{op['count']}  "
                            f"{format_fen(int(op.get('total_fen', 0)))}\n")
            for d in real[:8]:
                text.append(f"  {difference_text(self.tapp, d)}\n", style="yellow")
        else:
            text.append((self.reconcile_error or self.t("report.waiting")) + "\n")
        if pending:
            note = self.t("report.not_uploaded_one") if pending == 1 else self.t("report.not_uploaded", n=pending)
            text.append(f"  {note}\n", style="bold yellow")
        self.query_one("#report", Static).update(text)

    def action_back(self) -> None:
        self.app.pop_screen()

    def doc(self) -> Document:
        return day_report_doc(self.report, shop_of(self.tapp), self.tapp.lang, self.tapp.now())

    def action_print(self) -> None:
        """P: the report on paper (when a printer is set) and in HOME/reports/TERMINAL-DAY.txt."""
        if not self.report:
            return self.app.bell()
        rt = self.tapp.runtime
        print_document(self.tapp, self.doc(), rt.home.root / "reports" / f"{rt.terminal_id}-{self.report['day']}.txt",
                       saved_key="report.printed_file")
