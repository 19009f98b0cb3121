"""The ML pipeline: for now the feature store's declarations, served by GetFeatureSchema.

    domain/           feature views (rules, definition hash) and the schema: plain Python
    declarations.py   the views declared in `*.yaml` files (features/ by default), read with pyyaml
    servicer.py       gRPC <-> domain; RPCs not built yet answer UNIMPLEMENTED
    settings.py       PIPELINE_* settings

`build` reads the declarations (a bad one stops the server, naming file, line and field);
app.py lists `SERVICE`.
"""

from __future__ import annotations

from mnbara.mlserving.catalog import BY_NAME

from ...runtime.service import BuiltService, Runtime, ServicePackage
from .declarations import load_directory
from .domain.errors import ErrorReason
from .servicer import PipelineServicer
from .settings import PipelineSettings


def build(settings: PipelineSettings, runtime: Runtime) -> BuiltService:
    schema = load_directory(settings.feature_views_path())
    return BuiltService(PipelineServicer(schema))


SERVICE = ServicePackage(BY_NAME["pipeline"], PipelineSettings, build, ErrorReason)
