"""Shared pieces of the benchmark scripts: start and stop the stack, light clients, statistics.

Every benchmark starts its own mesh server (and Envoy when it needs one) on free loopback
ports, with its own Redis key prefix, and stops everything it started on the way out
(including on Ctrl-C and SIGTERM), then deletes the Redis keys under its prefix.

Results are printed on stdout, one line per figure; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

from grpc_health.v1 import health_pb2
from mnbara.mlserving.bandit.v1 import bandit_pb2

from ml_serving import defaults
from ml_serving_tools import devauth, stack

BANDIT_SERVICE = "/mnbara.mlserving.bandit.v1.BanditService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REDIS_URL = os.environ.get("REDIS_URL", defaults.REDIS_URL)


# ----- command line and output -----

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer repetitions, shorter loops")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5, 2 with --quick)")
    p.add_argument("--access-log", choices=("on", "off"), default="on",
                   help="MESH_ACCESS_LOG of the server under test (default on, as shipped)")
    p.add_argument("--keep-logs", action="store_true", help="keep the state directory with the server logs")
    return p


def reps_of(args) -> int:
    return args.reps or (2 if args.quick else 5)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def result(line: str) -> None:
    print(line, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def fmt(value: float) -> str:
    """Three significant digits, without exponents: 0.612, 12.3, 4521."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.2g}"


def ratio_line(what: str, subject: list[float], base: list[float], unit: str, base_name: str,
               target: float | None = None, higher_is_better: bool = False) -> str:
    """`what S unit vs BASE B unit: R x (median of n)`: medians of the values and of per-rep ratios."""
    ratios = [s / b for s, b in zip(subject, base) if b]
    r = median(ratios)
    line = (f"{what} {fmt(median(subject))} {unit} vs {base_name} {fmt(median(base))} {unit}: "
            f"{r:.2f}x (median of {len(ratios)}, range {min(ratios):.2f}-{max(ratios):.2f})")
    if target is not None:
        ok = r >= target if higher_is_better else r <= target
        line += f" [target {'>=' if higher_is_better else '<='} {target}x: {'met' if ok else 'MISSED'}]"
    return line


# ----- the stack -----

class Mesh:
    """A mesh server (optionally behind Envoy) started for one benchmark; a context manager."""

    def __init__(self, name: str, services: str = "bandit", access_log: bool = True, envoy: bool = False,
                 keep_logs: bool = False, auth: bool = False, env: dict[str, str] | None = None):
        self.name = name
        self.extra_env = dict(env or {})  # e.g. where PostgreSQL, MLflow and S3 are
        self.services = services
        self.access_log = access_log
        self.with_envoy = envoy
        self.auth = auth  # both Envoy and the mesh check tokens; `token` carries every scope
        self.token = ""
        self.keep_logs = keep_logs
        self.prefix = f"bench-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"mesh-bench-{name}-"))
        self.grpc_addr = ""
        self.front_door = ""
        self.admin_addr = ""
        self.proc = None
        self.envoy_proc = None
        self._exits = ExitStack()

    def __enter__(self) -> "Mesh":
        _stop_on_sigterm()
        self._exits.callback(self._cleanup_dir)
        self._exits.callback(self._cleanup_redis)
        try:
            self.grpc_addr = f"127.0.0.1:{stack.free_port()}"
            env = {
                "MESH_GRPC_ADDR": self.grpc_addr,
                "MESH_SERVICES": self.services,
                "MESH_METRICS_ADDR": "",
                "REDIS_URL": REDIS_URL,
                "MESH_KEY_PREFIX": self.prefix,
                "MESH_ACCESS_LOG": "true" if self.access_log else "false",
                "LOG_LEVEL": "INFO",
                # These benchmarks measure the mesh without identity checks; bench_auth.py
                # measures what auth adds.
                "AUTH_ENABLED": "false",
                "MESH_SHUTDOWN_DELAY_SECONDS": "0",
                **self.extra_env,
            }
            keys = devauth.ensure_dev_keys(self.state_dir / "auth") if self.auth else None
            if keys is not None:
                env.update(stack.mesh_auth_env(keys))
                self.token = devauth.mint_token(keys, subject="bench")
            self.proc = stack.start_mesh(env, self.state_dir / "mesh.log")
            self._exits.callback(stack.stop, self.proc)
            if self.with_envoy:
                self.front_door = f"127.0.0.1:{stack.free_port()}"
                self.admin_addr = f"127.0.0.1:{stack.free_port()}"
                base_id = 20000 + (os.getpid() % 20000)
                self.envoy_proc = stack.start_envoy(self.state_dir, self.front_door, self.grpc_addr,
                                                    self.admin_addr, base_id, auth=keys)
                self._exits.callback(stack.stop, self.envoy_proc)
        except BaseException:
            self.keep_logs = True
            self._exits.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            self.keep_logs = True
        self._exits.close()
        return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def delete_keys(self, pattern: str = "*") -> int:
        """Delete this run's Redis keys matching `<prefix>:<pattern>`; returns how many."""
        import redis
        client = redis.Redis.from_url(REDIS_URL)
        deleted = 0
        try:
            batch = []
            for key in client.scan_iter(match=f"{self.prefix}:{pattern}", count=2000):
                batch.append(key)
                if len(batch) >= 2000:
                    deleted += client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += client.unlink(*batch)
        finally:
            client.close()
        return deleted

    def _cleanup_redis(self) -> None:
        try:
            self.delete_keys("*")
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real outcome
            progress(f"could not delete Redis keys {self.prefix}:*: {exc}")

    def _cleanup_dir(self) -> None:
        if self.keep_logs:
            progress(f"logs kept in {self.state_dir}")
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the `finally`/`__exit__` clean-ups run."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


# ----- clients -----

def raw_unary(channel, method: str):
    """A unary multi-callable that sends and returns raw bytes: no client-side protobuf work."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def select_request_bytes(bandit: str) -> bytes:
    return bandit_pb2.SelectRequest(bandit=bandit, user_id="bench-user").SerializeToString()


def health_request_bytes() -> bytes:
    return health_pb2.HealthCheckRequest().SerializeToString()


def create_bandit(channel, name: str, arms: int = 10, ttl_seconds: int = 3600, metadata=None,
                  context_dimension: int = 0) -> None:
    """A Beta-Bernoulli bandit with `arms` arms (contextual too with a `context_dimension`);
    decisions and event ids expire after an hour."""
    call = channel.unary_unary(BANDIT_SERVICE + "CreateBandit",
                               request_serializer=bandit_pb2.CreateBanditRequest.SerializeToString,
                               response_deserializer=bandit_pb2.CreateBanditResponse.FromString)
    bandit = bandit_pb2.Bandit(name=name, description="benchmark bandit",
                               arms=[bandit_pb2.Arm(id=f"arm-{i}") for i in range(arms)],
                               decision_ttl_seconds=ttl_seconds, context_dimension=context_dimension)
    call(bandit_pb2.CreateBanditRequest(bandit=bandit), timeout=10, metadata=metadata)


def rest_select_caller(mesh: "Mesh", bandit: str, user_id: str = ""):
    """A keep-alive REST Select through the mesh's Envoy, with its token when it has one."""
    host, _, port = mesh.front_door.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"bandit": bandit, **({"userId": user_id} if user_id else {})}).encode()
    headers = {"content-type": "application/json", "connection": "keep-alive",
               **({"authorization": f"Bearer {mesh.token}"} if mesh.token else {})}

    def select(_request: bytes) -> bytes:
        conn.request("POST", "/api/v1/bandits/select", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST select answered {response.status}: {data[:300]!r}")
        return data

    return conn, select


def check_select(channel, bandit: str) -> None:
    """One Select with full deserialisation, to be sure the benchmark measures a real answer."""
    reply = bandit_pb2.SelectResponse.FromString(
        raw_unary(channel, BANDIT_SERVICE + "Select")(select_request_bytes(bandit), timeout=10))
    assert reply.decision_id and len(reply.choices) == 1, reply


def sequential_latencies(call: Callable[[bytes], object], request: bytes, n: int, warmup: int) -> list[float]:
    """`n` blocking calls one after another; returns sorted latencies in milliseconds."""
    for _ in range(warmup):
        call(request)
    return sequential_latencies_of(call, [request] * n)


def sequential_latencies_of(call: Callable[[bytes], object], requests: Sequence[bytes]) -> list[float]:
    """One blocking call per request, one after another; sorted latencies in milliseconds."""
    clock = time.perf_counter_ns
    out = [0.0] * len(requests)
    for i, request in enumerate(requests):
        t0 = clock()
        call(request)
        out[i] = (clock() - t0) / 1e6
    out.sort()
    return out


def alternating(reps: int, subjects: dict[str, Callable[[], object]]) -> dict[str, list]:
    """Run every subject once per repetition, rotating which one goes first; results per subject."""
    names = list(subjects)
    out: dict[str, list] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            out[name].append(subjects[name]())
        progress(f"repetition {rep + 1}/{reps} done")
    return out


async def closed_loop_throughput(call, requests: Callable[[int], bytes], in_flight: int, window_s: float,
                                 warmup_s: float, limit: int | None = None,
                                 probe: Callable[[], float] | None = None) -> tuple[float, int, float]:
    """`in_flight` workers call back to back; completions per second within the window.

    `call` is a grpc.aio multi-callable taking bytes; `requests(i)` gives the i-th request
    (so requests can be unique); `limit` caps the number of requests (a pre-built pool).
    `probe()` (e.g. the server's CPU seconds) is read at both ends of the window.
    Returns (completions per second, completions counted, probe difference or nan).
    """
    import asyncio

    loop = asyncio.get_running_loop()
    state = {"next": 0, "counting": False, "done": 0, "stop": False}

    async def worker():
        while not state["stop"]:
            i = state["next"]
            if limit is not None and i >= limit:
                return
            state["next"] = i + 1
            await call(requests(i))
            if state["counting"]:
                state["done"] += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(in_flight)]
    try:
        await asyncio.sleep(warmup_s)
        state["counting"] = True
        p0 = probe() if probe else float("nan")
        t0 = loop.time()
        deadline = t0 + window_s
        while loop.time() < deadline and not all(t.done() for t in tasks):
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        state["counting"] = False
        elapsed = loop.time() - t0
        p1 = probe() if probe else float("nan")
        done = state["done"]
    finally:
        state["stop"] = True
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t.exception() is not None:
            raise t.exception()
    return done / elapsed, done, p1 - p0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/{pid}/status")
