"""BanditClient: Thompson sampling, contextual selection, rewards and stats (BanditService)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ._base import AsyncClient, messages
from ._methods import paged, unary

ArmLike = str | pb.Arm | Mapping[str, Any]
"""An arm: its id, an Arm message, or a dict of Arm fields."""


def _arms(arms: Sequence[ArmLike]) -> list[pb.Arm]:
    return messages(pb.Arm, [{"id": arm} if isinstance(arm, str) else arm for arm in arms])


class BanditClient(AsyncClient[bandit_pb2_grpc.BanditServiceStub]):
    """Async client of mnbara.mlserving.bandit.v1.BanditService.

    >>> async with BanditClient() as bandits:
    ...     await bandits.create_bandit(name="home-hero", arms=["a", "b", "c"])
    ...     decision = await bandits.select(bandit="home-hero", user_id="u1")
    ...     await bandits.reward(decision_id=decision.decision_id, reward=1.0)
    ...     async for bandit in bandits.iter_bandits():
    ...         print(bandit.name)
    """

    stub_type = bandit_pb2_grpc.BanditServiceStub

    async def create_bandit(self, name: str, arms: Sequence[ArmLike], *, description: str = "",
                            context_dimension: int = 0, contextual_algorithm: pb.ContextualAlgorithm | str = 0,
                            prior_alpha: float = 0.0, prior_beta: float = 0.0, exploration: float = 0.0,
                            ridge_lambda: float = 0.0, decision_ttl_seconds: int = 0,
                            timeout: float | None = None) -> pb.CreateBanditResponse:
        """Declare a bandit and its arms; `.bandit` is it as stored, defaults filled in (0 means the
        server default for the numeric settings). Raises AlreadyExistsError (BANDIT_ALREADY_EXISTS)."""
        bandit = pb.Bandit(name=name, arms=_arms(arms), description=description, context_dimension=context_dimension,
                           contextual_algorithm=contextual_algorithm, prior_alpha=prior_alpha, prior_beta=prior_beta,
                           exploration=exploration, ridge_lambda=ridge_lambda,
                           decision_ttl_seconds=decision_ttl_seconds)
        return await self._call(self.stub.CreateBandit, pb.CreateBanditRequest(bandit=bandit), timeout)

    async def get_bandit(self, name: str, *, timeout: float | None = None) -> pb.GetBanditResponse:
        """One bandit's definition. Raises NotFoundError (BANDIT_NOT_FOUND)."""
        return await self._call(self.stub.GetBandit, pb.GetBanditRequest(name=name), timeout)

    async def list_bandits(self, *, page_size: int = 0, page_token: str = "",
                           timeout: float | None = None) -> pb.ListBanditsResponse:
        """One page of bandit definitions in name order (`next_page_token` is empty on the last page);
        `iter_bandits` goes through every page."""
        request = pb.ListBanditsRequest(page_size=page_size, page_token=page_token)
        return await self._call(self.stub.ListBandits, request, timeout)

    async def update_bandit(self, name: str, *, description: str = "", add_arms: Sequence[ArmLike] = (),
                            disable_arm_ids: Sequence[str] = (), enable_arm_ids: Sequence[str] = (),
                            timeout: float | None = None) -> pb.UpdateBanditResponse:
        """Add arms, disable or re-enable arms, change the description; `.bandit` is the result."""
        request = pb.UpdateBanditRequest(name=name, description=description, add_arms=_arms(add_arms),
                                         disable_arm_ids=disable_arm_ids, enable_arm_ids=enable_arm_ids)
        return await self._call(self.stub.UpdateBandit, request, timeout)

    async def delete_bandit(self, name: str, *, timeout: float | None = None) -> pb.DeleteBanditResponse:
        """Delete a bandit and all its learnt state. Raises NotFoundError (BANDIT_NOT_FOUND)."""
        return await self._call(self.stub.DeleteBandit, pb.DeleteBanditRequest(name=name), timeout)

    async def select(self, bandit: str, *, k: int | None = None, candidate_arm_ids: Sequence[str] = (),
                     user_id: str = "", timeout: float | None = None) -> pb.SelectResponse:
        """Choose k arms (default 1) by Thompson sampling, optionally among `candidate_arm_ids`.
        Reward the returned `decision_id` later."""
        request = pb.SelectRequest(bandit=bandit, k=k, candidate_arm_ids=candidate_arm_ids, user_id=user_id)
        return await self._call(self.stub.Select, request, timeout)

    async def select_contextual(self, bandit: str, context: Sequence[float], *, k: int | None = None,
                                candidate_arm_ids: Sequence[str] = (), user_id: str = "",
                                timeout: float | None = None) -> pb.SelectContextualResponse:
        """Choose k arms (default 1) for a context vector of the bandit's context_dimension
        (linear Thompson sampling or LinUCB)."""
        request = pb.SelectContextualRequest(bandit=bandit, context=context, k=k,
                                             candidate_arm_ids=candidate_arm_ids, user_id=user_id)
        return await self._call(self.stub.SelectContextual, request, timeout)

    async def reward(self, *, reward: float, decision_id: str = "", arm_id: str = "", bandit: str = "",
                     event_id: str = "", context: Sequence[float] = (),
                     timeout: float | None = None) -> pb.RewardResponse:
        """Record a reward in [0, 1] for a decision (or, without decision_id, for `bandit` and `arm_id`).
        Idempotent by `event_id`: a repeated event answers `duplicate=True` and changes nothing."""
        request = pb.RewardRequest(decision_id=decision_id, arm_id=arm_id, bandit=bandit, reward=reward,
                                   event_id=event_id, context=context)
        return await self._call(self.stub.Reward, request, timeout)

    async def batch_reward(self, rewards: Sequence[pb.RewardRequest | Mapping[str, Any]], *,
                           timeout: float | None = None) -> pb.BatchRewardResponse:
        """Record many rewards (RewardRequest messages or dicts of their fields) in one call, all or
        nothing on validation; an error's metadata "index" names the offending item."""
        request = pb.BatchRewardRequest(rewards=messages(pb.RewardRequest, rewards))
        return await self._call(self.stub.BatchReward, request, timeout)

    async def get_stats(self, bandit: str, *, timeout: float | None = None) -> pb.GetStatsResponse:
        """Per-arm pulls, rewards, posterior mean, 95% credible interval and selection share."""
        return await self._call(self.stub.GetStats, pb.GetStatsRequest(bandit=bandit), timeout)

    list_decisions = unary(lambda stub: stub.ListDecisions, pb.ListDecisionsRequest, pb.ListDecisionsResponse)
    evaluate_policy = unary(lambda stub: stub.EvaluatePolicy, pb.EvaluatePolicyRequest, pb.EvaluatePolicyResponse)

    iter_bandits = paged(list_bandits, lambda page: page.bandits)
    iter_decisions = paged(list_decisions, lambda page: page.decisions)
