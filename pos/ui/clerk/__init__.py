"""The clerk's counter app: amount or cart, charge, tap, approved/declined, receipts, history, sync, report."""

from __future__ import annotations

from pos.ui.clerk.app import ClerkApp
from pos.ui.clerk.charge import ChargePanel
from pos.ui.clerk.entry import EntryPanel
from pos.ui.clerk.result import ResultPanel
from pos.ui.clerk.screens import CounterScreen
from pos.ui.quit import QuitScreen

__all__ = ["ChargePanel", "ClerkApp", "CounterScreen", "EntryPanel", "QuitScreen", "ResultPanel"]
