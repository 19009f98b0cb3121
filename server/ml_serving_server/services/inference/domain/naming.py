"""How a registry version is named inside the model server.

Each registry version is its own TorchServe model, `<model>-v<version>`: TorchServe takes a
model's versions from the archive's manifest, which knows nothing of registry versions (two
archives may both say 1.0). The name splits back unambiguously at its last `-v<digits>`,
and a model server entry without that shape was not loaded by the mesh.
"""

from __future__ import annotations

import re

_SERVED = re.compile(r"(?P<model>[A-Za-z0-9._-]+)-v(?P<version>[1-9][0-9]{0,9})")


def served_name(model_name: str, version: str) -> str:
    return f"{model_name}-v{version}"


def parse_served_name(name: str) -> tuple[str, str] | None:
    """(model, version) of a name `served_name` made, else None."""
    match = _SERVED.fullmatch(name)
    return (match["model"], match["version"]) if match else None
