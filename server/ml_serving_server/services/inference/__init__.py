"""Inference: predictions through TorchServe, and management of what it serves.

    domain/                 the use cases (service.py), the deployer, limits, naming inside
                            TorchServe, the Open Inference Protocol and its tensor codec, the ports
    torchserve_backend.py   the ModelBackend port over TorchServe's gRPC inference and management APIs
    registry_resolver.py    the VersionResolver port over the Registry's gRPC API (cached, kept
                            fresh by its event stream), presigned artifact URLs, and the
                            deployer's feed of Staging and Production versions
    redis_cursor.py         where the deployer keeps its last event sequence
    servicer.py             gRPC <-> domain
    oip_servicer.py         the Open Inference Protocol: inference.GRPCInferenceService, and its REST
                            form (OpenInferenceRestService, /v2/... through Envoy)
    settings.py             INFERENCE_* settings
    metrics.py              predictions for Prometheus (a metered model backend)

`build` connects them; app.py lists `SERVICE`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mnbara.mlserving.catalog import BY_NAME, ServiceEntry

from ...runtime.health import DependencyProbe
from ...runtime.service import BuiltService, Runtime, ServicePackage
from .domain.errors import ErrorReason
from .domain.service import InferenceService
from .settings import InferenceSettings


async def build(settings: InferenceSettings, runtime: Runtime) -> BuiltService:
    from .domain.open_inference import OpenInference
    from .metrics import MeteredBackend
    from .oip_servicer import GrpcInferenceServicer, RestInferenceServicer
    from .registry_resolver import RegistryResolver
    from .servicer import InferenceServicer
    from .torchserve_backend import TorchServeBackend

    token = Path(settings.registry_token_file).read_text().strip() if settings.registry_token_file else ""
    # Without an address of its own, the Registry is the one this server hosts (dialled once it listens).
    registry_addr = (lambda: settings.registry_addr) if settings.registry_addr else runtime.listening.addr
    resolver = RegistryResolver(registry_addr, token, settings.registry_timeout_seconds,
                                settings.resolve_cache_entries, _presigner(settings))
    resolver.start()
    backend = TorchServeBackend(settings.torchserve_grpc_addr, settings.torchserve_management_addr)
    service = InferenceService(MeteredBackend(backend), resolver, max_input_bytes=settings.max_input_bytes,
                               presign_ttl_s=settings.presign_seconds, max_predict_s=settings.max_predict_seconds)

    deploying, cursor = None, None
    if settings.deployer_enabled:
        from .domain.deployer import Deployer
        from .domain.model import LoadSpec
        from .redis_cursor import RedisCursor

        cursor = RedisCursor.from_settings(runtime.redis, f"{runtime.mesh.key_prefix}:inference:deployer-cursor:"
                                                          f"{settings.torchserve_management_addr}")
        deployer = Deployer(service, resolver, cursor, grace_s=settings.deployer_grace_seconds,
                            reconcile_s=settings.deployer_reconcile_seconds,
                            refresh_s=settings.deployer_refresh_seconds,
                            load_spec=LoadSpec(min_workers=settings.deployer_workers,
                                               batch_size=settings.deployer_batch_requests,
                                               max_batch_delay_ms=settings.deployer_max_batch_delay_ms))
        deploying = asyncio.get_running_loop().create_task(deployer.run(), name="inference-deployer")

    async def stop_background() -> None:
        """The deployer and the Registry event stream call this very server: they end first."""
        if deploying is not None:
            deploying.cancel()
            await asyncio.gather(deploying, return_exceptions=True)
        await resolver.stop_watching()

    async def close() -> None:
        await stop_background()
        await resolver.close()
        await backend.close()
        if cursor is not None:
            await cursor.close()

    # Inference's health follows TorchServe, which only it uses: the whole server stays in rotation
    # for the other services, and predictions answer UNAVAILABLE (BACKEND_UNAVAILABLE) meanwhile.
    protocol = OpenInference(service, server_version=_version())
    return BuiltService(InferenceServicer(service), probe=DependencyProbe({"torchserve": backend.ping}),
                        closers=[close], stopping=[stop_background],
                        probe_gates_server=False,
                        companions=[(_companion("inference.GRPCInferenceService"), GrpcInferenceServicer(protocol)),
                                    (_companion(REST_SERVICE), RestInferenceServicer(protocol))])


REST_SERVICE = "mnbara.mlserving.inference.v1.OpenInferenceRestService"


def _companion(full_name: str) -> ServiceEntry:
    """A catalog-shaped row for a contract Inference also serves: its errors are Inference's."""
    if full_name == REST_SERVICE:
        from mnbara.mlserving.inference.v1 import open_inference_rest_pb2 as messages
        from mnbara.mlserving.inference.v1 import open_inference_rest_pb2_grpc as stubs
    else:
        from inference import grpc_predict_v2_pb2 as messages
        from inference import grpc_predict_v2_pb2_grpc as stubs
    own = BY_NAME["inference"]
    return ServiceEntry(own.name, full_name, messages, stubs, own.error_domain, own.error_reasons)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ml-serving-mesh")
    except PackageNotFoundError:
        return "0"


def _presigner(settings: InferenceSettings):
    """A boto3 S3 client used only to presign (signing is local), or None without keys."""
    if not settings.s3_access_key_id:
        return None
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region,
                        aws_access_key_id=settings.s3_access_key_id,
                        aws_secret_access_key=settings.s3_secret_access_key,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


SERVICE = ServicePackage(BY_NAME["inference"], InferenceSettings, build, ErrorReason)
