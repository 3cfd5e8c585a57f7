"""Receipts and reports on paper: the printable document (:mod:`.document`), what the receipt, refund slip and
end-of-day report say (:mod:`.slips`), ESC/POS bytes (:mod:`.escpos`), and the printer itself (:mod:`.device`:
a serial printer through pyserial or a file, printed in a worker thread that never holds up a sale)."""

from pos.printer.device import PrinterError, PrintJob, open_printer, parse_target
from pos.printer.document import Document, Line
from pos.printer.slips import day_report_doc, receipt_doc, refund_slip_doc

__all__ = ["Document", "Line", "PrintJob", "PrinterError", "day_report_doc", "open_printer", "parse_target",
           "receipt_doc", "refund_slip_doc"]
