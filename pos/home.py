"""The home directory: the operator's local CA, mock cards, terminal ledgers. One place, one layout.

    HOME/merchants.yaml          optional: overrides the shipped merchants.yaml
    HOME/pki/                    the operator CA (root, wallet CA, terminal CA) when the operator is embedded
    HOME/foreign-pki/            a tester's rogue issuer (cards from it must be refused)
    HOME/cards/c0001.json        mock cards
    HOME/terminals/TID/          one terminal: ledger.db, ledger.key
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from filelock import FileLock

from pos.config import Config, Merchant, Terminal, find_config, load_config
from pos.ledger import Ledger
from pos.payment.card_client import KnownIssuers
from pos.payment.session import TerminalContext
from wallet.ids import check_terminal_id
from wallet.pki import OperatorPki, cert_der
from wallet.store import CardStore, CorruptedFile, os_error


def default_home() -> Path:
    env = os.environ.get("POS_HOME")
    return Path(env) if env else platformdirs.user_data_path("ecny-pos")


@dataclass
class Home:
    """Paths and lazily opened state under one home directory."""

    root: Path
    config_path: Path | None = None
    _config: Config | None = field(default=None, repr=False)
    _pki: OperatorPki | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(find_config(self.config_path, self.root))
        return self._config

    def _pki_at(self, name: str) -> OperatorPki:
        directory = self.root / name
        try:
            if (directory / "root.pem").exists():  # complete (written last): reading needs no lock, works read-only
                return OperatorPki.load_or_create(directory)
            directory.mkdir(parents=True, exist_ok=True)
            with FileLock(str(directory / ".lock"), timeout=60):
                return OperatorPki.load_or_create(directory)
        except OSError as exc:
            raise os_error(exc, directory) from exc
        except (ValueError, TypeError) as exc:
            raise CorruptedFile(f"certificate store {directory} is corrupted ({str(exc).split('. ')[0]}): restore "
                                "it from a backup") from exc

    @property
    def pki(self) -> OperatorPki:
        if self._pki is None:
            self._pki = self._pki_at("pki")
        return self._pki

    def foreign_pki(self) -> OperatorPki:
        return self._pki_at("foreign-pki")

    def roots(self) -> tuple[bytes, ...]:
        """The trust anchors terminals verify cards against: the operator root."""
        return (cert_der(self.pki.root.cert),)

    @property
    def cards(self) -> CardStore:
        return CardStore(self.root / "cards")

    def terminal(self, terminal_id: str) -> tuple[Merchant, Terminal]:
        check_terminal_id(terminal_id)
        return self.config.terminal(terminal_id)

    def terminal_dir(self, terminal_id: str) -> Path:
        check_terminal_id(terminal_id)
        return self.root / "terminals" / terminal_id

    def ledger(self, terminal_id: str, readonly: bool = False) -> Ledger:
        """The terminal's ledger. To write (the default): created with its key on first use. ``readonly``: an
        existing ledger opened without creating or changing any file (:meth:`Ledger.open_readonly`; a terminal
        without a ledger raises :class:`~pos.ledger.LedgerMissing`)."""
        self.terminal(terminal_id)
        path = self.ledger_path(terminal_id)
        if readonly:
            return Ledger.open_readonly(path, terminal_id=terminal_id)
        return Ledger(path, terminal_id=terminal_id)

    def ledger_path(self, terminal_id: str) -> Path:
        return self.terminal_dir(terminal_id) / "ledger.db"

    def context(self, terminal_id: str, ledger: Ledger | None = None) -> TerminalContext:
        merchant, _ = self.terminal(terminal_id)
        risk = self.config.risk
        return TerminalContext(
            merchant_id=merchant.id, terminal_id=terminal_id, roots=self.roots(),
            issuers=KnownIssuers([cert_der(self.pki.wallet_ca.cert)]),
            ledger=ledger or self.ledger(terminal_id), caps=risk.caps, recovery_timeout=risk.recovery_timeout_s,
            clock_ahead_ms=lambda: self.clock_ahead_ms(terminal_id), clock_stop_ms=self.config.clock.stop_ms,
        )

    def clock_ahead_ms(self, terminal_id: str) -> int | None:
        """How far the terminal's clock is ahead of the operator's, as learnt at its last sync (None: never)."""
        from pos.sync import clockskew

        state = clockskew.load(self, terminal_id)
        return None if state is None else state.ahead_ms
