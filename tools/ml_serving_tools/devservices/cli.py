"""``mesh-devservices``: find or start Redis, PostgreSQL, S3, MLflow and TorchServe for a shell, or stop them.

    mesh-devservices env  [--state-dir .run] [--force-embedded] [--export] [--only redis] [--with-s3] [--with-mlflow]
                          [--with-torchserve]
    mesh-devservices stop [--state-dir .run]

``env`` prints ``REDIS_URL=...`` and ``DATABASE_URL=...`` on stdout (logs go to stderr), with
``--with-s3`` also ``S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` and ``MLFLOW_S3_ENDPOINT_URL`` (the mesh's buckets created), with
``--with-mlflow`` also ``MLFLOW_TRACKING_URI`` (and the S3 lines: MLflow's artifacts live
there), with ``--with-torchserve`` also ``TORCHSERVE_GRPC_ADDR``, ``TORCHSERVE_MANAGEMENT_ADDR``,
``TORCHSERVE_METRICS_URL`` and ``TORCHSERVE_MODEL_STORE``, and leaves any embedded server running, detached; ``stop`` stops the embedded
servers recorded in the state dir; ``status`` lists them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..paths import STATE_DIR
from .mlflow import ensure_mlflow
from .postgres import DEFAULT_DBNAME, ensure_postgres
from .processes import EMBEDDED_SOURCES, log
from .redis import ensure_redis
from .s3 import MLFLOW_BUCKET, MODELS_BUCKET, ensure_buckets, ensure_s3
from .started import detach, stop_all
from .state import load_state, looks_like, stop_state_dir
from .torchserve import ensure_torchserve


def env_lines(values: dict[str, str], export: bool = False) -> list[str]:
    prefix = "export " if export else ""
    return [f"{prefix}{k}={v}" for k, v in values.items()]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_env = sub.add_parser("env", help="find or start Redis and PostgreSQL (S3, MLflow); print their variables")
    p_stop = sub.add_parser("stop", help="stop the embedded servers recorded in the state dir")
    p_status = sub.add_parser("status", help="show the embedded servers recorded in the state dir")
    for p in (p_env, p_stop, p_status):
        p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p_env.add_argument("--force-embedded", action="store_true",
                       help="skip REDIS_URL/DATABASE_URL/S3_ENDPOINT_URL/MLFLOW_TRACKING_URI and the system services")
    p_env.add_argument("--source", choices=EMBEDDED_SOURCES, default="auto",
                       help="where embedded binaries come from: PATH, the pip packages, or both (auto)")
    p_env.add_argument("--dbname", default=DEFAULT_DBNAME)
    p_env.add_argument("--export", action="store_true", help="prefix lines with 'export '")
    p_env.add_argument("--only", choices=("redis", "postgres", "s3", "mlflow", "torchserve"),
                       help="handle one service only (mlflow: with the PostgreSQL and S3 it needs)")
    p_env.add_argument("--with-s3", action="store_true", help="also S3 (SeaweedFS), with the mesh's buckets")
    p_env.add_argument("--with-mlflow", action="store_true", help="also an MLflow tracking server (and S3)")
    p_env.add_argument("--with-torchserve", action="store_true", help="also a TorchServe (the models' server)")
    return parser.parse_args(argv)


def stop(state_dir: Path) -> int:
    stopped = stop_state_dir(state_dir)
    log("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def status(state_dir: Path) -> int:
    for kind, rec in load_state(state_dir).items():
        print(f"{kind}\tpid={rec.pid}\tport={rec.port}\talive={looks_like(rec)}\t{rec.url}")
    return 0


def env(args: argparse.Namespace) -> int:
    values: dict[str, str] = {}
    want_mlflow = args.only == "mlflow" or (args.only is None and args.with_mlflow)
    want_s3 = want_mlflow or args.only == "s3" or (args.only is None and args.with_s3)
    want_torchserve = args.only == "torchserve" or (args.only is None and args.with_torchserve)
    try:
        if args.only in (None, "redis"):
            values["REDIS_URL"] = ensure_redis(args.state_dir, args.force_embedded, args.source)
        if args.only in (None, "postgres") or want_mlflow:
            values["DATABASE_URL"] = ensure_postgres(args.state_dir, args.force_embedded, args.dbname, args.source)
        if want_s3:
            s3 = ensure_s3(args.state_dir, args.force_embedded)
            ensure_buckets(s3, MODELS_BUCKET, MLFLOW_BUCKET)
            values.update(s3.env())
        if want_mlflow:
            values["MLFLOW_TRACKING_URI"] = ensure_mlflow(args.state_dir, values["DATABASE_URL"], s3,
                                                          args.force_embedded)
        if want_torchserve:
            values.update(ensure_torchserve(args.state_dir, args.force_embedded).env())
    except Exception as exc:  # noqa: BLE001
        log(f"error: {exc}")
        stop_all()  # do not leave some of them running
        return 1
    detach()  # leave the embedded servers running for the next step
    print("\n".join(env_lines(values, export=args.export)), flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "stop":
        return stop(args.state_dir)
    if args.command == "status":
        return status(args.state_dir)
    return env(args)


if __name__ == "__main__":
    sys.exit(main())
