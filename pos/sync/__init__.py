"""The terminal's link to the operator: its HTTP client, sync rounds, refunds, reconciliation."""
