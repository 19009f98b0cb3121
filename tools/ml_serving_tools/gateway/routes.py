"""The front door's routes: one per mesh RPC, then gRPC infrastructure, then everything else.

Routes match the gRPC path ``/<package>.<Service>/<Method>`` of gRPC requests only
(``grpc: {}``): a native gRPC call, or a REST call once the transcoder has turned it into
its gRPC call and routed it again. One route per RPC lets each carry what belongs to that
RPC alone: the scope its caller's token must grant and whether it may be retried.

A REST call *before* transcoding is not gRPC, so it matches only the REST routes at the
end; there it gets its CORS policy, needs a token and has its body buffered (and limited).
The transcoder then rejects it (an unknown path or method: 404) or re-routes it to its
RPC's route. The transcoder reads its per-route config from the route the REST call
matched *before* transcoding, so a service whose JSON differs (the Open Inference
Protocol's snake_case names) has a REST route of its own, by path prefix, carrying it.
"""

from __future__ import annotations

from . import auth as auth_module
from .common import UPSTREAM_CLUSTER
from .descriptor import Rpc
from .limits import unbuffered_route_config
from .local_replies import ROUTE_METADATA
from .upstream import retry_policy

ROUTE_TIMEOUT = "30s"
NO_TIMEOUT = "0s"
"""Of server streams (WatchEvents): they last as long as the caller listens; heartbeats keep
them inside Envoy's stream idle timeout, and a client's grpc-timeout still applies."""
UNTRANSCODED_CLUSTER = "untranscoded_rest"

# gRPC services the servers host besides the mesh services; routed for native gRPC only,
# and open without a token (load balancers and `grpcurl list` use them).
PASSTHROUGH_GRPC_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
    "grpc.health.v1.Health",
)


def _to_upstream(name: str, match: dict, per_filter: dict, timeout: str = ROUTE_TIMEOUT, **extra) -> dict:
    return {
        "name": name,
        "match": {**match, "grpc": {}},
        "route": {
            "cluster": UPSTREAM_CLUSTER,
            "timeout": timeout,
            # Honour a client's grpc-timeout header, capped at the route timeout.
            "max_stream_duration": {"grpc_timeout_header_max": timeout},
            **extra,
        },
        "typed_per_filter_config": {**unbuffered_route_config(), **per_filter},
    }


def rpc_route(rpc: Rpc, with_auth: bool) -> dict:
    """One mesh RPC: its scope (checked when auth is on) and, if idempotent, its retries."""
    per_filter = auth_module.rpc_route_config(rpc) if with_auth else {}
    timeout = NO_TIMEOUT if rpc.server_streaming else ROUTE_TIMEOUT
    route = _to_upstream(rpc.name, {"path": rpc.path}, per_filter, timeout, **retry_policy(rpc))
    route["metadata"] = {"filter_metadata": {ROUTE_METADATA: {"required_scope": rpc.scope}}}
    return route


def passthrough_route(service: str, with_auth: bool) -> dict:
    per_filter = auth_module.open_route_config() if with_auth else {}
    return _to_upstream(service, {"prefix": f"/{service}/"}, per_filter)


def grpc_fallback_route(with_auth: bool) -> dict:
    """Native gRPC to any other method goes upstream (with a valid token), which answers UNIMPLEMENTED."""
    per_filter = auth_module.token_only_route_config() if with_auth else {}
    return _to_upstream("any-grpc", {"prefix": "/"}, per_filter)


def rest_route(with_auth: bool, name: str = "rest-before-transcoding", match: dict | None = None,
               per_filter: dict | None = None) -> dict:
    """Requests that are not gRPC (by default every one): REST before transcoding.

    It must be a forwarding route, not a direct response: the CORS filter applies its
    policy only on those. Nothing is forwarded from here in practice (the transcoder turns
    a REST call into gRPC and re-routes it, or rejects it), and what would be goes to a
    cluster with no endpoints (503), never to the mesh untranscoded. ``per_filter``: what
    else the route carries (a transcoder override).
    """
    route = {
        "name": name,
        "match": match or {"prefix": "/"},
        "route": {"cluster": UNTRANSCODED_CLUSTER, "timeout": ROUTE_TIMEOUT},
    }
    per_filter = {**(auth_module.token_only_route_config() if with_auth else {}), **(per_filter or {})}
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return route


def untranscoded_cluster() -> dict:
    """The cluster behind ``rest_route``: no endpoints, so Envoy answers 503 itself."""
    return {"name": UNTRANSCODED_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": UNTRANSCODED_CLUSTER, "endpoints": []}}


def route_config(rpcs: list[Rpc], with_auth: bool, virtual_host_filter_config: dict,
                 rest_routes: list[dict] = ()) -> dict:
    """``rest_routes``: REST routes of their own (before transcoding), tried before the last one."""
    routes = [rpc_route(rpc, with_auth) for rpc in rpcs]
    routes += [passthrough_route(service, with_auth) for service in PASSTHROUGH_GRPC_SERVICES]
    routes += [grpc_fallback_route(with_auth), *rest_routes, rest_route(with_auth)]
    virtual_host = {"name": "mesh", "domains": ["*"], "routes": routes}
    if virtual_host_filter_config:
        virtual_host["typed_per_filter_config"] = virtual_host_filter_config
    return {"name": "front_door", "virtual_hosts": [virtual_host]}
