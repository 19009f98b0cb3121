"""ml_serving: the Python client library of the ML serving mesh.

Async clients, one per gRPC service (each owns a grpc.aio channel or uses one you pass):
`RegistryClient`, `InferenceClient`, `RouterClient`, `BanditClient`, `PipelineClient`.
The seed README's names: `MLflowModelRegistry` (the registry client), `ModelServer`
(the inference client whose `predict` returns plain Python) and `ABTestingRouter`
(synchronous `get_model_for_user`).

Address: ML_SERVING_ADDR, default DEFAULT_ADDRESS (the Envoy front door, which proxies
native gRPC); DIRECT_ADDRESS reaches the mesh directly. Default deadline:
ML_SERVING_TIMEOUT seconds (default 10). Failed calls raise `MLServingError` subclasses
carrying the status's ErrorInfo (reason, domain, metadata); `reason_of` matches the reason
on the service's ErrorReason enum. List methods have `iter_...` companions that yield every
item across pages (`BanditClient.iter_bandits`), and `pages` yields the pages of any List call.
`PipelineClient.get_feature_values` (and the blocking `FeatureStore`'s) answers features as
plain Python or, with pandas installed (extra `pandas`), a DataFrame.
"""

from ._methods import pages
from .bandit import BanditClient
from .config import DEFAULT_ADDRESS, DIRECT_ADDRESS, default_address, default_timeout
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    MLServingError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    from_rpc_error,
)
from .inference import InferenceClient, ModelServer, prediction_value
from .pipeline import FeatureStore, PipelineClient, feature_value, features_as_dataframe, features_as_dicts
from .registry import MLflowModelRegistry, RegistryClient
from .router import ABTestingRouter, RouterClient

__all__ = [
    "ABTestingRouter", "AbortedError", "AlreadyExistsError", "BanditClient", "CancelledError", "DEFAULT_ADDRESS",
    "DIRECT_ADDRESS", "DeadlineExceededError", "FailedPreconditionError", "FeatureStore", "InferenceClient",
    "InternalError",
    "InvalidArgumentError", "MLServingError", "MLflowModelRegistry", "ModelServer", "NotFoundError",
    "OutOfRangeError", "PermissionDeniedError", "PipelineClient", "RegistryClient", "ResourceExhaustedError",
    "RouterClient", "UnauthenticatedError", "UnavailableError", "UnimplementedError", "default_address",
    "default_timeout", "feature_value", "features_as_dataframe", "features_as_dicts", "from_rpc_error", "pages",
    "prediction_value",
]
