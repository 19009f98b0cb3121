"""`make up` (console script `mesh-up`): the whole mesh locally, in the foreground, until Ctrl-C.

Finds Redis, PostgreSQL, S3 and MLflow (or starts embedded ones: SeaweedFS for S3, an
`mlflow server` on that PostgreSQL and S3), starts one mesh server hosting
all five services and Envoy in front of it, and TorchServe behind it, creates a `demo` bandit
and sets up the demo `recommendation-model` (trained once and cached, registered, v1 in
Production and v2 in Staging, served: `demo_setup`) so the printed examples work, loads the
Feature Store's demo users, items and events into PostgreSQL (`demo_data`, in a thread while
the rest starts; a second `make up` finds them there) and then materialises the feature views
into Redis in the background (`demo_setup.DemoFeatures`), and stops
everything cleanly on Ctrl-C or SIGTERM. A demo that cannot be set up is a warning: the mesh
runs anyway.

Secure by default even locally: development keys are kept under the state directory
(`<state>/auth`, created once), Envoy and the mesh both check tokens signed with them, and
the banner prints a token with every scope (valid for a day; `make up` again for a new one).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ml_serving import defaults

from . import demo_data, demo_setup, devauth, devservices, stack
from .paths import STATE_DIR


def _setting(name: str, default: object) -> str:
    return os.environ.get(name, "").strip() or str(default)


def create_demo_bandit(grpc_addr: str, token: str) -> None:
    """Straight to the mesh's own port, which checks the token too."""
    with grpc.insecure_channel(grpc_addr) as channel:
        try:
            bandit_pb2_grpc.BanditServiceStub(channel).CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(
                name="demo", description="created by make up",
                arms=[pb.Arm(id="model-a"), pb.Arm(id="model-b"), pb.Arm(id="model-c")], context_dimension=3)),
                timeout=5, metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise


"""How an archive TorchServe downloaded from the registry is named in its model store: the
artifact's file name in the registry's store, `<artifact id>-<file name>`."""


def banner(running: stack.Stack, redis_url: str, database_url: str, s3: devservices.S3Endpoint | None = None,
           mlflow_uri: str | None = None, torchserve: devservices.TorchServeEndpoints | None = None,
           demo: demo_setup.DemoReport | None = None, data: demo_data.LoadReport | None = None,
           features: demo_setup.DemoFeatures | None = None) -> str:
    """What `make up` prints once the mesh is up; the Feature Store's section only with demo data."""
    front = running.front_door
    extra = ""
    if s3 is not None:
        extra += (f"  S3 endpoint                     {s3.url}  (access key {s3.access_key_id}; buckets "
                  f"{devservices.MODELS_BUCKET}, {devservices.MLFLOW_BUCKET})\n")
    if mlflow_uri:
        extra += f"  MLflow UI and tracking URI      {mlflow_uri}\n"
    if torchserve is not None:
        extra += (f"  TorchServe gRPC (inference)     {torchserve.grpc_inference}  "
                  f"(management {torchserve.grpc_management})\n")
    if data is not None:
        extra += (f"  Feature Store demo data         demo_users {data.users:,}, demo_items {data.items:,}, "
                  f"demo_interactions {data.events:,} (seed {data.seed})\n")
    demo_text = "\n" + demo_setup.banner(running.front_door, demo) if demo is not None else ""
    if data is not None:
        demo_text += "\n" + demo_setup.features_banner(running.front_door, features)
    auth = '-H "authorization: Bearer $ML_SERVING_TOKEN"'
    json = "-H 'content-type: application/json'"
    return f"""
ML serving mesh is up.
  REST + gRPC front door (Envoy)  http://{front}
  mesh gRPC (direct)              {running.grpc_addr}
  Prometheus metrics              http://{running.metrics_addr}/metrics
  Envoy admin                     http://{running.admin_addr}
  Redis                           {redis_url}
  PostgreSQL                      {database_url}
{extra}  token signing keys (dev)        {running.keys.jwks.parent}

Every call needs a bearer token; this one has every scope and is valid for a day:
export ML_SERVING_TOKEN={running.token}

Try (after the export above; the Python client reads ML_SERVING_TOKEN too):
  curl -s -X POST http://{front}/api/v1/bandits/select {auth} {json} -d '{{"bandit": "demo", "k": 2}}'
  curl -s 'http://{front}/api/v1/bandits/stats?bandit=demo' {auth}
  curl -s -X POST http://{front}/api/v1/registry/models {auth} {json} -d '{{"name": "fraud", "description": "demo"}}'
  curl -s http://{front}/api/v1/registry/models {auth}
  curl -s -X POST http://{front}/api/v1/ml/retraining/trigger {auth} {json} -d '{{"modelName": "recommendation-model", "parameters": {{"epochs": 2}}}}'
  curl -s 'http://{front}/api/v1/ml/retraining/runs?pageSize=1' {auth}
  curl -s -X POST http://{front}/api/v1/ml/monitoring/record {auth} {json} -d '{{"modelName": "recommendation-model", "metricName": "ctr", "value": 0.03}}'
  curl -s http://{front}/api/v1/ml/monitoring/alerts {auth}
  .venv/bin/grpcurl -plaintext {front} list
  .venv/bin/grpcurl -plaintext {auth} -d '{{"bandit": "demo"}}' {front} mnbara.mlserving.bandit.v1.BanditService/Select
{demo_text}
Ctrl-C stops everything.
"""


def start_local_stack(state: Path, env: dict[str, str]) -> stack.Stack:
    """The stack on the default addresses, each overridable by its environment variable,
    checking tokens signed with the development keys under ``state``."""
    return stack.start_stack(
        state, env,
        grpc_addr=_setting("MESH_GRPC_ADDR", defaults.MESH_GRPC),
        front_door=_setting("ENVOY_LISTEN", defaults.FRONT_DOOR),
        admin_addr=_setting("ENVOY_ADMIN", defaults.ENVOY_ADMIN),
        metrics_addr=_setting("MESH_METRICS_ADDR", defaults.MESH_METRICS),
        base_id=int(_setting("ENVOY_BASE_ID", defaults.ENVOY_BASE_ID)),
        auth=devauth.ensure_dev_keys(state / "auth"),
        retraining_workers=int(_setting("RETRAINING_WORKERS", "1")),
    )


def wait_for_stop_or_exit(running: stack.Stack, state: Path) -> int:
    """Block until Ctrl-C / SIGTERM (0) or until one of the processes dies (1)."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        dead = [p for p in running.processes if p.poll() is not None]
        if dead:
            print(f"a process exited (code {dead[0].returncode}); see the logs in {state}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    # Until the stack runs, SIGTERM interrupts like Ctrl-C, so what started so far is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)

    with devservices.DevServices(state, s3=True, mlflow=True, torchserve=True) as services:  # stopped on the way out
        data_load = demo_setup.DemoDataLoad(services.database_url)  # beside the start: seconds, once
        # Ctrl-C stops Envoy before the mesh, so no balancer needs the drain delay: stop at once.
        running = start_local_stack(state, {**services.env(),
                                            "MESH_SHUTDOWN_DELAY_SECONDS": _setting("MESH_SHUTDOWN_DELAY_SECONDS", "0")})
        try:
            create_demo_bandit(running.grpc_addr, running.token)
            # In the background once the data is there: a FULL run takes 30 to 60 s at the default sizes.
            features = demo_setup.DemoFeatures(running.grpc_addr, running.token, data_load)
            demo = demo_setup.run_demo_setup(running.grpc_addr, running.token, state)
            print(banner(running, services.redis_url, services.database_url, services.s3, services.mlflow_uri,
                         services.torchserve, demo, data_load.wait(), features), flush=True)
            print(f"logs: {state}/mesh.log, {state}/envoy-*.log, {state}/retraining-worker-*.log, {state}/mlflow/, "
                  f"{state}/s3/weed.log, "
                  f"{state}/torchserve/", flush=True)
            return wait_for_stop_or_exit(running, state)
        finally:
            print("stopping...", flush=True)
            running.stop()


if __name__ == "__main__":
    sys.exit(main())
