"""Registering a batch of wallets (an issuer's import of a card batch, what the fleet simulator uses): all or none,
with the checks of one by one, and idempotent for the same certificates."""

from __future__ import annotations

import pytest

from pos.composition import local_operator
from pos.home import Home
from wallet.issuance import issue_card
from wire.errors import BadRequest, Conflict, NotFound


def test_a_batch_of_wallets_is_registered_all_or_none(home: Home, operator_db: str) -> None:
    good = [issue_card(home.pki, f"c{i:04d}", 1, 1000 * i) for i in range(1, 4)]
    foreign = issue_card(home.foreign_pki(), "c0009", 1, 1000)
    batch = [(s.wallet_id, s.tier, s.cert_der, s.balance_fen) for s in good]
    with local_operator(home, operator_db) as op:
        with pytest.raises(BadRequest):
            op.register_wallets([*batch, (foreign.wallet_id, 1, foreign.cert_der, 1000)])
        with pytest.raises(NotFound):
            op.wallet(good[0].wallet_id)  # nothing of a refused batch is on file
        op.register_wallets(batch)
        op.register_wallets(batch)  # the same certificates again: nothing changes
        assert [op.wallet(s.wallet_id).loaded_fen for s in good] == [1000, 2000, 3000]
        assert op.wallets_spent([s.wallet_id for s in good] + [foreign.wallet_id]) == {s.wallet_id: 0 for s in good}
        again = issue_card(home.pki, "c0005", 1, 1000, wallet_id=good[0].wallet_id)  # another key, same wallet id
        other = issue_card(home.pki, "c0006", 1, 1000)
        with pytest.raises(Conflict):
            op.register_wallets([(other.wallet_id, 1, other.cert_der, 1000), (again.wallet_id, 1, again.cert_der, 5)])
        with pytest.raises(NotFound):
            op.wallet(other.wallet_id)
        assert op.wallet(good[0].wallet_id).loaded_fen == 1000
