"""Warming an operator up before it serves, so its first batches cost what the others do."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from bank import sql
from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.schema import denylist, nonces, read_only, terminals
from bank.settlement import Settlement
from wallet.ids import new_wallet_id
from wallet.pki import OperatorPki, cert_der
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.batch import UploadItem
from wire.errors import OperatorError


def warm_up(settlement: Settlement, pki: OperatorPki, terminal_merchants: Mapping[str, str]) -> None:
    """Do once what the first batches would otherwise pay for: the verification threads started, the settlement
    queries compiled for every IN-list size, the database connections opened, and one synthetic voucher (a
    throwaway card certified by the operator's wallet CA) judged and committed in a transaction that is rolled
    back, so the code paths, the issuer's chain link and SQLAlchemy's statement cache are warm. Nothing is
    written."""
    store = settlement.store
    settlement.verifier.start()
    sql.precompile(store.engine.dialect)
    key = ec.generate_private_key(ec.SECP256R1())
    wallet_id = new_wallet_id()
    leaf = cert_der(pki.wallet_ca.issue_wallet_cert(wallet_id, 4, key.public_key()))
    merchant, tid = next(((m, t) for t, m in sorted(terminal_merchants.items())), ("0" * 15, "WARMUP00"))
    term = TerminalRecord(tid, merchant)
    body = VoucherBody(wallet_id, 1, 100, CNY, merchant, tid, secrets.token_bytes(16), now_ms(), 0)
    item = UploadItem(Voucher.sign(body, key).encode(), leaf, cert_der(pki.wallet_ca.cert))
    judged = settlement.check(term, [item])
    if judged[0].status is not None:
        raise OperatorError(f"warm-up voucher refused: {judged[0].reason}")
    with read_only(store.engine) as conn:  # the authentication's reads
        conn.execute(select(terminals).where(terminals.c.terminal_id == tid)).first()
        conn.execute(select(nonces.c.nonce).where(nonces.c.terminal_id == tid, nonces.c.nonce == "")).first()
        conn.execute(select(func.max(denylist.c.version))).scalar()
    if settlement.fault is None:  # (a fault-injecting operator would crash on the synthetic commit)
        with store.write_lock, store.engine.connect() as conn:
            tx = conn.begin()
            try:
                settlement.commit(conn, replace(term, pending_nonce=("0" * 32, 0)), judged, judged, [item.voucher])
            finally:
                tx.rollback()
