"""Demo model fixtures: both versions built once per session into a temporary cache, each
archive unpacked as TorchServe unpacks it, and its handler loaded from the archive itself."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ml_serving_tools.demo_model import DemoArtifact, build_demo_models


class FakeContext:
    """What the handler reads of TorchServe's Context, and the per-request statuses it sets."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
        self.statuses: dict[int, tuple[int, str]] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)


class LoadedHandler:
    """One version's archived handler.py, imported under a unique name and initialised."""

    def __init__(self, artifact: DemoArtifact, model_dir: Path) -> None:
        with zipfile.ZipFile(artifact.path) as mar:
            mar.extractall(model_dir)
        spec = importlib.util.spec_from_file_location(f"demo_handler_{artifact.version}", model_dir / "handler.py")
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = self.module  # as an import would (dataclasses look it up)
        spec.loader.exec_module(self.module)
        self.model_dir = model_dir
        self.context = FakeContext(model_dir)
        assert self.module.handle(None, self.context) is None  # TorchServe's load-time call

    def __call__(self, *requests: Any) -> list[dict[str, Any]]:
        self.context.statuses.clear()
        return self.module.handle(list(requests), self.context)

    def one(self, body: Any) -> dict[str, Any]:
        return self({"body": body})[0]


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-models")


@pytest.fixture(scope="session")
def artifacts(demo_cache) -> dict[str, DemoArtifact]:
    return build_demo_models(demo_cache)


@pytest.fixture(scope="session")
def handlers(artifacts, tmp_path_factory) -> dict[str, LoadedHandler]:
    return {version: LoadedHandler(artifact, tmp_path_factory.mktemp(f"model-dir-{version}"))
            for version, artifact in artifacts.items()}
