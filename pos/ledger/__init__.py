"""The terminal's durable ledger: append-only, hash-chained, sealed by a key; the outbox of what to sync."""
