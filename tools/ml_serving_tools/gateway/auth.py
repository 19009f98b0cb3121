"""Authentication and authorisation at the front door: bearer JWTs and per-RPC scopes.

* ``envoy.filters.http.jwt_authn`` verifies the ``authorization: Bearer <jwt>`` header
  (signature against a JWKS, issuer, audience, expiry) and forwards it unchanged, because
  the mesh verifies the same token again (its direct port is no back door). The JWKS is
  a local file for development or fetched from the issuer (``remote_jwks``) in Kubernetes.
  A missing or bad token is 401 with ``WWW-Authenticate: Bearer ...``.
* ``envoy.filters.http.rbac`` then checks the scope: every mesh RPC has its own route
  (the gRPC path ``/pkg.Service/Method``, which is also what a transcoded REST call is
  routed by) carrying a policy that the token's ``scope`` claim (space-separated) or
  ``scp`` claim (a list) holds the RPC's ``required_scope`` from the contract. The
  filter's own policy denies everything, so a route without a policy of its own is closed.
  A valid token without the scope is 403.
* Health checking and server reflection stay open (no token): load balancers and
  ``grpcurl list`` need them, and they reveal nothing a contract does not.

Order matters. jwt_authn runs before the REST body is buffered and transcoded, so a caller
without a valid token costs no parsing: every REST request needs a token (an unknown REST
path without one is 401, not 404). RBAC runs after the transcoder, on the route of the
gRPC path the REST call was turned into, where its scope is known.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .common import ConfigError, HostPort, seconds, typed
from .descriptor import Rpc

JWT_FILTER = "envoy.filters.http.jwt_authn"
SCOPE_FILTER = "envoy.filters.http.rbac"
PROVIDER = "mesh"
REQUIREMENT = "bearer"
PAYLOAD_METADATA_KEY = "jwt_payload"  # dynamic metadata under envoy.filters.http.jwt_authn
JWKS_CLUSTER = "jwks_issuer"
JWKS_FETCH_TIMEOUT_SECONDS = 5
JWKS_CACHE_SECONDS = 600
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian/Ubuntu, and Envoy's images
JWT_CACHE_ENTRIES = 1000
CLOCK_SKEW_SECONDS = 30  # as the mesh's AUTH_CLOCK_SKEW_SECONDS default: never looser than the mesh
SCOPE_PATTERN = re.compile(r"^[A-Za-z0-9._:/-]+$")


@dataclass(frozen=True)
class JwtAuth:
    """Where tokens come from and what they must say. Exactly one of jwks_file / jwks_url."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_file: Path | None = None  # development: a JWKS file Envoy reads at start
    jwks_url: str | None = None  # Kubernetes: the issuer's JWKS URL, fetched and cached
    jwks_cache_seconds: int = JWKS_CACHE_SECONDS
    jwks_ca_file: Path = SYSTEM_CA_BUNDLE  # CAs an https JWKS URL's certificate must chain to (in Envoy's image)

    def __post_init__(self):
        if bool(self.jwks_file) == bool(self.jwks_url):
            raise ConfigError("JWT auth needs exactly one of a JWKS file or a JWKS URL")
        if not self.issuer or not self.audiences or not all(self.audiences):
            raise ConfigError("JWT auth needs an issuer and at least one audience")
        if self.jwks_file is not None and not Path(self.jwks_file).is_file():
            raise ConfigError(f"JWKS file {self.jwks_file} not found")
        if self.jwks_url is not None:
            parsed = urllib.parse.urlsplit(self.jwks_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigError(f"JWKS URL must be an http(s) URL, got {self.jwks_url!r}")


# ---------------------------------------------------------------------------- jwt_authn


def _jwks_source(auth: JwtAuth) -> dict:
    if auth.jwks_file is not None:
        return {"local_jwks": {"filename": str(Path(auth.jwks_file).resolve())}}
    return {
        "remote_jwks": {
            "http_uri": {"uri": auth.jwks_url, "cluster": JWKS_CLUSTER, "timeout": seconds(JWKS_FETCH_TIMEOUT_SECONDS)},
            "cache_duration": seconds(auth.jwks_cache_seconds),
            # Fetch at start (and on expiry) rather than on the first request; keep serving meanwhile.
            "async_fetch": {"fast_listener": True},
            "retry_policy": {"num_retries": 3},
        }
    }


def jwt_filter(auth: JwtAuth) -> dict:
    """Verify bearer tokens; which routes require one is said per route (``*_route_config`` below)."""
    provider = {
        "issuer": auth.issuer,
        "audiences": list(auth.audiences),
        **_jwks_source(auth),
        # Only the Authorization header: a token in a URL ends up in logs.
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "forward": True,  # the mesh checks the token again
        "payload_in_metadata": PAYLOAD_METADATA_KEY,
        "clock_skew_seconds": CLOCK_SKEW_SECONDS,
        # Verified tokens are kept (per worker, until they expire): a caller's next calls skip the signature check.
        "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_ENTRIES},
    }
    return {
        "name": JWT_FILTER,
        "typed_config": typed(
            "filters.http.jwt_authn.v3.JwtAuthentication",
            providers={PROVIDER: provider},
            requirement_map={REQUIREMENT: {"provider_name": PROVIDER}},
            # A CORS preflight carries no token; the CORS filter before this one answers it.
            bypass_cors_preflight=True,
        ),
    }


def jwks_cluster(auth: JwtAuth) -> list[dict]:
    """The cluster Envoy fetches a remote JWKS through (none for a local file)."""
    if auth.jwks_url is None:
        return []
    parsed = urllib.parse.urlsplit(auth.jwks_url)
    tls = parsed.scheme == "https"
    where = HostPort(parsed.hostname, parsed.port or (443 if tls else 80))
    cluster = {
        "name": JWKS_CLUSTER,
        "type": "STATIC" if where.is_ip else "LOGICAL_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": seconds(JWKS_FETCH_TIMEOUT_SECONDS),
        "load_assignment": {
            "cluster_name": JWKS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": where.socket_address()}}]}],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": typed(
                "transport_sockets.tls.v3.UpstreamTlsContext",
                sni=where.host,
                common_tls_context={"validation_context": {
                    # The issuer's certificate must chain to these CAs and carry its host name.
                    "trusted_ca": {"filename": str(auth.jwks_ca_file)},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": where.host}}],
                }},
            ),
        }
    return [cluster]


# ---------------------------------------------------------------------------- scopes (RBAC)


def scope_regex(scope: str) -> str:
    """RE2 matching a space-separated ``scope`` claim that holds ``scope`` as one whole word.

    Envoy's safe_regex must match the whole claim, hence the optional words either side.
    """
    if not SCOPE_PATTERN.match(scope):
        raise ConfigError(f"scope {scope!r} has characters a scope claim cannot carry")
    return f"(.* )?{re.escape(scope)}( .*)?"


def _claim(name: str, value: dict) -> dict:
    """An RBAC principal on one claim of the verified token (jwt_authn's dynamic metadata)."""
    matcher = {"filter": JWT_FILTER, "path": [{"key": PAYLOAD_METADATA_KEY}, {"key": name}], "value": value}
    return {"sourced_metadata": {"metadata_matcher": matcher, "metadata_source": "DYNAMIC"}}


def has_scope(scope: str) -> dict:
    """An RBAC principal: the verified token grants ``scope`` (in ``scope`` or in ``scp``)."""
    in_scope = _claim("scope", {"string_match": {"safe_regex": {"regex": scope_regex(scope)}}})
    in_scp = _claim("scp", {"list_match": {"one_of": {"string_match": {"exact": scope}}}})
    return {"or_ids": {"ids": [in_scope, in_scp]}}


def scope_filter() -> dict:
    """The RBAC filter; its own rules (ALLOW with no policy) deny every route without a policy."""
    return {
        "name": SCOPE_FILTER,
        "typed_config": typed("filters.http.rbac.v3.RBAC", rules={"action": "ALLOW", "policies": {}},
                              rules_stat_prefix="scopes."),
    }


# ---------------------------------------------------------------------------- per route


def rpc_route_config(rpc: Rpc) -> dict:
    """typed_per_filter_config of a mesh RPC's route: a verified token holding its scope."""
    policy = {"permissions": [{"any": True}], "principals": [has_scope(rpc.scope)]}
    return {
        JWT_FILTER: typed("filters.http.jwt_authn.v3.PerRouteConfig", requirement_name=REQUIREMENT),
        SCOPE_FILTER: typed("filters.http.rbac.v3.RBACPerRoute",
                            rbac={"rules": {"action": "ALLOW", "policies": {f"scope {rpc.scope}": policy}}}),
    }


def open_route_config() -> dict:
    """Health checking and reflection: no token, no scope."""
    return {
        JWT_FILTER: typed("filters.http.jwt_authn.v3.PerRouteConfig", disabled=True),
        SCOPE_FILTER: typed("filters.http.rbac.v3.RBACPerRoute"),  # no rbac: the filter is off here
    }


def token_only_route_config() -> dict:
    """A valid token, no scope yet: REST calls before transcoding (their RPC's scope is checked
    once the transcoder has routed them by their gRPC path), and native gRPC to an unknown
    method (the upstream answers UNIMPLEMENTED)."""
    return {
        JWT_FILTER: typed("filters.http.jwt_authn.v3.PerRouteConfig", requirement_name=REQUIREMENT),
        SCOPE_FILTER: typed("filters.http.rbac.v3.RBACPerRoute"),
    }
