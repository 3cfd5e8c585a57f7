"""History (filter, search, open, refund), receipts (printable to a text file) and the end-of-day report."""

from __future__ import annotations

from pathlib import Path

from pos.ui.history.report import ReportScreen
from pos.ui.history.screens import HistoryScreen, ReceiptScreen, RefundScreen

HISTORY_TCSS = Path(__file__).with_name("history.tcss")

__all__ = ["HISTORY_TCSS", "HistoryScreen", "ReceiptScreen", "RefundScreen", "ReportScreen"]
