"""Where things are in the checkout. The package is installed editable, so the repository
root is found from this file: the directory holding pyproject.toml."""

from __future__ import annotations

from pathlib import Path


def _repository_root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {__file__}: ml_serving_tools runs from a checkout")


ROOT = _repository_root()
PROTO = ROOT / "proto"
GEN = ROOT / "gen"
DESCRIPTOR = GEN / "descriptor.binpb"
BUILD = ROOT / "build"
STATE_DIR = ROOT / ".run"
"""Logs, generated configs and embedded servers' data of `make up` / `make test`."""
