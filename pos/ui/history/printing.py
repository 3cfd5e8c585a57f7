"""Printing from a screen: the document is saved as text and, when a printer is set, printed in a worker thread.

The sale is already approved and recorded when a receipt prints; a printer that is missing, unplugged or out of
paper says so in a notification (in the clerk's language) and never holds up the counter.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pos.printer import Document, PrinterError, PrintJob
from pos.printer.device import save_text


def printer_message(app: Any, error: PrinterError) -> str:
    """What went wrong, in the app's language."""
    fields = {"target": "?", "s": "?", "error": str(error), **error.fields}
    try:
        return str(app.t("printer." + error.key, **fields))
    except KeyError:
        return str(app.t("printer.failed", **fields))


def print_document(app: Any, doc: Document, text_path: Path | None,
                   saved_key: str = "receipt.saved") -> PrintJob | None:
    """Save ``doc`` to ``text_path`` and send it to ``app.printer`` (when set) without waiting for it."""
    if text_path is not None:
        path = save_text(text_path, doc)
        app.notify(app.t(saved_key, path=str(path)))
    printer = getattr(app, "printer", None)
    if printer is None:
        return None

    def done(error: PrinterError | None) -> None:
        with contextlib.suppress(RuntimeError):  # the app has closed meanwhile
            app.call_from_thread(finished, error)

    def finished(error: PrinterError | None) -> None:
        if error is None:
            app.notify(app.t("printer.printed"))
        else:
            app.notify(printer_message(app, error), title=app.t("printer.failed_title"), severity="error", timeout=8)

    app.notify(app.t("printer.printing"))
    return PrintJob(printer, doc, done).start()
