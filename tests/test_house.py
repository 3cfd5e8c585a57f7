"""House rules that keep the code easy to find and change: small modules, each saying what it owns."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wallet", "wire", "nfc", "bank", "pos")
MAX_LINES = 400
REASON = "Longer than 400 lines because"


def production_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_module_is_over_400_lines_without_a_reason_at_its_top() -> None:
    too_long = []
    for path in production_modules():
        lines = path.read_text(encoding="utf-8").count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > MAX_LINES and REASON not in doc:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert too_long == [], f"split these, or say why at the top ('{REASON} ...'): {too_long}"


def test_every_module_and_package_says_what_it_owns() -> None:
    missing = [str(p.relative_to(ROOT)) for p in production_modules()
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
               and p.read_text(encoding="utf-8").strip()]
    assert missing == []
