"""``pos scenario run|check|list``: scenario files on a virtual clock (see docs/scenarios.md).

Exit status of ``run``: 0 every expectation held, 1 one failed (all are reported), 2 a file is bad (nothing runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pos.cli.main import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands, emit
from pos.home import Home
from pos.scenario import SHIPPED, Scenario, ScenarioFileError, StepResult, parse_scenario, run_scenario, shipped
from pos.scenario.report import step_lines, summary_line, to_json, write_junit
from wallet.errors import InvalidInput


def _parse_all(args: argparse.Namespace) -> tuple[list[Scenario], list[str]]:
    scenarios, problems = [], []
    for name in args.files:
        try:
            scenarios.append(parse_scenario(Path(name)))
        except ScenarioFileError as exc:
            problems += exc.problems
    return scenarios, problems


def _bad_files(args: argparse.Namespace, problems: list[str]) -> int:
    if args.json:
        print(json.dumps({"error": problems[0], "problems": problems}, ensure_ascii=False))
    for p in problems:
        print(f"pos: error: {p}", file=sys.stderr)
    return EXIT_USAGE


def cmd_scenario_check(args: argparse.Namespace, home: Home) -> int:
    scenarios, problems = _parse_all(args)
    if problems:
        return _bad_files(args, problems)
    emit(args, {"ok": True, "scenarios": [{"file": str(s.path), "name": s.name, "steps": len(s.steps)}
                                          for s in scenarios]},
         "\n".join(f"ok {s.path}: {s.name} ({len(s.steps)} steps)" for s in scenarios))
    return EXIT_OK


def cmd_scenario_run(args: argparse.Namespace, home: Home) -> int:
    scenarios, problems = _parse_all(args)
    if problems:
        return _bad_files(args, problems)
    base = Path(args.home) if args.home else None
    if base is not None and base.exists() and not base.is_dir():
        raise InvalidInput(f"--home {base} is not a directory")

    def show(res: StepResult) -> None:
        if not args.json:
            print("\n".join(step_lines(res)), flush=True)

    results = []
    for sc in scenarios:
        where = None if base is None else base if len(scenarios) == 1 else base / sc.path.stem
        if not args.json:
            print(f"== {sc.name} ({sc.path})")
        results.append(run_scenario(sc, where, show))
        if not args.json:
            print(summary_line(results[-1]))
    if args.junit:
        write_junit(results, Path(args.junit))
    ok = all(r.ok for r in results)
    data: dict[str, Any] = {"ok": ok, "scenarios": [to_json(r) for r in results]}
    if args.json:
        print(json.dumps(data, ensure_ascii=False, default=str))
    elif len(results) > 1:
        print(f"{sum(r.ok for r in results)} of {len(results)} scenarios passed")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_scenario_list(args: argparse.Namespace, home: Home) -> int:
    rows = []
    for path in shipped():
        try:
            sc = parse_scenario(path)
            rows.append({"file": str(path), "name": sc.name, "description": sc.header.description})
        except ScenarioFileError as exc:
            rows.append({"file": str(path), "name": path.stem, "description": f"(bad file: {exc.problems[0]})"})
    emit(args, {"directory": str(SHIPPED), "scenarios": rows},
         "\n".join(f"{Path(r['file']).name:<28} {r['description'] or r['name']}" for r in rows)
         or f"no scenarios in {SHIPPED}")
    return EXIT_OK


def register(commands: Commands) -> None:
    """Add ``scenario run``, ``scenario check`` and ``scenario list``."""
    group = "scenario"
    commands.group(group, "scenario files: a day at the shop on a virtual clock")
    p = commands.add("run", cmd_scenario_run, "run scenario files (exit 0 all pass, 1 a failure, 2 a bad file)",
                     group=group)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML for CI")
    p = commands.add("check", cmd_scenario_check, "validate scenario files without running them", group=group)
    p.add_argument("files", nargs="+", metavar="FILE")
    commands.add("list", cmd_scenario_list, "the scenarios shipped in scenarios/", group=group)
