"""Reading a scenario file: YAML that keeps the line of every key, and errors that name the file, line and key path.

Decimals stay exact (``12.30`` is ``Decimal("12.30")``, never a float) and times stay text (the scenario parses
them, a time without an offset being China time), so what the tester wrote is what runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from wallet.errors import InvalidInput

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class ScenarioFileError(InvalidInput):
    """A scenario file cannot be read or does not follow the schema (exit status 2); ``problems`` lists each as
    ``FILE:LINE: key.path: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class MarkedDict(dict[str, Any]):
    """A mapping that remembers the line (1-based) of itself and of each of its keys."""

    line: int = 0
    lines: dict[Any, int]


class MarkedList(list[Any]):
    """A sequence that remembers the line of itself and of each item."""

    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {  # times stay text: the scenario gives them a zone
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader: _Loader, node: yaml.MappingNode) -> MarkedDict:
    out = MarkedDict()
    out.line = node.start_mark.line + 1
    out.lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int):
            raise yaml.constructor.ConstructorError(None, None, "keys must be names", key_node.start_mark)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[str(key)] = loader.construct_object(value_node, deep=True)
        out.lines[str(key)] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


def _decimal(loader: _Loader, node: yaml.ScalarNode) -> Decimal | float:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        return float(loader.construct_yaml_float(node))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)
_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)


def load_yaml(path: Path) -> Any:
    """Parse ``path``; raises :class:`ScenarioFileError` with the line of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError([f"{path}: cannot read: {exc}"]) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = getattr(exc, "problem", None) or str(exc)
        return _raise([f"{where}: {what}"])


def _raise(problems: list[str]) -> Any:
    raise ScenarioFileError(problems)


def key_path(loc: Sequence[Any]) -> str:
    """``("steps", 3, "pay", "amount")`` as ``steps[3].pay.amount``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def line_of(data: Any, loc: Sequence[Any]) -> int:
    """The line of the deepest part of ``loc`` found in ``data`` (a missing key: its mapping's line)."""
    line = getattr(data, "line", 1)
    node = data
    for part in loc:
        if isinstance(node, MarkedDict) and isinstance(part, str) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, MarkedList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line
