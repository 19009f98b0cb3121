import datetime

from google.api import annotations_pb2 as _annotations_pb2
from mnbara.mlserving.auth.v1 import auth_pb2 as _auth_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextualAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXTUAL_ALGORITHM_UNSPECIFIED: _ClassVar[ContextualAlgorithm]
    CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON: _ClassVar[ContextualAlgorithm]
    CONTEXTUAL_ALGORITHM_LIN_UCB: _ClassVar[ContextualAlgorithm]

class OffPolicyEstimator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFF_POLICY_ESTIMATOR_UNSPECIFIED: _ClassVar[OffPolicyEstimator]
    OFF_POLICY_ESTIMATOR_IPS: _ClassVar[OffPolicyEstimator]
    OFF_POLICY_ESTIMATOR_SNIPS: _ClassVar[OffPolicyEstimator]
    OFF_POLICY_ESTIMATOR_DOUBLY_ROBUST: _ClassVar[OffPolicyEstimator]
CONTEXTUAL_ALGORITHM_UNSPECIFIED: ContextualAlgorithm
CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON: ContextualAlgorithm
CONTEXTUAL_ALGORITHM_LIN_UCB: ContextualAlgorithm
OFF_POLICY_ESTIMATOR_UNSPECIFIED: OffPolicyEstimator
OFF_POLICY_ESTIMATOR_IPS: OffPolicyEstimator
OFF_POLICY_ESTIMATOR_SNIPS: OffPolicyEstimator
OFF_POLICY_ESTIMATOR_DOUBLY_ROBUST: OffPolicyEstimator

class Arm(_message.Message):
    __slots__ = ("id", "description", "disabled", "model_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    disabled: bool
    model_version: str
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., disabled: _Optional[bool] = ..., model_version: _Optional[str] = ...) -> None: ...

class Bandit(_message.Message):
    __slots__ = ("name", "description", "arms", "prior_alpha", "prior_beta", "context_dimension", "contextual_algorithm", "exploration", "ridge_lambda", "decision_ttl_seconds", "discount", "create_time", "update_time", "created_by", "updated_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_ALPHA_FIELD_NUMBER: _ClassVar[int]
    PRIOR_BETA_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    CONTEXTUAL_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    RIDGE_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    DECISION_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    arms: _containers.RepeatedCompositeFieldContainer[Arm]
    prior_alpha: float
    prior_beta: float
    context_dimension: int
    contextual_algorithm: ContextualAlgorithm
    exploration: float
    ridge_lambda: float
    decision_ttl_seconds: int
    discount: float
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    created_by: str
    updated_by: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., prior_alpha: _Optional[float] = ..., prior_beta: _Optional[float] = ..., context_dimension: _Optional[int] = ..., contextual_algorithm: _Optional[_Union[ContextualAlgorithm, str]] = ..., exploration: _Optional[float] = ..., ridge_lambda: _Optional[float] = ..., decision_ttl_seconds: _Optional[int] = ..., discount: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., updated_by: _Optional[str] = ...) -> None: ...

class CreateBanditRequest(_message.Message):
    __slots__ = ("bandit",)
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    bandit: Bandit
    def __init__(self, bandit: _Optional[_Union[Bandit, _Mapping]] = ...) -> None: ...

class CreateBanditResponse(_message.Message):
    __slots__ = ("bandit",)
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    bandit: Bandit
    def __init__(self, bandit: _Optional[_Union[Bandit, _Mapping]] = ...) -> None: ...

class GetBanditRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBanditResponse(_message.Message):
    __slots__ = ("bandit",)
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    bandit: Bandit
    def __init__(self, bandit: _Optional[_Union[Bandit, _Mapping]] = ...) -> None: ...

class ListBanditsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBanditsResponse(_message.Message):
    __slots__ = ("bandits", "next_page_token")
    BANDITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bandits: _containers.RepeatedCompositeFieldContainer[Bandit]
    next_page_token: str
    def __init__(self, bandits: _Optional[_Iterable[_Union[Bandit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateBanditRequest(_message.Message):
    __slots__ = ("name", "description", "add_arms", "disable_arm_ids", "enable_arm_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ADD_ARMS_FIELD_NUMBER: _ClassVar[int]
    DISABLE_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    add_arms: _containers.RepeatedCompositeFieldContainer[Arm]
    disable_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    enable_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., add_arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., disable_arm_ids: _Optional[_Iterable[str]] = ..., enable_arm_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateBanditResponse(_message.Message):
    __slots__ = ("bandit",)
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    bandit: Bandit
    def __init__(self, bandit: _Optional[_Union[Bandit, _Mapping]] = ...) -> None: ...

class DeleteBanditRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBanditResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ArmChoice(_message.Message):
    __slots__ = ("arm_id", "score", "rank")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    score: float
    rank: int
    def __init__(self, arm_id: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class SelectRequest(_message.Message):
    __slots__ = ("bandit", "k", "candidate_arm_ids", "user_id")
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    bandit: str
    k: int
    candidate_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    user_id: str
    def __init__(self, bandit: _Optional[str] = ..., k: _Optional[int] = ..., candidate_arm_ids: _Optional[_Iterable[str]] = ..., user_id: _Optional[str] = ...) -> None: ...

class SelectResponse(_message.Message):
    __slots__ = ("decision_id", "choices", "decision_time")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIME_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    choices: _containers.RepeatedCompositeFieldContainer[ArmChoice]
    decision_time: _timestamp_pb2.Timestamp
    def __init__(self, decision_id: _Optional[str] = ..., choices: _Optional[_Iterable[_Union[ArmChoice, _Mapping]]] = ..., decision_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SelectContextualRequest(_message.Message):
    __slots__ = ("bandit", "context", "k", "candidate_arm_ids", "user_id")
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    bandit: str
    context: _containers.RepeatedScalarFieldContainer[float]
    k: int
    candidate_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    user_id: str
    def __init__(self, bandit: _Optional[str] = ..., context: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., candidate_arm_ids: _Optional[_Iterable[str]] = ..., user_id: _Optional[str] = ...) -> None: ...

class SelectContextualResponse(_message.Message):
    __slots__ = ("decision_id", "choices", "decision_time", "algorithm")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIME_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    choices: _containers.RepeatedCompositeFieldContainer[ArmChoice]
    decision_time: _timestamp_pb2.Timestamp
    algorithm: ContextualAlgorithm
    def __init__(self, decision_id: _Optional[str] = ..., choices: _Optional[_Iterable[_Union[ArmChoice, _Mapping]]] = ..., decision_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., algorithm: _Optional[_Union[ContextualAlgorithm, str]] = ...) -> None: ...

class RewardRequest(_message.Message):
    __slots__ = ("decision_id", "arm_id", "bandit", "reward", "event_id", "context")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    arm_id: str
    bandit: str
    reward: float
    event_id: str
    context: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, decision_id: _Optional[str] = ..., arm_id: _Optional[str] = ..., bandit: _Optional[str] = ..., reward: _Optional[float] = ..., event_id: _Optional[str] = ..., context: _Optional[_Iterable[float]] = ...) -> None: ...

class RewardResponse(_message.Message):
    __slots__ = ("duplicate", "bandit", "arm_id")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    bandit: str
    arm_id: str
    def __init__(self, duplicate: _Optional[bool] = ..., bandit: _Optional[str] = ..., arm_id: _Optional[str] = ...) -> None: ...

class BatchRewardRequest(_message.Message):
    __slots__ = ("rewards",)
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    rewards: _containers.RepeatedCompositeFieldContainer[RewardRequest]
    def __init__(self, rewards: _Optional[_Iterable[_Union[RewardRequest, _Mapping]]] = ...) -> None: ...

class BatchRewardResponse(_message.Message):
    __slots__ = ("applied_count", "duplicate_count")
    APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    applied_count: int
    duplicate_count: int
    def __init__(self, applied_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("bandit",)
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    bandit: str
    def __init__(self, bandit: _Optional[str] = ...) -> None: ...

class ArmStats(_message.Message):
    __slots__ = ("arm_id", "pulls", "reward_count", "reward_sum", "posterior_alpha", "posterior_beta", "posterior_mean", "credible_interval_lower", "credible_interval_upper", "selection_share", "disabled")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    REWARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REWARD_SUM_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_ALPHA_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_BETA_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    CREDIBLE_INTERVAL_LOWER_FIELD_NUMBER: _ClassVar[int]
    CREDIBLE_INTERVAL_UPPER_FIELD_NUMBER: _ClassVar[int]
    SELECTION_SHARE_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    pulls: int
    reward_count: int
    reward_sum: float
    posterior_alpha: float
    posterior_beta: float
    posterior_mean: float
    credible_interval_lower: float
    credible_interval_upper: float
    selection_share: float
    disabled: bool
    def __init__(self, arm_id: _Optional[str] = ..., pulls: _Optional[int] = ..., reward_count: _Optional[int] = ..., reward_sum: _Optional[float] = ..., posterior_alpha: _Optional[float] = ..., posterior_beta: _Optional[float] = ..., posterior_mean: _Optional[float] = ..., credible_interval_lower: _Optional[float] = ..., credible_interval_upper: _Optional[float] = ..., selection_share: _Optional[float] = ..., disabled: _Optional[bool] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("bandit", "total_pulls", "total_reward_count", "arms")
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PULLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REWARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    bandit: str
    total_pulls: int
    total_reward_count: int
    arms: _containers.RepeatedCompositeFieldContainer[ArmStats]
    def __init__(self, bandit: _Optional[str] = ..., total_pulls: _Optional[int] = ..., total_reward_count: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[ArmStats, _Mapping]]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "bandit", "choices", "propensity", "context", "user_id", "decision_time", "reward_sum", "choice_probabilities", "offered_arm_ids", "reward_count", "algorithm")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIME_FIELD_NUMBER: _ClassVar[int]
    REWARD_SUM_FIELD_NUMBER: _ClassVar[int]
    CHOICE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    OFFERED_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    REWARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    bandit: str
    choices: _containers.RepeatedCompositeFieldContainer[ArmChoice]
    propensity: float
    context: _containers.RepeatedScalarFieldContainer[float]
    user_id: str
    decision_time: _timestamp_pb2.Timestamp
    reward_sum: float
    choice_probabilities: _containers.RepeatedScalarFieldContainer[float]
    offered_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    reward_count: int
    algorithm: ContextualAlgorithm
    def __init__(self, decision_id: _Optional[str] = ..., bandit: _Optional[str] = ..., choices: _Optional[_Iterable[_Union[ArmChoice, _Mapping]]] = ..., propensity: _Optional[float] = ..., context: _Optional[_Iterable[float]] = ..., user_id: _Optional[str] = ..., decision_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reward_sum: _Optional[float] = ..., choice_probabilities: _Optional[_Iterable[float]] = ..., offered_arm_ids: _Optional[_Iterable[str]] = ..., reward_count: _Optional[int] = ..., algorithm: _Optional[_Union[ContextualAlgorithm, str]] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("bandit", "start_time", "end_time", "page_size", "page_token")
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bandit: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, bandit: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PolicyEstimate(_message.Message):
    __slots__ = ("estimator", "value", "confidence_interval_lower", "confidence_interval_upper")
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_INTERVAL_LOWER_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_INTERVAL_UPPER_FIELD_NUMBER: _ClassVar[int]
    estimator: OffPolicyEstimator
    value: float
    confidence_interval_lower: float
    confidence_interval_upper: float
    def __init__(self, estimator: _Optional[_Union[OffPolicyEstimator, str]] = ..., value: _Optional[float] = ..., confidence_interval_lower: _Optional[float] = ..., confidence_interval_upper: _Optional[float] = ...) -> None: ...

class CandidatePolicy(_message.Message):
    __slots__ = ("contextual", "contextual_algorithm", "prior_alpha", "prior_beta", "exploration", "ridge_lambda", "discount")
    CONTEXTUAL_FIELD_NUMBER: _ClassVar[int]
    CONTEXTUAL_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PRIOR_ALPHA_FIELD_NUMBER: _ClassVar[int]
    PRIOR_BETA_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    RIDGE_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    contextual: bool
    contextual_algorithm: ContextualAlgorithm
    prior_alpha: float
    prior_beta: float
    exploration: float
    ridge_lambda: float
    discount: float
    def __init__(self, contextual: _Optional[bool] = ..., contextual_algorithm: _Optional[_Union[ContextualAlgorithm, str]] = ..., prior_alpha: _Optional[float] = ..., prior_beta: _Optional[float] = ..., exploration: _Optional[float] = ..., ridge_lambda: _Optional[float] = ..., discount: _Optional[float] = ...) -> None: ...

class EvaluatePolicyRequest(_message.Message):
    __slots__ = ("bandit", "arm_probabilities", "estimators", "start_time", "end_time", "policy")
    class ArmProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    ARM_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATORS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    bandit: str
    arm_probabilities: _containers.ScalarMap[str, float]
    estimators: _containers.RepeatedScalarFieldContainer[OffPolicyEstimator]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    policy: CandidatePolicy
    def __init__(self, bandit: _Optional[str] = ..., arm_probabilities: _Optional[_Mapping[str, float]] = ..., estimators: _Optional[_Iterable[_Union[OffPolicyEstimator, str]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[_Union[CandidatePolicy, _Mapping]] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("decision_count", "logged_value", "estimates", "rewarded_count", "effective_sample_size")
    DECISION_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOGGED_VALUE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    REWARDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    decision_count: int
    logged_value: float
    estimates: _containers.RepeatedCompositeFieldContainer[PolicyEstimate]
    rewarded_count: int
    effective_sample_size: float
    def __init__(self, decision_count: _Optional[int] = ..., logged_value: _Optional[float] = ..., estimates: _Optional[_Iterable[_Union[PolicyEstimate, _Mapping]]] = ..., rewarded_count: _Optional[int] = ..., effective_sample_size: _Optional[float] = ...) -> None: ...
