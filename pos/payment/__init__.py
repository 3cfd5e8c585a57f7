"""Taking a payment: the tap session, voucher checks, torn and orphan recovery, risk, decline reasons."""
