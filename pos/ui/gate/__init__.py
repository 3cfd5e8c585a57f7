"""The ticket gate app: pick the product, tap to pay and enter; a full-screen OPEN / STOP readable from a metre away."""

from __future__ import annotations

from pos.ui.gate.app import GateApp
from pos.ui.gate.screens import GateResultScreen, GateScreen

__all__ = ["GateApp", "GateResultScreen", "GateScreen"]
