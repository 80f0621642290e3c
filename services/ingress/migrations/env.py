"""Alembic environment: migrations run on the connection shared.db.migrate hands over."""

from shared.db import run_alembic_env

run_alembic_env()
