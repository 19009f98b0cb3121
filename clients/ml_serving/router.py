"""RouterClient (async) and ABTestingRouter (sync): A/B experiments, assignment, canaries (RouterService)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mnbara.mlserving.router.v1 import router_pb2 as pb
from mnbara.mlserving.router.v1 import router_pb2_grpc

from ._base import AsyncClient, messages, model_input, struct
from ._methods import paged, unary
from ._sync import SyncClient
from .inference import Inputs

Attributes = Mapping[str, Any]
"""User attributes for targeting, e.g. {"country": "DE", "plan": "premium"}."""


def _assign_variant_request(user_id: str, attributes: Attributes | None, segments: Sequence[str], experiment: str,
                            model_name: str, dry_run: bool) -> pb.AssignVariantRequest:
    return pb.AssignVariantRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                   experiment=experiment, model_name=model_name, dry_run=dry_run)


class RouterClient(AsyncClient[router_pb2_grpc.RouterServiceStub]):
    """Async client of mnbara.mlserving.router.v1.RouterService."""

    stub_type = router_pb2_grpc.RouterServiceStub

    async def assign_variant(self, user_id: str, *, attributes: Attributes | None = None,
                             segments: Sequence[str] = (), experiment: str = "", model_name: str = "",
                             dry_run: bool = False, timeout: float | None = None) -> pb.AssignVariantResponse:
        """The model version this user gets: deterministic and sticky. Counts an exposure unless `dry_run`."""
        request = _assign_variant_request(user_id, attributes, segments, experiment, model_name, dry_run)
        return await self._call(self.stub.AssignVariant, request, timeout)

    async def predict(self, user_id: str, inputs: Inputs | bytes, *, attributes: Attributes | None = None,
                      segments: Sequence[str] = (), experiment: str = "", model_name: str = "",
                      raw_output: bool = False, timeout: float | None = None) -> pb.PredictResponse:
        """Assign the user, then predict with the assigned version (`inputs`: a dict or raw bytes)."""
        request = pb.PredictRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                    experiment=experiment, model_name=model_name, raw_output=raw_output,
                                    **model_input(inputs))
        return await self._call(self.stub.Predict, request, timeout)

    async def create_experiment(self, experiment: pb.Experiment | Mapping[str, Any], *, paused: bool = False,
                                timeout: float | None = None) -> pb.CreateExperimentResponse:
        """Create an experiment (an Experiment message or a dict of its fields, e.g.
        {"name": "e1", "variants": [{"name": "control", "model_name": "m", "model_version": "1",
        "weight_bps": 5000, "control": True}, ...]}); running unless `paused`."""
        request = pb.CreateExperimentRequest(experiment=messages(pb.Experiment, [experiment])[0], paused=paused)
        return await self._call(self.stub.CreateExperiment, request, timeout)

    async def get_experiment(self, name: str, *, timeout: float | None = None) -> pb.GetExperimentResponse:
        """One experiment. Raises NotFoundError (EXPERIMENT_NOT_FOUND)."""
        return await self._call(self.stub.GetExperiment, pb.GetExperimentRequest(name=name), timeout)

    async def record_outcome(self, *, experiment: str, user_id: str, metric: str = "", variant: str = "",
                             converted: bool | None = None, value: float | None = None, event_id: str = "",
                             timeout: float | None = None) -> pb.RecordOutcomeResponse:
        """Record an outcome (binary `converted` or numeric `value`) of a user; idempotent by `event_id`."""
        request = pb.RecordOutcomeRequest(experiment=experiment, user_id=user_id, metric=metric, variant=variant,
                                          converted=converted, value=value, event_id=event_id)
        return await self._call(self.stub.RecordOutcome, request, timeout)

    async def get_experiment_results(self, name: str, *, metric: str = "", confidence_level: float = 0.0,
                                     timeout: float | None = None) -> pb.GetExperimentResultsResponse:
        """Per-variant estimates with confidence intervals, the difference to control and a verdict."""
        request = pb.GetExperimentResultsRequest(name=name, metric=metric, confidence_level=confidence_level)
        return await self._call(self.stub.GetExperimentResults, request, timeout)

    list_experiments = unary(lambda stub: stub.ListExperiments, pb.ListExperimentsRequest,
                             pb.ListExperimentsResponse)
    update_experiment = unary(lambda stub: stub.UpdateExperiment, pb.UpdateExperimentRequest,
                              pb.UpdateExperimentResponse)
    pause_experiment = unary(lambda stub: stub.PauseExperiment, pb.PauseExperimentRequest, pb.PauseExperimentResponse)
    resume_experiment = unary(lambda stub: stub.ResumeExperiment, pb.ResumeExperimentRequest,
                              pb.ResumeExperimentResponse)
    stop_experiment = unary(lambda stub: stub.StopExperiment, pb.StopExperimentRequest, pb.StopExperimentResponse)
    batch_record_outcomes = unary(lambda stub: stub.BatchRecordOutcomes, pb.BatchRecordOutcomesRequest,
                                  pb.BatchRecordOutcomesResponse)
    start_canary = unary(lambda stub: stub.StartCanary, pb.StartCanaryRequest, pb.StartCanaryResponse)
    get_canary = unary(lambda stub: stub.GetCanary, pb.GetCanaryRequest, pb.GetCanaryResponse)
    list_canaries = unary(lambda stub: stub.ListCanaries, pb.ListCanariesRequest, pb.ListCanariesResponse)
    pause_canary = unary(lambda stub: stub.PauseCanary, pb.PauseCanaryRequest, pb.PauseCanaryResponse)
    resume_canary = unary(lambda stub: stub.ResumeCanary, pb.ResumeCanaryRequest, pb.ResumeCanaryResponse)
    rollback_canary = unary(lambda stub: stub.RollbackCanary, pb.RollbackCanaryRequest, pb.RollbackCanaryResponse)
    promote_canary = unary(lambda stub: stub.PromoteCanary, pb.PromoteCanaryRequest, pb.PromoteCanaryResponse)
    list_canary_events = unary(lambda stub: stub.ListCanaryEvents, pb.ListCanaryEventsRequest,
                               pb.ListCanaryEventsResponse)

    iter_experiments = paged(list_experiments, lambda page: page.experiments)
    iter_canaries = paged(list_canaries, lambda page: page.canaries)
    iter_canary_events = paged(list_canary_events, lambda page: page.events)


SEGMENT_KEYS = ("user_segments", "segments")
"""Context keys whose list value is taken as the user's segments."""


class ABTestingRouter(SyncClient[router_pb2_grpc.RouterServiceStub]):
    """The seed README's synchronous A/B router, for code that is not async:

    >>> router = ABTestingRouter()
    >>> model, version = router.get_model_for_user(user_id="user123", context={"user_segments": ["premium"]})

    It calls RouterService.AssignVariant over a blocking gRPC channel (opened on first use,
    same address, timeout and metadata rules as the async clients).
    """

    stub_type = router_pb2_grpc.RouterServiceStub

    def assign_variant(self, user_id: str, *, attributes: Attributes | None = None, segments: Sequence[str] = (),
                       experiment: str = "", model_name: str = "", dry_run: bool = False,
                       timeout: float | None = None) -> pb.AssignVariantResponse:
        """As RouterClient.assign_variant, blocking."""
        request = _assign_variant_request(user_id, attributes, segments, experiment, model_name, dry_run)
        return self._call(self.stub.AssignVariant, request, timeout)

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
