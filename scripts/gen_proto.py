"""Regenerate everything derived from proto/: Python code and the descriptor set.

    python scripts/gen_proto.py           # write gen/
    python scripts/gen_proto.py --check   # exit 1 if gen/ is stale

Outputs (never edit them by hand):
  gen/mnbara/..., gen/org/...   protobuf + gRPC Python modules and .pyi stubs
  gen/descriptor.binpb          FileDescriptorSet with imports, read by the Envoy generator

The google/api and google/rpc protos are copied from the installed
googleapis-common-protos package into build/third_party (git-ignored), because buf
cannot fetch remote dependencies offline.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import google.api.annotations_pb2
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = ROOT / "gen"
THIRD_PARTY = ROOT / "build" / "third_party"
GOOGLE_PROTOS = {
    "google/api": ["annotations.proto", "http.proto", "field_behavior.proto"],
    "google/rpc": ["status.proto", "error_details.proto", "code.proto"],
}


def materialise_third_party() -> None:
    """Copy the googleapis protos we import out of the installed package."""
    # google is a namespace package: locate it through a module file inside it.
    site = Path(google.api.annotations_pb2.__file__).resolve().parent.parent.parent
    for folder, names in GOOGLE_PROTOS.items():
        target = THIRD_PARTY / folder
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(site / folder / name, target / name)


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))


def buf_binary() -> str:
    found = shutil.which("buf", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise SystemExit("buf not found: pip install buf-bin (it is in the dev extra)")
    return found


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    wkt = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{THIRD_PARTY}",
        f"-I{wkt}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    subprocess.run(
        [buf_binary(), "build", "--exclude-source-info", "-o", str(out / "descriptor.binpb")],
        cwd=ROOT,
        check=True,
    )


def stale_files(fresh: Path) -> list[str]:
    """Files that differ between a fresh generation and gen/."""
    def listing(base: Path) -> set[str]:
        return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    ours, theirs = listing(GEN), listing(fresh)
    differ = sorted(ours ^ theirs)
    differ += [f for f in sorted(ours & theirs) if not filecmp.cmp(GEN / f, fresh / f, shallow=False)]
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if gen/ differs from a fresh generation")
    args = parser.parse_args()
    materialise_third_party()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = stale_files(Path(tmp))
        if stale:
            print("gen/ is stale; run `make proto`. Differing files:", *stale, sep="\n  ")
            return 1
        print("gen/ is fresh")
        return 0
    shutil.rmtree(GEN, ignore_errors=True)
    generate(GEN)
    print(f"generated {len(proto_files())} protos into {GEN.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
