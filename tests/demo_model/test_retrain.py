"""Retraining the demo model: parameters checked, a point-in-time training set turned into v2's
inputs, a holdout of the latest events, a model that beats the popularity baseline, cancellation
and progress, and a .mar the handler serves. The feature store is a fake serving the demo
model's own seeded world; only torch, the archiver and a temporary folder are real."""

from __future__ import annotations

import json
import math
import re
import zipfile
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pytest
import pytest_asyncio

from ml_serving_server.services.pipeline.domain.retraining import (
    Run, RunCancelled, RunState, TrainingFailed, Trigger,
)
from ml_serving_tools.demo_model import archive, data, retrain
from ml_serving_tools.demo_model.retrain import ITEM_FEATURES, USER_FEATURES, RecommendationTrainer

from .conftest import LoadedHandler

N_EVENTS = 4000
NULL_EVERY = 97  # every 97th event has no user row as of its time
T0 = 1_700_000_000_000_000  # microseconds since the epoch


def _user_columns(ids) -> dict[str, list]:
    u = data.world().users
    return {"user_profile:age_bucket": [int(u["age_bucket"][i]) for i in ids],
            "user_profile:activity": [float(u["activity"][i]) for i in ids],
            "user_profile:is_premium": [bool(u["is_premium"][i]) for i in ids],
            "user_profile:taste": [u["pref"][i].tolist() for i in ids]}


def _item_columns(ids) -> dict[str, list]:
    i = data.world().items
    return {"item_catalog:category": [int(i["category"][n]) for n in ids],
            "item_catalog:price_tier": [int(i["price_tier"][n]) for n in ids],
            "item_catalog:popularity": [float(i["popularity"][n]) for n in ids],
            "item_catalog:embedding": [i["emb"][n].tolist() for n in ids]}


class FakeFeatureStore:
    """A TrainingSetReader over the demo model's world: the first `n_events` labelled
    interactions at seeded random times, answered as the feature store answers (entity ids as
    text, times in microseconds, None for a feature with no value as of the row's time)."""

    def __init__(self, n_events: int = N_EVENTS, null_every: int = NULL_EVERY, labels=None, times=None):
        events = data.interactions()
        self.user_id, self.item_id = events.user_id[:n_events], events.item_id[:n_events]
        self.device = events.device[:n_events]
        self.label = events.label[:n_events] if labels is None else np.asarray(labels, dtype=np.float32)
        self.time = (T0 + np.random.default_rng(3).permutation(n_events) * 1_000_000 if times is None
                     else np.asarray(times, dtype=np.int64))
        self.null = np.zeros(n_events, dtype=bool)
        if null_every:
            self.null[::null_every] = True
        self.calls: list[tuple[tuple[str, ...], str, str]] = []

    async def __call__(self, features, query, timestamp_column) -> dict[str, list]:
        self.calls.append((tuple(features), query, timestamp_column))
        if "demo_interactions" in query:
            return self.events(int(re.search(r"LIMIT (\d+)", query)[1]))
        key, columns = (("user_id", _user_columns) if "demo_users" in query else ("item_id", _item_columns))
        ids = range(data.N_USERS if key == "user_id" else data.N_ITEMS)
        return {key: [str(n) for n in ids], "as_of": [T0] * len(ids), **columns(ids)}

    def events(self, limit: int) -> dict[str, list]:
        rows = np.argsort(-self.time, kind="stable")[:limit]  # newest first, as the query orders them
        answer = {"user_id": [str(n) for n in self.user_id[rows]], "item_id": [str(n) for n in self.item_id[rows]],
                  "device": [data.DEVICES[d] for d in self.device[rows]],
                  "clicked": [bool(v) for v in self.label[rows]], "event_time": [int(t) for t in self.time[rows]],
                  **_user_columns(self.user_id[rows]), **_item_columns(self.item_id[rows])}
        for name in USER_FEATURES:
            answer[name] = [None if self.null[r] else v for r, v in zip(rows, answer[name])]
        return answer


class RecordingContext:
    """Records reports; check_cancelled raises RunCancelled from its `cancel_at`-th call on."""

    def __init__(self, cancel_at: int | None = None):
        self.reports: list[tuple[float, str]] = []
        self.checks = 0
        self.cancel_at = cancel_at

    def report(self, progress: float, stage: str) -> None:
        self.reports.append((progress, stage))

    def check_cancelled(self) -> None:
        self.checks += 1
        if self.cancel_at is not None and self.checks >= self.cancel_at:
            raise RunCancelled()


def _run(run_id: str = "5f0c3a9e-2b1d-4c8e-9a7f-0d1e2f3a4b5c", **parameters) -> Run:
    return Run(run_id, archive.MODEL_NAME, RunState.RUNNING, Trigger.MANUAL, datetime.now(timezone.utc),
               parameters=parameters)


@pytest_asyncio.fixture(scope="module")
async def trained(tmp_path_factory):
    """One run with the default parameters, its split spied on."""
    store, context, spied = FakeFeatureStore(), RecordingContext(), {}
    workdir = tmp_path_factory.mktemp("retrain")
    fit = retrain.fit

    def spy(examples, train_rows, holdout_rows, params, ctx):
        spied.update(examples=examples, train_rows=train_rows, holdout_rows=holdout_rows)
        return fit(examples, train_rows, holdout_rows, params, ctx)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrain, "fit", spy)
        model = await RecommendationTrainer().train(_run(), store, context, workdir)
    return SimpleNamespace(model=model, store=store, context=context, workdir=workdir, **spied)


# ----------------------------------------------------------------------------- parameters


def test_parameters_default_and_normalise():
    trainer = RecommendationTrainer()
    defaults = trainer.check_parameters({})
    assert defaults == {"epochs": 4, "learning_rate": 0.005, "hidden": [64, 32], "max_rows": 200_000,
                        "holdout_fraction": 0.2, "seed": 7}
    json.dumps(defaults)
    # As a google.protobuf.Struct carries them: every number a double.
    given = {"epochs": 10.0, "hidden": [16.0], "max_rows": 1000.0, "learning_rate": 1, "seed": 0.0}
    checked = trainer.check_parameters(given)
    assert checked == {**defaults, "epochs": 10, "hidden": [16], "max_rows": 1000, "learning_rate": 1.0, "seed": 0}
    assert all(type(checked[k]) is int for k in ("epochs", "max_rows", "seed")) and type(checked["hidden"][0]) is int
    assert trainer.check_parameters(checked) == checked
    assert trainer.check_parameters({"hidden": []})["hidden"] == []


@pytest.mark.parametrize("parameters, key", [
    ({"batch_size": 64}, "batch_size"),
    ({"epochs": 0}, "epochs"), ({"epochs": 51}, "epochs"), ({"epochs": 2.5}, "epochs"),
    ({"epochs": True}, "epochs"), ({"epochs": "4"}, "epochs"), ({"epochs": None}, "epochs"),
    ({"learning_rate": 0}, "learning_rate"), ({"learning_rate": 1.5}, "learning_rate"),
    ({"learning_rate": math.nan}, "learning_rate"), ({"learning_rate": math.inf}, "learning_rate"),
    ({"learning_rate": False}, "learning_rate"), ({"learning_rate": 10**400}, "learning_rate"),
    ({"hidden": [8, 8, 8, 8]}, "hidden"), ({"hidden": [0]}, "hidden"), ({"hidden": [513]}, "hidden"),
    ({"hidden": 64}, "hidden"), ({"hidden": "64,32"}, "hidden"), ({"hidden": [True]}, "hidden"),
    ({"max_rows": 999}, "max_rows"), ({"max_rows": 2_000_001}, "max_rows"),
    ({"holdout_fraction": 0.04}, "holdout_fraction"), ({"holdout_fraction": 0.51}, "holdout_fraction"),
    ({"seed": -1}, "seed"), ({"seed": 2**32}, "seed"), ({"seed": True}, "seed"),
], ids=lambda value: repr(value)[:40])
def test_bad_parameter_names_its_key(parameters, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        RecommendationTrainer().check_parameters(parameters)


def test_bad_parameter_message_is_bounded():
    for parameters in ({"epochs": "9" * 10_000}, {"hidden": [1] * 10_000}, {"x" * 10_000: 1},
                       {"hidden": [1, "y" * 10_000]}, {"seed": 10**10_000}):
        with pytest.raises(ValueError) as raised:
            RecommendationTrainer().check_parameters(parameters)
        assert len(str(raised.value)) < 200


# ----------------------------------------------------------------------------- rows to inputs


def test_encoding_is_v2s():
    """The feature store's values encode exactly as the v2 model's own tables."""
    users, items = _user_columns(data.user_ids()), _item_columns(data.item_ids())
    np.testing.assert_array_equal(retrain.encode_users(users, np.arange(data.N_USERS)), data.encode_users("full"))
    np.testing.assert_array_equal(retrain.encode_items(items, np.arange(data.N_ITEMS)), data.encode_items("full"))


def test_split_holds_out_the_latest_and_never_splits_a_time():
    times = np.array([50, 10, 40, 40, 40, 20, 60, 30, 70, 80])
    train, holdout = retrain.split_by_time(times, 0.3)
    assert sorted(times[holdout]) == [60, 70, 80] and sorted(times[train]) == [10, 20, 30, 40, 40, 40, 50]
    # Half would cut between the events at 40: all three are held out.
    train, holdout = retrain.split_by_time(times, 0.5)
    assert sorted(times[train]) == [10, 20, 30] and sorted(times[holdout]) == [40, 40, 40, 50, 60, 70, 80]


def test_timestamps_may_be_datetimes():
    columns = FakeFeatureStore(n_events=10, null_every=0).events(10)
    as_micros = retrain.build_examples(columns).time
    columns["event_time"] = [datetime.fromtimestamp(t / 1e6, timezone.utc) for t in columns["event_time"]]
    np.testing.assert_array_equal(retrain.build_examples(columns).time, as_micros)


# ----------------------------------------------------------------------------- a run


def test_reads_the_point_in_time_training_set(trained):
    (features, query, ts), users, items = trained.store.calls
    assert features == USER_FEATURES + ITEM_FEATURES and ts == "event_time"
    assert query == retrain.EVENTS_QUERY.format(max_rows=200_000)
    assert query.startswith("SELECT user_id, item_id, device, clicked, event_time FROM (")
    assert "FROM demo_interactions ORDER BY event_time DESC, id DESC LIMIT 200000" in query
    assert users == (USER_FEATURES, retrain.USERS_QUERY, "as_of")
    assert items == (ITEM_FEATURES, retrain.ITEMS_QUERY, "as_of")


def test_model_beats_the_popularity_baseline(trained):
    m = trained.model.metrics
    assert set(m) == {"holdout_auc", "baseline_auc", "holdout_log_loss", "holdout_accuracy", "holdout_rows",
                      "train_rows", "rows_dropped_null", "serving_users", "serving_items"}
    assert m["holdout_auc"] > m["baseline_auc"] + 0.05, m
    assert 0.5 < m["holdout_accuracy"] < 1 and 0 < m["holdout_log_loss"] < math.log(2)
    dropped = math.ceil(N_EVENTS / NULL_EVERY)
    assert m["rows_dropped_null"] == dropped
    assert m["train_rows"] + m["holdout_rows"] == N_EVENTS - dropped
    assert (m["serving_users"], m["serving_items"]) == (data.N_USERS, data.N_ITEMS)


def test_holdout_is_the_latest_events(trained):
    times = trained.examples.time
    train, holdout = trained.train_rows, trained.holdout_rows
    assert times[train].max() < times[holdout].min()  # nothing from the future trains
    kept = N_EVENTS - trained.model.metrics["rows_dropped_null"]
    assert len(holdout) == round(kept * 0.2) == trained.model.metrics["holdout_rows"]
    np.testing.assert_array_equal(np.sort(times[holdout]), np.sort(times)[-len(holdout):])


def test_progress_is_monotonic_through_the_stages(trained):
    progress = [p for p, _ in trained.context.reports]
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] == 1.0
    stages = list(dict.fromkeys(stage for _, stage in trained.context.reports))
    assert stages == ["training set", "feature tables", "training", "evaluating", "archiving"]
    per_epoch = [p for p, stage in trained.context.reports if stage == "training"]
    assert len(per_epoch) == 1 + 4  # its start, then each epoch
    assert trained.context.checks > 4 * (N_EVENTS * 0.8 // retrain.BATCH_SIZE)  # between batches


def test_archive_holds_what_the_handler_serves(trained, tmp_path):
    model = trained.model
    version = retrain.model_version(_run().run_id)
    assert version == "run-5f0c3a9e"
    assert model.artifact_path == trained.workdir / f"{archive.MODEL_NAME}-{version}.mar"
    assert [p.name for p in trained.workdir.iterdir()] == [model.artifact_path.name]  # no leftovers
    with zipfile.ZipFile(model.artifact_path) as mar:
        assert set(mar.namelist()) == {"MAR-INF/MANIFEST.json", "handler.py", "model.pt", "model_meta.json",
                                       "features.npz"}
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        meta = json.loads(mar.read("model_meta.json"))
    assert manifest["model"]["modelVersion"] == version and manifest["model"]["modelName"] == archive.MODEL_NAME
    assert meta["model_version"] == version and meta["metrics"] == model.metrics and meta["hidden"] == [64, 32]
    assert model.signature == archive.signature({"device": ["desktop", "mobile"]})
    assert model.tags == {"retraining.run_id": _run().run_id}
    assert model.parameters == {"epochs": "4", "learning_rate": "0.005", "hidden": "[64, 32]",
                                "max_rows": "200000", "holdout_fraction": "0.2", "seed": "7"}
    assert "MLP (64, 32)" in model.description

    handler = LoadedHandler(SimpleNamespace(path=model.artifact_path, version="retrained"), tmp_path)
    answer = handler.one({"user_id": 123, "top_k": 3, "context": {"device": "mobile"}})
    assert answer["model_version"] == version and len(answer["scores"]) == 3
    scores = [s["score"] for s in answer["scores"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert handler.one({"user_id": 999, "item_id": 199})["score"] > 0  # the last ids are there too


def test_the_run_keeps_the_raw_values_it_trained_on(trained):
    samples = trained.model.feature_samples
    assert tuple(samples) == retrain.SAMPLED_FEATURES  # numeric scalars: no bool, no vector
    rows = trained.train_rows
    assert all(len(values) == len(rows) == trained.model.metrics["train_rows"] for values in samples.values())
    # Raw, before encoding, row for row as the rows trained (in time order), whoever they are.
    np.testing.assert_array_equal(samples["user_profile:age_bucket"],
                                  trained.examples.x[rows, :data.N_AGE_BUCKETS].argmax(axis=1))
    np.testing.assert_allclose(samples["user_profile:activity"], trained.examples.x[rows, data.N_AGE_BUCKETS],
                               rtol=1e-6)
    np.testing.assert_array_equal(samples["item_catalog:popularity"], trained.examples.popularity[rows])
    assert set(samples["item_catalog:price_tier"]) <= {0.0, 1.0, 2.0}
    assert all(type(v) is float for values in samples.values() for v in values)


def test_a_large_training_set_keeps_ten_thousand_values_evenly():
    examples = retrain.build_examples(FakeFeatureStore(n_events=30_000, null_every=0).events(30_000))
    train, _ = retrain.split_by_time(examples.time, 0.2)
    samples = retrain.training_samples(examples, train)
    assert all(len(values) == 10_000 for values in samples.values())
    assert samples == retrain.training_samples(examples, train)  # the same rows, the same sample
    step = len(train) / 10_000
    expected = examples.raw["user_profile:activity"][train][[int(i * step) for i in range(10_000)]]
    np.testing.assert_array_equal(samples["user_profile:activity"], expected)


async def test_same_seed_same_model():
    examples = retrain.build_examples(FakeFeatureStore(n_events=1500).events(1500))
    train, holdout = retrain.split_by_time(examples.time, 0.2)
    params = {**retrain.check_parameters({}), "epochs": 1}
    first, second = (retrain.fit(examples, train, holdout, params, RecordingContext()) for _ in range(2))
    assert first.metrics == second.metrics
    assert all(first.state[k].equal(second.state[k]) for k in first.state)


# ----------------------------------------------------------------------------- failures


async def test_cancel_stops_training(tmp_path):
    context = RecordingContext(cancel_at=10)
    with pytest.raises(RunCancelled):
        await RecommendationTrainer().train(_run(epochs=50), FakeFeatureStore(), context, tmp_path)
    assert context.checks == 10  # nothing ran after the cancel was seen
    assert "archiving" not in {stage for _, stage in context.reports}
    assert context.reports[-1][1] == "training" and context.reports[-1][0] < 0.2
    assert not list(tmp_path.glob("**/*.mar"))


async def test_no_events_is_an_empty_training_set(tmp_path):
    with pytest.raises(TrainingFailed) as raised:
        await RecommendationTrainer().train(_run(), FakeFeatureStore(n_events=0), RecordingContext(), tmp_path)
    assert raised.value.reason == "TRAINING_SET_EMPTY" and not raised.value.retryable


async def test_events_without_features_are_an_empty_training_set(tmp_path):
    store = FakeFeatureStore(n_events=50, null_every=1)  # no event finds its user as of its time
    with pytest.raises(TrainingFailed) as raised:
        await RecommendationTrainer().train(_run(), store, RecordingContext(), tmp_path)
    assert raised.value.reason == "TRAINING_SET_EMPTY" and "none of the 50 events" in raised.value.message
    assert len(store.calls) == 1  # the feature tables are not read for nothing


async def test_one_class_holdout_fails_clearly(tmp_path):
    labels = np.zeros(N_EVENTS)
    labels[:100] = 1  # clicks only among the earliest events: the holdout has none
    times = T0 + np.arange(N_EVENTS) * 1_000_000
    with pytest.raises(TrainingFailed) as raised:
        await RecommendationTrainer().train(_run(), FakeFeatureStore(labels=labels, times=times),
                                            RecordingContext(), tmp_path)
    assert raised.value.reason == "TRAINING_FAILED"
    assert "held-out rows are all non-clicks: AUC is undefined" in raised.value.message


async def test_training_set_errors_propagate_unchanged(tmp_path):
    error = ConnectionError("source down")

    async def broken(features, query, timestamp_column):
        raise error

    with pytest.raises(ConnectionError) as raised:
        await RecommendationTrainer().train(_run(), broken, RecordingContext(), tmp_path)
    assert raised.value is error


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ml_serving_tools.demo_model.retrain as r; r.check_parameters({}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
