"""Where the mesh is and how long to wait for it, from the environment.

ML_SERVING_ADDR      host:port of the mesh. Default DEFAULT_ADDRESS, the Envoy front door,
                     which serves REST and also proxies native gRPC to the services.
                     DIRECT_ADDRESS reaches the mesh's gRPC server directly (no Envoy).
                     Both come from `defaults`, the addresses the whole mesh shares.
ML_SERVING_TIMEOUT   default deadline of each unary call in seconds (default 10);
                     0 or a negative value means no deadline.
ML_SERVING_TOKEN     bearer token sent with every call (`make up` prints one).
"""

from __future__ import annotations

import os

from . import defaults

DEFAULT_ADDRESS = defaults.FRONT_DOOR
"""The Envoy front door (REST and native gRPC)."""
DIRECT_ADDRESS = defaults.MESH_GRPC
"""The mesh's own gRPC server, bypassing Envoy."""
DEFAULT_TIMEOUT_S = 10.0


def default_address() -> str:
    """ML_SERVING_ADDR, else the Envoy front door."""
    return os.environ.get("ML_SERVING_ADDR", "").strip() or DEFAULT_ADDRESS


def default_timeout() -> float | None:
    """ML_SERVING_TIMEOUT in seconds, else 10; None (no deadline) when it is 0 or negative."""
    raw = os.environ.get("ML_SERVING_TIMEOUT", "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"ML_SERVING_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return seconds if seconds > 0 else None


def default_token() -> str:
    """ML_SERVING_TOKEN, else no token."""
    return os.environ.get("ML_SERVING_TOKEN", "").strip()
