"""The import contract (DESIGN.md, Boundaries): which project package may import which, checked over the AST.

Every module under wallet/, wire/, nfc/ (imported as ecny_nfc), bank/ and pos/ is parsed, and every import counts,
including those inside functions; only the cycle rule counts just what runs at import time (module-level imports
outside ``if TYPE_CHECKING:``). A failure lists each offending ``file:line -> module``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"wallet": "wallet", "wire": "wire", "nfc": "ecny_nfc", "bank": "bank", "pos": "pos"}  # folder: import name
PROJECT = frozenset(FOLDERS.values())


# -- the graph -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arrow:
    """One import: ``source`` (a module) imports ``target``, taking ``names`` if a from-import."""

    source: str
    where: str  # file:line
    target: str  # the project module the name resolves to, else the name as written
    names: tuple[str, ...] = ()
    at_import_time: bool = True  # module level, not under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.where} -> {self.target}" + (f" ({', '.join(self.names)})" if self.names else "")


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to the root
    tree: ast.Module


@dataclass(frozen=True)
class Graph:
    modules: dict[str, Module]
    arrows: list[Arrow]

    def __repr__(self) -> str:
        return f"Graph({len(self.modules)} modules, {len(self.arrows)} imports)"


def scan(root: Path) -> Graph:
    modules: dict[str, Module] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1], *([] if parts[-1] == "__init__" else parts[-1:])))
            rel = str(path.relative_to(root))
            modules[name] = Module(name, rel, ast.parse(path.read_text(encoding="utf-8"), rel))
    arrows = [arrow for m in modules.values() for arrow in _arrows(m, modules)]
    return Graph(modules, sorted(arrows, key=lambda a: (a.source, int(a.where.rsplit(":", 1)[1]))))


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it runs when the module is imported."""
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, runs = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, runs
        elif isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack += [(n, False) for n in node.body] + [(n, runs) for n in node.orelse]
        else:
            deferred = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            stack += [(n, runs and not deferred) for n in ast.iter_child_nodes(node)]


def _arrows(module: Module, modules: dict[str, Module]) -> Iterator[Arrow]:
    is_package = module.path.endswith("__init__.py")
    for node, runs in _imports(module.tree):
        where = f"{module.path}:{node.lineno}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Arrow(module.name, where, alias.name, (), runs)
            continue
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.name.split(".")[: None if is_package else -1]
            base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
        taken: dict[str, list[str]] = defaultdict(list)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            taken[submodule if submodule in modules else base].append(alias.name)
        for target, names in taken.items():
            yield Arrow(module.name, where, target, tuple(names), runs)


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def top(module: str) -> str:
    return module.split(".")[0]


# -- the rules: each gives its offenders, as text ------------------------------------------------------------------
LAYERS = {"wallet": set(), "wire": {"wallet"}, "ecny_nfc": {"wallet"}, "bank": {"wallet", "wire"}}


def layer_rule(package: str) -> Callable[[Graph], list[str]]:
    """``package`` imports no project package but itself and those LAYERS allows it."""
    forbidden = PROJECT - LAYERS[package] - {package}
    return lambda g: [str(a) for a in g.arrows if top(a.source) == package and top(a.target) in forbidden]


def only_composition_and_cli_import_bank(g: Graph) -> list[str]:
    return [str(a) for a in g.arrows if top(a.source) == "pos" and top(a.target) == "bank"
            and not (a.source == "pos.composition" or within(a.source, "pos.cli"))]


def ui_imports_neither_cli_nor_bank(g: Graph) -> list[str]:
    return [str(a) for a in g.arrows
            if within(a.source, "pos.ui") and (within(a.target, "pos.cli") or top(a.target) == "bank")]


def only_the_ui_imports_textual(g: Graph) -> list[str]:
    return [str(a) for a in g.arrows if top(a.target) == "textual" and not within(a.source, "pos.ui")]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _is_ledger(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.lower().endswith("ledger")


def ledger_privates_stay_inside(g: Graph) -> list[str]:
    """No private name imported from pos.ledger, no ``._append`` and no ``ledger.conn`` outside it."""
    out = [str(a) for a in g.arrows
           if within(a.target, "pos.ledger") and not within(a.source, "pos.ledger")
           and any(_private(n) for n in (*a.names, *a.target.split(".")))]
    for m in g.modules.values():
        if within(m.name, "pos.ledger"):
            continue
        out += [f"{m.path}:{n.lineno} -> {ast.unparse(n)}" for n in ast.walk(m.tree) if isinstance(n, ast.Attribute)
                and (n.attr == "_append" or (n.attr == "conn" and _is_ledger(n.value)))]
    return sorted(out, key=lambda s: (s.split(":")[0], int(s.split(":")[1].split()[0])))


def import_cycles(g: Graph) -> list[str]:
    """Each strongly connected component of the import-time module graph, with the arrows inside it."""
    edges = {m: {a.target for a in g.arrows if a.source == m and a.at_import_time and a.target in g.modules} - {m}
             for m in g.modules}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += edges[m]
        return seen

    reach = {m: reachable(m) for m in edges}
    components = {frozenset({m} | {n for n in reach[m] if m in reach[n]}) for m in edges}
    return [f"cycle {' <-> '.join(sorted(c))}: " + "; ".join(
        str(a) for a in g.arrows if a.at_import_time and a.source in c and a.target in c)
        for c in sorted(components, key=sorted) if len(c) > 1]


RULES: dict[str, Callable[[Graph], list[str]]] = {
    "wallet imports no other project package": layer_rule("wallet"),
    "wire imports only wallet": layer_rule("wire"),
    "ecny_nfc imports only wallet": layer_rule("ecny_nfc"),
    "bank imports only wallet and wire": layer_rule("bank"),
    "only pos.composition and pos.cli import bank": only_composition_and_cli_import_bank,
    "pos.ui imports neither pos.cli nor bank": ui_imports_neither_cli_nor_bank,
    "only pos.ui imports textual": only_the_ui_imports_textual,
    "nothing outside pos.ledger touches its private names, ._append or ledger.conn": ledger_privates_stay_inside,
    "no import cycles": import_cycles,
}


# The project's import graph is scanned once: the tests that read it run in one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("import-graph")


@pytest.fixture(scope="module")
def graph() -> Graph:
    return scan(ROOT)


def check(graph: Graph, rule: str) -> None:
    offenders = RULES[rule](graph)
    assert not offenders, f"{rule}, broken by:\n  " + "\n  ".join(offenders)


# -- the contract over the project ---------------------------------------------------------------------------------
def test_wallet_imports_no_other_project_package(graph: Graph) -> None:
    check(graph, "wallet imports no other project package")


def test_wire_imports_only_wallet(graph: Graph) -> None:
    check(graph, "wire imports only wallet")


def test_ecny_nfc_imports_only_wallet(graph: Graph) -> None:
    check(graph, "ecny_nfc imports only wallet")


def test_bank_imports_only_wallet_and_wire(graph: Graph) -> None:
    check(graph, "bank imports only wallet and wire")


def test_only_the_composition_root_and_the_cli_import_bank(graph: Graph) -> None:
    check(graph, "only pos.composition and pos.cli import bank")


def test_the_ui_imports_neither_the_cli_nor_bank(graph: Graph) -> None:
    check(graph, "pos.ui imports neither pos.cli nor bank")


def test_only_the_ui_imports_textual(graph: Graph) -> None:
    check(graph, "only pos.ui imports textual")


def test_nothing_outside_the_ledger_touches_its_privates(graph: Graph) -> None:
    check(graph, "nothing outside pos.ledger touches its private names, ._append or ledger.conn")


def test_no_import_cycles(graph: Graph) -> None:
    check(graph, "no import cycles")


def test_the_scan_covers_every_package_and_imports_inside_functions(graph: Graph) -> None:
    assert {top(m) for m in graph.modules} == PROJECT
    assert len(graph.modules) > 60
    assert graph.modules["ecny_nfc.reader"].path == "nfc/reader.py"
    deferred = [a for a in graph.arrows if not a.at_import_time]
    assert any(a.source == "pos.cli.main" and a.target == "pos.cards.manage" for a in deferred)
    assert any(a.source == "pos.ui.app" and top(a.target) == "textual" and a.at_import_time for a in graph.arrows)


# -- the checker sees each kind of bad arrow -------------------------------------------------------------------------
BAD_TREE = {
    "wallet/__init__.py": "",
    "wallet/card.py": "import hashlib\n\ndef f():\n    import pos.home\n",
    "wire/signing.py": "from wallet import card\nfrom bank import service\n",
    "nfc/reader.py": "import nfc.clf\nfrom wallet.card import f\nfrom pos.money import fen\n",
    "bank/service.py": "from wire import signing\nfrom pos.home import Home\n\ndef g():\n    import ecny_nfc.reader\n",
    "pos/composition.py": "from bank.service import Service\n",
    "pos/cli/main.py": "import bank.service\n",
    "pos/sync/client.py": "from bank import service\n",
    "pos/ui/base.py": "from textual.app import App\nfrom . import tester\n\ndef h():\n    from pos.cli.main import x\n",
    "pos/ui/tester.py": "from pos.ui.base import App\n",
    "pos/records.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pos.money import fen\n"
                      "def r():\n    from textual.widgets import Static\n",
    "pos/money.py": "from pos.records import r\n",
    "pos/a.py": "import pos.b\n",
    "pos/b.py": "def f():\n    import pos.a\n",
    "pos/ledger/store.py": "class Ledger:\n    def f(self):\n        self.conn.execute()\n        self._append(1)\n",
    "pos/payment/session.py": "from pos.ledger.store import Ledger, _Row\n\ndef pay(ledger, ctx):\n"
                              "    ledger._append(1)\n    ctx.ledger.conn.execute()\n    ctx.reader.conn.send()\n",
}
BAD_ARROWS = {
    "wallet imports no other project package": ["wallet/card.py:4 -> pos.home"],
    "wire imports only wallet": ["wire/signing.py:2 -> bank.service (service)"],
    "ecny_nfc imports only wallet": ["nfc/reader.py:3 -> pos.money (fen)"],
    "bank imports only wallet and wire": ["bank/service.py:2 -> pos.home (Home)",
                                          "bank/service.py:5 -> ecny_nfc.reader"],
    "only pos.composition and pos.cli import bank": ["pos/sync/client.py:1 -> bank.service (service)"],
    "pos.ui imports neither pos.cli nor bank": ["pos/ui/base.py:5 -> pos.cli.main (x)"],
    "only pos.ui imports textual": ["pos/records.py:5 -> textual.widgets (Static)"],
    "nothing outside pos.ledger touches its private names, ._append or ledger.conn": [
        "pos/payment/session.py:1 -> pos.ledger.store (Ledger, _Row)", "pos/payment/session.py:4 -> ledger._append",
        "pos/payment/session.py:5 -> ctx.ledger.conn"],
    "no import cycles": ["cycle bank.service <-> wire.signing: bank/service.py:1 -> wire.signing (signing); "
                         "wire/signing.py:2 -> bank.service (service)",
                         "cycle pos.ui.base <-> pos.ui.tester: pos/ui/base.py:2 -> pos.ui.tester (tester); "
                         "pos/ui/tester.py:1 -> pos.ui.base (App)"],
}


def test_every_rule_has_a_bad_arrow() -> None:
    assert BAD_ARROWS.keys() == RULES.keys()


@pytest.mark.parametrize("rule", list(RULES))
def test_the_checker_sees_a_bad_arrow(tmp_path: Path, rule: str) -> None:
    for name, text in BAD_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert RULES[rule](scan(tmp_path)) == BAD_ARROWS[rule]


# -- at run time -----------------------------------------------------------------------------------------------------
def test_importing_the_domain_and_cli_does_not_load_textual() -> None:
    code = ("import sys, pos.cli.main, pos.gate.ticket_gate, pos.cards.tap_socket, pos.cli.ui_cmds, pos.runtime, "
            "pos.records; "
            "pos.cli.main.build_parser(); print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
