"""The mesh as Envoy's upstream: HTTP/2, actively health-checked, retried where it is safe.

* gRPC health checking of service ``""`` (the whole server) every second: a mesh that
  drains (it reports NOT_SERVING on SIGTERM before it stops accepting calls) or whose
  dependencies fail stops receiving traffic within about two intervals. Panic routing is
  off, so with no healthy mesh left clients get 503 "no healthy upstream" at once rather
  than calls sent to a server that said it cannot serve them.
* Retries only for RPCs that are safe to repeat (reads, and writes the contract or the
  gateway knows to be idempotent), on UNAVAILABLE and on connection failures and resets.
"""

from __future__ import annotations

from .common import UPSTREAM_CLUSTER, HostPort, seconds, typed
from .descriptor import Rpc
from .tls import UpstreamTls, upstream_transport_socket

CONNECT_TIMEOUT_SECONDS = 1
HEALTH_CHECK_INTERVAL_SECONDS = 1
HEALTH_CHECK_TIMEOUT_SECONDS = 1
UNHEALTHY_THRESHOLD = 2  # consecutive failed checks before a healthy mesh is taken out
HEALTHY_THRESHOLD = 1  # one passing check puts it back
HEALTH_CHECKED_SERVICE = ""  # the whole server's status
RETRY_ON = "unavailable,reset,connect-failure,refused-stream"
NUM_RETRIES = 2
RETRY_BACK_OFF_BASE_SECONDS = 0.025
RETRY_BACK_OFF_MAX_SECONDS = 0.25


def health_check() -> dict:
    interval = seconds(HEALTH_CHECK_INTERVAL_SECONDS)
    return {
        "timeout": seconds(HEALTH_CHECK_TIMEOUT_SECONDS),
        "interval": interval,
        # Without traffic Envoy would check only once a minute; a drain must be seen anyway.
        "no_traffic_interval": interval,
        "unhealthy_threshold": UNHEALTHY_THRESHOLD,
        "healthy_threshold": HEALTHY_THRESHOLD,
        "grpc_health_check": {"service_name": HEALTH_CHECKED_SERVICE},
    }


def retry_policy(rpc: Rpc) -> dict:
    """The route's retry_policy, or nothing for an RPC that must not run twice."""
    if not rpc.idempotent:
        return {}
    return {"retry_policy": {
        "retry_on": RETRY_ON,
        "num_retries": NUM_RETRIES,
        "retry_back_off": {"base_interval": seconds(RETRY_BACK_OFF_BASE_SECONDS),
                           "max_interval": seconds(RETRY_BACK_OFF_MAX_SECONDS)},
        # Another mesh replica when there is one.
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": typed("retry.host.previous_hosts.v3.PreviousHostsPredicate")}],
        "host_selection_retry_max_attempts": 3,
    }}


def upstream_cluster(upstream: HostPort, buffer_limit_bytes: int, tls: UpstreamTls | None = None) -> dict:
    endpoint = {"endpoint": {"address": upstream.socket_address()}}
    cluster = {
        "name": UPSTREAM_CLUSTER,
        # An IP needs no resolution; a name (a Kubernetes Service) is re-resolved.
        "type": "STATIC" if upstream.is_ip else "STRICT_DNS",
        "connect_timeout": seconds(CONNECT_TIMEOUT_SECONDS),
        "lb_policy": "ROUND_ROBIN",
        "per_connection_buffer_limit_bytes": buffer_limit_bytes,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                "upstreams.http.v3.HttpProtocolOptions", explicit_http_config={"http2_protocol_options": {}}),
        },
        "health_checks": [health_check()],
        # Never route to a mesh that failed its checks, even when none passes ("panic" mode off).
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "load_assignment": {
            "cluster_name": UPSTREAM_CLUSTER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
    }
    if tls is not None:
        cluster["transport_socket"] = upstream_transport_socket(tls, upstream.host)
    return cluster
