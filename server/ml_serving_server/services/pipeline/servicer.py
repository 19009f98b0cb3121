"""PipelineService over gRPC: map the request, call the domain, map the response.

Only GetFeatureSchema is built; every other RPC falls through to the generated base, which
the error interceptor answers with UNIMPLEMENTED (NOT_IMPLEMENTED).
"""

from __future__ import annotations

from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from .domain.feature_views import FeatureView, ValueType
from .domain.schema import FeatureSchema

_TYPES = {
    ValueType.INT: pb.FEATURE_TYPE_INT64,
    ValueType.FLOAT: pb.FEATURE_TYPE_DOUBLE,
    ValueType.STRING: pb.FEATURE_TYPE_STRING,
    ValueType.BOOL: pb.FEATURE_TYPE_BOOL,
    ValueType.INT_LIST: pb.FEATURE_TYPE_INT64_LIST,
    ValueType.FLOAT_LIST: pb.FEATURE_TYPE_DOUBLE_LIST,
    ValueType.STRING_LIST: pb.FEATURE_TYPE_STRING_LIST,
}


def view_to_pb(view: FeatureView) -> pb.FeatureView:
    """The declaration; the materialisation state (materialized_until, ...) is not set here."""
    message = pb.FeatureView(
        name=view.name, description=view.description,
        entity=pb.EntitySpec(name=view.entity.name, join_key=view.entity.join_key,
                             value_type=_TYPES[view.entity.key_type], description=view.entity.description),
        features=[pb.FeatureSpec(name=f.name, type=_TYPES[f.type], description=f.description,
                                 dimension=f.dimension or 0) for f in view.features],
        source=pb.FeatureSource(query=view.source.query, timestamp_column=view.source.event_time_column),
        materialization_schedule=view.materialization_schedule, tags=dict(view.tags),
        definition_hash=view.definition_hash, compute_on_miss=view.compute_on_miss,
    )
    if view.ttl is not None:
        message.ttl.FromTimedelta(view.ttl)
    return message


class PipelineServicer(pipeline_pb2_grpc.PipelineServiceServicer):
    def __init__(self, schema: FeatureSchema):
        self._schema = schema
        # Declarations are read once at start: their messages are built once too.
        self._views = {view.name: view_to_pb(view) for view in schema.views}

    async def GetFeatureSchema(self, request, context):
        views = self._schema.select(request.feature_view)
        return pb.GetFeatureSchemaResponse(feature_views=[self._views[view.name] for view in views],
                                           version=self._schema.version)
