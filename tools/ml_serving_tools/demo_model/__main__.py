"""python -m ml_serving_tools.demo_model [--out DIR] [--json]: builds (or finds cached) both
versions' .mar archives and prints where they are and how well each scores held out."""

from __future__ import annotations

import argparse
import json
import time

from ..paths import BUILD
from .archive import build_demo_models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml_serving_tools.demo_model", description=__doc__)
    parser.add_argument("--out", default=str(BUILD / "demo-models"), help="cache folder (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the artifacts as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    artifacts = build_demo_models(args.out)
    if args.json:
        print(json.dumps({v: a.to_json() for v, a in artifacts.items()}, indent=2))
        return
    for version, artifact in artifacts.items():
        metrics = ", ".join(f"{k}={v}" for k, v in artifact.metrics.items())
        print(f"{version}: {artifact.path}\n    {metrics}")
    print(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
