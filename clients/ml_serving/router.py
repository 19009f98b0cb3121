"""RouterClient (async) and ABTestingRouter (sync): A/B experiments, assignment, canaries (RouterService)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import grpc
from mnbara.mlserving.router.v1 import router_pb2 as pb
from mnbara.mlserving.router.v1 import router_pb2_grpc

from . import config
from ._base import AsyncClient, Metadata, deadline, messages, model_input, struct, unary
from .errors import from_rpc_error
from .inference import Inputs

Attributes = Mapping[str, Any]
"""User attributes for targeting, e.g. {"country": "DE", "plan": "premium"}."""


class RouterClient(AsyncClient):
    """Async client of mnbara.mlserving.router.v1.RouterService."""

    stub_type = router_pb2_grpc.RouterServiceStub

    async def assign_variant(self, user_id: str, *, attributes: Attributes | None = None,
                             segments: Sequence[str] = (), experiment: str = "", model_name: str = "",
                             dry_run: bool = False, timeout: float | None = None) -> pb.AssignVariantResponse:
        """The model version this user gets: deterministic and sticky. Counts an exposure unless `dry_run`."""
        request = pb.AssignVariantRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                          experiment=experiment, model_name=model_name, dry_run=dry_run)
        return await self._call("AssignVariant", request, timeout)

    async def predict(self, user_id: str, inputs: Inputs | bytes, *, attributes: Attributes | None = None,
                      segments: Sequence[str] = (), experiment: str = "", model_name: str = "",
                      raw_output: bool = False, timeout: float | None = None) -> pb.PredictResponse:
        """Assign the user, then predict with the assigned version (`inputs`: a dict or raw bytes)."""
        request = pb.PredictRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                    experiment=experiment, model_name=model_name, raw_output=raw_output,
                                    **model_input(inputs))
        return await self._call("Predict", request, timeout)

    async def create_experiment(self, experiment: pb.Experiment | Mapping[str, Any], *, paused: bool = False,
                                timeout: float | None = None) -> pb.CreateExperimentResponse:
        """Create an experiment (an Experiment message or a dict of its fields, e.g.
        {"name": "e1", "variants": [{"name": "control", "model_name": "m", "model_version": "1",
        "weight_bps": 5000, "control": True}, ...]}); running unless `paused`."""
        request = pb.CreateExperimentRequest(experiment=messages(pb.Experiment, [experiment])[0], paused=paused)
        return await self._call("CreateExperiment", request, timeout)

    async def get_experiment(self, name: str, *, timeout: float | None = None) -> pb.GetExperimentResponse:
        """One experiment. Raises NotFoundError (EXPERIMENT_NOT_FOUND)."""
        return await self._call("GetExperiment", pb.GetExperimentRequest(name=name), timeout)

    async def record_outcome(self, *, experiment: str, user_id: str, metric: str = "", variant: str = "",
                             converted: bool | None = None, value: float | None = None, event_id: str = "",
                             timeout: float | None = None) -> pb.RecordOutcomeResponse:
        """Record an outcome (binary `converted` or numeric `value`) of a user; idempotent by `event_id`."""
        request = pb.RecordOutcomeRequest(experiment=experiment, user_id=user_id, metric=metric, variant=variant,
                                          converted=converted, value=value, event_id=event_id)
        return await self._call("RecordOutcome", request, timeout)

    async def get_experiment_results(self, name: str, *, metric: str = "", confidence_level: float = 0.0,
                                     timeout: float | None = None) -> pb.GetExperimentResultsResponse:
        """Per-variant estimates with confidence intervals, the difference to control and a verdict."""
        request = pb.GetExperimentResultsRequest(name=name, metric=metric, confidence_level=confidence_level)
        return await self._call("GetExperimentResults", request, timeout)

    list_experiments = unary(pb.ListExperimentsRequest, pb.ListExperimentsResponse)
    update_experiment = unary(pb.UpdateExperimentRequest, pb.UpdateExperimentResponse)
    pause_experiment = unary(pb.PauseExperimentRequest, pb.PauseExperimentResponse)
    resume_experiment = unary(pb.ResumeExperimentRequest, pb.ResumeExperimentResponse)
    stop_experiment = unary(pb.StopExperimentRequest, pb.StopExperimentResponse)
    batch_record_outcomes = unary(pb.BatchRecordOutcomesRequest, pb.BatchRecordOutcomesResponse)
    start_canary = unary(pb.StartCanaryRequest, pb.StartCanaryResponse)
    get_canary = unary(pb.GetCanaryRequest, pb.GetCanaryResponse)
    list_canaries = unary(pb.ListCanariesRequest, pb.ListCanariesResponse)
    pause_canary = unary(pb.PauseCanaryRequest, pb.PauseCanaryResponse)
    resume_canary = unary(pb.ResumeCanaryRequest, pb.ResumeCanaryResponse)
    rollback_canary = unary(pb.RollbackCanaryRequest, pb.RollbackCanaryResponse)
    promote_canary = unary(pb.PromoteCanaryRequest, pb.PromoteCanaryResponse)
    list_canary_events = unary(pb.ListCanaryEventsRequest, pb.ListCanaryEventsResponse)


SEGMENT_KEYS = ("user_segments", "segments")
"""Context keys whose list value is taken as the user's segments."""


class ABTestingRouter:
    """The seed README's synchronous A/B router, for code that is not async:

    >>> router = ABTestingRouter()
    >>> model, version = router.get_model_for_user(user_id="user123", context={"user_segments": ["premium"]})

    It calls RouterService.AssignVariant over a blocking gRPC channel (opened on first use,
    same address, timeout and metadata rules as the async clients).
    """

    def __init__(self, address: str | None = None, *, channel: grpc.Channel | None = None,
                 timeout: float | None = None, credentials: grpc.ChannelCredentials | None = None,
                 metadata: Metadata = ()) -> None:
        self.address = address or config.default_address()
        self.timeout = config.default_timeout() if timeout is None else deadline(None, timeout)
        self._channel, self._owns_channel = channel, channel is None
        self._credentials, self._metadata = credentials, tuple(metadata)
        self._stub: router_pb2_grpc.RouterServiceStub | None = None

    @property
    def stub(self) -> router_pb2_grpc.RouterServiceStub:
        """The generated blocking stub."""
        if self._stub is None:
            if self._channel is None:
                channel = (grpc.secure_channel(self.address, self._credentials) if self._credentials
                           else grpc.insecure_channel(self.address))
                self._channel = _with_tracing(channel)
            self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        return self._stub

    def assign_variant(self, user_id: str, *, attributes: Attributes | None = None, segments: Sequence[str] = (),
                       experiment: str = "", model_name: str = "", dry_run: bool = False,
                       timeout: float | None = None) -> pb.AssignVariantResponse:
        """As RouterClient.assign_variant, blocking."""
        request = pb.AssignVariantRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                          experiment=experiment, model_name=model_name, dry_run=dry_run)
        try:
            return self.stub.AssignVariant(request, timeout=deadline(self.timeout, timeout),
                                           metadata=self._metadata or None)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def get_model_for_user(self, user_id: str, context: Attributes | None = None, *, model_name: str = "",
                           experiment: str = "", dry_run: bool = False,
                           timeout: float | None = None) -> tuple[str, str]:
        """(model_name, model_version) this user should be served. `context` holds the user's
        attributes for targeting; a list under "user_segments" (or "segments") gives the segments."""
        context = dict(context or {})
        segments = next((context.pop(key) for key in SEGMENT_KEYS if key in context), ())
        assignment = self.assign_variant(user_id, attributes=context, segments=segments, experiment=experiment,
                                         model_name=model_name, dry_run=dry_run, timeout=timeout).assignment
        return assignment.model_name, assignment.model_version

    def close(self) -> None:
        """Close the channel if this router opened it."""
        if self._owns_channel and self._channel is not None:
            self._channel.close()
            self._channel, self._stub = None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _with_tracing(channel: grpc.Channel) -> grpc.Channel:
    """The channel with OpenTelemetry's client interceptor (W3C traceparent on each call), if installed."""
    try:
        from opentelemetry.instrumentation.grpc import client_interceptor, grpcext
    except ImportError:
        return channel
    return grpcext.intercept_channel(channel, client_interceptor())
