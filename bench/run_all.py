"""Run every benchmark one after another and print a compact summary.

Each benchmark runs as its own process (so one's server, Envoy or event loop cannot
affect the next), with the options given here passed through:

    python bench/run_all.py [--quick] [--reps N] [--access-log on|off] [--only select,rss]

Redis is found or started as for `make test` (REDIS_URL, else the local default, else an
embedded one under --state-dir, stopped at the end) and passed to every benchmark.

Exit status: 0 when every benchmark ran to the end (a missed target is reported, not an
error), 1 when one of them failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from ml_serving_tools import devservices
from ml_serving_tools.paths import STATE_DIR

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["select", "contextual", "decision_log", "off_policy", "gateway", "auth", "rewards", "registry", "inference", "router", "features", "redis_floor", "monitoring", "capacity", "rss"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--access-log", choices=("on", "off"), default=None)
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    p.add_argument("--state-dir", type=Path, default=STATE_DIR, help="where an embedded Redis keeps its data")
    args = p.parse_args()
    env = {**os.environ, "REDIS_URL": devservices.ensure_redis(args.state_dir.resolve())}
    passthrough = (["--quick"] if args.quick else []) + (["--reps", str(args.reps)] if args.reps else []) \
        + (["--access-log", args.access_log] if args.access_log else [])

    summary: list[str] = []
    failed: list[str] = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHMARKS:
            p.error(f"unknown benchmark {name!r}; choose from {BENCHMARKS}")
        script = HERE / f"bench_{name}.py"
        print(f"== {script.name} {' '.join(passthrough)}", flush=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(script), *passthrough], stdout=subprocess.PIPE, text=True, env=env)
        sys.stdout.write(proc.stdout)
        took = time.monotonic() - started
        lines = [line for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]
        if proc.returncode != 0:
            failed.append(name)
            summary.append(f"{name:<8} FAILED (exit {proc.returncode}, {took:.0f} s)")
        else:
            summary += [f"{name:<8} {line.strip()}" for line in lines]
            summary.append(f"{name:<8} ({took:.0f} s)")

    print("\n== summary" + (" (--quick: smoke figures, not for notes)" if args.quick else ""))
    for line in summary:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
