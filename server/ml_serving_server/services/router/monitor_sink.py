"""The monitor feed's sink (domain/monitor_feed.py) over the Pipeline's gRPC API: one
BatchRecordMetrics per interval. Its token needs pipeline.write."""

from __future__ import annotations

from typing import Callable, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from .domain.monitor_feed import FeedValue

MAX_BATCH = 10_000  # BatchRecordMetrics' limit


class GrpcMonitorSink:
    def __init__(self, addr: Callable[[], str], token: str, timeout_s: float):
        self._addr, self._timeout_s = addr, timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pipeline_pb2_grpc.PipelineServiceStub | None = None

    async def record(self, values: Sequence[FeedValue]) -> None:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self._addr())
            self._stub = pipeline_pb2_grpc.PipelineServiceStub(self._channel)
        for start in range(0, len(values), MAX_BATCH):
            request = pb.BatchRecordMetricsRequest(metrics=[_message(v) for v in values[start:start + MAX_BATCH]])
            await self._stub.BatchRecordMetrics(request, timeout=self._timeout_s, metadata=self._metadata)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def _message(value: FeedValue) -> pb.RecordMetricRequest:
    stamp = Timestamp()
    stamp.FromDatetime(value.time)
    return pb.RecordMetricRequest(model_name=value.model_name, model_version=value.model_version,
                                  metric_name=value.metric_name, value=value.value, time=stamp, labels=value.labels)
