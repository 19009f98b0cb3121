"""Alembic environment of the Router's experiment store.

Run by PostgresExperimentStore.connect (alembic.command.upgrade with a Config built in code, see
postgres_store.alembic_config), which hands over an open SQLAlchemy connection that already holds
the migration advisory lock in `config.attributes["connection"]`. Without one (a developer running
alembic by hand) it connects to `sqlalchemy.url`.

The Router keeps its own version table, so each service versions its own schema in the shared
database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

VERSION_TABLE = "router_alembic_version"

config = context.config


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=None, literal_binds=True,
                      version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as own_connection:
        _migrate(own_connection)
    engine.dispose()


def _migrate(connection) -> None:
    context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
    with context.begin_transaction():  # every pending revision in one transaction (transactional DDL)
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
