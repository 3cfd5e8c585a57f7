"""The operator: terminals, wallets, load tokens, settlement, double spends, denylist, accounts, refunds and
reconciliation reports, over one database.

:class:`Operator` is a thin facade over small services (:mod:`bank.auth`, :mod:`bank.terminals`,
:mod:`bank.wallets`, :mod:`bank.settlement`, :mod:`bank.denylist`, :mod:`bank.accounts`, :mod:`bank.refunds`,
:mod:`bank.reports`, :mod:`bank.warmup`). The HTTP layer (:mod:`bank.app`) is a thin shell around it; a terminal's
offline fallbacks (issuing cards, loading them) call the same class in-process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from bank import accounts, denylist, online, refunds, reports, statements, warmup
from bank.auth import Authenticator, PendingRequest, TerminalRecord
from bank.chains import Chain, Chains, sweep
from bank.redpackets import RedPackets
from bank.schema import make_engine
from bank.settings import BodyLimits, OperatorSettings, load_pki
from bank.settlement import Settlement
from bank.store import DB_RETRIES, Store
from bank.terminals import Terminals
from bank.tickets import Tickets, TicketSpot
from bank.verify import VERIFY_THREADS, Verifier
from bank.wallets import Wallets
from wallet.pki import OperatorPki, cert_der
from wallet.protocol import LoadToken
from wire.admin_token import load_admin_token
from wire.batch import UploadItem
from wire.models import (
    AccountAnswer,
    DenylistAnswer,
    LoadAnswer,
    ProvisionAnswer,
    RefundAnswer,
    ReportAnswer,
    TerminalStatus,
    WalletAnswer,
    WalletRegistered,
)
from wire.statements import StatementAnswer, SweepAnswer
from wire.tickets import OnlineBalanceAnswer


class Operator:
    """The operator backend over one database. ``fault`` injects crashes (tests, see :mod:`bank.faults`)."""

    def __init__(self, engine: Engine, pki: OperatorPki, terminal_merchants: Mapping[str, str] | None = None,
                 fee_bps: int = 0, offline_single_max: int | None = None, admin_token: str | None = None,
                 fault: str | None = None, verify_threads: int = VERIFY_THREADS,
                 limits: BodyLimits | None = None, db_retries: int = DB_RETRIES,
                 chains: Sequence[Chain] = (),
                 ticket_spots: Mapping[str, TicketSpot] | None = None) -> None:
        self.engine = engine
        self.pki = pki
        self.terminal_merchants = dict(terminal_merchants or {})
        self.limits = limits or BodyLimits()
        self.store = Store(engine, db_retries)
        self.auth = Authenticator(self.store, pki, admin_token)
        self.terminals = Terminals(self.store, pki, self.terminal_merchants)
        self.wallets = Wallets(self.store, pki)
        self.verifier = Verifier((cert_der(pki.root.cert),), offline_single_max, verify_threads)
        self.settlement = Settlement(self.store, self.auth, self.verifier, fee_bps, fault)
        self.chains = Chains(chains)
        self.tickets = Tickets(self.store, ticket_spots or {})  # online tickets and the online balance (t15a)
        self.red_packets = RedPackets(self.store, set(self.terminal_merchants.values()))

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> Operator:
        """The operator ``settings`` describe (its database and CA are created on first use)."""
        return cls(make_engine(settings.db_url), load_pki(settings.pki_dir), settings.terminal_merchants,
                   settings.fee_bps, settings.offline_single_max, load_admin_token(settings.admin_token_file),
                   settings.fault, settings.verify_threads,
                   BodyLimits(settings.max_batch_bytes, settings.max_json_bytes), settings.db_retries,
                   settings.chains, settings.ticket_spots)

    @property
    def fee_bps(self) -> int:
        """The merchant fee in basis points, taken from each settled voucher."""
        return self.settlement.fee_bps

    @fee_bps.setter
    def fee_bps(self, value: int) -> None:
        self.settlement.fee_bps = value

    def close(self) -> None:
        self.verifier.close()
        self.engine.dispose()

    def warm_up(self) -> None:
        """Prepare to serve; writes nothing (see :func:`bank.warmup.warm_up`)."""
        warmup.warm_up(self.settlement, self.pki, self.terminal_merchants)

    # -- callers ----------------------------------------------------------------------------------------------------
    def check_admin(self, token: str | None) -> None:
        self.auth.check_admin(token)

    def precheck(self, headers: Mapping[str, str]) -> PendingRequest:
        """What a terminal request's headers alone decide, before its body is read (see :mod:`bank.auth`)."""
        return self.auth.precheck(headers)

    def verify_request(self, pending: PendingRequest, method: str, path: str, query: str, body: bytes,
                       record_nonce: bool = True) -> TerminalRecord:
        return self.auth.verify(pending, method, path, query, body, record_nonce)

    def authenticate(self, headers: Mapping[str, str], method: str, path: str, query: str,
                     body: bytes) -> TerminalRecord:
        """A signed terminal request checked whole (``headers`` by lowercase name), its nonce recorded."""
        return self.auth.authenticate(headers, method, path, query, body)

    # -- terminals and wallets --------------------------------------------------------------------------------------
    def provision_terminal(self, terminal_id: str, public_key_pem: bytes) -> ProvisionAnswer:
        return self.terminals.provision(terminal_id, public_key_pem)

    def revoke_terminal(self, terminal_id: str) -> TerminalStatus:
        return self.terminals.revoke(terminal_id)

    def register_wallet(self, wallet_id: str, tier: int, certificate: bytes, opening_fen: int) -> WalletRegistered:
        return self.wallets.register(wallet_id, tier, certificate, opening_fen)

    def register_wallets(self, batch: Sequence[tuple[str, int, bytes, int]]) -> None:
        """Register a batch of wallets in one transaction (``(wallet id, tier, certificate, opening fen)``)."""
        self.wallets.register_many(batch)

    def issue_load_token(self, wallet_id: str, amount_fen: int, after_counter: int = 0) -> LoadToken:
        return self.wallets.issue_load_token(wallet_id, amount_fen, after_counter)

    def confirm_load(self, wallet_id: str, load_counter: int) -> LoadAnswer:
        return self.wallets.confirm_load(wallet_id, load_counter)

    def cancel_load(self, wallet_id: str, load_counter: int) -> LoadAnswer:
        return self.wallets.cancel_load(wallet_id, load_counter)

    def wallet(self, wallet_id: str) -> WalletAnswer:
        return self.wallets.get(wallet_id)

    def credit_online(self, credit_id: str, wallet_id: str, amount_fen: int) -> OnlineBalanceAnswer:
        """Top up the wallet's online balance once per ``credit_id`` (:func:`bank.online.credit`)."""
        return online.credit(self.store, credit_id, wallet_id, amount_fen)

    def wallets_spent(self, wallet_ids: Sequence[str]) -> dict[str, int]:
        """What each of these wallets has spent, in one read (wallets not on file are left out)."""
        return self.wallets.spent(wallet_ids)

    # -- settlement and what follows --------------------------------------------------------------------------------
    def settle(self, terminal: TerminalRecord, items: Sequence[UploadItem]) -> list[dict[str, Any]]:
        return self.settlement.settle(terminal, items)

    def denylist_since(self, since: int) -> DenylistAnswer:
        return denylist.since(self.engine, since)

    def denylist_version(self) -> int:
        return denylist.version(self.engine)

    def account(self, merchant_id: str) -> AccountAnswer:
        return accounts.get(self.engine, merchant_id)

    def refund(self, terminal: TerminalRecord, refund_id: str, voucher_id: str,
               amount_fen: int | None) -> RefundAnswer:
        return refunds.refund(self.store, terminal, refund_id, voucher_id, amount_fen)

    def report(self, terminal: TerminalRecord, day: str) -> ReportAnswer:
        return reports.report(self.engine, terminal, day)

    # -- corporate wallets and chains -------------------------------------------------------------------------------
    def statement(self, merchant_id: str, day: str) -> StatementAnswer:
        return statements.statement(self.store, self.chains, set(self.terminal_merchants.values()), merchant_id,
                                    day)

    def sweep(self, day: str, parent_id: str | None = None) -> SweepAnswer:
        return sweep(self.store, self.chains, day, parent_id)
