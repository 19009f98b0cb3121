"""Alembic environment of the Bandit's decision log (see runtime/postgres_migrations.py).

It keeps its own version table, so each service versions its own schema in the shared database.
"""

from alembic import context

from ml_serving_server.runtime.postgres_migrations import run_env

VERSION_TABLE = "bandit_alembic_version"

run_env(context, VERSION_TABLE)
