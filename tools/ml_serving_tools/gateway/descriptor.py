"""What the generator reads from the descriptor set Envoy loads: the mesh's services and RPCs.

The services and RPCs come from ``gen/descriptor.binpb`` (the file Envoy's transcoder
reads), not from the catalog generated beside it: Envoy refuses a listed service its
descriptor lacks, and the scope each route enforces must be the one in that same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from mnbara.mlserving.auth.v1 import auth_pb2

from .common import ConfigError

SERVICE_PACKAGE_PREFIX = "mnbara.mlserving."

# Writes that are safe to repeat: the bandit deduplicates rewards by their event id.
# (A contract could say so itself with `option idempotency_level = IDEMPOTENT;`, which is honoured too.)
IDEMPOTENT_WRITES = frozenset({
    "mnbara.mlserving.bandit.v1.BanditService/Reward",
    "mnbara.mlserving.bandit.v1.BanditService/BatchReward",
})
READ_SCOPE_SUFFIX = ".read"


@dataclass(frozen=True)
class Rpc:
    """One RPC of a mesh service, as the gateway routes and authorises it."""

    service: str  # fully qualified, e.g. mnbara.mlserving.bandit.v1.BanditService
    method: str  # e.g. Select
    scope: str  # the required_scope option, e.g. bandit.write
    idempotent: bool  # safe to retry after a failure the caller cannot see
    server_streaming: bool = False  # answers with a stream that may last as long as the caller listens

    @property
    def name(self) -> str:
        return f"{self.service}/{self.method}"

    @property
    def path(self) -> str:
        """The gRPC path, which is also what a transcoded REST call is routed by."""
        return f"/{self.name}"


def load_descriptor(path: Path) -> descriptor_pb2.FileDescriptorSet:
    """Read a FileDescriptorSet, failing clearly when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"descriptor set {path} not found; run `mesh-proto` (make proto) first")
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, but be broad about garbage
        raise ConfigError(f"{path} is not a FileDescriptorSet: {exc}") from exc
    if not fds.file:
        raise ConfigError(f"{path} holds no proto files")
    return fds


def _mesh_services(fds: descriptor_pb2.FileDescriptorSet, prefix: str):
    for file in fds.file:
        if file.package.startswith(prefix):
            for service in file.service:
                yield f"{file.package}.{service.name}", service


def discover_services(path: Path, prefix: str = SERVICE_PACKAGE_PREFIX) -> list[str]:
    """Fully qualified names of every service whose package starts with ``prefix``."""
    services = sorted({name for name, _ in _mesh_services(load_descriptor(path), prefix)})
    if not services:
        raise ConfigError(f"{path} defines no service in a package starting with {prefix!r}")
    return services


def _is_idempotent(name: str, scope: str, options: descriptor_pb2.MethodOptions) -> bool:
    declared = options.idempotency_level != descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN
    return scope.endswith(READ_SCOPE_SUFFIX) or declared or name in IDEMPOTENT_WRITES


def mesh_rpcs(path: Path, prefix: str = SERVICE_PACKAGE_PREFIX) -> list[Rpc]:
    """Every RPC of the mesh services with its required scope, in descriptor order.

    Raises ConfigError naming every RPC without a ``required_scope`` option: the gateway
    would otherwise have to guess who may call it.
    """
    rpcs, unscoped = [], []
    for service_name, service in _mesh_services(load_descriptor(path), prefix):
        for method in service.method:
            name = f"{service_name}/{method.name}"
            scope = method.options.Extensions[auth_pb2.required_scope].strip()
            if not scope:
                unscoped.append(name)
                continue
            rpcs.append(Rpc(service_name, method.name, scope, _is_idempotent(name, scope, method.options),
                            server_streaming=method.server_streaming))
    if unscoped:
        raise ConfigError(
            f"{len(unscoped)} RPC(s) in {path} declare no scope "
            f"(option (mnbara.mlserving.auth.v1.required_scope) = \"<service>.<level>\"): {', '.join(unscoped)}")
    if not rpcs:
        raise ConfigError(f"{path} defines no RPC in a package starting with {prefix!r}")
    return rpcs


def rest_paths(path: Path, service: str) -> list[str]:
    """The REST path templates of one service's RPCs (google.api.http, additional bindings too)."""
    paths = []
    for name, found in _mesh_services(load_descriptor(path), ""):
        if name != service:
            continue
        for method in found.method:
            top = method.options.Extensions[annotations_pb2.http]
            for rule in (top, *top.additional_bindings):
                pattern = rule.WhichOneof("pattern")
                if pattern:
                    paths.append(rule.custom.path if pattern == "custom" else getattr(rule, pattern))
    return paths
