"""Scenario files: a shop's day written down in YAML (cards, taps, faults, clock jumps, syncs, expectations) and run
again on a virtual clock, in a fresh home, through the same APIs as the ``pos`` commands (``pos scenario run``)."""

from __future__ import annotations

from pathlib import Path

from pos.scenario.loader import ScenarioFileError
from pos.scenario.runner import ScenarioResult, StepResult, run_scenario
from pos.scenario.schema import Scenario, parse_scenario

SHIPPED = Path(__file__).resolve().parent.parent.parent / "scenarios"  # the scenarios/ folder of the project

__all__ = ["SHIPPED", "Scenario", "ScenarioFileError", "ScenarioResult", "StepResult", "parse_scenario",
           "run_scenario", "shipped"]


def shipped() -> list[Path]:
    """The scenario files that ship with the project."""
    return sorted(SHIPPED.glob("*.yaml")) if SHIPPED.is_dir() else []
