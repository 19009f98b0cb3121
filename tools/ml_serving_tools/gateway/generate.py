"""Generate the Envoy front-door config for the ML serving mesh (console script
`mesh-envoy-config`):

    mesh-envoy-config                     # build/envoy.yaml for the local default addresses
    mesh-envoy-config --out /tmp/envoy.yaml --listen 0.0.0.0:8000 --upstream mesh-grpc:50051

Every address has an environment variable that overrides its default from
``ml_serving.defaults`` (a command-line flag overrides both): ENVOY_LISTEN, MESH_GRPC_ADDR,
ENVOY_ADMIN. ``--descriptor`` defaults to gen/descriptor.binpb.

What the generated config does
------------------------------
* One listener, the front door, speaks HTTP/1.1 and HTTP/2 (codec AUTO, cleartext h2c
  with prior knowledge for gRPC). REST clients, gRPC stubs and ``grpcurl`` all use it.
* ``envoy.filters.http.grpc_json_transcoder`` turns REST calls into gRPC calls using the
  ``google.api.http`` annotations in the descriptor set (``gen/descriptor.binpb``, built
  with imports by ``mesh-proto``). The services it transcodes are read from that same
  descriptor set, which Envoy loads: every service in a package starting with
  ``mnbara.mlserving.`` (the TorchServe ``org.pytorch.serve.grpc.*`` protos are never
  exposed as REST). Envoy refuses a listed service its descriptor lacks, so the list comes
  from the file it will read rather than from the catalog generated beside it.
  JSON follows grpc-gateway v2's default marshaller: lowerCamelCase names, unpopulated
  fields printed, enums as names, int64 as strings.
  Requests the transcoder cannot map (unknown path or method, unknown query parameter)
  are rejected by Envoy instead of going upstream untranscoded; ``convert_grpc_status``
  turns a gRPC error's ``google.rpc.Status`` into the JSON body of the HTTP error.
* Native gRPC requests (``content-type: application/grpc...``) bypass the transcoder and
  are routed, by their ``/<package>.<Service>/`` path, to the upstream: the mesh services,
  server reflection (v1 and v1alpha, so ``grpcurl list`` works) and health checking.
* Errors Envoy produces itself on REST requests (the transcoder's 404 for an unknown
  path or method, its 400 for an unknown query parameter or malformed JSON, the router's
  503/504 when the upstream is down or slow) are rewritten by ``local_reply_config``
  into ``google.rpc.Status`` JSON like the upstream's errors, e.g.
  ``{"code":5,"details":[],"message":"Could not resolve /x to a method."}`` (keys in
  alphabetical order; Envoy's JSON formatter sorts them). Native gRPC requests keep
  plain grpc-status / grpc-message. A last catch-all route answers 404
  ``no route for <METHOD> <path>`` to anything else that reaches the router.
* One upstream cluster, the mesh's gRPC server, over HTTP/2, 1 s connect timeout;
  routes time out after 30 s (a smaller ``grpc-timeout`` from the client wins).
* The admin interface (``/ready``, ``/stats/prometheus``, ...) listens on loopback only.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import NamedTuple

import yaml
from google.protobuf import descriptor_pb2
from ml_serving import defaults

from ..paths import BUILD, DESCRIPTOR

SERVICE_PACKAGE_PREFIX = "mnbara.mlserving."
UPSTREAM_CLUSTER = "mesh_grpc"
ROUTE_TIMEOUT = "30s"
CONNECT_TIMEOUT = "1s"

# gRPC services the servers host besides the mesh services; routed for native gRPC only.
PASSTHROUGH_GRPC_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
    "grpc.health.v1.Health",
)

DEFAULTS = {"listen": defaults.FRONT_DOOR, "upstream": defaults.MESH_GRPC, "admin": defaults.ENVOY_ADMIN}
ENV_VARS = {"listen": "ENVOY_LISTEN", "upstream": "MESH_GRPC_ADDR", "admin": "ENVOY_ADMIN"}

_TYPE = "type.googleapis.com/envoy.extensions"


class ConfigError(Exception):
    """The inputs cannot produce a valid config (missing descriptor, bad address, ...)."""


class HostPort(NamedTuple):
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> "HostPort":
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
        return cls(host, int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        return self.is_ip and ipaddress.ip_address(self.host).is_loopback

    def socket_address(self) -> dict:
        return {"socket_address": {"address": self.host, "port_value": self.port}}


# ---------------------------------------------------------------------------- descriptor


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


def discover_services(path: Path, prefix: str = SERVICE_PACKAGE_PREFIX) -> list[str]:
    """Fully qualified names of every service whose package starts with ``prefix``."""
    services = {
        f"{file.package}.{service.name}"
        for file in load_descriptor(path).file
        if file.package.startswith(prefix)
        for service in file.service
    }
    if not services:
        raise ConfigError(f"{path} defines no service in a package starting with {prefix!r}")
    return sorted(services)


# ---------------------------------------------------------------------------- pieces


def transcoder_filter(descriptor: Path, services: list[str]) -> dict:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(Path(descriptor).resolve()),
            "services": services,
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "always_print_enums_as_ints": False,
                "preserve_proto_field_names": False,
            },
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
            },
            "convert_grpc_status": True,
            "auto_mapping": False,
        },
    }


def router_filter() -> dict:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{_TYPE}.filters.http.router.v3.Router"},
    }


def grpc_service_route(service: str) -> dict:
    """Route one gRPC service (matched by its path prefix) to the upstream."""
    return {
        "name": service,
        "match": {"prefix": f"/{service}/"},
        "route": {
            "cluster": UPSTREAM_CLUSTER,
            "timeout": ROUTE_TIMEOUT,
            # Honour a client's grpc-timeout header, capped at the route timeout.
            "max_stream_duration": {"grpc_timeout_header_max": ROUTE_TIMEOUT},
        },
    }


def grpc_fallback_route() -> dict:
    """Native gRPC to any other service goes upstream, which answers UNIMPLEMENTED."""
    route = grpc_service_route("any-grpc")
    route["match"] = {"prefix": "/", "grpc": {}}
    return route


def not_found_route() -> dict:
    """Everything the transcoder did not map: 404 with a google.rpc.Status-shaped body."""
    return {
        "name": "not-found",
        "match": {"prefix": "/"},
        "direct_response": {
            "status": 404,
            "body_format": {"text_format_source": {"inline_string": "no route for %REQ(:METHOD)% %REQ(:PATH)%"}},
        },
    }


# HTTP status of an Envoy-generated error -> the google.rpc.Code its JSON body carries
# (the inverse of grpc-gateway's HTTPStatusFromCode for the statuses Envoy produces).
LOCAL_REPLY_CODES = {400: 3, 404: 5, 413: 8, 429: 8, 501: 12, 503: 14, 504: 4}
UNKNOWN_CODE = 2


def status_body(code: int, message: str = "%LOCAL_REPLY_BODY%") -> dict:
    """A google.rpc.Status-shaped JSON body, as grpc-gateway writes errors."""
    return {"json_format": {"code": code, "message": message, "details": []}, "content_type": "application/json"}


def local_reply_config() -> dict:
    """Turn Envoy's own text/plain errors on REST requests into google.rpc.Status JSON.

    Covers the transcoder's rejections (unknown path, method or query parameter,
    malformed JSON) and router errors (upstream down, timeout). gRPC requests are left
    alone: Envoy answers those with grpc-status / grpc-message trailers.
    """
    # A REST request is either still untranscoded (its content-type, if any, is not
    # gRPC) or already rewritten by the transcoder, which records x-envoy-original-path.
    rest = {
        "or_filter": {
            "filters": [
                {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
            ]
        }
    }
    mappers = []
    for http_status, code in LOCAL_REPLY_CODES.items():
        status = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": http_status, "runtime_key": f"mesh.local_reply.{http_status}"},
                }
            }
        }
        mappers.append({"filter": {"and_filter": {"filters": [rest, status]}}, "body_format_override": status_body(code)})
    # Any other local reply on a REST request (e.g. 403, 500) still answers JSON.
    mappers.append({"filter": rest, "body_format_override": status_body(UNKNOWN_CODE)})
    return {"mappers": mappers}


def route_config(services: list[str]) -> dict:
    routes = [grpc_service_route(s) for s in [*services, *PASSTHROUGH_GRPC_SERVICES]]
    routes += [grpc_fallback_route(), not_found_route()]
    return {
        "name": "front_door",
        "virtual_hosts": [{"name": "mesh", "domains": ["*"], "routes": routes}],
    }


def front_door_listener(listen: HostPort, descriptor: Path, services: list[str]) -> dict:
    hcm = {
        "@type": f"{_TYPE}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "front_door",
        "codec_type": "AUTO",
        # RFC 3986 normalisation (/a/../b); %2F stays escaped, for path parameters.
        "normalize_path": True,
        "route_config": route_config(services),
        "local_reply_config": local_reply_config(),
        "http_filters": [transcoder_filter(descriptor, services), router_filter()],
    }
    return {
        "name": "front_door",
        "address": listen.socket_address(),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def upstream_cluster(upstream: HostPort) -> dict:
    endpoint = {"endpoint": {"address": upstream.socket_address()}}
    return {
        "name": UPSTREAM_CLUSTER,
        # An IP needs no resolution; a name (a Kubernetes Service) is re-resolved.
        "type": "STATIC" if upstream.is_ip else "STRICT_DNS",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPE}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": UPSTREAM_CLUSTER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
    }


def admin(address: HostPort) -> dict:
    if not address.is_loopback:
        raise ConfigError(f"the admin interface must listen on loopback, not {address.host}")
    return {"address": address.socket_address()}


# ---------------------------------------------------------------------------- whole config


def build_config(
    descriptor: Path,
    listen: str = DEFAULTS["listen"],
    upstream: str = DEFAULTS["upstream"],
    admin_addr: str = DEFAULTS["admin"],
) -> dict:
    """The full bootstrap config as a dict (validates inputs; raises ConfigError)."""
    services = discover_services(descriptor)
    listen_hp = HostPort.parse(listen, "listen address")
    if not listen_hp.is_ip:
        raise ConfigError(f"listen address must be an IP address, got {listen_hp.host!r}")
    return {
        "admin": admin(HostPort.parse(admin_addr, "admin address")),
        "static_resources": {
            "listeners": [front_door_listener(listen_hp, descriptor, services)],
            "clusters": [upstream_cluster(HostPort.parse(upstream, "upstream address"))],
        },
    }


def render(config: dict) -> str:
    header = "# Generated by mesh-envoy-config (ml_serving_tools.gateway.generate); do not edit.\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write(
    descriptor: Path,
    out: Path,
    listen: str = DEFAULTS["listen"],
    upstream: str = DEFAULTS["upstream"],
    admin_addr: str = DEFAULTS["admin"],
) -> Path:
    """Generate and write the config; returns the output path."""
    text = render(build_config(descriptor, listen, upstream, admin_addr))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


# ---------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--descriptor", type=Path, default=DESCRIPTOR)
    parser.add_argument("--out", type=Path, default=BUILD / "envoy.yaml")
    for key, flag in (("listen", "--listen"), ("upstream", "--upstream"), ("admin", "--admin")):
        env = ENV_VARS[key]
        parser.add_argument(
            flag,
            dest=key,
            default=os.environ.get(env) or DEFAULTS[key],
            help=f"HOST:PORT (env {env}, default {DEFAULTS[key]})",
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = write(args.descriptor, args.out, args.listen, args.upstream, args.admin)
        services = discover_services(args.descriptor)
    except ConfigError as exc:
        print(f"mesh-envoy-config: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(services)} services: {', '.join(services)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
