"""``with DevServices(state_dir) as ds: ds.redis_url, ds.database_url`` (and, when asked for,
``ds.s3``, ``ds.mlflow_uri`` and ``ds.torchserve``; ``ds.env()`` for a process)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .mlflow import ensure_mlflow
from .postgres import DEFAULT_DBNAME, ensure_postgres
from .redis import ensure_redis
from .s3 import MLFLOW_BUCKET, MODELS_BUCKET, S3Endpoint, ensure_buckets, ensure_s3
from .started import stop_all
from .torchserve import TorchServeEndpoints, ensure_torchserve


class DevServices:
    """Finds or starts Redis and PostgreSQL, and S3 (with the mesh's buckets) and MLflow when
    asked for (MLflow needs the other two, so it brings them); on exit, stops the embedded
    servers that this process started."""

    def __init__(self, state_dir: Path, force_embedded: bool = False, dbname: str = DEFAULT_DBNAME,
                 source: str = "auto", redis: bool = True, postgres: bool = True, s3: bool = False,
                 mlflow: bool = False, torchserve: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.force_embedded = force_embedded
        self.dbname = dbname
        self.source = source
        self.want_redis = redis
        self.want_postgres = postgres or mlflow
        self.want_s3 = s3 or mlflow
        self.want_mlflow = mlflow
        self.want_torchserve = torchserve
        self.redis_url: Optional[str] = None
        self.database_url: Optional[str] = None
        self.s3: Optional[S3Endpoint] = None
        self.mlflow_uri: Optional[str] = None
        self.torchserve: Optional[TorchServeEndpoints] = None

    def __enter__(self) -> "DevServices":
        try:
            if self.want_redis:
                self.redis_url = ensure_redis(self.state_dir, self.force_embedded, self.source)
            if self.want_postgres:
                self.database_url = ensure_postgres(self.state_dir, self.force_embedded, self.dbname,
                                                    self.source)
            if self.want_s3:
                self.s3 = ensure_s3(self.state_dir, self.force_embedded)
                ensure_buckets(self.s3, MODELS_BUCKET, MLFLOW_BUCKET)
            if self.want_mlflow:
                assert self.database_url is not None and self.s3 is not None
                self.mlflow_uri = ensure_mlflow(self.state_dir, self.database_url, self.s3, self.force_embedded)
            if self.want_torchserve:
                self.torchserve = ensure_torchserve(self.state_dir, self.force_embedded)
        except BaseException:
            stop_all()
            raise
        return self

    def env(self) -> dict[str, str]:
        """REDIS_URL, DATABASE_URL, the S3 variables, MLFLOW_TRACKING_URI and the TORCHSERVE_* addresses,
        for those found."""
        out: dict[str, str] = {}
        if self.redis_url:
            out["REDIS_URL"] = self.redis_url
        if self.database_url:
            out["DATABASE_URL"] = self.database_url
        if self.s3 is not None:
            out.update(self.s3.env())
        if self.mlflow_uri:
            out["MLFLOW_TRACKING_URI"] = self.mlflow_uri
        if self.torchserve is not None:
            out.update(self.torchserve.env())
        return out

    def __exit__(self, *exc) -> None:
        stop_all()
