"""The Router against TorchServe's own gRPC API and against the empty-RPC floor: same run.

The demo `recommendation-model` (v1 archive) is registered twice, as versions 1 and 2 of one
model, and both are loaded into TorchServe (batch_size 1) by the Inference service; a running
50/50 experiment splits users between them. Subjects, in alternating order per repetition:

  direct       TorchServe's `InferenceAPIsService/Predictions` on `<model>-v1` (raw bytes):
               the baseline of Predict
  predict      `RouterService/Predict` (user "bench-user", `raw_input`): assignment, exposure,
               the TorchServe call through the Inference use case, the sample
  rest         `POST /api/v1/router/predict` through Envoy, one keep-alive connection
  floor        `grpc.health.v1.Health/Check` on the mesh: the empty-RPC floor
  assign       `RouterService/AssignVariant` (counts the exposure, as a real call does)

Sequential p50 and p99 (blocking calls on one channel), throughput at 64 in flight (grpc.aio,
one channel) for direct and predict, and the client library's local assignment
(`ABTestingRouter.get_model_for_user`, exposures on) in assignments per second.
Targets: Predict p50 at most 1.2x direct, throughput at least 0.85x direct; AssignVariant
p50 at most 1.1x the floor; get_model_for_user at least 500,000 per second.

    python bench/bench_router.py [--quick] [--reps N]
"""

from __future__ import annotations

import asyncio
import json
import timeit
import uuid
from pathlib import Path

import _harness as h
import grpc
from bench_inference import backends, unary
from google.protobuf import duration_pb2
from mnbara.mlserving.inference.v1 import inference_pb2 as ipb
from mnbara.mlserving.registry.v1 import registry_pb2 as rpb
from mnbara.mlserving.router.v1 import router_pb2 as pb
from org.pytorch.serve.grpc.inference import inference_pb2 as tspb

from ml_serving_tools.demo_model import build_demo_models
from ml_serving_tools.paths import BUILD, STATE_DIR

REGISTRY = "/mnbara.mlserving.registry.v1.RegistryService/"
INFERENCE = "/mnbara.mlserving.inference.v1.InferenceService/"
ROUTER = "/mnbara.mlserving.router.v1.RouterService/"
TS_PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
HEALTH = "/grpc.health.v1.Health/Check"
INPUT = {"user_id": 123, "top_k": 5}
PAYLOAD = json.dumps(INPUT, separators=(",", ":")).encode()
USER = "bench-user"


def prepare(channel, model: str, artifact: bytes) -> None:
    create = unary(channel, REGISTRY + "CreateModelVersion", rpb.CreateModelVersionResponse)
    load = unary(channel, INFERENCE + "LoadModel", ipb.LoadModelResponse)
    for version in ("1", "2"):
        create(rpb.CreateModelVersionRequest(model_name=model, artifact=artifact, artifact_file_name="model.mar",
                                             create_model_if_missing=True), timeout=120)
        h.progress(f"loading {model} version {version}")
        load(ipb.LoadModelRequest(model_name=model, version=version, batch_size=1, min_workers=1,
                                  wait_until_ready=True), timeout=300)
    unary(channel, ROUTER + "CreateExperiment", pb.CreateExperimentResponse)(pb.CreateExperimentRequest(
        experiment=pb.Experiment(name=model, variants=[
            pb.Variant(name="control", model_name=model, model_version="1", weight_bps=5000, control=True),
            pb.Variant(name="treatment", model_name=model, model_version="2", weight_bps=5000)],
            metrics=[pb.OutcomeMetric(name="click", kind=pb.OUTCOME_KIND_BINARY)])), timeout=30)


def clean_up(channel, model: str) -> None:
    steps = [(ROUTER + "StopExperiment", pb.StopExperimentRequest(name=model), pb.StopExperimentResponse)]
    steps += [(INFERENCE + "UnloadModel", ipb.UnloadModelRequest(
        model_name=model, version=v, drain_timeout=duration_pb2.Duration(seconds=10)), ipb.UnloadModelResponse)
        for v in ("1", "2")]
    steps.append((REGISTRY + "DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name=model, force=True),
                  rpb.DeleteRegisteredModelResponse))
    for method, request, response in steps:
        try:
            unary(channel, method, response)(request, timeout=60)
        except grpc.RpcError as exc:
            h.progress(f"clean-up {method.rsplit('/', 1)[1]}: {exc.code()} {exc.details()}")


def rest_predict(mesh: h.Mesh):
    """A keep-alive REST Predict through the mesh's Envoy: (connection, call(body) -> bytes)."""
    import http.client

    host, _, port = mesh.front_door.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def predict(body: bytes) -> bytes:
        conn.request("POST", "/api/v1/router/predict", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST router predict answered {response.status}: {data[:300]!r}")
        return data

    return conn, predict


def check_answers(calls: dict, requests: dict, rest, body: bytes, model: str) -> None:
    direct = json.loads(tspb.PredictionResponse.FromString(calls["direct"](requests["direct"], timeout=30)).prediction)
    routed = pb.PredictResponse.FromString(calls["predict"](requests["predict"], timeout=30))
    assert routed.assignment.experiment == model, routed
    assert [int(s["item_id"]) for s in routed.prediction.struct_value["scores"]] == \
        [s["item_id"] for s in direct["scores"]], (routed, direct)
    answer = json.loads(rest(body))
    assert answer["assignment"]["experiment"] == model, answer


async def throughput(addr: str, method: str, request: bytes, in_flight: int, window: float, warmup: float,
                     probe) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(addr) as channel:
        rate, done, cpu = await h.closed_loop_throughput(h.raw_unary(channel, method), lambda i: request, in_flight,
                                                         window, warmup, probe=probe)
        return rate, cpu / done * 1e6


def local_assignments_per_second(addr: str, model: str, reps: int) -> list[float]:
    """get_model_for_user in this process: assignments per second, one figure per repetition."""
    from ml_serving import ABTestingRouter

    users = [f"user-{i}" for i in range(100_000)]
    context = {"user_segments": ["premium"]}
    router = ABTestingRouter(addr, timeout=30)
    try:
        router.get_model_for_user(users[0], context, experiment=model)  # loads the definitions
        get = router.get_model_for_user

        def run() -> None:
            for user in users:
                get(user, context, experiment=model)

        return [len(users) / min(timeit.repeat(run, number=1, repeat=3)) for _ in range(reps)]
    finally:
        router.close()


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per repetition (default 500)")
    p.add_argument("--window", type=float, default=None, help="throughput window in seconds (default 3)")
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = p.parse_args()
    reps = h.reps_of(args)
    calls = args.calls or (150 if args.quick else 500)
    window = args.window or (1.0 if args.quick else 3.0)
    warmup, warmup_s = (30, 0.3) if args.quick else (100, 0.5)

    h.progress("finding or starting PostgreSQL, S3, MLflow and TorchServe")
    env = backends(args.state_dir.resolve())
    artifact = build_demo_models(BUILD / "demo-models")["v1"].path.read_bytes()
    model = f"bench-router-{uuid.uuid4().hex[:8]}"
    with h.Mesh("router", services="registry,inference,router", access_log=args.access_log == "on", envoy=True,
                keep_logs=args.keep_logs, env=env) as mesh, \
            grpc.insecure_channel(mesh.grpc_addr) as channel, \
            grpc.insecure_channel(env["TORCHSERVE_GRPC_ADDR"]) as ts_channel:
        try:
            prepare(channel, model, artifact)
            requests = {
                "direct": tspb.PredictionsRequest(model_name=f"{model}-v1", input={"data": PAYLOAD})
                .SerializeToString(),
                "predict": pb.PredictRequest(user_id=USER, experiment=model, raw_input=PAYLOAD).SerializeToString(),
                "floor": h.health_request_bytes(),
                "assign": pb.AssignVariantRequest(user_id=USER, experiment=model).SerializeToString(),
            }
            calls_of = {"direct": h.raw_unary(ts_channel, TS_PREDICTIONS),
                        "predict": h.raw_unary(channel, ROUTER + "Predict"),
                        "floor": h.raw_unary(channel, HEALTH), "assign": h.raw_unary(channel, ROUTER + "AssignVariant")}
            body = json.dumps({"user_id": USER, "experiment": model, "inputs": INPUT}).encode()
            conn, rest = rest_predict(mesh)
            try:
                check_answers(calls_of, requests, rest, body, model)
                h.progress(f"sequential: {calls} calls x 5 subjects x {reps} repetitions")

                def sequential(name):
                    if name == "rest":
                        return lambda: h.sequential_latencies(rest, body, calls, warmup)
                    return lambda: h.sequential_latencies(calls_of[name], requests[name], calls, warmup)

                seq = h.alternating(reps, {name: sequential(name) for name in
                                           ("direct", "predict", "rest", "floor", "assign")})
            finally:
                conn.close()
            h.progress(f"throughput: {args.in_flight} in flight, {window} s windows x 2 subjects x {reps} reps")
            probe = lambda: h.cpu_seconds(mesh.pid)  # noqa: E731
            addr = {"direct": env["TORCHSERVE_GRPC_ADDR"], "predict": mesh.grpc_addr}
            method = {"direct": TS_PREDICTIONS, "predict": ROUTER + "Predict"}
            tput = h.alternating(reps, {name: (lambda n=name: asyncio.run(throughput(
                addr[n], method[n], requests[n], args.in_flight, window, warmup_s, probe))) for name in addr})
            h.progress("local assignment: get_model_for_user over 100,000 users")
            local = local_assignments_per_second(mesh.grpc_addr, model, reps)
        finally:
            clean_up(channel, model)

    p50 = {k: [h.percentile(v, 50) for v in runs] for k, runs in seq.items()}
    p99 = {k: [h.percentile(v, 99) for v in runs] for k, runs in seq.items()}
    rate = {k: [r for r, _ in runs] for k, runs in tput.items()}
    h.result(f"# bench_router: demo recommendation-model, 50/50 experiment, {calls} sequential calls, "
             f"{args.in_flight} in flight x {window} s, {reps} reps, access log {args.access_log}")
    h.result(h.ratio_line("Predict p50", p50["predict"], p50["direct"], "ms", "direct TorchServe", target=1.2))
    h.result(h.ratio_line("Predict p99", p99["predict"], p99["direct"], "ms", "direct TorchServe"))
    h.result(h.ratio_line(f"Predict throughput@{args.in_flight}", rate["predict"], rate["direct"], "req/s",
                          "direct TorchServe", target=0.85, higher_is_better=True))
    h.result(h.ratio_line("REST Predict p50", p50["rest"], p50["direct"], "ms", "direct TorchServe"))
    h.result(h.ratio_line("REST Predict p99", p99["rest"], p99["direct"], "ms", "direct TorchServe"))
    h.result(h.ratio_line("AssignVariant p50", p50["assign"], p50["floor"], "ms", "empty-RPC floor", target=1.1))
    h.result(f"get_model_for_user: {h.fmt(h.median(local))} assignments/s (median of {reps}; target >= 500000"
             f"{', MET' if h.median(local) >= 500_000 else ', MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
