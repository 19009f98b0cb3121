"""The demo `recommendation-model` the project builds itself: seeded users, items and
interactions (`data`), two trained versions (`train`), their TorchServe handler (`handler`)
and `.mar` archives (`archive.build_demo_models`). Run `python -m ml_serving_tools.demo_model`."""

from .archive import MODEL_NAME, DemoArtifact, build_demo_models

__all__ = ["MODEL_NAME", "DemoArtifact", "build_demo_models"]
