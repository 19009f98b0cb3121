"""``with DevServices(state_dir) as ds: ds.redis_url, ds.database_url``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .postgres import DEFAULT_DBNAME, ensure_postgres
from .redis import ensure_redis
from .started import stop_all


class DevServices:
    """Finds or starts Redis and PostgreSQL; on exit, stops the embedded servers that this
    process started."""

    def __init__(self, state_dir: Path, force_embedded: bool = False, dbname: str = DEFAULT_DBNAME,
                 source: str = "auto", redis: bool = True, postgres: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.force_embedded = force_embedded
        self.dbname = dbname
        self.source = source
        self.want_redis = redis
        self.want_postgres = postgres
        self.redis_url: Optional[str] = None
        self.database_url: Optional[str] = None

    def __enter__(self) -> "DevServices":
        try:
            if self.want_redis:
                self.redis_url = ensure_redis(self.state_dir, self.force_embedded, self.source)
            if self.want_postgres:
                self.database_url = ensure_postgres(self.state_dir, self.force_embedded, self.dbname,
                                                    self.source)
        except BaseException:
            stop_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        stop_all()
