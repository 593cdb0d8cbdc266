"""Storage: SQLAlchemy 2 engine set-up, tables, Alembic migrations and the ledger repository.

SQLite (WAL, synchronous=FULL) is the embedded default; PostgreSQL is the production engine.
Entries, tree nodes and checkpoints are append-only, enforced by database triggers.
"""
