"""Alembic environment of the Pipeline's state (see runtime/postgres_migrations.py).

It keeps its own version table, so each service versions its own schema in the shared database.
"""

from alembic import context

from ml_serving_server.runtime.postgres_migrations import run_env

VERSION_TABLE = "pipeline_alembic_version"

run_env(context, VERSION_TABLE)
