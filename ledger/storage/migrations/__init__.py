"""Alembic migrations of the ledger database (run by ``ledger.storage.migrate.upgrade``)."""
