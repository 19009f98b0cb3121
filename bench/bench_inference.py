"""Predictions through the mesh against TorchServe's own gRPC API: same model, same run.

The demo `recommendation-model` (v1 archive) is registered in the Registry through the mesh
twice, as versions 1 and 2 of one model, and loaded into TorchServe by the Inference service:
version 1 with batch_size=1, version 2 with batch_size=8 and max_batch_delay=5 ms. Every
subject then asks the same loaded TorchServe model for `{"user_id": 123, "top_k": 5}`, so the
only difference between them is the path:

  direct       TorchServe's own gRPC `InferenceAPIsService/Predictions` on `<model>-v<n>`
               (raw bytes, request built once): the baseline
  predict      `InferenceService/Predict` on the mesh, `raw_input` bytes (output parsed to a Value)
  predict-struct  the same with `inputs` as a Struct (secondary, sequential only)
  modelinfer   OIP `inference.GRPCInferenceService/ModelInfer` on the mesh (INT64 tensors
               user_id and top_k, shape [1]; outputs item_ids and scores as raw contents)
  rest         `POST /api/v1/inference/models/{model}:predict` through Envoy, one keep-alive
               HTTP/1.1 connection (sequential) or 64 (aiohttp, throughput; no target)

Per batching mode and repetition, in alternating order: sequential latency (blocking calls on
one reused channel or connection) and throughput at 64 in flight (grpc.aio, one channel per
subject; same client code for subject and baseline). Targets: Predict and ModelInfer p50 at
most 1.15x direct, throughput at least 0.9x direct; REST Predict p50 at most 1.3x gRPC Predict.

Finds or starts PostgreSQL, S3, MLflow and TorchServe as `make test` does (under .run/), starts
its own mesh server (registry and inference, deployer off, auth off) behind Envoy, and unloads
and deletes what it registered on the way out.

    python bench/bench_inference.py [--quick] [--reps N] [--access-log on|off] [--modes b1,b8]
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import _harness as h
import grpc
from google.protobuf import duration_pb2, struct_pb2
from inference import grpc_predict_v2_pb2 as oip
from mnbara.mlserving.inference.v1 import inference_pb2 as ipb
from mnbara.mlserving.registry.v1 import registry_pb2 as rpb
from org.pytorch.serve.grpc.inference import inference_pb2 as tspb

from ml_serving_tools import devservices
from ml_serving_tools.demo_model import build_demo_models
from ml_serving_tools.paths import BUILD, STATE_DIR

REGISTRY = "/mnbara.mlserving.registry.v1.RegistryService/"
INFERENCE = "/mnbara.mlserving.inference.v1.InferenceService/"
PREDICT = INFERENCE + "Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
TS_PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
INPUT = {"user_id": 123, "top_k": 5}
PAYLOAD = json.dumps(INPUT, separators=(",", ":")).encode()
# version: (batch_size, max_batch_delay in ms)
MODES = {"b1": ("1", 1, 5), "b8": ("2", 8, 5)}
GRPC_SUBJECTS = ("direct", "predict", "modelinfer")


def backends(state_dir: Path) -> dict[str, str]:
    database = devservices.ensure_postgres(state_dir)
    s3 = devservices.ensure_s3(state_dir)
    devservices.ensure_buckets(s3, devservices.MODELS_BUCKET, devservices.MLFLOW_BUCKET)
    mlflow = devservices.ensure_mlflow(state_dir, database, s3)
    torchserve = devservices.ensure_torchserve(state_dir)
    return {"DATABASE_URL": database, **s3.env(), "MLFLOW_TRACKING_URI": mlflow, **torchserve.env(),
            "INFERENCE_DEPLOYER_ENABLED": "false"}


def unary(channel, method: str, response_type):
    return channel.unary_unary(method, request_serializer=lambda r: r.SerializeToString(),
                               response_deserializer=response_type.FromString)


def requests_for(model: str, version: str) -> dict[str, bytes]:
    """Every subject's request, serialised once."""
    struct = struct_pb2.Struct()
    struct.update(INPUT)
    tensor = oip.ModelInferRequest.InferInputTensor
    return {
        "direct": tspb.PredictionsRequest(model_name=f"{model}-v{version}", input={"data": PAYLOAD})
        .SerializeToString(),
        "predict": ipb.PredictRequest(model_name=model, version=version, raw_input=PAYLOAD).SerializeToString(),
        "predict-struct": ipb.PredictRequest(model_name=model, version=version, inputs=struct).SerializeToString(),
        "modelinfer": oip.ModelInferRequest(
            model_name=model, model_version=version,
            inputs=[tensor(name=name, datatype="INT64", shape=[1], contents=oip.InferTensorContents(
                int64_contents=[value])) for name, value in INPUT.items()]).SerializeToString(),
    }


def rest_body(version: str) -> bytes:
    return json.dumps({"version": version, "inputs": INPUT}).encode()


def rest_caller(mesh: h.Mesh, model: str):
    """A keep-alive REST Predict through the mesh's Envoy: (connection, call(body) -> bytes)."""
    import http.client

    host, _, port = mesh.front_door.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    path = f"/api/v1/inference/models/{model}:predict"
    headers = {"content-type": "application/json", "connection": "keep-alive"}

    def predict(body: bytes) -> bytes:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST predict answered {response.status}: {data[:300]!r}")
        return data

    return conn, predict


def check_answers(calls: dict, requests: dict[str, bytes], rest, body: bytes, version: str) -> None:
    """One call of each subject, fully decoded, to be sure every one gets a real answer."""
    direct = json.loads(tspb.PredictionResponse.FromString(calls["direct"](requests["direct"], timeout=30)).prediction)
    assert len(direct["scores"]) == INPUT["top_k"] and direct["user_id"] == INPUT["user_id"], direct
    for name in ("predict", "predict-struct"):
        reply = ipb.PredictResponse.FromString(calls[name](requests[name], timeout=30))
        assert reply.model.model_version == version, reply
        got = [int(s["item_id"]) for s in reply.prediction.struct_value["scores"]]
        assert got == [s["item_id"] for s in direct["scores"]], (reply, direct)
    reply = oip.ModelInferResponse.FromString(calls["modelinfer"](requests["modelinfer"], timeout=30))
    assert reply.model_version == version and [o.name for o in reply.outputs] == ["item_ids", "scores"], reply
    ids = reply.raw_output_contents[0]
    assert [int.from_bytes(ids[i:i + 8], "little", signed=True) for i in range(0, len(ids), 8)] == \
        [s["item_id"] for s in direct["scores"]], (reply, direct)
    answer = json.loads(rest(body))
    assert answer["model"]["modelVersion"] == version, answer
    assert [s["item_id"] for s in answer["prediction"]["scores"]] == [s["item_id"] for s in direct["scores"]], answer


async def grpc_throughput(addr: str, method: str, request: bytes, in_flight: int, window: float, warmup: float,
                          probe) -> tuple[float, float]:
    """(calls per second, mesh CPU microseconds per call) at `in_flight` in flight over one channel."""
    async with grpc.aio.insecure_channel(addr) as channel:
        call = h.raw_unary(channel, method)
        rate, done, cpu = await h.closed_loop_throughput(call, lambda i: request, in_flight, window, warmup,
                                                         probe=probe)
        return rate, cpu / done * 1e6


async def rest_throughput(mesh: h.Mesh, model: str, body: bytes, in_flight: int, window: float, warmup: float,
                          probe) -> tuple[float, float]:
    """The same closed loop over `in_flight` keep-alive HTTP/1.1 connections (aiohttp)."""
    import aiohttp

    url = f"http://{mesh.front_door}/api/v1/inference/models/{model}:predict"
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=in_flight, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call(data: bytes) -> bytes:
            async with session.post(url, data=data, headers=headers) as response:
                out = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"REST predict answered {response.status}: {out[:300]!r}")
                return out

        rate, done, cpu = await h.closed_loop_throughput(call, lambda i: body, in_flight, window, warmup,
                                                         probe=probe)
        return rate, cpu / done * 1e6


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per repetition (default 500)")
    p.add_argument("--window", type=float, default=None, help="throughput window in seconds (default 3)")
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--state-dir", type=Path, default=STATE_DIR,
                   help="where S3, MLflow and TorchServe are found or started (default: .run, as make test); "
                        "a folder of its own keeps other users of .run from restarting them mid-run")
    p.add_argument("--modes", default="b1,b8", help="batching modes: b1 (batch_size 1), b8 (batch_size 8, 5 ms)")
    args = p.parse_args()
    reps = h.reps_of(args)
    calls = args.calls or (150 if args.quick else 500)
    window = args.window or (1.0 if args.quick else 3.0)
    warmup = 30 if args.quick else 100
    warmup_s = 0.3 if args.quick else 0.5
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}; choose from {list(MODES)}")

    h.progress("finding or starting PostgreSQL, S3, MLflow and TorchServe")
    env = backends(args.state_dir.resolve())
    artifact = build_demo_models(BUILD / "demo-models")["v1"].path.read_bytes()
    model = f"bench-inference-{uuid.uuid4().hex[:8]}"
    seq: dict[str, dict[str, list]] = {}
    tput: dict[str, dict[str, list]] = {}

    with h.Mesh("inference", services="registry,inference", access_log=args.access_log == "on", envoy=True,
                keep_logs=args.keep_logs, env=env) as mesh, \
            grpc.insecure_channel(mesh.grpc_addr) as channel, \
            grpc.insecure_channel(env["TORCHSERVE_GRPC_ADDR"]) as ts_channel:
        create = unary(channel, REGISTRY + "CreateModelVersion", rpb.CreateModelVersionResponse)
        delete = unary(channel, REGISTRY + "DeleteRegisteredModel", rpb.DeleteRegisteredModelResponse)
        load = unary(channel, INFERENCE + "LoadModel", ipb.LoadModelResponse)
        unload = unary(channel, INFERENCE + "UnloadModel", ipb.UnloadModelResponse)
        loaded: list[str] = []
        try:
            for mode in modes:
                version, batch_size, delay_ms = MODES[mode]
                created = create(rpb.CreateModelVersionRequest(
                    model_name=model, artifact=artifact, artifact_file_name="model.mar",
                    create_model_if_missing=True, description=f"bench_inference {mode}"), timeout=120)
                assert created.model_version.version == version, (created.model_version.version, version)
                h.progress(f"loading {model} version {version} ({mode}: batch_size {batch_size}, "
                           f"max_batch_delay {delay_ms} ms)")
                load(ipb.LoadModelRequest(model_name=model, version=version, batch_size=batch_size,
                                          max_batch_delay=duration_pb2.Duration(nanos=delay_ms * 1_000_000),
                                          min_workers=1, wait_until_ready=True), timeout=300)
                loaded.append(version)

            calls_of = {
                "direct": h.raw_unary(ts_channel, TS_PREDICTIONS),
                "predict": h.raw_unary(channel, PREDICT),
                "predict-struct": h.raw_unary(channel, PREDICT),
                "modelinfer": h.raw_unary(channel, MODEL_INFER),
            }
            addr_of = {"direct": env["TORCHSERVE_GRPC_ADDR"], "predict": mesh.grpc_addr,
                       "modelinfer": mesh.grpc_addr}
            method_of = {"direct": TS_PREDICTIONS, "predict": PREDICT, "modelinfer": MODEL_INFER}
            mesh_cpu = lambda: h.cpu_seconds(mesh.pid)  # noqa: E731
            for mode in modes:
                version = MODES[mode][0]
                requests = requests_for(model, version)
                body = rest_body(version)
                conn, rest = rest_caller(mesh, model)
                try:
                    check_answers(calls_of, requests, rest, body, version)
                    h.progress(f"{mode}: sequential, {calls} calls x 5 subjects x {reps} repetitions "
                               f"(after {warmup} warm-up)")

                    def sequential(name):
                        if name == "rest":
                            return lambda: h.sequential_latencies(rest, body, calls, warmup)
                        return lambda: h.sequential_latencies(calls_of[name], requests[name], calls, warmup)

                    seq[mode] = h.alternating(reps, {name: sequential(name) for name in
                                                     ("direct", "predict", "modelinfer", "rest", "predict-struct")})
                finally:
                    conn.close()

                h.progress(f"{mode}: throughput, {args.in_flight} in flight, {window} s windows x 4 subjects x "
                           f"{reps} repetitions")

                def throughput(name):
                    if name == "rest":
                        return lambda: asyncio.run(rest_throughput(mesh, model, body, args.in_flight, window,
                                                                   warmup_s, mesh_cpu))
                    return lambda: asyncio.run(grpc_throughput(addr_of[name], method_of[name], requests[name],
                                                               args.in_flight, window, warmup_s, mesh_cpu))

                tput[mode] = h.alternating(reps, {name: throughput(name) for name in
                                                  ("direct", "predict", "modelinfer", "rest")})
        finally:
            for version in loaded:
                try:
                    unload(ipb.UnloadModelRequest(model_name=model, version=version,
                                                  drain_timeout=duration_pb2.Duration(seconds=10)), timeout=60)
                except grpc.RpcError as exc:
                    h.progress(f"could not unload {model} version {version}: {exc.code()} {exc.details()}")
            try:
                delete(rpb.DeleteRegisteredModelRequest(name=model, force=True), timeout=60)
            except grpc.RpcError as exc:
                h.progress(f"could not delete registered model {model}: {exc.code()} {exc.details()}")

    h.result(f"# bench_inference: demo recommendation-model via the mesh vs direct TorchServe gRPC, same loaded "
             f"model, {calls} sequential calls, {args.in_flight} in flight x {window} s, {reps} reps, "
             f"access log {args.access_log}")
    for mode in modes:
        _, batch_size, delay_ms = MODES[mode]
        tag = f"[{mode}]"
        h.result(f"# {tag} batch_size {batch_size}" + (f", max_batch_delay {delay_ms} ms" if batch_size > 1 else ""))
        p50 = {k: [h.percentile(v, 50) for v in seq[mode][k]] for k in seq[mode]}
        p99 = {k: [h.percentile(v, 99) for v in seq[mode][k]] for k in seq[mode]}
        rate = {k: [r for r, _ in v] for k, v in tput[mode].items()}
        cpu = {k: [c for _, c in v] for k, v in tput[mode].items()}
        for name, label in (("predict", "Predict"), ("modelinfer", "ModelInfer")):
            h.result(h.ratio_line(f"{tag} {label} p50", p50[name], p50["direct"], "ms", "direct TorchServe",
                                  target=1.15))
            h.result(h.ratio_line(f"{tag} {label} p99", p99[name], p99["direct"], "ms", "direct TorchServe"))
            h.result(h.ratio_line(f"{tag} {label} throughput@{args.in_flight}", rate[name], rate["direct"], "req/s",
                                  "direct TorchServe", target=0.9, higher_is_better=True))
        h.result(h.ratio_line(f"{tag} REST Predict p50", p50["rest"], p50["predict"], "ms", "gRPC Predict",
                              target=1.3))
        h.result(h.ratio_line(f"{tag} REST Predict p99", p99["rest"], p99["predict"], "ms", "gRPC Predict"))
        h.result(h.ratio_line(f"{tag} REST Predict throughput@{args.in_flight}", rate["rest"], rate["predict"],
                              "req/s", "gRPC Predict", higher_is_better=True))
        h.result(h.ratio_line(f"{tag} Predict(Struct inputs) p50", p50["predict-struct"], p50["predict"], "ms",
                              "Predict(raw_input)"))
        h.result(f"{tag} direct TorchServe: p50 {h.fmt(h.median(p50['direct']))} ms, p99 "
                 f"{h.fmt(h.median(p99['direct']))} ms, {h.fmt(h.median(rate['direct']))} req/s@{args.in_flight} "
                 f"(medians of {reps})")
        h.result(f"{tag} mesh cpu/call@{args.in_flight}: Predict {h.fmt(h.median(cpu['predict']))} us, ModelInfer "
                 f"{h.fmt(h.median(cpu['modelinfer']))} us, REST Predict {h.fmt(h.median(cpu['rest']))} us "
                 f"(medians of {reps})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
