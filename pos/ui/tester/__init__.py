"""The tester panel (F2): mock cards, tap one on this terminal, a fault for the next tap, the APDU trace;
scenario files run (S)."""

from __future__ import annotations

from pathlib import Path

from pos.ui.tester.scenario import ScenarioScreen
from pos.ui.tester.screens import TesterScreen, TraceScreen

TESTER_TCSS = Path(__file__).with_name("tester.tcss")

__all__ = ["TESTER_TCSS", "ScenarioScreen", "TesterScreen", "TraceScreen"]
