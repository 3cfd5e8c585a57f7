"""Settlement verifies a batch on several threads: the answers are exactly those of one thread, defect by defect."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from bank.auth import TerminalRecord
from bank.schema import make_engine
from bank.service import Operator
from bank.verify import VERIFY_CHUNK
from wallet.keys import new_key
from wallet.pki import OperatorPki, cert_der
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.batch import UploadItem

TERMINAL = TerminalRecord("CMGQ0001", "320508000000101")
PKI = OperatorPki.create()
FOREIGN = OperatorPki.create("Someone Else")


def _card(n: int, tier: int = 4, pki: OperatorPki = PKI, names: str | None = None,
          expired: bool = False) -> tuple[str, object, bytes, bytes]:
    wallet_id = f"0991{n:012d}"
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    window = (now - dt.timedelta(days=400), now - dt.timedelta(days=1)) if expired else (None, None)
    cert = pki.wallet_ca.issue_wallet_cert(names or wallet_id, tier, key.public_key(), *window)
    return wallet_id, key, cert_der(cert), cert_der(pki.wallet_ca.cert)


def _batch() -> list[UploadItem]:
    now = time.time_ns() // 1_000_000
    cards = [_card(i) for i in range(8)] + [
        _card(100, pki=FOREIGN),                 # unknown issuer
        _card(101, expired=True),                # expired at the voucher's time
        _card(102, names="0991999999999999"),    # certificate of another wallet
        _card(103, tier=1),                      # no single cap from the tier; offline cap applies
    ]
    items = []
    for round_ in range(12):
        for k, (wallet_id, key, leaf, issuer) in enumerate(cards):
            amount = 100 + 37 * round_ + k
            if k == 0 and round_ == 3:
                amount = 2_001 * 100  # over the tier-4 single cap
            if k == 11 and round_ == 4:
                amount = 2_600 * 100  # over the offline single cap (2,500 yuan here)
            body = VoucherBody(wallet_id, round_ + 1, amount, CNY, TERMINAL.merchant_id, TERMINAL.terminal_id,
                               os.urandom(16), now - 60_000 + round_, 1_000_000 - amount)
            if k == 1 and round_ == 5:
                body = replace(body, timestamp_ms=now + 3 * 24 * 3600 * 1000)  # from the future
            voucher = Voucher.sign(body, key)  # type: ignore[arg-type]
            if k == 2 and round_ == 6:
                voucher = Voucher(replace(body, amount_fen=body.amount_fen + 1), voucher.signature)  # tampered
            items.append(UploadItem(voucher.encode(), leaf, issuer))
        if round_ == 7:  # a clone's voucher: same counter as card 3's last, another body
            wallet_id, key, leaf, issuer = cards[3]
            body = VoucherBody(wallet_id, round_ + 1, 999, CNY, TERMINAL.merchant_id, TERMINAL.terminal_id,
                               os.urandom(16), now, 0)
            items.append(UploadItem(Voucher.sign(body, key).encode(), leaf, issuer))  # type: ignore[arg-type]
    for day_round in range(3):  # card 4 reaches its daily cap (5,000 yuan) with big vouchers
        wallet_id, key, leaf, issuer = cards[4]
        body = VoucherBody(wallet_id, 50 + day_round, 1_900 * 100, CNY, TERMINAL.merchant_id, TERMINAL.terminal_id,
                           os.urandom(16), now, 0)
        items.append(UploadItem(Voucher.sign(body, key).encode(), leaf, issuer))  # type: ignore[arg-type]
    return items


def _operator(url: str, threads: int) -> Operator:
    return Operator(make_engine(url), PKI, offline_single_max=2_500 * 100, verify_threads=threads)


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_answer_like_one_thread(tmp_path: Path, operator_db: str, threads: int) -> None:
    """On every storage, settling on helper threads answers what one thread on SQLite answers."""
    items = _batch()
    assert len(items) > 4 * VERIFY_CHUNK
    serial, parallel = _operator(f"sqlite:///{tmp_path / 'serial.db'}", 1), _operator(operator_db, threads)
    try:
        expected = serial.settle(TERMINAL, items)
        got = parallel.settle(TERMINAL, items)
        assert parallel.verifier.pool is not None and serial.verifier.pool is None
        assert got == expected
        reasons = Counter(r["reason"] or r["status"] for r in got)
        for reason in ("settled", "unknown_issuer", "expired_certificate", "wallet_mismatch", "bad_signature",
                       "over_single_limit", "over_offline_limit", "double_spend",
                       "over_daily_limit"):
            assert reasons[reason], (reason, reasons)
        assert any(r.get("flag") == "review_timestamp" for r in got)  # from the future: settled, flagged
        # a re-upload is answered the same way on both
        assert parallel.settle(TERMINAL, items) == serial.settle(TERMINAL, items)
    finally:
        serial.close()
        parallel.close()


def test_concurrent_batches_share_the_helpers(tmp_path: Path, operator_db: str) -> None:
    """Two requests settling at once share the helper threads: both finish, and each voucher settles once."""
    items = _batch()
    serial, parallel = _operator(f"sqlite:///{tmp_path / 'serial.db'}", 1), _operator(operator_db, 2)
    try:
        first, again = serial.settle(TERMINAL, items), serial.settle(TERMINAL, items)
        with ThreadPoolExecutor(2) as ex:
            answers = list(ex.map(lambda _: parallel.settle(TERMINAL, items), range(2)))
        assert sorted(map(str, answers)) == sorted(map(str, [first, again]))
    finally:
        serial.close()
        parallel.close()
