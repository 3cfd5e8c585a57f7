"""The clerk's counter app: amount or cart, charge, tap, approved/declined, receipts, history, sync, report."""

from __future__ import annotations

from pos.ui.clerk.app import ClerkApp
from pos.ui.clerk.charge import ChargeScreen, QuitScreen, ResultScreen
from pos.ui.clerk.screens import CounterScreen

__all__ = ["ChargeScreen", "ClerkApp", "CounterScreen", "QuitScreen", "ResultScreen"]
