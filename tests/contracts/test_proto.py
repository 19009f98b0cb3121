"""The protobuf contracts: lint-clean, generated code fresh, no breaking change against main."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ml_serving_tools import protogen
from ml_serving_tools.paths import ROOT

THIRD_PARTY = ROOT / "build" / "third_party"
# The branch breaking changes are checked against; override with BUF_BREAKING_AGAINST.
AGAINST_REFS = [os.environ["BUF_BREAKING_AGAINST"]] if os.environ.get("BUF_BREAKING_AGAINST") else ["main", "origin/main"]


def tool(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH (pip install -e '.[dev]')")
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def third_party() -> Path:
    """buf's workspace needs the googleapis protos that mesh-proto materialises."""
    protogen.materialise_third_party()
    return THIRD_PARTY


def test_buf_lint_is_clean(third_party):
    result = run(tool("buf"), "lint")
    assert result.returncode == 0, f"buf lint:\n{result.stdout}{result.stderr}"


def test_generated_code_is_fresh():
    result = run(sys.executable, "-m", "ml_serving_tools.protogen", "--check")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def _git(*args: str) -> subprocess.CompletedProcess:
    return run("git", *args)


def _against_ref() -> str | None:
    """The first of AGAINST_REFS that exists and has proto/ in it."""
    if _git("rev-parse", "--git-dir").returncode != 0:
        return None
    for ref in AGAINST_REFS:
        if _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
            continue
        if _git("ls-tree", "--name-only", ref, "--", "proto").stdout.strip():
            return ref
    return None


def test_no_breaking_change_against_main(third_party, tmp_path):
    """WIRE_JSON breaking check (buf.yaml) of the working tree against main.

    `buf breaking --against '.git#branch=main'` cannot work here: build/third_party is
    git-ignored, so the git snapshot lacks google/api and buf fails ("had no .proto
    files"). Instead main's tree is exported to a folder, the same third-party protos are
    added, and that folder is the baseline.
    """
    ref = _against_ref()
    if ref is None:
        pytest.skip(f"no commit of {' / '.join(AGAINST_REFS)} contains proto/: nothing to compare against")
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True)
    baseline = tmp_path / "baseline"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(baseline, filter="data")
    shutil.copytree(third_party, baseline / "build" / "third_party", dirs_exist_ok=True)
    result = run(tool("buf"), "breaking", "--against", str(baseline))
    assert result.returncode == 0, f"breaking changes against {ref}:\n{result.stdout}{result.stderr}"
