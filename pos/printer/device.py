"""The receipt printer: a serial ESC/POS printer through pyserial (``tty:DEVICE[:BAUD]``) or a file (``file:PATH``,
e.g. a USB printer's /dev/usb/lp0, or a plain file to look at).

Printing never holds up a sale: the sale is approved and recorded before a :class:`PrintJob` starts, the job runs in
its own thread, every read and write on the port has a timeout and the whole job a deadline, and what went wrong
comes back as a :class:`PrinterError` with an i18n key (missing, unplugged, out of paper, not answering, too slow).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import serial  # type: ignore[import-untyped]

from pos.printer import escpos
from pos.printer.document import Document
from wallet.errors import EcnyError, InvalidInput
from wallet.files import write_atomic

try:
    from termios import error as _TermiosError  # pyserial's flush/drain on POSIX
except ImportError:  # pragma: no cover - Windows
    _TermiosError = OSError  # type: ignore[assignment,misc]

PORT_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, _TermiosError)
OPEN_ERRORS: tuple[type[Exception], ...] = (*PORT_ERRORS, ValueError)
DEFAULT_BAUD = 9600
CHUNK = 256


class PrinterError(EcnyError):
    """Printing failed; ``key`` and ``fields`` say why in words (pos.i18n ``printer.<key>``)."""

    def __init__(self, key: str, detail: str = "", **fields: str) -> None:
        super().__init__(f"printer {key}: {detail}" if detail else f"printer {key}")
        self.key = key
        self.fields = fields


@dataclass(frozen=True)
class Target:
    kind: str  # tty | file
    path: str
    baud: int = DEFAULT_BAUD

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" + (f":{self.baud}" if self.kind == "tty" else "")


def parse_target(text: str) -> Target:
    """``tty:/dev/ttyUSB0[:BAUD]`` or ``file:PATH``; anything else is :class:`InvalidInput`."""
    kind, _, rest = text.partition(":")
    if kind == "file" and rest:
        return Target("file", rest)
    if kind == "tty" and rest:
        path, _, baud = rest.partition(":")
        if baud and not (baud.isdigit() and 300 <= int(baud) <= 921600):
            raise InvalidInput(f"printer {text!r}: the baud rate must be a number from 300 to 921600")
        return Target("tty", path, int(baud) if baud else DEFAULT_BAUD)
    raise InvalidInput(f"printer {text!r}: write tty:/dev/ttyUSB0[:BAUD] or file:PATH")


class Printer(Protocol):
    target: Target

    def print(self, doc: Document) -> None: ...


@dataclass
class FilePrinter:
    """Appends each document's ESC/POS bytes to a file."""

    target: Target

    def print(self, doc: Document) -> None:
        try:
            with open(self.target.path, "ab") as f:
                f.write(escpos.encode(doc))
        except FileNotFoundError as exc:
            raise PrinterError("missing", str(exc), target=str(self.target)) from None
        except OSError as exc:
            raise PrinterError("failed", str(exc), target=str(self.target), error=exc.strerror or str(exc)) from None


@dataclass
class SerialPrinter:
    """An ESC/POS printer on a serial port: asks the paper sensor first (DLE EOT 4), then sends the document in
    chunks, each write bounded by ``io_timeout`` and the whole job by ``deadline`` seconds."""

    target: Target
    io_timeout: float = 2.0
    deadline: float = 10.0
    clock: Callable[[], float] = time.monotonic
    opener: Callable[..., Any] = field(default=serial.Serial, repr=False)

    def print(self, doc: Document) -> None:
        data = escpos.encode(doc)
        where = str(self.target)
        try:
            port = self.opener(self.target.path, self.target.baud, timeout=self.io_timeout,
                               write_timeout=self.io_timeout)
        except OPEN_ERRORS as exc:
            raise PrinterError("missing", str(exc), target=where) from None
        try:
            end = self.clock() + self.deadline
            port.reset_input_buffer()
            port.write(escpos.STATUS_PAPER)
            port.flush()
            answer = port.read(1)
            if not answer:
                raise PrinterError("no_answer", target=where)
            if escpos.paper_out(answer[0]):
                raise PrinterError("paper_out", target=where)
            for i in range(0, len(data), CHUNK):
                if self.clock() > end:
                    raise PrinterError("timeout", target=where, s=f"{self.deadline:g}")
                port.write(data[i:i + CHUNK])
                port.flush()
        except serial.SerialTimeoutException:
            raise PrinterError("timeout", target=where, s=f"{self.deadline:g}") from None
        except PORT_ERRORS as exc:
            raise PrinterError("unplugged", str(exc), target=where) from None
        finally:
            with contextlib.suppress(*PORT_ERRORS):
                port.close()


def open_printer(spec: str | None, **options: Any) -> Printer | None:
    """The printer ``spec`` names (``--printer`` or merchants.yaml ``printer:``); None when there is none."""
    if not spec:
        return None
    target = parse_target(spec)
    if target.kind == "file":
        return FilePrinter(target)
    return SerialPrinter(target, **options)


class PrintJob:
    """One document printing in a daemon thread; ``done(None)`` when printed, ``done(PrinterError)`` when not. The
    caller never waits: :meth:`wait` is for tests and for a command that prints and exits."""

    def __init__(self, printer: Printer, doc: Document, done: Callable[[PrinterError | None], None]) -> None:
        self.printer = printer
        self.doc = doc
        self._done = done
        self.error: PrinterError | None = None
        self._thread = threading.Thread(target=self._run, name="printer", daemon=True)

    def start(self) -> PrintJob:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.printer.print(self.doc)
        except PrinterError as exc:
            self.error = exc
        except Exception as exc:
            self.error = PrinterError("failed", repr(exc), target=str(self.printer.target), error=str(exc))
        self._done(self.error)

    def wait(self, timeout: float) -> bool:
        """Whether the job finished within ``timeout`` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def save_text(path: Path, doc: Document) -> Path:
    """Write the document as plain text (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (doc.text() + "\n").encode(), mode=0o644)
    return path
