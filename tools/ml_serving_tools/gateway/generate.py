"""Generate the Envoy front-door config for the ML serving mesh (console script
`mesh-envoy-config`):

    mesh-envoy-config                     # build/envoy.yaml: local addresses, the dev keys of `make up`
    mesh-envoy-config --out /tmp/envoy.yaml --listen 0.0.0.0:8000 --upstream mesh-grpc:50051 \\
        --jwks-url https://issuer.example/.well-known/jwks.json --issuer https://issuer.example \\
        --audience ml-serving-mesh --tls-cert tls.crt --tls-key tls.key --cors-origin https://app.example

Every address has an environment variable that overrides its default from
``ml_serving.defaults`` (a command-line flag overrides both): ENVOY_LISTEN, MESH_GRPC_ADDR,
ENVOY_ADMIN; the token settings read the mesh's own AUTH_JWKS_FILE, AUTH_JWKS_URL,
AUTH_ISSUER and AUTH_AUDIENCE. ``--descriptor`` defaults to gen/descriptor.binpb.
``--no-auth`` turns authentication off (it warns); ``--help`` lists every limit.

What the generated config does
------------------------------
* One listener, the front door, speaks HTTP/1.1 and HTTP/2 (cleartext h2c with prior
  knowledge for gRPC; with ``--tls-cert`` only TLS, h2 and http/1.1 by ALPN). REST clients,
  gRPC stubs and ``grpcurl`` all use it.
* Its HTTP filters, in order (each module's docstring says why):
  ``local_ratelimit`` (a token bucket per client address, ``limits``), ``cors`` (only
  listed origins, ``browser``), a content-type guard (mutating calls with a body must be
  JSON, ``browser``), ``jwt_authn`` (a bearer token, ``auth``), ``buffer`` (a whole REST
  body, at most 4 MiB, ``limits``), ``grpc_json_transcoder`` (REST to gRPC), ``rbac`` (the
  RPC's ``required_scope``, ``auth``), and the router.
* ``grpc_json_transcoder`` turns REST calls into gRPC calls using the ``google.api.http``
  annotations of every service in a package starting with ``mnbara.mlserving.`` in the
  descriptor set Envoy loads (the TorchServe ``org.pytorch.serve.grpc.*`` protos are never
  exposed). JSON follows grpc-gateway v2's default marshaller: lowerCamelCase names,
  unpopulated fields printed, enums as names, int64 as strings; except under a path prefix
  of a service in ``PROTO_NAME_SERVICES`` (the Open Inference Protocol's ``/v2``), whose
  standard JSON uses the proto field names (snake_case). Requests it cannot map
  (unknown path or method, unknown query parameter) are rejected by Envoy instead of going
  upstream untranscoded; ``convert_grpc_status`` turns a gRPC error's ``google.rpc.Status``
  into the JSON body of the HTTP error.
* Routes (``routes``): one per mesh RPC, by its gRPC path, carrying its scope and, for
  idempotent RPCs, a retry policy; health checking and reflection (open without a token);
  other native gRPC; REST before it is transcoded (never forwarded as is): one route per
  ``PROTO_NAME_SERVICES`` prefix carrying the snake_case transcoder config, then the rest.
* Envoy's own errors on REST requests are ``google.rpc.Status`` JSON (``local_replies``);
  native gRPC requests get plain grpc-status / grpc-message.
* Limits no larger than the mesh's (``limits``): 8 KiB of headers (431), 4 MiB REST bodies
  (413), header timeout, idle timeout, connection cap.
* One upstream cluster, the mesh's gRPC server, over HTTP/2, gRPC health-checked every
  second (``upstream``); routes time out after 30 s (a smaller ``grpc-timeout`` wins).
* The admin interface (``/ready``, ``/stats/prometheus``, ...) listens on loopback only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from ml_serving import defaults

from ..devauth import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_keys
from ..paths import BUILD, DESCRIPTOR, STATE_DIR
from . import auth as auth_module
from . import browser, local_replies
from . import limits as limits_module
from . import tls as tls_module
from .auth import JwtAuth
from .common import UPSTREAM_CLUSTER, ConfigError, HostPort, typed
from .descriptor import SERVICE_PACKAGE_PREFIX, discover_services, load_descriptor, mesh_rpcs, rest_paths
from .limits import Limits
from .local_replies import LOCAL_REPLY_CODES, status_body
from .oip_errors import oip_error_filter
from .routes import PASSTHROUGH_GRPC_SERVICES, ROUTE_TIMEOUT, rest_route, route_config, untranscoded_cluster
from .tls import ServerTls, UpstreamTls
from .upstream import upstream_cluster

__all__ = [
    "DEFAULTS", "ENV_VARS", "LOCAL_REPLY_CODES", "PASSTHROUGH_GRPC_SERVICES", "PROTO_NAME_SERVICES", "ROUTE_TIMEOUT",
    "SERVICE_PACKAGE_PREFIX", "UPSTREAM_CLUSTER", "ConfigError", "HostPort", "JwtAuth", "Limits", "ServerTls",
    "UpstreamTls", "build_config", "discover_services", "load_descriptor", "main", "render", "status_body", "write",
]

log = logging.getLogger(__name__)

DEFAULTS = {"listen": defaults.FRONT_DOOR, "upstream": defaults.MESH_GRPC, "admin": defaults.ENVOY_ADMIN}
ENV_VARS = {"listen": "ENVOY_LISTEN", "upstream": "MESH_GRPC_ADDR", "admin": "ENVOY_ADMIN"}
# The mesh's own settings (ml_serving_server.runtime.settings.AuthSettings): one source for both.
AUTH_ENV_VARS = {"jwks_file": "AUTH_JWKS_FILE", "jwks_url": "AUTH_JWKS_URL", "issuer": "AUTH_ISSUER",
                 "audience": "AUTH_AUDIENCE"}
DEV_AUTH_DIR = STATE_DIR / "auth"  # where `make up` keeps its development keys
AUTH_OFF_WARNING = ("authentication is OFF: anyone who reaches the front door may call every RPC "
                    "(use --no-auth only on a machine of your own)")


# ---------------------------------------------------------------------------- pieces


TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"

# Services whose REST JSON is a published standard written with the proto field names
# (snake_case), not grpc-gateway's lowerCamelCase: the Open Inference Protocol's REST form
# (tritonclient reads "model_name", "model_version"). Each maps to the path
# prefix that all its REST paths, and no other service's, lie under.
PROTO_NAME_SERVICES = {"mnbara.mlserving.inference.v1.OpenInferenceRestService": "/v2"}


def transcoder_config(descriptor: Path, services: list[str], limits: Limits, *,
                      proto_field_names: bool = False) -> dict:
    return typed(
        "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=str(Path(descriptor).resolve()),
        services=services,
        print_options={
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": proto_field_names,
        },
        # The path decides which resource changes: a body naming another one is refused.
        request_validation_options={"reject_unknown_method": True, "reject_unknown_query_parameters": True,
                                    "reject_binding_body_field_collisions": True},
        convert_grpc_status=True,
        auto_mapping=False,
        # Bounds what the transcoder holds at once; the buffer filter before it bounds the whole body.
        max_request_body_size=limits.max_request_body_bytes,
        max_response_body_size=limits.max_response_body_bytes,
    )


def transcoder_filter(descriptor: Path, services: list[str], limits: Limits) -> dict:
    return {"name": TRANSCODER_FILTER, "typed_config": transcoder_config(descriptor, services, limits)}


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def proto_name_rest_routes(descriptor: Path, services: list[str], limits: Limits, with_auth: bool) -> list[dict]:
    """A REST route per PROTO_NAME_SERVICES prefix, carrying the transcoder's config with
    proto field names: the transcoder takes its per-route config from the route a REST call
    matches before it is transcoded, not from the RPC's route."""
    routes = []
    for service, prefix in PROTO_NAME_SERVICES.items():
        if service not in services:
            continue
        outside = [p for p in rest_paths(descriptor, service) if not _under(p, prefix)]
        intruders = [p for other in services if other != service
                     for p in rest_paths(descriptor, other) if _under(p, prefix)]
        if outside or intruders:
            raise ConfigError(f"{service} prints proto field names on REST paths under {prefix}: "
                              f"its paths {outside} lie outside, other services' {intruders} inside")
        override = transcoder_config(descriptor, services, limits, proto_field_names=True)
        routes.append(rest_route(with_auth, f"rest-before-transcoding {service}", {"path_separated_prefix": prefix},
                                 {TRANSCODER_FILTER: override}))
    return routes


def router_filter() -> dict:
    return {"name": "envoy.filters.http.router", "typed_config": typed("filters.http.router.v3.Router")}


def http_filters(descriptor: Path, services: list[str], auth: JwtAuth | None, limits: Limits) -> list[dict]:
    """In order: cheap refusals first; the token before any body is buffered or parsed; the
    scope after transcoding, when the RPC (and so its route) is known."""
    filters = [*limits_module.rate_limit_filter(limits), browser.cors_filter(), browser.json_body_guard_filter()]
    if auth is not None:
        filters.append(auth_module.jwt_filter(auth))
    filters.append(limits_module.request_buffer_filter(limits))
    if any(service in services for service in PROTO_NAME_SERVICES):
        filters.append(oip_error_filter())  # before the transcoder: it rewrites the transcoded error body
    filters.append(transcoder_filter(descriptor, services, limits))
    if auth is not None:
        filters.append(auth_module.scope_filter())
    return [*filters, router_filter()]


def front_door_listener(listen: HostPort, descriptor: Path, auth: JwtAuth | None, limits: Limits,
                        cors_origins: tuple[str, ...], tls: ServerTls | None) -> dict:
    services = discover_services(descriptor)
    rpcs = mesh_rpcs(descriptor)
    hcm = typed(
        "filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="front_door",
        codec_type="AUTO",
        # RFC 3986 normalisation (/a/../b); %2F stays escaped, for path parameters.
        normalize_path=True,
        **limits_module.connection_manager_limits(limits),
        route_config=route_config(rpcs, auth is not None, browser.cors_policy(cors_origins),
                                  proto_name_rest_routes(descriptor, services, limits, auth is not None)),
        local_reply_config=local_replies.local_reply_config(),
        http_filters=http_filters(descriptor, services, auth, limits),
    )
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if tls is not None:
        chain["transport_socket"] = tls_module.downstream_transport_socket(tls)
    return {
        "name": "front_door",
        "address": listen.socket_address(),
        "per_connection_buffer_limit_bytes": limits.per_connection_buffer_limit_bytes,
        "filter_chains": [chain],
    }


def admin(address: HostPort) -> dict:
    if not address.is_loopback:
        raise ConfigError(f"the admin interface must listen on loopback, not {address.host}")
    # Reachable even when the front door is at its connection cap.
    return {"address": address.socket_address(), "ignore_global_conn_limit": True}


# ---------------------------------------------------------------------------- whole config


def build_config(
    descriptor: Path,
    listen: str = DEFAULTS["listen"],
    upstream: str = DEFAULTS["upstream"],
    admin_addr: str = DEFAULTS["admin"],
    *,
    auth: JwtAuth | None,
    limits: Limits | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    tls: ServerTls | None = None,
    upstream_tls: UpstreamTls | None = None,
) -> dict:
    """The full bootstrap config as a dict (validates inputs; raises ConfigError).

    ``auth`` is required: a ``JwtAuth``, or ``None`` to turn authentication off, which is
    logged as a warning. ``limits`` default to ``Limits()``; ``cors_origins`` to none.
    """
    if auth is None:
        log.warning(AUTH_OFF_WARNING)
    limits = limits or Limits()
    listen_hp = HostPort.parse(listen, "listen address")
    if not listen_hp.is_ip:
        raise ConfigError(f"listen address must be an IP address, got {listen_hp.host!r}")
    upstream_hp = HostPort.parse(upstream, "upstream address")
    clusters = [upstream_cluster(upstream_hp, limits.per_connection_buffer_limit_bytes, upstream_tls),
                untranscoded_cluster()]
    if auth is not None:
        clusters += auth_module.jwks_cluster(auth)
    listener = front_door_listener(listen_hp, descriptor, auth, limits, browser.check_origins(cors_origins), tls)
    return {
        "admin": admin(HostPort.parse(admin_addr, "admin address")),
        "overload_manager": limits_module.overload_manager(limits),
        "static_resources": {"listeners": [listener], "clusters": clusters},
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
    **options,
) -> Path:
    """Generate and write the config; returns the output path. ``options``: those of ``build_config``."""
    text = render(build_config(descriptor, listen, upstream, admin_addr, **options))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


# ---------------------------------------------------------------------------- CLI


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, "").strip() or default


def _add_address_args(parser: argparse.ArgumentParser) -> None:
    for key, flag in (("listen", "--listen"), ("upstream", "--upstream"), ("admin", "--admin")):
        env = ENV_VARS[key]
        parser.add_argument(flag, dest=key, default=_env(env, DEFAULTS[key]),
                            help=f"HOST:PORT (env {env}, default {DEFAULTS[key]})")


def _add_auth_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("authentication (bearer JWTs)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--jwks-file", type=Path,
                        help=f"a local JWKS file (env AUTH_JWKS_FILE; without either: the development keys in "
                             f"{DEV_AUTH_DIR}, created if absent)")
    source.add_argument("--jwks-url", help="the issuer's JWKS URL, fetched by Envoy (Kubernetes; env AUTH_JWKS_URL)")
    source.add_argument("--no-auth", action="store_true", help="no authentication at all (development only; warns)")
    group.add_argument("--issuer", default=_env(AUTH_ENV_VARS["issuer"], DEV_ISSUER),
                       help=f"required iss claim (env AUTH_ISSUER, default {DEV_ISSUER})")
    group.add_argument("--audience", action="append",
                       help=f"accepted aud claim, repeatable (env AUTH_AUDIENCE, default {DEV_AUDIENCE})")


def _add_limit_args(parser: argparse.ArgumentParser) -> None:
    base = Limits()
    group = parser.add_argument_group("limits (see ml_serving_tools.gateway.limits)")
    for name, kind, what in (
        ("max_request_headers_kb", int, "request headers, KiB (431 past it)"),
        ("max_request_body_bytes", int, "REST request body (413 past it)"),
        ("max_response_body_bytes", int, "REST response body"),
        ("request_headers_timeout_seconds", float, "time to send the request headers"),
        ("request_timeout_seconds", float, "time to send the whole request, body included"),
        ("connection_idle_timeout_seconds", float, "idle connection lifetime"),
        ("per_connection_buffer_limit_bytes", int, "buffer per connection"),
        ("rate_limit_per_second", int, "requests per second per client address, 0: no rate limit"),
        ("rate_limit_burst", int, "a client's burst"),
        ("max_connections", int, "downstream connections"),
        ("trusted_proxy_hops", int, "proxies in front whose X-Forwarded-For to trust"),
    ):
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(base, name),
                           help=f"{what} (default {getattr(base, name)})")


def _add_tls_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS")
    group.add_argument("--tls-cert", type=Path, help="front door certificate chain (PEM); with --tls-key: TLS only")
    group.add_argument("--tls-key", type=Path, help="front door private key (PEM)")
    group.add_argument("--upstream-ca", type=Path, help="mutual TLS to the mesh: CA of the mesh's certificate")
    group.add_argument("--upstream-cert", type=Path, help="mutual TLS to the mesh: Envoy's client certificate")
    group.add_argument("--upstream-key", type=Path, help="mutual TLS to the mesh: Envoy's client key")
    group.add_argument("--upstream-server-name", default="", help="name on the mesh's certificate (default: its host)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--descriptor", type=Path, default=DESCRIPTOR)
    parser.add_argument("--out", type=Path, default=BUILD / "envoy.yaml")
    _add_address_args(parser)
    _add_auth_args(parser)
    _add_limit_args(parser)
    parser.add_argument("--cors-origin", action="append", default=[],
                        help="an origin allowed by CORS, scheme://host[:port], repeatable (default: none)")
    _add_tls_args(parser)
    return parser.parse_args(argv)


def auth_from_args(args: argparse.Namespace) -> JwtAuth | None:
    """The token check the flags ask for; else the environment's; else the development keys."""
    if args.no_auth:
        return None
    audiences = tuple(args.audience or [_env(AUTH_ENV_VARS["audience"], DEV_AUDIENCE)])
    jwks_file, jwks_url = args.jwks_file, args.jwks_url
    if not (jwks_file or jwks_url):
        jwks_file, jwks_url = _env(AUTH_ENV_VARS["jwks_file"]), _env(AUTH_ENV_VARS["jwks_url"])
        if jwks_file and jwks_url:
            raise ConfigError("AUTH_JWKS_FILE and AUTH_JWKS_URL are both set: give one")
    if jwks_url:
        return JwtAuth(issuer=args.issuer, audiences=audiences, jwks_url=jwks_url)
    jwks_file = jwks_file or ensure_dev_keys(DEV_AUTH_DIR).jwks
    return JwtAuth(issuer=args.issuer, audiences=audiences, jwks_file=Path(jwks_file))


def options_from_args(args: argparse.Namespace) -> dict:
    """build_config's keyword arguments from the parsed command line."""
    limit_fields = {name: getattr(args, name) for name in Limits.__dataclass_fields__}
    limit_fields["rate_limit_per_second"] = limit_fields["rate_limit_per_second"] or None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    upstream_files = (args.upstream_ca, args.upstream_cert, args.upstream_key)
    if any(upstream_files) and not all(upstream_files):
        raise ConfigError("--upstream-ca, --upstream-cert and --upstream-key go together")
    return {
        "auth": auth_from_args(args),
        "limits": Limits(**limit_fields),
        "cors_origins": tuple(args.cors_origin),
        "tls": ServerTls(args.tls_cert, args.tls_key) if args.tls_cert else None,
        "upstream_tls": UpstreamTls(*upstream_files, server_name=args.upstream_server_name) if all(upstream_files)
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="mesh-envoy-config: %(levelname)s: %(message)s")
    args = parse_args(argv)
    try:
        options = options_from_args(args)
        out = write(args.descriptor, args.out, args.listen, args.upstream, args.admin, **options)
        services = discover_services(args.descriptor)
    except ConfigError as exc:
        print(f"mesh-envoy-config: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(services)} services: {', '.join(services)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
