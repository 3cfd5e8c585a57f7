"""The domain never imports Textual: only pos/ui may."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ("wallet", "wire", "nfc", "pos", "bank")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_domain_module_imports_textual() -> None:
    offenders = []
    checked = 0
    for package in DOMAIN:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "pos" / "ui"):
                continue
            checked += 1
            if any(m == "textual" or m.startswith("textual.") for m in imported_modules(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert checked > 20
    assert offenders == []


def test_the_checker_sees_textual_imports() -> None:
    assert "textual.app" in imported_modules(ROOT / "pos" / "ui" / "clerk" / "screens.py") | imported_modules(
        ROOT / "pos" / "ui" / "app.py")


def test_importing_the_domain_and_cli_does_not_load_textual() -> None:
    code = ("import sys, pos.cli.main, pos.gate.ticket_gate, pos.cards.tap_socket, pos.cli.ui_cmds, pos.runtime, "
            "pos.records; "
            "pos.cli.main.build_parser(); print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
