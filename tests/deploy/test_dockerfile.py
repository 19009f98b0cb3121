"""The Dockerfile, read offline (no Docker engine runs here): multi-stage, a pinned base, a
numeric non-root user matching the manifests, nothing of tests/ or bench/; and the package its
builder installs, built here as a wheel from the same files, carries gen/'s generated code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field

import pytest

from .manifests import OVERLAYS, ROOT, is_mesh_server, needs_kubectl, render, workloads

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    args, stages = {}, []
    for line in filter(str.strip, joined.splitlines()):
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            base, _, name = re.sub(r"\s+", " ", rest).partition(" AS ")
            stages.append(Stage(expand(base, args), name.strip()))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default.strip('"')
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


ARGS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]
BUILDER = next(s for s in STAGES if s.name == "builder")


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    out = []
    for args in stage.all("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def test_multi_stage_with_a_pinned_python_311_slim_base():
    assert len(STAGES) >= 2, "not multi-stage"
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", stage.base), f"stage {stage.name}: base {stage.base}"
    assert any("--from=builder" in args for args in FINAL.all("COPY")), "the final stage takes nothing from the builder"


def test_final_stage_runs_the_mesh_as_a_numeric_non_root_user():
    users = FINAL.all("USER")
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]} is not a numeric non-root UID"
    entrypoint = FINAL.all("ENTRYPOINT")
    assert entrypoint and "ml-serving-mesh" in entrypoint[-1], entrypoint


@needs_kubectl
def test_image_uid_is_the_manifests_run_as_user():
    uid = int(FINAL.all("USER")[-1].split(":")[0])
    for kustomization in OVERLAYS:
        for workload in workloads(render(kustomization)):
            for container in filter(is_mesh_server, workload.containers):
                own = container.get("securityContext", {}).get("runAsUser")
                assert own == uid, f"{kustomization} {workload.name}: runAsUser {own}, the image's USER is {uid}"


def test_builder_installs_pinned_dependencies_without_the_dev_extra():
    installs = [args for args in BUILDER.all("RUN") if "pip install" in args]
    assert installs, "the builder installs nothing"
    for args in installs:
        assert "-c constraints.txt" in args, f"not constrained by constraints.txt: {args}"
        assert "[dev]" not in args and ".[" not in args, f"installs an extra: {args}"


def test_nothing_of_tests_or_bench_is_copied():
    for stage in STAGES:
        for sources, _ in copies(stage):
            for source in sources:
                assert not re.match(r"(\./)?(tests|bench)(/|$)", source), f"stage {stage.name} copies {source}"
                assert source not in (".", "./"), f"stage {stage.name} copies the whole context"


def test_dockerignore_excludes_what_an_image_must_not_hold():
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    missing = {"tests", "bench", ".venv", ".run", "build", ".git"} - ignored
    assert not missing, f".dockerignore does not exclude {sorted(missing)}"


def test_every_package_root_is_copied_where_packages_find_looks():
    """pyproject.toml's packages.find `where` roots (gen/ among them) sit beside pyproject.toml in the builder."""
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    copied = {dest.rstrip("/"): [s.rstrip("/") for s in sources] for sources, dest in copies(BUILDER)}
    workdir = BUILDER.all("WORKDIR")[-1]
    for root in roots:
        assert copied.get(root) == [root] or copied.get(f"{workdir}/{root}") == [root], \
            f"packages.find root {root}/ is not copied to {root}/ beside pyproject.toml: {copied}"
    assert any("pyproject.toml" in sources for sources, _ in copies(BUILDER))


@pytest.mark.timeout(180)
def test_the_installed_package_carries_the_generated_code(tmp_path):
    """Build the wheel the builder's `pip install .` builds, from the files its COPY lines take."""
    context = tmp_path / "context"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for sources, dest in copies(BUILDER):  # `COPY server/ server/` and `COPY pyproject.toml constraints.txt ./`
        for origin in (ROOT / source for source in sources):
            if origin.is_dir():
                shutil.copytree(origin, context / dest, ignore=ignore, dirs_exist_ok=True)
            else:
                (context / dest).mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, context / dest)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "wheel"), str(context)], capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    names = set(zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist())
    for module in ("mnbara/mlserving/catalog.py", "inference/grpc_predict_v2_pb2.py", "ml_serving_server/app.py",
                   "ml_serving/__init__.py", "ml_serving_tools/demo_model/retrain.py",
                   "ml_serving_server/services/pipeline/migrations/env.py",
                   "ml_serving_server/services/pipeline/migrations/versions/p0001_materialization.py"):
        assert module in names, f"the image's package lacks {module}"
    assert any(n.startswith("org/pytorch/serve/grpc/") for n in names), "the TorchServe wire contract is missing"
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
