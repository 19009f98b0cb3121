"""Schema migrations of the services that keep state in PostgreSQL (Registry, Router), run at
start-up with Alembic.

Each service has its own migrations folder and its own version table, so each versions its own
schema in the shared database. `upgrade` takes a session advisory lock (the service's own key)
around the upgrade, so replicas starting together run it once; within one process, a lock
serialises upgrades because Alembic's `context` is one module-level proxy per process. A
service's `migrations/env.py` is three lines around `run_env`.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
import sqlalchemy.exc
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy.pool import NullPool

LOCK_WAIT_SECONDS = 120  # another replica migrating for longer than this: give up
_UPGRADE_GUARD = threading.Lock()  # one Alembic upgrade at a time in this process
UNREACHABLE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError, OSError)
"""What `upgrade` raises when PostgreSQL cannot be reached (or the lock was held too long)."""


@dataclass(frozen=True)
class Schema:
    """One service's migrations: where they are, its version table, its migration lock."""

    folder: Path
    version_table: str
    lock: tuple[int, int]  # pg_advisory_lock(key1, key2)
    application_name: str


def sqlalchemy_url(dsn: str) -> str:
    """The DSN (postgres:// or postgresql://, libpq URI syntax) as a SQLAlchemy psycopg2 URL."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or not (scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+")):
        raise ValueError("the database URL must be a postgresql:// URI")
    return f"postgresql+psycopg2://{rest}"


def alembic_config(schema: Schema, dsn: str | None = None) -> AlembicConfig:
    """The service's Alembic configuration (there is no alembic.ini)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(schema.folder))
    if dsn:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def _upgrade(schema: Schema, dsn: str, timeout_seconds: float) -> None:
    """Upgrade to the newest revision (blocking: run in a thread)."""
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(dsn), poolclass=NullPool,
        connect_args={"connect_timeout": max(2, math.ceil(timeout_seconds)),
                      "application_name": f"{schema.application_name}-migrations"})
    key1, key2 = schema.lock
    try:
        with _UPGRADE_GUARD, engine.connect() as connection:
            # A session lock: it outlives the transactions alembic commits, until unlocked.
            connection.execute(sqlalchemy.text(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
            connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({key1}, {key2})"))
            connection.execute(sqlalchemy.text("RESET lock_timeout"))
            connection.commit()
            try:
                config = alembic_config(schema)
                config.attributes["connection"] = connection
                alembic_command.upgrade(config, "head")
            finally:
                try:
                    connection.rollback()
                    connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({key1}, {key2})"))
                    connection.commit()
                except sqlalchemy.exc.SQLAlchemyError:
                    pass  # the connection is gone, and its lock with it
    finally:
        engine.dispose()


async def upgrade(schema: Schema, dsn: str, timeout_seconds: float) -> None:
    """Run the pending migrations; raises one of UNREACHABLE when PostgreSQL cannot be reached."""
    await asyncio.to_thread(_upgrade, schema, dsn, timeout_seconds)


def run_env(context, version_table: str) -> None:
    """The body of a service's migrations/env.py. Run by `upgrade` with an open connection that
    holds the migration lock (`config.attributes["connection"]`); without one (a developer running
    alembic by hand) it connects to `sqlalchemy.url`. Every pending revision runs in one
    transaction (transactional DDL)."""
    config = context.config

    def migrate(connection) -> None:
        context.configure(connection=connection, target_metadata=None, version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=None, literal_binds=True,
                          version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    engine = sqlalchemy.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=NullPool)
    with engine.connect() as own_connection:
        migrate(own_connection)
    engine.dispose()
