"""`make test`: find or start Redis, then run the whole pytest suite against it.

Exits with pytest's status, except that "no tests collected" (5) is a failure too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import devservices  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".run")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args()

    env = {**os.environ, "REDIS_URL": devservices.ensure_redis(args.state_dir.resolve())}
    code = subprocess.call([sys.executable, "-m", "pytest", "-ra", *args.pytest_args], cwd=ROOT, env=env)
    if code == 5:
        print("run_tests: pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
