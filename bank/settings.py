"""What an operator is built from: plain settings, with no notion of a terminal's home or configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from bank.chains import Chain
from bank.store import DB_RETRIES
from bank.tickets import TicketSpot
from bank.verify import VERIFY_THREADS
from wallet.pki import OperatorPki

MAX_BATCH_BYTES = 8 * 1024 * 1024  # a settlement request (1000 vouchers in JSON with their certificates: ~1.5 MiB)
MAX_JSON_BYTES = 64 * 1024  # any other request body (the largest is a wallet certificate in hex: ~2 KiB)


@dataclass(frozen=True)
class OperatorSettings:
    """An operator's settings.

    ``db_url`` is a SQLAlchemy URL (SQLite file or PostgreSQL); ``pki_dir`` holds the operator's CA (root, wallet
    CA, terminal CA; created on first use); ``admin_token_path`` the back-office token (default
    ``pki_dir/admin.token``). ``terminal_merchants`` maps each terminal id that may be provisioned to its merchant
    id. ``fee_bps`` is the merchant fee in basis points, ``offline_single_max`` the cap (fen) on one offline
    payment (None: no cap). ``fault`` injects a crash around a batch's commit (tests only, see
    :mod:`bank.faults`). ``verify_threads`` is how many threads check a batch's signatures. ``max_batch_bytes`` caps
    a settlement request's body, ``max_json_bytes`` every other body (a 413 beyond, read no further).
    ``db_retries`` bounds the attempts of a transaction or read after a dropped database connection (then a 503).
    ``chains`` are the merchants' chains: a parent, its stores, whether they pool their takings (:mod:`bank.chains`).
    ``ticket_spots`` maps each merchant that sells tickets online to its tickets and daily capacity.
    """

    db_url: str
    pki_dir: Path
    admin_token_path: Path | None = None
    terminal_merchants: Mapping[str, str] = field(default_factory=dict)
    fee_bps: int = 0
    offline_single_max: int | None = None
    fault: str | None = None
    verify_threads: int = VERIFY_THREADS
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_json_bytes: int = MAX_JSON_BYTES
    db_retries: int = DB_RETRIES
    chains: tuple[Chain, ...] = ()
    ticket_spots: Mapping[str, TicketSpot] = field(default_factory=dict)

    @property
    def admin_token_file(self) -> Path:
        return self.admin_token_path or self.pki_dir / "admin.token"


@dataclass(frozen=True)
class BodyLimits:
    """The largest request bodies the operator reads, in bytes: a settlement batch, and any other (JSON) body."""

    batch: int = MAX_BATCH_BYTES
    json: int = MAX_JSON_BYTES

    def for_path(self, path: str) -> int:
        return self.batch if path == "/v1/settlements" else self.json


def load_pki(directory: Path) -> OperatorPki:
    """The operator CA under ``directory``, created there on first use (one creator at a time)."""
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock"), timeout=60):
        return OperatorPki.load_or_create(directory)
