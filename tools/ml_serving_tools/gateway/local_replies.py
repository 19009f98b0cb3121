"""Envoy's own answers to REST clients as ``google.rpc.Status`` JSON, like the mesh's errors.

Envoy answers some requests itself: the transcoder's 404 / 400, the router's 503 / 504,
and the front door's guards (401 token, 403 scope, 413 body, 415 content type, 429 rate,
431 headers). On a REST request each becomes ``{"code":..,"message":..,"details":[]}``
(keys in alphabetical order; Envoy's JSON formatter sorts them). Native gRPC requests are
left alone: Envoy answers them with grpc-status / grpc-message trailers.
"""

from __future__ import annotations

# HTTP status of an Envoy-generated error -> the google.rpc.Code its JSON body carries
# (the inverse of grpc-gateway's HTTPStatusFromCode for the statuses Envoy produces).
LOCAL_REPLY_CODES = {
    400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 413: 8, 415: 3, 429: 8, 431: 8, 501: 12, 503: 14, 504: 4,
}
UNKNOWN_CODE = 2
ROUTE_METADATA = "mesh"  # route metadata namespace: required_scope of an RPC's route

# Envoy's own texts, replaced where they would puzzle a client.
MESSAGES = {
    403: "the token does not grant the scope %METADATA(ROUTE:mesh:required_scope)% that this RPC requires",
    429: "too many requests from this client; slow down and retry",
}


def status_body(code: int, message: str = "%LOCAL_REPLY_BODY%") -> dict:
    """A google.rpc.Status-shaped JSON body, as grpc-gateway writes errors."""
    return {"json_format": {"code": code, "message": message, "details": []}, "content_type": "application/json"}


def is_rest() -> dict:
    """AccessLogFilter: a REST request (not yet transcoded, or transcoded by the transcoder)."""
    # Still untranscoded: its content-type, if any, is not gRPC. Transcoded: the
    # transcoder recorded x-envoy-original-path.
    return {"or_filter": {"filters": [
        {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
        {"header_filter": {"header": {
            "name": "content-type",
            "string_match": {"prefix": "application/grpc"},
            "invert_match": True,
            "treat_missing_header_as_empty": True,
        }}},
    ]}}


def _status_is(http_status: int) -> dict:
    return {"status_code_filter": {"comparison": {
        "op": "EQ",
        "value": {"default_value": http_status, "runtime_key": f"mesh.local_reply.{http_status}"},
    }}}


def _cel(expression: str) -> dict:
    """AccessLogFilter: a CEL expression over the request and the reply being sent."""
    return {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
        "expression": expression,
    }}}


def rejected_token_is_401() -> list[dict]:
    """jwt_authn answers 403 to a token it rejects for its audience; that is a bad token
    (401, as the mesh says UNAUTHENTICATED), not a missing permission."""
    rejected = _cel("response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')")
    rewrite = {
        "status_code": 401,
        "headers_to_add": [{"header": {"key": "www-authenticate", "value": 'Bearer error="invalid_token"'},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }
    return [
        {"filter": {"and_filter": {"filters": [is_rest(), rejected]}}, **rewrite,
         "body_format_override": status_body(LOCAL_REPLY_CODES[401])},
        {"filter": rejected, **rewrite},  # native gRPC: no JSON body
    ]


def invalid_path_says_why() -> list[dict]:
    """Envoy refuses a path that does not normalise (a %00 in it, say) with an empty body;
    the client gets a message instead."""
    invalid = _cel("response.code == 400 && response.code_details == 'path_normalization_failed'")
    return [{"filter": {"and_filter": {"filters": [is_rest(), invalid]}},
             "body_format_override": status_body(LOCAL_REPLY_CODES[400], INVALID_PATH_MESSAGE)}]


INVALID_PATH_MESSAGE = "the request path is not valid (a percent-encoded NUL, or a path that cannot be normalised)"


def local_reply_config() -> dict:
    """The HttpConnectionManager's local_reply_config: first matching mapper wins."""
    mappers = rejected_token_is_401() + invalid_path_says_why()
    for http_status, code in LOCAL_REPLY_CODES.items():
        mappers.append({
            "filter": {"and_filter": {"filters": [is_rest(), _status_is(http_status)]}},
            "body_format_override": status_body(code, MESSAGES.get(http_status, "%LOCAL_REPLY_BODY%")),
        })
    # Any other local reply on a REST request (e.g. 500) still answers JSON.
    mappers.append({"filter": is_rest(), "body_format_override": status_body(UNKNOWN_CODE)})
    return {"mappers": mappers}
