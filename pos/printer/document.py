"""A printable document: lines with an alignment, a double size for the total, a QR code of the voucher id.

The same document is shown on screen and written to a file as plain text (:meth:`Document.text`) and sent to a
receipt printer as ESC/POS (:func:`pos.printer.escpos.encode`), so what the clerk sees is what the customer gets.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

WIDTH = 40  # characters (cells) per line on an 80 mm printer's font B / a 58 mm printer's font A with 2 spare


def cells(text: str) -> int:
    """Terminal/printer cells of ``text``: Chinese (wide) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """``text`` cut into lines of at most ``width`` cells, at a space when there is one (never losing a word)."""
    lines, cur = [], ""
    for c in text:
        if cells(cur + c) > width:
            head, space, tail = cur.rpartition(" ")
            if space and head.strip():
                lines.append(head)
                cur = tail
            else:
                lines.append(cur)
                cur = ""
            if c == " " and not cur:
                continue
        cur += c
    return [*lines, cur]


def row(label: str, value: str, width: int = WIDTH) -> list[str]:
    """A label on the left and its value on the right; on two lines when both do not fit on one."""
    gap = width - cells(label) - cells(value)
    if gap >= 1:
        return [label + " " * gap + value]
    return [*wrap(label, width), *(" " * max(0, width - cells(v)) + v for v in wrap(value, width))]


@dataclass(frozen=True)
class Line:
    """One printed line. ``big``: double width and height (the total); ``qr``: a QR code of this payload."""

    text: str = ""
    align: str = "left"  # left | center | right
    big: bool = False
    bold: bool = False
    qr: str | None = None


@dataclass
class Document:
    """A receipt, slip or report: its lines, then a paper cut."""

    lines: list[Line] = field(default_factory=list)
    width: int = WIDTH

    def add(self, text: str = "", indent: int = 0, **style: object) -> None:
        """``text`` on as many lines as it takes (``indent`` spaces before each)."""
        width = (self.width // 2 if style.get("big") else self.width) - indent
        for part in wrap(text, width):
            self.lines.append(Line(" " * indent + part, **style))  # type: ignore[arg-type]

    def pair(self, label: str, value: str, bold: bool = False) -> None:
        for part in row(label, value, self.width):
            self.lines.append(Line(part, bold=bold))

    def rule(self) -> None:
        self.lines.append(Line("-" * self.width))

    def text(self) -> str:
        """The document as plain text, ``width`` cells wide (a QR code shows as its payload)."""
        out = []
        for ln in self.lines:
            t = ln.qr if ln.qr is not None else ln.text
            pad = self.width - cells(t)
            if ln.align == "center":
                t = " " * (pad // 2) + t
            elif ln.align == "right":
                t = " " * pad + t
            out.append(t.rstrip())
        return "\n".join(out)
