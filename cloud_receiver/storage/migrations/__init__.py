"""Alembic migrations of the receiver's database, run by `..migrate` when it opens."""
