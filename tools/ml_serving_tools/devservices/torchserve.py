"""TorchServe: the one ``TORCHSERVE_GRPC_ADDR`` names (with ``TORCHSERVE_MANAGEMENT_ADDR``,
``TORCHSERVE_METRICS_URL``, ``TORCHSERVE_MODEL_STORE``) if its gRPC Ping answers, else a
TorchServe 0.12 started here from the ``torchserve`` wheel with this Python:

- every listener (HTTP inference, management, metrics; gRPC inference, management) on
  127.0.0.1, on free ports unless the caller fixes them;
- everything it writes under ``<state_dir>/torchserve``: ``config-<grpc port>.properties``,
  a quiet ``log4j2.xml`` (TorchServe's default logging costs about 30% throughput), logs,
  the model store and its temporary directory (``TMPDIR`` and ``-Djava.io.tmpdir``: else
  it unpacks archives under /tmp/models and keeps its pid file and worker sockets in /tmp);
- no token auth, the model API on (register/unregister), no config snapshots, one worker
  per model by default, gRPC and HTTP messages up to 64 MiB, Prometheus metrics, archives
  loadable from loopback http(s) URLs (the S3 store's presigned URLs) and the model store.

``torchserve --start --foreground`` runs in a process group of its own: the Python launcher,
the Java frontend it waits for, and the Python workers the frontend spawns. Stopping sends
SIGTERM to the whole group and SIGKILL to what is left after a grace period; no
``torchserve --stop`` (which would need the same TMPDIR and stops only the frontend).

    ts = ensure_torchserve(Path(".run"))           # recorded in the state dir, reused later
    ts.grpc_inference, ts.model_store, ts.env()
    server = start_torchserve(tmp)                  # private: stopped by stop_all and at exit
    server.endpoints; server.stop()
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from ..net import LOOPBACK, free_port, tcp_open
from .processes import PROBE_TIMEOUT, log, spawn, tail
from .started import remember, track, untrack
from .state import Embedded, after_stop, embedded_forced, load_state, reuse, state_lock

KIND = "torchserve"
MESSAGE_LIMIT = 64 * 1024 * 1024
"""Largest request and response, HTTP and gRPC (TorchServe's default is 6.5 MB)."""
START_TIMEOUT = 120.0  # about 2-3 s here; the JVM is much slower on a loaded machine
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
STOP_GRACE = 15.0  # the frontend unregisters models (stops their workers) on SIGTERM
RESPONSE_TIMEOUT_S = 120  # default_response_timeout: a worker silent this long is restarted
PING_PATH = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping"
PORT_NAMES = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
ENV_VARS = ("TORCHSERVE_GRPC_ADDR", "TORCHSERVE_MANAGEMENT_ADDR", "TORCHSERVE_METRICS_URL",
            "TORCHSERVE_MODEL_STORE")

QUIET_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by ml_serving_tools.devservices.torchserve: warnings and errors only, no access
     or metrics logs (TorchServe's default configuration costs about 30% throughput). -->
<Configuration>
  <Appenders>
    <RollingFile name="ts_log" fileName="{logs}/ts_log.log" filePattern="{logs}/ts_log.%i.log">
      <PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c - %m%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
    <RollingFile name="model_log" fileName="{logs}/model_log.log" filePattern="{logs}/model_log.%i.log">
      <PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c - %m%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="warn" additivity="false"><AppenderRef ref="model_log"/></Logger>
    <Logger name="org.pytorch.serve" level="warn" additivity="false"><AppenderRef ref="ts_log"/></Logger>
    <Root level="warn"><AppenderRef ref="ts_log"/></Root>
  </Loggers>
</Configuration>
"""


@dataclass(frozen=True)
class TorchServeEndpoints:
    """Where a TorchServe listens (gRPC as host:port, HTTP as URLs) and its model store."""

    grpc_inference: str
    grpc_management: str
    inference_url: str
    management_url: str
    metrics_url: str
    model_store: str

    def env(self) -> dict[str, str]:
        """The variables the mesh reads."""
        return {
            "TORCHSERVE_GRPC_ADDR": self.grpc_inference,
            "TORCHSERVE_MANAGEMENT_ADDR": self.grpc_management,
            "TORCHSERVE_METRICS_URL": self.metrics_url,
            "TORCHSERVE_MODEL_STORE": self.model_store,
        }

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Optional["TorchServeEndpoints"]:
        """The TorchServe the environment names (None unless TORCHSERVE_GRPC_ADDR is set);
        its HTTP APIs are not named there, so those URLs are empty."""
        environ = os.environ if environ is None else environ
        grpc_addr = environ.get("TORCHSERVE_GRPC_ADDR", "").strip()
        if not grpc_addr:
            return None
        return cls(grpc_addr, environ.get("TORCHSERVE_MANAGEMENT_ADDR", "").strip(), "", "",
                   environ.get("TORCHSERVE_METRICS_URL", "").strip(),
                   environ.get("TORCHSERVE_MODEL_STORE", "").strip())

    @classmethod
    def on_ports(cls, ports: Mapping[str, int], model_store: Path) -> "TorchServeEndpoints":
        return cls(f"{LOOPBACK}:{ports['grpc_inference']}", f"{LOOPBACK}:{ports['grpc_management']}",
                   f"http://{LOOPBACK}:{ports['inference']}", f"http://{LOOPBACK}:{ports['management']}",
                   f"http://{LOOPBACK}:{ports['metrics']}", str(model_store))


# --------------------------------------------------------------------------- probing


def grpc_ping(addr: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """TorchServe's gRPC Ping answers OK at ``addr`` (host:port). No generated stubs needed:
    the request is an empty message, and only the status matters."""
    import grpc  # the tools import it only when probing

    channel = grpc.insecure_channel(addr)
    try:
        ping = channel.unary_unary(PING_PATH, request_serializer=lambda _: b"", response_deserializer=bytes)
        ping(None, timeout=timeout)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def http_ping(inference_url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """``GET <inference_url>/ping`` answers 200 (``{"status": "Healthy"}``)."""
    try:
        with urllib.request.urlopen(inference_url.rstrip("/") + "/ping", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def torchserve_answers(endpoints: TorchServeEndpoints, timeout: float = PROBE_TIMEOUT) -> bool:
    """Healthy, and both gRPC APIs accept connections (they start after the HTTP ones)."""
    if endpoints.inference_url and not http_ping(endpoints.inference_url, timeout):
        return False
    if endpoints.grpc_management:
        host, _, port = endpoints.grpc_management.rpartition(":")
        if not tcp_open(host, int(port), timeout):
            return False
    return grpc_ping(endpoints.grpc_inference, timeout)


# --------------------------------------------------------------------------- configuration


def allowed_urls(model_store: Path, extra: tuple[str, ...] = ()) -> str:
    """``allowed_urls``: comma-separated regexes, each matched against the whole URL.
    Loopback http(s) on any port (the dev S3 store's presigned URLs) and files in the store."""
    patterns = [r"https?://127\.0\.0\.1(:[0-9]+)?/.*", r"https?://localhost(:[0-9]+)?/.*",
                "file://" + re.escape(str(model_store)) + "/.*", *extra]
    if any("," in p for p in patterns):
        raise ValueError("allowed_urls patterns cannot contain ',' (TorchServe splits the list on it)")
    return ",".join(patterns)


def config_properties(ports: Mapping[str, int], model_store: Path, tmp_dir: Path,
                      extra_allowed_urls: tuple[str, ...] = (), workers_per_model: int = 1,
                      response_timeout_s: int = RESPONSE_TIMEOUT_S) -> str:
    props = {
        "inference_address": f"http://{LOOPBACK}:{ports['inference']}",
        "management_address": f"http://{LOOPBACK}:{ports['management']}",
        "metrics_address": f"http://{LOOPBACK}:{ports['metrics']}",
        "grpc_inference_address": LOOPBACK,
        "grpc_inference_port": ports["grpc_inference"],
        "grpc_management_address": LOOPBACK,
        "grpc_management_port": ports["grpc_management"],
        "model_store": model_store,
        "allowed_urls": allowed_urls(model_store, extra_allowed_urls),
        "default_workers_per_model": workers_per_model,
        "default_response_timeout": response_timeout_s,
        "max_request_size": MESSAGE_LIMIT,
        "max_response_size": MESSAGE_LIMIT,
        "metrics_mode": "prometheus",
        "disable_system_metrics": "true",  # else a Python process is spawned every minute
        "async_logging": "true",
        "install_py_dep_per_model": "false",
        "enable_envvars_config": "false",  # only this file decides (no TS_* from the caller)
        # No hsperfdata in /tmp (-XX:-UsePerfData): everything stays under the state dir.
        "vmargs": f"-Djava.io.tmpdir={tmp_dir} -XX:-UsePerfData -XX:+UseContainerSupport",
    }
    lines = ["# Written by ml_serving_tools.devservices.torchserve"]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def choose_ports(fixed: Optional[Mapping[str, int]] = None) -> dict[str, int]:
    """The caller's ports where given, free distinct ones for the rest."""
    ports = dict(fixed or {})
    unknown = set(ports) - set(PORT_NAMES)
    if unknown:
        raise ValueError(f"unknown TorchServe ports {sorted(unknown)}; known: {PORT_NAMES}")
    for name in PORT_NAMES:
        while name not in ports:
            port = free_port()
            if port not in ports.values():
                ports[name] = port
    return {name: ports[name] for name in PORT_NAMES}


def torchserve_env(tmp_dir: Path) -> dict[str, str]:
    """The launcher's (and so the frontend's and workers') environment: none of the caller's
    TorchServe settings, the temporary directory ours, this Python's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    bin_dir = str(Path(sys.executable).parent)
    env.update({"TMPDIR": str(tmp_dir), "TMP": str(tmp_dir),
                "PATH": bin_dir + os.pathsep + env.get("PATH", ""), "PYTHONUNBUFFERED": "1"})
    env.pop("TEMP", None)  # the launcher would pass it as a second -Djava.io.tmpdir (vmargs has ours)
    env.pop("JAVA_TOOL_OPTIONS", None)  # the JVM would print it on stderr, and it changes the JVM
    return env


# --------------------------------------------------------------------------- process group


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


def stop_group(pgid: int, grace: float = STOP_GRACE, proc: Optional[subprocess.Popen] = None) -> None:
    """SIGTERM the launcher, frontend and workers at once; SIGKILL what is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap the launcher, our child, so it stops counting
            if not group_members(pgid):
                return
            time.sleep(0.05)
        if sig == signal.SIGTERM:
            log(f"TorchServe process group {pgid} still running after {grace}s; killing it")


# --------------------------------------------------------------------------- the server


@dataclass
class TorchServeServer:
    """A ``torchserve --start --foreground`` in ``base`` on fixed ports."""

    base: Path
    ports: dict[str, int]
    extra_allowed_urls: tuple[str, ...] = ()
    workers_per_model: int = 1
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)

    @property
    def model_store(self) -> Path:
        return self.base / "model-store"

    @property
    def tmp_dir(self) -> Path:
        return self.base / "tmp"

    @property
    def config_file(self) -> Path:
        # The gRPC port in the file name puts it on the launcher's command line, where
        # state.looks_like checks that a recorded pid is still this server.
        return self.base / f"config-{self.ports['grpc_inference']}.properties"

    @property
    def log_file(self) -> Path:
        return self.base / "logs" / f"torchserve-{self.ports['grpc_inference']}.out"

    @property
    def endpoints(self) -> TorchServeEndpoints:
        return TorchServeEndpoints.on_ports(self.ports, self.model_store)

    @property
    def pid(self) -> Optional[int]:
        return None if self.proc is None else self.proc.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "ts.model_server", "--start", "--foreground",
                "--ts-config", str(self.config_file), "--model-store", str(self.model_store),
                "--log-config", str(self.base / "log4j2.xml"),
                "--disable-token-auth", "--enable-model-api", "--ncs"]

    def _write_files(self) -> None:
        for folder in (self.model_store, self.tmp_dir, self.base / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.base / "log4j2.xml").write_text(QUIET_LOG4J2.format(logs=self.base / "logs"))
        self.config_file.write_text(config_properties(self.ports, self.model_store, self.tmp_dir,
                                                      self.extra_allowed_urls, self.workers_per_model))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers(self, timeout: float = PROBE_TIMEOUT) -> bool:
        return torchserve_answers(self.endpoints, timeout)

    def start(self, timeout: float = START_TIMEOUT) -> "TorchServeServer":
        """Spawn it and wait until healthy (RuntimeError if it exits or times out)."""
        if self.alive():
            raise RuntimeError(f"TorchServe in {self.base} is already running (pid {self.pid})")
        self._write_files()
        t0 = time.monotonic()
        self.proc = spawn(self.command(), self.log_file, cwd=self.base, env=torchserve_env(self.tmp_dir))
        deadline = t0 + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.answers(timeout=1.0):
                log(f"started TorchServe (gRPC {self.endpoints.grpc_inference}, pid {self.proc.pid}) "
                    f"in {time.monotonic() - t0:.2f}s")
                return self
            time.sleep(0.1)
        code = self.proc.poll()
        self.stop()
        raise RuntimeError(f"torchserve (gRPC port {self.ports['grpc_inference']}): "
                           f"{'exit ' + str(code) if code is not None else 'timeout'}; log:\n"
                           f"{tail(self.log_file, 15)}\n{tail(self.base / 'logs' / 'ts_log.log', 15)}")

    def stop(self) -> None:
        """Stop the launcher, the frontend and every worker (SIGKILL after a grace period)."""
        if self.proc is not None:
            stop_group(self.proc.pid, STOP_GRACE, self.proc)
            _remove_pid_file(self.tmp_dir)
        untrack(self)

    def __enter__(self) -> "TorchServeServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _remove_pid_file(tmp_dir: Path) -> None:
    # The launcher's pid file (TMPDIR/.model_server.pid): a stale one makes the next start
    # check a pid that may have been reused.
    (Path(tmp_dir) / ".model_server.pid").unlink(missing_ok=True)


def _stop_recorded(rec: Embedded) -> None:
    # state.stop_record has sent SIGTERM to the launcher (rec.pid), which does not pass it on:
    # the frontend and workers in its process group are stopped here.
    stop_group(rec.pid, STOP_GRACE)
    _remove_pid_file(Path(rec.data_dir) / "tmp")


after_stop(KIND, _stop_recorded)


def _launch(base: Path, ports: Optional[Mapping[str, int]], extra_allowed_urls: tuple[str, ...],
            workers_per_model: int, timeout: float) -> TorchServeServer:
    """Start one, retrying on other free ports when the caller did not fix them all."""
    errors = []
    attempts = 1 if ports is not None and set(ports) >= set(PORT_NAMES) else START_ATTEMPTS
    for _attempt in range(attempts):
        server = TorchServeServer(Path(base), choose_ports(ports), extra_allowed_urls, workers_per_model)
        try:
            return server.start(timeout)
        except RuntimeError as exc:
            errors.append(str(exc))
    raise RuntimeError("could not start TorchServe:\n" + "\n".join(errors))


def start_torchserve(state_dir: Path, ports: Optional[Mapping[str, int]] = None, *,
                     extra_allowed_urls: tuple[str, ...] = (), workers_per_model: int = 1,
                     timeout: float = START_TIMEOUT) -> TorchServeServer:
    """A private TorchServe under ``<state_dir>/torchserve`` (not recorded in the state dir;
    stopped by ``stop_all`` and at exit), running once this returns."""
    server = _launch(Path(state_dir).resolve() / KIND, ports, extra_allowed_urls, workers_per_model, timeout)
    track(server)
    return server


def _endpoints_file(state_dir: Path) -> Path:
    return Path(state_dir) / KIND / "endpoints.json"


def _recorded_endpoints(state_dir: Path) -> Optional[TorchServeEndpoints]:
    try:
        return TorchServeEndpoints(**json.loads(_endpoints_file(state_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _from_environment() -> Optional[TorchServeEndpoints]:
    found = TorchServeEndpoints.from_env()
    if found is None:
        return None
    if grpc_ping(found.grpc_inference):
        return found
    log(f"TORCHSERVE_GRPC_ADDR={found.grpc_inference} does not answer Ping; looking further")
    return None


def ensure_torchserve(state_dir: Path, force_embedded: bool = False, *,
                      extra_allowed_urls: tuple[str, ...] = ()) -> TorchServeEndpoints:
    """A TorchServe that answers: the environment's, else the one recorded in ``state_dir``,
    else one started there (recorded, so a later call reuses it)."""
    if not embedded_forced(force_embedded):
        found = _from_environment()
        if found is not None:
            return found
    state_dir = Path(state_dir).resolve()
    config = json.dumps({"python": sys.executable, "allowed": list(extra_allowed_urls)}, sort_keys=True)
    with state_lock(state_dir):
        recorded = _recorded_endpoints(state_dir)
        # reuse also stops a recorded server that no longer answers or has another config
        if reuse(state_dir, KIND, lambda _url: recorded is not None and torchserve_answers(recorded), config):
            return recorded
        server = _launch(state_dir / KIND, None, extra_allowed_urls, 1, START_TIMEOUT)
        endpoints = server.endpoints
        _endpoints_file(state_dir).write_text(json.dumps(asdict(endpoints), indent=2) + "\n")
        remember(state_dir, Embedded(KIND, server.pid, server.ports["grpc_inference"], endpoints.grpc_inference,
                                     f"{sys.executable} -m ts.model_server", str(server.base),
                                     str(server.log_file), config=config), server.proc)
        return endpoints


def recorded_torchserve(state_dir: Path) -> Optional[TorchServeEndpoints]:
    """The endpoints of the TorchServe recorded in ``state_dir`` (whether or not it runs)."""
    return _recorded_endpoints(state_dir) if KIND in load_state(state_dir) else None
