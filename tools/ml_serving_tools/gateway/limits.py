"""Limits at the front door, each no larger than the mesh's own, so Envoy answers first.

The mesh's gRPC server accepts at most 16 KiB of metadata and 16 MiB messages; past those
it answers RESOURCE_EXHAUSTED, which a REST client would see as 429 "too many requests".
Envoy's limits are smaller, so an oversized request is refused by Envoy with the status
that says what is wrong (431, 413), and slow or abusive clients are cut off before they
hold resources (header timeout, idle timeout, per-client rate, connection cap).
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import ConfigError, seconds, typed

KIB = 1024
MIB = 1024 * KIB

MESH_MAX_METADATA_BYTES = 16 * KIB  # the mesh's grpc.max_metadata_size
MESH_MAX_MESSAGE_BYTES = 16 * MIB  # the mesh's MESH_MAX_MESSAGE_BYTES default

RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
BUFFER_FILTER = "envoy.filters.http.buffer"
RATE_LIMIT_FILL_INTERVAL_SECONDS = 1
MAX_TRACKED_CLIENTS = 10_000  # per-client buckets kept (least recently used are dropped)


@dataclass(frozen=True)
class Limits:
    """Every limit Envoy enforces. Defaults are for a front door exposed to the world."""

    max_request_headers_kb: int = 8  # all request headers together; past it: 431
    max_request_body_bytes: int = 4 * MIB  # a whole REST body, buffered before transcoding; past it: 413
    max_response_body_bytes: int = MESH_MAX_MESSAGE_BYTES  # a REST answer the transcoder buffers
    request_headers_timeout_seconds: float = 10  # a client still sending headers after this is cut off
    request_timeout_seconds: float = 30  # a client still sending its request (a half-sent body) is cut off
    connection_idle_timeout_seconds: float = 300  # a connection with no stream for this long is closed
    per_connection_buffer_limit_bytes: int = 1 * MIB  # read/write buffer per connection (flow control)
    rate_limit_per_second: int | None = 1000  # requests per client address, refilled every second
    rate_limit_burst: int = 2000  # a client's bucket size
    max_connections: int = 10_000  # downstream connections over the whole Envoy
    trusted_proxy_hops: int = 0  # load balancers in front of Envoy whose X-Forwarded-For to trust

    def __post_init__(self):
        if not 1 <= self.max_request_headers_kb * KIB < MESH_MAX_METADATA_BYTES:
            raise ConfigError(f"max_request_headers_kb must be below the mesh's {MESH_MAX_METADATA_BYTES // KIB} KiB")
        if not 1 <= self.max_request_body_bytes <= MESH_MAX_MESSAGE_BYTES:
            raise ConfigError(f"max_request_body_bytes must be 1 .. {MESH_MAX_MESSAGE_BYTES} (the mesh's limit)")
        if not 1 <= self.max_response_body_bytes <= MESH_MAX_MESSAGE_BYTES:
            raise ConfigError(f"max_response_body_bytes must be 1 .. {MESH_MAX_MESSAGE_BYTES}")
        if self.rate_limit_per_second is not None and not 1 <= self.rate_limit_per_second <= self.rate_limit_burst:
            raise ConfigError("rate_limit_per_second must be at least 1 and at most rate_limit_burst")
        if self.max_connections < 1 or self.request_headers_timeout_seconds <= 0 or self.request_timeout_seconds <= 0:
            raise ConfigError("max_connections, request_headers_timeout_seconds and request_timeout_seconds "
                              "must be positive")


def connection_manager_limits(limits: Limits) -> dict:
    """Fields of the HttpConnectionManager: header size, the timeouts that close slow clients,
    and who the client is (the per-client rate limit's key)."""
    return {
        "max_request_headers_kb": limits.max_request_headers_kb,
        "request_headers_timeout": seconds(limits.request_headers_timeout_seconds),
        # The whole request, body included, must arrive within this (a response may take longer).
        "request_timeout": seconds(limits.request_timeout_seconds),
        "common_http_protocol_options": {"idle_timeout": seconds(limits.connection_idle_timeout_seconds)},
        # Envoy is the edge: the peer's address is the client's (for the per-client rate
        # limit and X-Forwarded-For), unless trusted proxies in front say otherwise.
        "use_remote_address": True,
        "xff_num_trusted_hops": limits.trusted_proxy_hops,
        # ... and keep a caller's own x-request-id, which the mesh logs (Envoy would replace it).
        "preserve_external_request_id": True,
    }


def _token_bucket(limits: Limits) -> dict:
    return {
        "max_tokens": limits.rate_limit_burst,
        "tokens_per_fill": limits.rate_limit_per_second,
        "fill_interval": seconds(RATE_LIMIT_FILL_INTERVAL_SECONDS),
    }


def rate_limit_filter(limits: Limits) -> list[dict]:
    """A token bucket per client address (none when rate limiting is off); over it: 429.

    The descriptor's entry has no value, so each address gets its own bucket (Envoy's
    dynamic descriptors), instead of all clients sharing one.
    """
    if limits.rate_limit_per_second is None:
        return []
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return [{
        "name": RATE_LIMIT_FILTER,
        "typed_config": typed(
            "filters.http.local_ratelimit.v3.LocalRateLimit",
            stat_prefix="per_client",
            token_bucket=_token_bucket(limits),  # for a request without an address (never, in practice)
            filter_enabled={**always, "runtime_key": "mesh.rate_limit.enabled"},
            filter_enforced={**always, "runtime_key": "mesh.rate_limit.enforced"},
            rate_limits=[{"actions": [{"remote_address": {}}]}],
            descriptors=[{"entries": [{"key": "remote_address"}], "token_bucket": _token_bucket(limits)}],
            max_dynamic_descriptors=MAX_TRACKED_CLIENTS,
            always_consume_default_token_bucket=False,
            rate_limited_as_resource_exhausted=True,  # gRPC callers: RESOURCE_EXHAUSTED, not UNAVAILABLE
            enable_x_ratelimit_headers="DRAFT_VERSION_03",  # x-ratelimit-limit / -remaining / -reset
        ),
    }]


def request_buffer_filter(limits: Limits) -> dict:
    """Buffer a whole REST body before it is transcoded; past the limit: 413.

    The transcoder's own max_request_body_size bounds only the chunk it holds at once, so a
    larger body would stream through to the mesh (and come back as its 429). Native gRPC
    is never buffered: its routes turn this filter off (``unbuffered_route_config``), so a
    streaming call streams, and its messages are the mesh's to limit.
    """
    return {"name": BUFFER_FILTER,
            "typed_config": typed("filters.http.buffer.v3.Buffer", max_request_bytes=limits.max_request_body_bytes)}


def unbuffered_route_config() -> dict:
    """typed_per_filter_config of a native gRPC route: no request buffering."""
    return {BUFFER_FILTER: typed("filters.http.buffer.v3.BufferPerRoute", disabled=True)}


def overload_manager(limits: Limits) -> dict:
    """Caps downstream connections over all listeners (the admin interface is exempt)."""
    return {
        "resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": typed(
                "resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                max_active_downstream_connections=limits.max_connections,
            ),
        }],
    }
