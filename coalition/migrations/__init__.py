"""Alembic migrations of the coalition database (the ledger's tables included)."""
