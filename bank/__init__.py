"""The operator backend (the authorized bank): CA, wallets, terminals, settlement, denylist, refunds, reports."""
