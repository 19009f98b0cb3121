"""The Inference service's prediction metrics through the in-process mesh and a real TorchServe:
every call through TorchServe counts once, by model, version and outcome, and is timed; a
failed one counts as an error; a request refused before TorchServe is not a prediction."""

from __future__ import annotations

import pytest
from ml_serving import InternalError, InvalidArgumentError
from mnbara.mlserving.inference.v1 import inference_pb2 as pb
from prometheus_client import REGISTRY

from ml_serving_server.runtime import metric_labels


@pytest.fixture(autouse=True)
def fresh_label_bounds(monkeypatch):
    """The session's other tests may have used up the names a label admits: these start afresh."""
    monkeypatch.setattr(metric_labels, "BOUNDS", metric_labels.LabelBounds())


def predictions(model: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("mlserving_inference_predictions_total",
                                     {"model": model, "version": "1", "outcome": outcome}) or 0.0


def timed(model: str) -> float:
    return REGISTRY.get_sample_value("mlserving_inference_prediction_seconds_count", {"model": model}) or 0.0


def snapshot(models: dict[str, str]) -> dict:
    counted = {(kind, outcome): predictions(name, outcome)
               for kind, name in models.items() for outcome in ("ok", "error")}
    return counted | {(kind, "timed"): timed(name) for kind, name in models.items()}


async def test_each_prediction_counts_once_by_outcome(clients, loaded_models):
    _, inference = clients
    models = {kind: loaded_models[kind] for kind in ("echo", "error", "stream")}
    before = snapshot(models)
    await inference.predict(models["echo"], {"x": 1}, version="1")
    await inference.batch_predict(models["echo"], [{"i": i} for i in range(3)], version="1")
    [part async for part in inference.stream_predict(pb.StreamPredictRequest(
        model_name=models["stream"], version="1", raw_input=b'{"chunks": 2}'))]
    with pytest.raises(InternalError):
        await inference.predict(models["error"], {"detail": "no"}, version="1")
    with pytest.raises(InvalidArgumentError):  # too large: refused before TorchServe
        await inference.predict(models["echo"], b"x" * (4 * 1024 * 1024 + 1), version="1")
    after = snapshot(models)
    delta = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert delta == {("echo", "ok"): 4, ("echo", "timed"): 4, ("stream", "ok"): 1, ("stream", "timed"): 1,
                     ("error", "error"): 1, ("error", "timed"): 1}
