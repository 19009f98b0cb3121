"""The Inference service's domain metrics (Prometheus):

- `mlserving_inference_predictions_total{model, version, outcome}` (counter): predictions sent to
  TorchServe by this service (Predict, each instance of BatchPredict, StreamPredict and the Open
  Inference Protocol's ModelInfer), by registry model and version; `outcome` is `ok`, or `error`
  for any failure (the handler failed or refused the input, the worker died, TorchServe down,
  overloaded or past the deadline, the caller gone). A worker death retried once counts once.
- `mlserving_inference_prediction_seconds{model}` (histogram, the buckets of
  `grpc_server_handling_seconds`): the time of one such call through TorchServe.

A request refused before it reaches TorchServe (input too large, a model the Registry does not
know, a version being unloaded) is not a prediction here; `grpc_server_handled_total` counts it.
`model` and `version` are bounded (runtime/metric_labels.py). Counted by `MeteredBackend`, the
model backend port wrapped by build(): the domain is unchanged. The Router's own predictions go
through its own backend and are counted as `mlserving_router_predictions_total`.
"""

from __future__ import annotations

import time
from typing import AsyncIterator

from prometheus_client import Counter, Histogram

from ...runtime.metric_labels import bounded
from .domain.naming import parse_served_name

# The buckets of grpc_server_handling_seconds (runtime/observability.py), so the two compare.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

PREDICTIONS = Counter("mlserving_inference_predictions", "Predictions through TorchServe, by outcome (ok, error)",
                      ["model", "version", "outcome"])
PREDICTION_SECONDS = Histogram("mlserving_inference_prediction_seconds",
                               "Time of one prediction call through TorchServe", ["model"], buckets=LATENCY_BUCKETS)

_PREDICTIONS = "mlserving_inference_predictions_total"


def record_prediction(served: str, ok: bool, seconds: float) -> None:
    model, version = parse_served_name(served) or (served, "")
    PREDICTIONS.labels(bounded(_PREDICTIONS, "model", model), bounded(_PREDICTIONS, "version", version),
                       "ok" if ok else "error").inc()
    PREDICTION_SECONDS.labels(bounded("mlserving_inference_prediction_seconds", "model", model)).observe(seconds)


class MeteredBackend:
    """The model backend, counting and timing its predictions; every other call passes through."""

    def __init__(self, backend):
        self._backend = backend

    async def predict(self, name: str, version: str, payload: bytes, timeout_s: float | None, *,
                      retry_on_worker_death: bool = False) -> bytes:
        started, ok = time.perf_counter(), False
        try:
            output = await self._backend.predict(name, version, payload, timeout_s,
                                                 retry_on_worker_death=retry_on_worker_death)
            ok = True
            return output
        finally:
            record_prediction(name, ok, time.perf_counter() - started)

    async def stream_predict(self, name: str, version: str, payload: bytes,
                             timeout_s: float | None) -> AsyncIterator[bytes]:
        """Ok once the last part arrived; a stream failed or abandoned midway is an error."""
        started, ok = time.perf_counter(), False
        try:
            async for chunk in self._backend.stream_predict(name, version, payload, timeout_s):
                yield chunk
            ok = True
        finally:
            record_prediction(name, ok, time.perf_counter() - started)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)
