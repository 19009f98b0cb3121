"""The registry against its floor and against MLflow itself, in the same run, on the same servers.

- ResolveModelVersion ("model@production", answered from the replica's cache) vs the empty-RPC
  floor (grpc.health.v1.Health/Check) on the same server: target p50 <= 1.2x.
- ResolveModelVersion vs `MlflowClient().get_model_version_by_alias(name, "production")` against
  the same MLflow: target >= 20x faster.
- GetRegisteredModel, GetModelVersion and CreateRegisteredModel through the service vs the same
  call made directly with MlflowClient: target <= 1.3x.

Finds or starts PostgreSQL, S3 and MLflow as `make test` does (under .run/), starts its own
mesh server hosting only the registry (auth off, as the other benchmarks), and alternates
the subjects within each repetition.

    python bench/bench_registry.py [--quick] [--reps N] [--access-log on|off]
"""

from __future__ import annotations

import time
import uuid

import _harness as h
import grpc
from mlflow.tracking import MlflowClient
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ml_serving_tools import devservices
from ml_serving_tools.paths import STATE_DIR

REGISTRY = "/mnbara.mlserving.registry.v1.RegistryService/"


def backends() -> dict[str, str]:
    database = devservices.ensure_postgres(STATE_DIR)
    s3 = devservices.ensure_s3(STATE_DIR)
    devservices.ensure_buckets(s3, devservices.MODELS_BUCKET, devservices.MLFLOW_BUCKET)
    mlflow = devservices.ensure_mlflow(STATE_DIR, database, s3)
    return {"DATABASE_URL": database, **s3.env(), "MLFLOW_TRACKING_URI": mlflow}


def artifact(name: str) -> bytes:
    import io
    import json
    import zipfile
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": name, "modelVersion": "1"}}))
        archive.writestr("model.pt", b"w" * 1024)
    return out.getvalue()


def timed(call, n: int) -> list[float]:
    """Milliseconds of n sequential calls, sorted."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    reps = h.reps_of(args)
    fast_calls = 300 if args.quick else 2000
    slow_calls = 30 if args.quick else 150
    env = backends()
    mlflow = MlflowClient(env["MLFLOW_TRACKING_URI"])
    with h.Mesh("registry", services="registry", access_log=args.access_log == "on", keep_logs=args.keep_logs,
                env=env) as mesh, grpc.insecure_channel(mesh.grpc_addr) as channel:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        call = {m: channel.unary_unary(REGISTRY + m, request_serializer=lambda r: r.SerializeToString(),
                                       response_deserializer=lambda b: b)
                for m in ("CreateRegisteredModel", "CreateModelVersion", "TransitionStage", "GetRegisteredModel",
                          "GetModelVersion", "ResolveModelVersion")}
        call["CreateRegisteredModel"](pb.CreateRegisteredModelRequest(registered_model=pb.RegisteredModel(name=name)))
        call["CreateModelVersion"](pb.CreateModelVersionRequest(model_name=name, artifact=artifact(name),
                                                                artifact_file_name="m.mar"))
        for stage in (pb.STAGE_STAGING, pb.STAGE_PRODUCTION):
            call["TransitionStage"](pb.TransitionStageRequest(model_name=name, version="1", to_stage=stage))
        health = h.raw_unary(channel, h.HEALTH_CHECK)
        resolve = h.raw_unary(channel, REGISTRY + "ResolveModelVersion")
        resolve_req = pb.ResolveModelVersionRequest(model_name=name).SerializeToString()
        assert pb.ResolveModelVersionResponse.FromString(resolve(resolve_req)).model_version.version == "1"
        assert mlflow.get_model_version_by_alias(name, "production").version == "1"
        get_model_req = pb.GetRegisteredModelRequest(name=name)
        get_version_req = pb.GetModelVersionRequest(model_name=name, version="1")
        prefix = f"bench-create-{uuid.uuid4().hex[:6]}"

        h.progress(f"{reps} repetitions: {fast_calls} resolve/floor calls, {slow_calls} MLflow-bound calls each")
        runs = h.alternating(reps, {
            "floor": lambda: h.sequential_latencies(health, h.health_request_bytes(), fast_calls, 100),
            "resolve": lambda: h.sequential_latencies(resolve, resolve_req, fast_calls, 100),
            "mlflow alias": lambda: timed(lambda i: mlflow.get_model_version_by_alias(name, "production"),
                                          slow_calls),
            "get model": lambda: timed(lambda i: call["GetRegisteredModel"](get_model_req), slow_calls),
            "mlflow get model": lambda: timed(lambda i: mlflow.get_registered_model(name), slow_calls),
            "get version": lambda: timed(lambda i: call["GetModelVersion"](get_version_req), slow_calls),
            "mlflow get version": lambda: timed(lambda i: mlflow.get_model_version(name, "1"), slow_calls),
            "create model": lambda: timed(lambda i: call["CreateRegisteredModel"](pb.CreateRegisteredModelRequest(
                registered_model=pb.RegisteredModel(name=f"{prefix}-s-{uuid.uuid4().hex[:8]}"))), slow_calls // 3),
            "mlflow create model": lambda: timed(lambda i: mlflow.create_registered_model(
                f"{prefix}-m-{uuid.uuid4().hex[:8]}"), slow_calls // 3),
        })
        for model in mlflow.search_registered_models(f"name LIKE '{prefix}%'", max_results=1000):
            mlflow.delete_registered_model(model.name)

    p50 = {k: [h.percentile(v, 50) for v in runs[k]] for k in runs}
    h.result(f"# bench_registry: registry vs its floor and vs MLflow ({env['MLFLOW_TRACKING_URI']}), direct gRPC, "
             f"{reps} reps, access log {args.access_log}")
    h.result(h.ratio_line("resolve p50", p50["resolve"], p50["floor"], "ms", "empty-RPC floor", target=1.2))
    h.result(h.ratio_line("mlflow get_model_version_by_alias p50", p50["mlflow alias"], p50["resolve"], "ms",
                          "resolve", target=20, higher_is_better=True))
    h.result(h.ratio_line("GetRegisteredModel p50", p50["get model"], p50["mlflow get model"], "ms",
                          "MlflowClient.get_registered_model", target=1.3))
    h.result(h.ratio_line("GetModelVersion p50", p50["get version"], p50["mlflow get version"], "ms",
                          "MlflowClient.get_model_version", target=1.3))
    h.result(h.ratio_line("CreateRegisteredModel p50", p50["create model"], p50["mlflow create model"], "ms",
                          "MlflowClient.create_registered_model", target=1.3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
