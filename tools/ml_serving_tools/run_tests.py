"""`make test` (console script `mesh-test`): find or start Redis, PostgreSQL, S3 (with the
mesh's buckets), MLflow and TorchServe, then run the whole pytest suite against them (REDIS_URL,
DATABASE_URL, S3_ENDPOINT_URL and the AWS_* keys, MLFLOW_TRACKING_URI, TORCHSERVE_* in its
environment).
Options it does not know go to pytest (`mesh-test -k bandit -x`).

Exits with pytest's status, except that "no tests collected" (5) is a failure too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import devservices
from .paths import ROOT, STATE_DIR

NO_TESTS_COLLECTED = 5
PYTEST_OPTIONS = ["-ra", "--durations=15"]  # why tests were skipped; the slowest ones


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args, pytest_args = parser.parse_known_args(argv)
    if "--" in pytest_args:  # `mesh-test -- -x`, the form the old positional arguments needed
        pytest_args.remove("--")

    with devservices.DevServices(args.state_dir.resolve(), s3=True, mlflow=True, torchserve=True) as services:
        env = {**os.environ, **services.env()}
        code = subprocess.call([sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *pytest_args], cwd=ROOT, env=env)
    if code == NO_TESTS_COLLECTED:
        print("mesh-test: pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
