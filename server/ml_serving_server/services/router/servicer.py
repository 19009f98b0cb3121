"""RouterService over gRPC: map the request, call the domain, map the response."""

from __future__ import annotations

from datetime import timezone

from google.protobuf import json_format
from mnbara.mlserving.router.v1 import router_pb2 as pb
from mnbara.mlserving.router.v1 import router_pb2_grpc

from ...runtime.auth import caller
from ..inference.servicer import fill_output, payload_of
from .convert import (
    canary_event_to_pb,
    canary_input_from_pb,
    canary_states_from_pb,
    canary_to_pb,
    change_to_pb,
    draft_from_pb,
    experiment_to_pb,
    states_from_pb,
    timestamp,
)
from .domain.model import OutcomeInput, OutcomeResult, RoutedAssignment
from .domain.service import ResultsView, RouterService
from .domain.statistics import ExperimentResults, MetricKind

_VERDICT = {"NOT_ENOUGH_DATA": pb.VERDICT_NOT_ENOUGH_DATA,
            "NO_SIGNIFICANT_DIFFERENCE": pb.VERDICT_NO_SIGNIFICANT_DIFFERENCE,
            "TREATMENT_BETTER": pb.VERDICT_TREATMENT_BETTER, "CONTROL_BETTER": pb.VERDICT_CONTROL_BETTER,
            "SAMPLE_RATIO_MISMATCH": pb.VERDICT_SAMPLE_RATIO_MISMATCH}


def _attributes(message) -> dict | None:
    return json_format.MessageToDict(message.attributes) if message.HasField("attributes") else None


def _assignment(routed: RoutedAssignment) -> pb.Assignment:
    return pb.Assignment(experiment=routed.experiment, variant=routed.variant, model_name=routed.model_name,
                         model_version=routed.model_version, bucket=routed.bucket, reason=routed.reason,
                         canary_id=routed.canary_id)


def _outcome(message: pb.RecordOutcomeRequest) -> OutcomeInput:
    which = message.WhichOneof("outcome")
    return OutcomeInput(
        event_id=message.event_id, experiment=message.experiment, user_id=message.user_id,
        variant=message.variant, metric=message.metric,
        converted=message.converted if which == "converted" else None,
        value=message.value if which == "value" else None,
        time=message.event_time.ToDatetime(tzinfo=timezone.utc) if message.HasField("event_time") else None)


def _timeout(context) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e6 else None


class _CanaryRpcs:
    """The canary half of RouterService (mixed into RouterServicer)."""

    _service: RouterService

    async def _answer(self, canary) -> "pb.Canary":
        stable, candidate = await self._service.canaries.live_stats(canary)
        return canary_to_pb(canary, stable, candidate)

    async def StartCanary(self, request, context):
        canary = await self._service.canaries.start(canary_input_from_pb(request.canary), request.request_id, caller())
        return pb.StartCanaryResponse(canary=canary_to_pb(canary))

    async def GetCanary(self, request, context):
        canary = await self._service.canaries.get(request.canary_id)
        return pb.GetCanaryResponse(canary=await self._answer(canary))

    async def ListCanaries(self, request, context):
        page, token = await self._service.canaries.list(request.model_name, canary_states_from_pb(request.states),
                                                        request.page_size, request.page_token)
        return pb.ListCanariesResponse(canaries=[canary_to_pb(c) for c in page], next_page_token=token)

    async def PauseCanary(self, request, context):
        canary = await self._service.canaries.pause(request.canary_id, request.reason, caller())
        return pb.PauseCanaryResponse(canary=canary_to_pb(canary))

    async def ResumeCanary(self, request, context):
        canary = await self._service.canaries.resume(request.canary_id, request.reason, caller())
        return pb.ResumeCanaryResponse(canary=canary_to_pb(canary))

    async def RollbackCanary(self, request, context):
        canary = await self._service.canaries.rollback(request.canary_id, request.reason, caller())
        return pb.RollbackCanaryResponse(canary=canary_to_pb(canary))

    async def PromoteCanary(self, request, context):
        canary = await self._service.canaries.promote(request.canary_id, request.reason, request.override_gates,
                                                      caller())
        return pb.PromoteCanaryResponse(canary=canary_to_pb(canary))

    async def ListExperimentChanges(self, request, context):
        changes, token = await self._service.history(request.name, request.page_size, request.page_token)
        return pb.ListExperimentChangesResponse(changes=[change_to_pb(c) for c in changes], next_page_token=token)

    async def ListCanaryEvents(self, request, context):
        events, token = await self._service.canaries.events(request.canary_id, request.page_size, request.page_token)
        return pb.ListCanaryEventsResponse(events=[canary_event_to_pb(e) for e in events], next_page_token=token)


class RouterServicer(_CanaryRpcs, router_pb2_grpc.RouterServiceServicer):
    def __init__(self, service: RouterService):
        self._service = service

    async def CreateExperiment(self, request, context):
        created = await self._service.create_experiment(draft_from_pb(request.experiment), paused=request.paused,
                                                        actor=caller())
        return pb.CreateExperimentResponse(experiment=experiment_to_pb(created))

    async def GetExperiment(self, request, context):
        experiment = await self._service.get_experiment(request.name)
        return pb.GetExperimentResponse(experiment=experiment_to_pb(experiment))

    async def ListExperiments(self, request, context):
        page, token = await self._service.list_experiments(states_from_pb(request.states), request.model_name,
                                                           request.page_size, request.page_token)
        return pb.ListExperimentsResponse(experiments=[experiment_to_pb(e) for e in page], next_page_token=token)

    async def UpdateExperiment(self, request, context):
        changed = await self._service.update_experiment(draft_from_pb(request.experiment),
                                                        list(request.update_mask.paths), caller())
        return pb.UpdateExperimentResponse(experiment=experiment_to_pb(changed))

    async def PauseExperiment(self, request, context):
        changed = await self._service.pause_experiment(request.name, request.reason, caller())
        return pb.PauseExperimentResponse(experiment=experiment_to_pb(changed))

    async def ResumeExperiment(self, request, context):
        changed = await self._service.resume_experiment(request.name, request.reason, caller())
        return pb.ResumeExperimentResponse(experiment=experiment_to_pb(changed))

    async def StopExperiment(self, request, context):
        changed = await self._service.stop_experiment(request.name, request.reason, request.winning_variant,
                                                      caller())
        return pb.StopExperimentResponse(experiment=experiment_to_pb(changed))

    async def AssignVariant(self, request, context):
        routed = await self._service.assign(request.user_id, _attributes(request), request.segments,
                                            experiment=request.experiment, model_name=request.model_name,
                                            dry_run=request.dry_run)
        return pb.AssignVariantResponse(assignment=_assignment(routed))

    async def Predict(self, request, context):
        payload = payload_of(request)
        routed, prediction, shadowed = await self._service.predict(
            request.user_id, _attributes(request), request.segments, payload, experiment=request.experiment,
            model_name=request.model_name, timeout_s=_timeout(context))
        response = pb.PredictResponse(assignment=_assignment(routed), model_latency_ms=prediction.latency_ms,
                                      shadowed=shadowed)
        fill_output(response, prediction.output, request.raw_output)
        return response

    async def RecordExposures(self, request, context):
        accepted, ignored = await self._service.record_exposures(
            [(e.experiment, e.user_id, e.variant, e.holdout) for e in request.exposures])
        return pb.RecordExposuresResponse(accepted_count=accepted, ignored_count=ignored)

    async def RecordOutcome(self, request, context):
        [(result, variant)] = await self._service.record_outcomes([_outcome(request)])
        return pb.RecordOutcomeResponse(duplicate=result is OutcomeResult.DUPLICATE,
                                        counted=result is OutcomeResult.COUNTED, variant=variant)

    async def BatchRecordOutcomes(self, request, context):
        results = await self._service.record_outcomes([_outcome(item) for item in request.outcomes])
        kinds = [result for result, _ in results]
        return pb.BatchRecordOutcomesResponse(applied_count=kinds.count(OutcomeResult.COUNTED),
                                              duplicate_count=kinds.count(OutcomeResult.DUPLICATE),
                                              not_counted_count=kinds.count(OutcomeResult.NOT_COUNTED))

    async def GetExperimentResults(self, request, context):
        view = await self._service.results(request.name, request.metric, request.confidence_level)
        results = view.results
        return pb.GetExperimentResultsResponse(
            experiment=view.experiment.name,
            metric=pb.OutcomeMetric(name=view.metric.name, kind=_kind(view.metric.kind)),
            confidence_level=results.confidence_level, variants=_variant_results(view),
            holdout_exposures=view.holdout_exposures, sample_ratio=_sample_ratio(results),
            verdict=_VERDICT[results.verdict.name], winning_variant=results.winning_variant,
            compute_time=timestamp(view.compute_time), caveats=view.caveats)


def _kind(kind: MetricKind) -> int:
    return pb.OUTCOME_KIND_BINARY if kind is MetricKind.BINARY else pb.OUTCOME_KIND_NUMERIC


def _variant_results(view: ResultsView) -> list[pb.VariantResult]:
    rows = []
    for row in view.results.variants:
        stats = view.requests.get(row.name)
        message = pb.VariantResult(
            variant=row.name, control=row.control, exposures=row.counts.n,
            outcome_count=(row.counts.successes if view.metric.kind is MetricKind.BINARY
                           else view.outcome_events.get(row.name, 0)),
            estimate=row.estimate.value, confidence_interval_lower=row.estimate.lower,
            confidence_interval_upper=row.estimate.upper, p_value=1.0)
        if row.comparison is not None:
            c = row.comparison
            message.difference, message.relative_difference = c.difference, c.relative_difference
            message.difference_interval_lower, message.difference_interval_upper = c.lower, c.upper
            message.p_value, message.significant = c.p_value, c.significant
        if stats is not None:
            message.request_count, message.error_count = stats.request_count, stats.error_count
            message.latency_p50_ms, message.latency_p99_ms = stats.latency_p50_ms, stats.latency_p99_ms
        rows.append(message)
    return rows


def _sample_ratio(results: ExperimentResults) -> pb.SampleRatioCheck | None:
    srm = results.sample_ratio
    if srm is None:
        return None
    return pb.SampleRatioCheck(chi_square=srm.chi_square, p_value=srm.p_value, mismatch=srm.mismatch,
                               expected_shares=srm.expected_shares, observed_shares=srm.observed_shares)
