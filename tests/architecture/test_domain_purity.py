"""Domain cores import no gRPC, protobuf or generated code, Redis, asyncpg or HTTP client.

The contract lives in pyproject.toml ([tool.importlinter]) and is checked by import-linter,
over the real package and over a throwaway one that breaks it (so the check can fail).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from ml_serving_tools.paths import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(config: Path, cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_mesh_keeps_its_domain_pure():
    result = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contract_catches_a_domain_module_importing_redis(tmp_path):
    package = tmp_path / "fakemesh"
    for folder in ("", "services", "services/demo", "services/demo/domain"):
        (package / folder).mkdir(parents=True, exist_ok=True)
        (package / folder / "__init__.py").write_text("")
    for module in ("runtime", "errors", "services/demo/servicer"):
        (package / f"{module}.py").write_text("")
    (package / "services/demo/domain/model.py").write_text("import redis\n")

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = settings["contracts"][0]
    rename = lambda names: [n.replace("ml_serving_server", "fakemesh") for n in names]  # noqa: E731
    config = tmp_path / "importlinter.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    fakemesh\ninclude_external_packages = True\n\n"
        f"[importlinter:contract:domain]\nname = {contract['name']}\ntype = forbidden\n"
        "source_modules =\n" + "".join(f"    {m}\n" for m in rename(contract["source_modules"]))
        + "forbidden_modules =\n" + "".join(f"    {m}\n" for m in rename(contract["forbidden_modules"])))
    result = lint_imports(config, tmp_path, pythonpath=str(tmp_path))
    assert result.returncode != 0, result.stdout
    assert "fakemesh.services.demo.domain.model -> redis" in result.stdout
