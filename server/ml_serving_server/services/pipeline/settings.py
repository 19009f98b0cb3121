"""The pipeline service's own settings (PIPELINE_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ...runtime.settings import SettingsBase


class PipelineSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_")

    feature_views_dir: str = Field(
        "", description="folder whose `*.yaml` files declare the feature views, read at start (a bad declaration "
                        "stops the server, naming file, line and field); empty: `features/` of the checkout the "
                        "server runs from, else of the working folder")

    def feature_views_path(self) -> Path:
        return Path(self.feature_views_dir) if self.feature_views_dir else _checkout() / "features"


def _checkout() -> Path:
    """The folder holding pyproject.toml above this file (the package is installed editable), else
    the working folder (an installed copy, e.g. an image that puts features/ beside it)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()
