"""Alembic environment of the registry's lifecycle store.

Run by PostgresLifecycle.connect (alembic.command.upgrade with a Config built in code, see
postgres_lifecycle.alembic_config), which hands over an open SQLAlchemy connection that already
holds the migration advisory lock in `config.attributes["connection"]`. Without one (a developer
running alembic by hand) it connects to `sqlalchemy.url`.

The registry keeps its own version table, so other services can version their own schema in the
same database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

VERSION_TABLE = "registry_alembic_version"

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
    with context.begin_transaction():  # one transaction for every pending revision (transactional DDL)
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
