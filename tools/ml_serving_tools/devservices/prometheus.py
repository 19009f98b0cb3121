"""Prometheus and promtool: from PATH, else Debian's ``prometheus`` package fetched without root
(``apt-get download`` then ``dpkg-deb -x``) and kept under ``<state_dir>/prometheus/debian``, so
later runs reuse the extracted binaries; and a private Prometheus for tests.

    tools = find_prometheus(Path(".run"))          # PrometheusUnavailable says why not
    server = start_prometheus(tools, work_dir, scrape_configs, rule_files)
    server.url, server.query("up"), server.alerts(), server.reload(); server.stop()

A started server listens on a free 127.0.0.1 port, keeps its TSDB under ``work_dir``, scrapes and
evaluates rules every second (tests), has the lifecycle API on (``/-/reload``) and is stopped by
``stop_all`` and at exit. Prometheus syncs its scrape targets about 5 s after start, so the first
samples arrive then: start it before the load it should see.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from ..net import LOOPBACK, free_port
from .processes import PROBE_TIMEOUT, log, spawn, tail, terminate
from .started import track, untrack
from .state import state_lock

DEBIAN_PACKAGE = "prometheus"
CACHE_DIR_NAME = "prometheus"
START_TIMEOUT = 30.0  # ready in well under a second here
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
STOP_GRACE = 10.0
TEST_INTERVAL = "1s"  # scrape and rule evaluation, for tests
APT_TIMEOUT = 300  # the package is about 20 MB


class PrometheusUnavailable(RuntimeError):
    """Neither PATH nor apt can provide Prometheus; the message says why."""


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: Path
    promtool: Path
    origin: str  # "PATH" or "Debian package <version> (<folder>)"

    def version(self) -> str:
        out = subprocess.run([str(self.prometheus), "--version"], capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "unknown"

    def promtool_run(self, *args: str, cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.promtool), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


# --------------------------------------------------------------------------- finding the binaries


def _on_path() -> Optional[PrometheusTools]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus and promtool:
        return PrometheusTools(Path(prometheus), Path(promtool), "PATH")
    return None


def _cached(cache: Path) -> Optional[PrometheusTools]:
    bin_dir = cache / "root" / "usr" / "bin"
    prometheus, promtool = bin_dir / "prometheus", bin_dir / "promtool"
    if all(p.is_file() and os.access(p, os.X_OK) for p in (prometheus, promtool)):
        version = (cache / "version").read_text().strip() if (cache / "version").is_file() else "?"
        return PrometheusTools(prometheus, promtool, f"Debian package {version} ({cache})")
    return None


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError) as error:
        raise PrometheusUnavailable(f"{' '.join(cmd)}: {error}") from error


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise PrometheusUnavailable(f"prometheus is not on PATH and there is no {tool} to fetch Debian's package")
    return found


def _download_and_extract(cache: Path) -> PrometheusTools:
    """``apt-get download prometheus`` (no root needed), unpacked into ``cache/root``."""
    apt_get, dpkg_deb = _require("apt-get"), _require("dpkg-deb")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".download-") as scratch_name:
        scratch = Path(scratch_name)
        fetched = _run([apt_get, "download", DEBIAN_PACKAGE], scratch, APT_TIMEOUT)
        debs = sorted(scratch.glob(f"{DEBIAN_PACKAGE}_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise PrometheusUnavailable(f"prometheus is not on PATH and `apt-get download {DEBIAN_PACKAGE}` "
                                        f"failed (exit {fetched.returncode}): {fetched.stderr.strip()[-500:]}")
        unpacked = _run([dpkg_deb, "-x", str(debs[0]), str(scratch / "root")], scratch, 120)
        if unpacked.returncode != 0:
            raise PrometheusUnavailable(f"dpkg-deb -x {debs[0].name}: {unpacked.stderr.strip()[-500:]}")
        version = debs[0].name[len(DEBIAN_PACKAGE) + 1:].rsplit("_", 1)[0]
        (scratch / "version").write_text(version + "\n")
        shutil.rmtree(cache, ignore_errors=True)  # a partial earlier attempt
        _install(scratch, cache)  # the binaries only; the .deb goes with the scratch folder
    found = _cached(cache)
    if found is None:
        raise PrometheusUnavailable(f"Debian's {DEBIAN_PACKAGE} package has no usr/bin/prometheus and promtool")
    log(f"fetched Debian's {DEBIAN_PACKAGE} {version} into {cache}")
    return found


def _install(scratch: Path, cache: Path) -> None:
    """Move the unpacked tree in place, then its version file."""
    cache.mkdir(parents=True)
    (scratch / "root").rename(cache / "root")
    (scratch / "version").rename(cache / "version")


def find_prometheus(state_dir: Path) -> PrometheusTools:
    """prometheus and promtool from PATH, else the Debian package cached under the state dir,
    else that package fetched now (PrometheusUnavailable when none of these works)."""
    found = _on_path()
    if found is not None:
        return found
    base = Path(state_dir).resolve() / CACHE_DIR_NAME
    cache = base / "debian"
    with state_lock(base):  # one download at a time for processes sharing the state dir
        return _cached(cache) or _download_and_extract(cache)


# --------------------------------------------------------------------------- configuration


def prometheus_config(scrape_configs: Sequence[dict], rule_files: Sequence[Path],
                      interval: str = TEST_INTERVAL) -> dict[str, Any]:
    """A config scraping ``scrape_configs`` and evaluating ``rule_files``, both every ``interval``."""
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": list(scrape_configs),
    }


def static_job(name: str, target: str, metrics_path: str = "/metrics", **extra) -> dict[str, Any]:
    """A scrape job for one ``host:port`` target."""
    return {"job_name": name, "metrics_path": metrics_path, "static_configs": [{"targets": [target]}], **extra}


# --------------------------------------------------------------------------- the server


@dataclass
class PrometheusServer:
    """One Prometheus process on 127.0.0.1:``port``, its files under ``base``."""

    tools: PrometheusTools
    base: Path
    port: int
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    started_at: float = 0.0  # wall clock, for range queries over its whole life

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.base / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.base / f"prometheus-{self.port}.log"

    def command(self) -> list[str]:
        return [str(self.tools.prometheus), f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.base / 'data'}", f"--web.listen-address={LOOPBACK}:{self.port}",
                "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d", "--log.level=warn"]

    def write_config(self, config: dict[str, Any]) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def ready(self, timeout: float = PROBE_TIMEOUT) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=timeout) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = START_TIMEOUT) -> "PrometheusServer":
        t0, self.started_at = time.monotonic(), time.time()
        self.proc = spawn(self.command(), self.log_file, cwd=self.base)
        while time.monotonic() < t0 + timeout and self.proc.poll() is None:
            if self.ready():
                log(f"started Prometheus ({self.tools.origin}) on port {self.port} (pid {self.proc.pid}) "
                    f"in {time.monotonic() - t0:.2f}s")
                return self
            time.sleep(0.05)
        code = self.proc.poll()
        self.stop()
        raise RuntimeError(f"prometheus on port {self.port}: {'exit ' + str(code) if code is not None else 'timeout'}"
                           f"; log:\n{tail(self.log_file, 15)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc.pid, signal.SIGTERM, STOP_GRACE, self.proc)
        untrack(self)

    def reload(self, config: Optional[dict[str, Any]] = None) -> None:
        """Apply a new config (when given) or re-read the rule files: ``POST /-/reload``."""
        if config is not None:
            self.write_config(config)
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            if reply.status != 200:
                raise RuntimeError(f"reload of Prometheus at {self.url}: HTTP {reply.status}")

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data`` (RuntimeError with Prometheus' error otherwise)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples; a scalar as one sample without labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """A range query's series (what a dashboard panel asks for), each with its ``values``."""
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]


def start_prometheus(tools: PrometheusTools, work_dir: Path, scrape_configs: Sequence[dict],
                     rule_files: Sequence[Path] = (), interval: str = TEST_INTERVAL,
                     timeout: float = START_TIMEOUT) -> PrometheusServer:
    """A private Prometheus (stopped by ``stop_all`` and at exit) on a free port, ready."""
    config = prometheus_config(scrape_configs, rule_files, interval)
    errors = []
    for _attempt in range(START_ATTEMPTS):
        server = PrometheusServer(tools, Path(work_dir).resolve(), free_port())
        server.write_config(config)
        try:
            server.start(timeout)
        except RuntimeError as error:
            errors.append(str(error))
            continue
        track(server)
        return server
    raise RuntimeError("could not start Prometheus:\n" + "\n".join(errors))
