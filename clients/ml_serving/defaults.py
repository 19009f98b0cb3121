"""Default local addresses of the mesh: the one source for the server, the gateway
generator, the developer tools and this client. Each can be overridden by its own
environment variable (see the README's configuration table)."""

FRONT_DOOR = "127.0.0.1:8000"
"""Envoy: REST and native gRPC (ML_SERVING_ADDR, ENVOY_LISTEN)."""
MESH_GRPC = "127.0.0.1:50051"
"""The mesh's own gRPC server, bypassing Envoy (MESH_GRPC_ADDR)."""
MESH_METRICS = "127.0.0.1:9464"
"""The mesh's Prometheus /metrics endpoint (MESH_METRICS_ADDR)."""
ENVOY_ADMIN = "127.0.0.1:9901"
"""Envoy's admin interface: /ready, /stats/prometheus (ENVOY_ADMIN)."""
ENVOY_BASE_ID = 8000
"""Envoy's --base-id, which tells instances apart in logs and ps (ENVOY_BASE_ID)."""
REDIS_URL = "redis://127.0.0.1:6379/0"
"""Redis, when REDIS_URL is unset."""
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
"""A local PostgreSQL the dev tools look for when DATABASE_URL is unset."""
