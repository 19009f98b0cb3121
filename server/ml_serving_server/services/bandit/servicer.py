"""BanditService over gRPC: map the request, call the domain, map the response."""

from __future__ import annotations

from datetime import timezone

from google.protobuf import timestamp_pb2
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ...errors import InvalidArgument
from ...runtime.auth import caller
from .domain import off_policy
from .domain.model import ArmDefinition, BanditDefinition, ContextualAlgorithm, LearningCandidate, RewardInput
from .domain.results import LoggedDecisionView, Selection
from .domain.service import BanditService
from .metrics import count_selection

_ALGORITHMS = {
    pb.CONTEXTUAL_ALGORITHM_UNSPECIFIED: ContextualAlgorithm.LINEAR_THOMPSON,
    pb.CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON: ContextualAlgorithm.LINEAR_THOMPSON,
    pb.CONTEXTUAL_ALGORITHM_LIN_UCB: ContextualAlgorithm.LIN_UCB,
}
_ALGORITHM_TO_PB = {
    ContextualAlgorithm.LINEAR_THOMPSON: pb.CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON,
    ContextualAlgorithm.LIN_UCB: pb.CONTEXTUAL_ALGORITHM_LIN_UCB,
}


def _timestamp(value) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _arm_from_pb(arm: pb.Arm) -> ArmDefinition:
    return ArmDefinition(arm.id, arm.description, arm.disabled, arm.model_version)


def _definition_from_pb(bandit: pb.Bandit) -> BanditDefinition:
    return BanditDefinition(
        name=bandit.name, description=bandit.description, arms=tuple(_arm_from_pb(a) for a in bandit.arms),
        prior_alpha=bandit.prior_alpha, prior_beta=bandit.prior_beta,
        context_dimension=bandit.context_dimension,
        contextual_algorithm=_ALGORITHMS.get(bandit.contextual_algorithm, ContextualAlgorithm.LINEAR_THOMPSON),
        exploration=bandit.exploration, ridge_lambda=bandit.ridge_lambda,
        decision_ttl_seconds=bandit.decision_ttl_seconds, discount=bandit.discount,
    )


def _definition_to_pb(d: BanditDefinition) -> pb.Bandit:
    return pb.Bandit(
        name=d.name, description=d.description,
        arms=[pb.Arm(id=a.id, description=a.description, disabled=a.disabled, model_version=a.model_version)
              for a in d.arms],
        prior_alpha=d.prior_alpha, prior_beta=d.prior_beta, context_dimension=d.context_dimension,
        contextual_algorithm=_ALGORITHM_TO_PB[d.contextual_algorithm], exploration=d.exploration,
        ridge_lambda=d.ridge_lambda, decision_ttl_seconds=d.decision_ttl_seconds, discount=d.discount,
        create_time=_timestamp(d.create_time), update_time=_timestamp(d.update_time),
        created_by=d.created_by, updated_by=d.updated_by,
    )


def _choices_to_pb(selection: Selection) -> list[pb.ArmChoice]:
    return [pb.ArmChoice(arm_id=c.arm_id, score=c.score, rank=c.rank) for c in selection.choices]


def _reward_from_pb(r: pb.RewardRequest) -> RewardInput:
    return RewardInput(decision_id=r.decision_id, arm_id=r.arm_id, bandit=r.bandit, reward=r.reward,
                       event_id=r.event_id, context=tuple(r.context))


_ESTIMATORS = {
    pb.OFF_POLICY_ESTIMATOR_IPS: off_policy.Estimator.IPS,
    pb.OFF_POLICY_ESTIMATOR_SNIPS: off_policy.Estimator.SNIPS,
    pb.OFF_POLICY_ESTIMATOR_DOUBLY_ROBUST: off_policy.Estimator.DR,
}
_ESTIMATOR_TO_PB = {value: key for key, value in _ESTIMATORS.items()}


def _time_from_pb(request, name: str):
    """An optional Timestamp field as an aware datetime (None when absent)."""
    if not request.HasField(name):
        return None
    try:
        return getattr(request, name).ToDatetime(timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument(name, "is not a valid time (years 1 to 9999)") from None


def _estimators_from_pb(values) -> list[off_policy.Estimator]:
    chosen = []
    for index, value in enumerate(values):
        if value not in _ESTIMATORS:
            raise InvalidArgument(f"estimators[{index}]", "must be IPS, SNIPS or DOUBLY_ROBUST")
        if _ESTIMATORS[value] not in chosen:
            chosen.append(_ESTIMATORS[value])
    return chosen


def _candidate_from_pb(request: pb.EvaluatePolicyRequest) -> LearningCandidate | None:
    if not request.HasField("policy"):
        return None
    c = request.policy
    if c.contextual_algorithm not in _ALGORITHMS:
        raise InvalidArgument("policy.contextual_algorithm", "is not a known algorithm")
    optional = {name: getattr(c, name) if c.HasField(name) else None
                for name in ("prior_alpha", "prior_beta", "exploration", "ridge_lambda", "discount")}
    algorithm = _ALGORITHMS[c.contextual_algorithm] if c.contextual_algorithm else None
    return LearningCandidate(contextual=c.contextual, contextual_algorithm=algorithm, **optional)


def _logged_decision_to_pb(d: LoggedDecisionView) -> pb.Decision:
    return pb.Decision(
        decision_id=d.decision_id, bandit=d.bandit,
        choices=[pb.ArmChoice(arm_id=c.arm_id, score=c.score, rank=c.rank) for c in d.choices],
        propensity=d.propensity, context=d.context, user_id=d.user_id, decision_time=_timestamp(d.time),
        reward_sum=d.reward_sum, choice_probabilities=d.choice_probabilities, offered_arm_ids=d.offered_arm_ids,
        reward_count=d.reward_count,
        algorithm=_ALGORITHM_TO_PB[d.algorithm] if d.algorithm else pb.CONTEXTUAL_ALGORITHM_UNSPECIFIED)


class BanditServicer(bandit_pb2_grpc.BanditServiceServicer):

    def __init__(self, service: BanditService):
        self._service = service

    async def CreateBandit(self, request, context):
        created = await self._service.create_bandit(_definition_from_pb(request.bandit), actor=caller())
        return pb.CreateBanditResponse(bandit=_definition_to_pb(created))

    async def GetBandit(self, request, context):
        return pb.GetBanditResponse(bandit=_definition_to_pb(await self._service.get_bandit(request.name)))

    async def ListBandits(self, request, context):
        page, token = await self._service.list_bandits(request.page_size, request.page_token)
        return pb.ListBanditsResponse(bandits=[_definition_to_pb(d) for d in page], next_page_token=token)

    async def UpdateBandit(self, request, context):
        updated = await self._service.update_bandit(
            request.name, request.description, [_arm_from_pb(a) for a in request.add_arms],
            list(request.disable_arm_ids), list(request.enable_arm_ids), actor=caller(),
        )
        return pb.UpdateBanditResponse(bandit=_definition_to_pb(updated))

    async def DeleteBandit(self, request, context):
        await self._service.delete_bandit(request.name)
        return pb.DeleteBanditResponse()

    async def Select(self, request, context):
        selection = await self._service.select(
            request.bandit, request.k if request.HasField("k") else None,
            list(request.candidate_arm_ids), request.user_id,
        )
        count_selection(selection.decision.bandit, [c.arm_id for c in selection.choices])
        return pb.SelectResponse(decision_id=selection.decision.id, choices=_choices_to_pb(selection),
                                 decision_time=_timestamp(selection.decision.time))

    async def SelectContextual(self, request, context):
        selection = await self._service.select_contextual(
            request.bandit, list(request.context), request.k if request.HasField("k") else None,
            list(request.candidate_arm_ids), request.user_id,
        )
        count_selection(selection.decision.bandit, [c.arm_id for c in selection.choices])
        return pb.SelectContextualResponse(
            decision_id=selection.decision.id, choices=_choices_to_pb(selection),
            decision_time=_timestamp(selection.decision.time), algorithm=_ALGORITHM_TO_PB[selection.algorithm],
        )

    async def Reward(self, request, context):
        duplicate, event = await self._service.reward(_reward_from_pb(request))
        return pb.RewardResponse(duplicate=duplicate, bandit=event.bandit, arm_id=event.arm_id)

    async def BatchReward(self, request, context):
        applied, duplicates = await self._service.batch_reward([_reward_from_pb(r) for r in request.rewards])
        return pb.BatchRewardResponse(applied_count=applied, duplicate_count=duplicates)

    async def GetStats(self, request, context):
        stats = await self._service.stats(request.bandit)
        return pb.GetStatsResponse(
            bandit=stats.bandit, total_pulls=stats.total_pulls, total_reward_count=stats.total_reward_count,
            arms=[
                pb.ArmStats(
                    arm_id=a.arm_id, pulls=a.counts.pulls, reward_count=a.counts.reward_count,
                    reward_sum=a.counts.reward_sum, posterior_alpha=a.alpha, posterior_beta=a.beta,
                    posterior_mean=a.mean, credible_interval_lower=a.interval[0],
                    credible_interval_upper=a.interval[1], selection_share=a.selection_share,
                    disabled=a.disabled,
                )
                for a in stats.arms
            ],
        )

    async def ListDecisions(self, request, context):
        page, token = await self._service.list_decisions(
            request.bandit, _time_from_pb(request, "start_time"), _time_from_pb(request, "end_time"),
            request.page_size, request.page_token)
        return pb.ListDecisionsResponse(decisions=[_logged_decision_to_pb(d) for d in page], next_page_token=token)

    async def EvaluatePolicy(self, request, context):
        result = await self._service.evaluate_policy(
            request.bandit, dict(request.arm_probabilities), _candidate_from_pb(request),
            _estimators_from_pb(request.estimators), _time_from_pb(request, "start_time"),
            _time_from_pb(request, "end_time"))
        return pb.EvaluatePolicyResponse(
            decision_count=result.decision_count, logged_value=result.logged_value,
            rewarded_count=result.rewarded_count, effective_sample_size=result.effective_sample_size,
            estimates=[pb.PolicyEstimate(estimator=_ESTIMATOR_TO_PB[e.estimator], value=e.value,
                                         confidence_interval_lower=e.lower, confidence_interval_upper=e.upper)
                       for e in result.estimates])
