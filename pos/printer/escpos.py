"""ESC/POS: the bytes a receipt printer understands, for a :class:`~pos.printer.document.Document`.

ESC @ initialises, FS & selects Chinese characters (text is GB18030), ESC a aligns, ESC E bolds, GS ! doubles the
size of the total, GS ( k prints the voucher id as a QR code, GS V feeds and cuts. DLE EOT 4 asks the paper roll
sensor: bits 5 and 6 of its answer set mean the paper has run out.
"""

from __future__ import annotations

from pos.printer.document import Document

ESC, GS, FS, DLE, EOT, LF = b"\x1b", b"\x1d", b"\x1c", b"\x10", b"\x04", b"\n"
INIT = ESC + b"@"
CHINESE_ON = FS + b"&"
CUT = GS + b"V" + bytes([66, 3])  # feed 3 lines, then a partial cut
STATUS_PAPER = DLE + EOT + b"\x04"  # real-time status: paper roll sensor
PAPER_END = 0x60  # bits 5 and 6: paper end detected
PAPER_NEAR_END = 0x0C  # bits 2 and 3
ENCODING = "gb18030"
_ALIGN = {"left": 0, "center": 1, "right": 2}


def qr(payload: str, size: int = 6) -> bytes:
    """GS ( k: a model 2 QR code of ``payload`` (error correction M), printed at once."""
    data = payload.encode("ascii")
    n = len(data) + 3

    def fn(body: bytes) -> bytes:
        return GS + b"(k" + bytes([len(body) % 256, len(body) // 256]) + body

    return (fn(b"1A2\x00") + fn(b"1C" + bytes([size])) + fn(b"1E1")
            + GS + b"(k" + bytes([n % 256, n // 256]) + b"1P0" + data + fn(b"1Q0"))


def encode(doc: Document) -> bytes:
    """The whole document: init, Chinese mode, each line with its alignment, size and weight, the cut."""
    out = bytearray(INIT + CHINESE_ON)
    for ln in doc.lines:
        out += ESC + b"a" + bytes([_ALIGN.get(ln.align, 0)])
        if ln.qr is not None:
            out += qr(ln.qr) + LF
            continue
        out += GS + b"!" + (b"\x11" if ln.big else b"\x00")
        out += ESC + b"E" + (b"\x01" if ln.bold else b"\x00")
        out += ln.text.encode(ENCODING, errors="replace") + LF
    out += GS + b"!\x00" + ESC + b"E\x00" + ESC + b"a\x00" + CUT
    return bytes(out)


def paper_out(status: int) -> bool:
    """Whether a DLE EOT 4 answer says the paper has run out."""
    return status & PAPER_END == PAPER_END
