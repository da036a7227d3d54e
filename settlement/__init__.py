"""Inter-partner settlement computed from the ledger journal (imports ledger only)."""
