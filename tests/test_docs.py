"""The README and docs/ stay true to the code: length, links, the `pos` commands and the two scripts."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pos.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
MAX_README_LINES = 180

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parser_commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every leaf command of the `pos` parser, e.g. "pay", "card issue", "operator serve"."""
    for name, sub in _subparsers(parser or build_parser()).items():
        if _subparsers(sub):
            yield from parser_commands(sub, (*prefix, name))
        else:
            yield " ".join((*prefix, name))


def named_commands(text: str) -> list[tuple[str, str | None]]:
    """Each `pos ...` invocation in code (spans and fenced blocks), matched against the parser's tree: the mention
    and the command it names, or None when it names none."""
    snippets = [m.group(1) for m in CODE_SPAN.finditer(FENCE.sub("", text))]
    for block in FENCE.findall(text):
        snippets += block.splitlines()
    root = build_parser()
    out: list[tuple[str, str | None]] = []
    for snippet in snippets:
        for m in re.finditer(r"(?:^|[\s(&;|])pos((?: [a-z][a-z-]*\b)+)", snippet):
            words = m.group(1).split()
            parser, path = root, []
            for word in words:
                subs = _subparsers(parser)
                if not subs:
                    break
                if word not in subs:
                    path = []
                    break
                parser = subs[word]
                path.append(word)
            out.append((m.group(0).strip(), " ".join(path) if path and not _subparsers(parser) else None))
    return out


def readme_command_table() -> set[str]:
    """The first column of the README's command table: `pos X [Y]` cells."""
    cells = re.findall(r"^\| `pos ([a-z][a-z -]*)` \|", README.read_text(encoding="utf-8"), re.MULTILINE)
    return {c.strip() for c in cells}


def test_parser_walk_finds_every_kind_of_command() -> None:
    commands = set(parser_commands())
    assert {"merchants", "pay", "card issue", "card tap", "card present", "ledger verify", "operator serve",
            "terminal provision", "run", "gate"} <= commands
    assert "card" not in commands  # groups are not commands


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, at most {MAX_README_LINES}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(FENCE.sub("", text)) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    broken = []
    for target in targets:
        file_part = target.split("#", 1)[0]
        if file_part and not (path.parent / file_part).resolve().is_file():
            broken.append(target)
    assert broken == [], f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_docs_exist_and_readme_links_them() -> None:
    expected = {"cli.md", "ui.md", "protocol.md", "operator.md", "architecture.md", "benchmarks.md"}
    assert expected <= {p.name for p in DOCS.glob("*.md")}
    readme_links = set(LINK.findall(README.read_text(encoding="utf-8")))
    assert {f"docs/{name}" for name in expected} <= readme_links


def test_every_parser_command_is_documented() -> None:
    documented = {cmd for _, cmd in named_commands(CLI_DOC.read_text(encoding="utf-8")) if cmd}
    missing = sorted(set(parser_commands()) - documented)
    assert missing == [], f"docs/cli.md does not describe: {missing}"


def test_every_parser_command_is_in_the_readme_table() -> None:
    table = readme_command_table()
    missing = sorted(set(parser_commands()) - table)
    assert missing == [], f"README.md's command table lacks: {missing}"
    unknown = sorted(table - set(parser_commands()))
    assert unknown == [], f"README.md's command table names commands the parser lacks: {unknown}"


@pytest.mark.parametrize("path", [README, CLI_DOC], ids=lambda p: p.name)
def test_every_command_named_exists(path: Path) -> None:
    named = named_commands(path.read_text(encoding="utf-8"))
    assert named, f"{path.name} names no pos command"
    unknown = sorted({mention for mention, cmd in named if cmd is None})
    assert unknown == [], f"{path.name} names commands the parser lacks: {unknown}"


def test_the_checker_catches_a_command_the_parser_lacks() -> None:
    named = dict(named_commands("run `pos card frobnicate c0001`, then `pos ledger list --terminal X`"))
    assert named == {"pos card frobnicate": None, "pos ledger list": "ledger list"}


def test_readme_two_commands_are_the_scripts() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    block = FENCE.findall(section)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()[1:-1] if line.strip()]
    assert commands == ["./scripts/run", "./scripts/test"]
    for command in commands:
        script = ROOT / command
        assert script.is_file(), f"{command} is missing"
        assert script.stat().st_mode & 0o111, f"{command} is not executable"
