"""The receipt printer over a serial line: the ESC/POS stream a printer receives (read from a pseudo-terminal's
master side while the printer writes to its slave through pyserial), and a printer that is missing, unplugged
mid-print or out of paper, which fails with a clear reason in its own thread."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import pytest

from pos.printer import Document, Line, PrinterError, PrintJob, escpos, open_printer, parse_target
from pos.printer.device import SerialPrinter, Target
from wallet.errors import InvalidInput

VOUCHER = "0991295563385308-00000001"
STATUS_OK = 0x12  # DLE EOT 4 answer: the fixed bits only, paper present
STATUS_PAPER_OUT = 0x12 | 0x60


def sample() -> Document:
    doc = Document()
    doc.add("中国移动苏州观前营业厅", align="center", bold=True)
    doc.pair("金额", "¥99,999,999.99")
    doc.add("¥2.00", align="right", big=True)
    doc.lines.append(Line(align="center", qr=VOUCHER))
    return doc


def decode(stream: bytes) -> list[tuple[str, object]]:
    """An independent reading of an ESC/POS stream: the commands and the GB18030 text lines, in order."""
    out: list[tuple[str, object]] = []
    i, text = 0, bytearray()
    while i < len(stream):
        b = stream[i]
        if b == 0x0A:
            out.append(("text", text.decode("gb18030")))
            text.clear()
            i += 1
        elif stream[i:i + 2] == b"\x1b@":
            out.append(("init", None))
            i += 2
        elif stream[i:i + 2] == b"\x1c&":
            out.append(("chinese", None))
            i += 2
        elif stream[i:i + 2] in (b"\x1ba", b"\x1bE"):
            out.append(({b"a": "align", b"E": "bold"}[stream[i + 1:i + 2]], stream[i + 2]))
            i += 3
        elif stream[i:i + 2] == b"\x1d!":
            out.append(("size", stream[i + 2]))
            i += 3
        elif stream[i:i + 3] == b"\x1d(k":
            n = stream[i + 3] + 256 * stream[i + 4]
            body = stream[i + 5:i + 5 + n]
            if body[:3] == b"1P0":
                out.append(("qr", body[3:].decode("ascii")))
            elif body[:3] == b"1Q0":
                out.append(("qr_print", None))
            i += 5 + n
        elif stream[i:i + 2] == b"\x1dV":
            out.append(("cut", stream[i + 2]))
            i += 4
        else:
            text.append(b)
            i += 1
    return out


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()  # the test keeps the slave open: the master's reads wait for the printer's bytes
    yield master, os.ttyname(slave)  # the printer opens the slave by path, as it would /dev/ttyUSB0
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += os.read(fd, n - len(data))
    return data


def play_printer(master: int, status: int, then_close: bool = False) -> tuple[dict[str, bytes], threading.Thread]:
    """Be the printer: answer the paper status query, then read the document (or pull the plug)."""
    got: dict[str, bytes] = {}

    def run() -> None:
        got["query"] = read_exactly(master, 3)
        os.write(master, bytes([status]))
        if then_close:
            os.close(master)
            return
        data = b""
        with contextlib.suppress(OSError):  # the test ended (the pty closed) before a whole document came
            while not data.endswith(escpos.CUT):
                data += os.read(master, 4096)
        got["data"] = data

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return got, t


def test_a_receipt_reaches_a_serial_printer_as_escpos(pty: tuple[int, str]) -> None:
    master, path = pty
    got, printer_side = play_printer(master, STATUS_OK)
    SerialPrinter(Target("tty", path, 9600), io_timeout=2).print(sample())
    printer_side.join(5)
    assert got["query"] == b"\x10\x04\x04"  # DLE EOT 4: is there paper?
    events = decode(got["data"])
    assert events[:2] == [("init", None), ("chinese", None)]
    texts = [v for k, v in events if k == "text"]
    assert texts[0] == "中国移动苏州观前营业厅"
    assert any(t.startswith("金额") and t.endswith("¥99,999,999.99") for t in texts)
    assert ("size", 0x11) in events and ("align", 2) in events  # the total: double size, on the right
    assert ("qr", VOUCHER) in events and ("qr_print", None) in events
    assert events[-1][0] == "cut"


def test_an_out_of_paper_printer_says_so(pty: tuple[int, str]) -> None:
    master, path = pty
    play_printer(master, STATUS_PAPER_OUT)
    with pytest.raises(PrinterError) as err:
        SerialPrinter(Target("tty", path), io_timeout=2).print(sample())
    assert err.value.key == "paper_out"


def test_a_printer_unplugged_mid_print_says_so(pty: tuple[int, str]) -> None:
    master, path = pty
    play_printer(master, STATUS_OK, then_close=True)
    # Over ten times what a pty holds unread (20 KiB on the Linux this was written on): the printer is still sending,
    # blocked on the full line, when the plug is pulled, however late the printer's thread gets to pull it. A document
    # that fits may be sent whole before the plug is pulled (it was, under load, on two pytest-xdist workers).
    big = Document()
    for n in range(6000):
        big.add(f"line {n} " + "x" * 30)
    assert len(escpos.encode(big)) > 256 * 1024
    with pytest.raises(PrinterError) as err:
        SerialPrinter(Target("tty", path), io_timeout=30).print(big)
    assert err.value.key == "unplugged"


def test_a_missing_printer_fails_in_its_own_thread_and_reports_back(tmp_path: object) -> None:
    printer = open_printer("tty:/dev/nonexistent-printer-tty")
    assert printer is not None
    results: list[PrinterError | None] = []
    job = PrintJob(printer, sample(), results.append).start()
    assert job.wait(5)
    assert results and results[0] is not None and results[0].key == "missing"


def test_a_silent_printer_times_out() -> None:
    class Silent:
        def __init__(self, *a: object, **k: object) -> None: ...
        def reset_input_buffer(self) -> None: ...
        def write(self, data: bytes) -> int:
            return len(data)
        def flush(self) -> None: ...
        def read(self, n: int) -> bytes:
            return b""  # the read timed out
        def close(self) -> None: ...

    with pytest.raises(PrinterError) as err:
        SerialPrinter(Target("tty", "/dev/x"), opener=Silent).print(sample())
    assert err.value.key == "no_answer"


def test_a_file_printer_appends_the_escpos_stream(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "lp0")
    printer = open_printer(f"file:{path}")
    assert printer is not None
    printer.print(sample())
    printer.print(sample())
    with open(path, "rb") as f:
        events = decode(f.read())
    assert [k for k, _ in events].count("cut") == 2


@pytest.mark.parametrize("spec", ["tty:", "lp:/dev/usb/lp0", "tty:/dev/ttyUSB0:fast", "tty:/dev/ttyUSB0:12"])
def test_a_bad_printer_setting_is_refused(spec: str) -> None:
    with pytest.raises(InvalidInput):
        parse_target(spec)
    assert parse_target("tty:/dev/ttyUSB0:115200") == Target("tty", "/dev/ttyUSB0", 115200)


def test_pos_run_refuses_a_bad_printer_with_exit_2(tmp_path: os.PathLike[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pos.cli.main import main

    home = os.path.join(tmp_path, "home")
    assert main(["--home", home, "run", "--printer", "lp0"]) == 2
    assert "tty:/dev/ttyUSB0[:BAUD] or file:PATH" in capsys.readouterr().err
    assert not os.path.exists(home)  # nothing written
