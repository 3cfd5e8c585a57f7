"""The clerk's counter app: amount or cart, charge, tap, approved/declined, receipts, history, sync, report."""

from __future__ import annotations

from pos.ui.clerk.app import ClerkApp
from pos.ui.clerk.screens import ChargeScreen, CounterScreen, ResultScreen

__all__ = ["ChargeScreen", "ClerkApp", "CounterScreen", "ResultScreen"]
