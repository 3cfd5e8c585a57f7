"""Fault injection for tests: an operator process that dies around a batch's commit, as a crash would."""

from __future__ import annotations

import os

from sqlalchemy import Connection

FAULTS = ("crash_before_commit", "crash_after_commit")


def inject(fault: str | None, conn: Connection, wrote: bool) -> None:
    """At the end of a batch's transaction that ``wrote`` vouchers: exit the process (status 137) before its
    commit, or just after it, as ``fault`` says; nothing when ``fault`` is None."""
    if fault is None or not wrote:
        return
    if fault == "crash_after_commit":
        conn.commit()
    if fault in FAULTS:
        os._exit(137)
