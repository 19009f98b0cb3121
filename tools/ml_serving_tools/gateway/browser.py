"""What browsers get: CORS only for listed origins, and no cross-site form posts.

* CORS is explicit: with no origin configured there is no CORS policy at all, so no
  browser page on another origin can read an answer. Listed origins get preflights
  answered by Envoy and ``access-control-allow-origin`` on answers.
* A mutating REST call (POST, PUT, PATCH, DELETE) with a body must say
  ``content-type: application/json`` (or be native gRPC, ``application/grpc*``). A
  browser sends ``text/plain``, form or multipart bodies cross-site without a preflight;
  the transcoder would parse them as JSON anyway, so a page on any site could otherwise
  make a logged-in user's browser post to the mesh. Refused with 415 and a JSON status.

The content-type guard is a short Lua script: whether a request has a body is only known
from its headers over HTTP/1.1 (content-length, transfer-encoding); over HTTP/2 a body may
come without a length, so the script looks at the body itself when nothing else tells.
"""

from __future__ import annotations

import re

from .common import ConfigError, typed

CORS_FILTER = "envoy.filters.http.cors"
JSON_GUARD_FILTER = "mesh.json_body_guard"
CORS_MAX_AGE_SECONDS = 600

MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CORS_ALLOW_HEADERS = ("authorization", "content-type", "x-request-id", "traceparent", "tracestate", "grpc-timeout")
CORS_EXPOSE_HEADERS = ("grpc-status", "grpc-message", "x-request-id", "www-authenticate", "retry-after")
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def check_origins(origins) -> tuple[str, ...]:
    """Origins exactly as browsers send them (scheme://host[:port]); no wildcard."""
    origins = tuple(origins)
    bad = [origin for origin in origins if not ORIGIN.match(origin)]
    if bad:
        raise ConfigError(f"CORS origins must be scheme://host[:port] with no path or wildcard: {bad}")
    return origins


# Runs on every request before authentication. Cheap for everything it lets through (a
# header lookup or two); reads the body only of a mutating request with a wrong content
# type and no length said (HTTP/2), which it refuses if that body is not empty.
JSON_GUARD_LUA = """
-- The content-type guard of mesh-envoy-config (ml_serving_tools.gateway.browser).
local MUTATING = {POST = true, PUT = true, PATCH = true, DELETE = true}

local function accepted(content_type)
  local ct = string.lower(content_type or "")
  return ct:find("^application/grpc") ~= nil
      or ct:find("^application/json%s*$") ~= nil
      or ct:find("^application/json%s*;") ~= nil
end

local function refuse(handle)
  handle:respond({[":status"] = "415"}, "MESSAGE")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if not MUTATING[headers:get(":method")] or accepted(headers:get("content-type")) then
    return
  end
  local length = headers:get("content-length")
  if length ~= nil then
    if length ~= "0" then refuse(handle) end
    return
  end
  if headers:get("transfer-encoding") ~= nil then
    refuse(handle)
    return
  end
  -- No length said (HTTP/2): the body itself tells; nil when the request has none.
  local body = handle:body()
  if body ~= nil and body:length() > 0 then
    refuse(handle)
  end
end
"""
NOT_JSON_MESSAGE = "a request with a body must have content-type application/json"


def json_body_guard_filter() -> dict:
    """Refuse (415) mutating requests whose body is neither JSON nor gRPC."""
    source = JSON_GUARD_LUA.replace("MESSAGE", NOT_JSON_MESSAGE)
    return {"name": JSON_GUARD_FILTER, "typed_config": typed(
        "filters.http.lua.v3.Lua", default_source_code={"inline_string": source}, stat_prefix="json_body_guard")}


def cors_filter() -> dict:
    return {"name": CORS_FILTER, "typed_config": typed("filters.http.cors.v3.Cors")}


def cors_policy(origins: tuple[str, ...]) -> dict:
    """The virtual host's typed_per_filter_config entry (empty without origins: no CORS at all)."""
    if not origins:
        return {}
    return {CORS_FILTER: typed(
        "filters.http.cors.v3.CorsPolicy",
        allow_origin_string_match=[{"exact": origin} for origin in origins],
        allow_methods=", ".join(("GET", *MUTATING_METHODS, "OPTIONS")),
        allow_headers=", ".join(CORS_ALLOW_HEADERS),
        expose_headers=", ".join(CORS_EXPOSE_HEADERS),
        max_age=str(CORS_MAX_AGE_SECONDS),
        allow_credentials=False,  # bearer tokens are sent explicitly, never as cookies
    )}

