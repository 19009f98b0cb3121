"""Retraining runs' rules, with the run store in memory: triggers, cancels, the sweep of lost
workers, a worker's outcomes (succeeded, cancelled, lost, retried, failed, released), and the
training samples a succeeded run keeps."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from ml_serving_server.errors import FailedPrecondition, InvalidArgument, NotFound
from ml_serving_server.services.pipeline.domain.retraining import (
    Published,
    RunCancelled,
    RunState,
    TrainedModel,
    TrainingFailed,
    Trigger,
    even_sample,
)
from ml_serving_server.services.pipeline.domain.runs import RetrainingRuns
from ml_serving_server.services.pipeline.domain.worker import RetrainingWorker

from ..fakes import T0, FakeDistributions, FakeRunStore, StateStoreUnavailable


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


class Trainer:
    """Trains in a thread, step by step, until told to finish (or fail, or be cancelled)."""

    def __init__(self, steps: int = 1, fail: Exception | None = None):
        self.steps, self.fail = steps, fail
        self.go = threading.Event()
        self.go.set()
        self.started = asyncio.Event()
        self.calls = 0
        self.samples: dict[str, list[float]] = {}  # the model's feature_samples

    def check_parameters(self, parameters):
        epochs = parameters.get("epochs", 4)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 50:
            raise ValueError("epochs: must be an integer from 1 to 50")
        unknown = set(parameters) - {"epochs"}
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown parameter")
        return {"epochs": 4, **parameters}

    async def train(self, run, training_set, context, workdir: Path):
        self.calls += 1
        self.started.set()
        columns = await training_set(["v:f"], "SELECT 1", "t")

        def work():
            for step in range(self.steps):
                self.go.wait(5)
                context.check_cancelled()
                context.report((step + 1) / self.steps, "training")
            if self.fail is not None:
                raise self.fail
            (workdir / "model.mar").write_bytes(b"m")
            return TrainedModel(workdir / "model.mar", {"auc": 0.8, "rows": float(len(columns["v:f"]))},
                                feature_samples=self.samples)

        return await asyncio.to_thread(work)


class Publisher:
    def __init__(self, fail: Exception | None = None):
        self.fail, self.published = fail, []

    async def publish(self, run, model):
        if self.fail is not None:
            raise self.fail
        assert model.artifact_path.read_bytes() == b"m"  # still there: the workdir is removed after
        self.published.append(run.run_id)
        return Published(f"mlflow-{run.run_id[:4]}", str(len(self.published)))


async def training_set(features, query, timestamp_column):
    return {"v:f": [1.0, 2.0, 3.0]}


def make(trainer=None, publisher=None, *, max_attempts=2, clock=None, distributions=None):
    store, clock = FakeRunStore(), clock or Clock()
    trainer, publisher = trainer or Trainer(), publisher or Publisher()
    runs = RetrainingRuns(store, {"rec": trainer}, max_attempts=max_attempts,
                          worker_lost_after=timedelta(seconds=10), clock=clock)

    def worker(name="w1"):
        return RetrainingWorker(runs, store, {"rec": trainer}, publisher, training_set, worker_id=name,
                                heartbeat_interval=timedelta(milliseconds=10), poll_interval=timedelta(milliseconds=10),
                                distributions=distributions, clock=clock)

    return runs, store, trainer, publisher, worker


# ----- triggers -----

async def test_a_trigger_is_queued_with_its_checked_parameters():
    runs, store, *_ = make()
    run, duplicate = await runs.trigger("rec", reason="drift", parameters={"epochs": 2})
    assert not duplicate and run.state is RunState.QUEUED and run.trigger is Trigger.MANUAL
    assert run.parameters == {"epochs": 2} | {"epochs": 2} and run.max_attempts == 2
    assert (await runs.get(run.run_id)).reason == "drift"


@pytest.mark.parametrize("model, parameters, field", [
    ("", {}, "model_name"), ("x" * 300, {}, "model_name"),
    ("rec", {"epochs": 0}, "parameters.epochs"), ("rec", {"epochs": True}, "parameters.epochs"),
    ("rec", {"colour": 1}, "parameters.colour"),
])
async def test_a_bad_trigger_names_its_field_and_queues_nothing(model, parameters, field):
    runs, store, *_ = make()
    with pytest.raises(InvalidArgument) as caught:
        await runs.trigger(model, parameters=parameters)
    assert caught.value.field == field and not store.runs


async def test_a_model_without_a_trainer_is_not_found():
    runs, store, *_ = make()
    with pytest.raises(NotFound) as caught:
        await runs.trigger("unknown-model")
    assert caught.value.reason.name == "NO_TRAINER_FOR_MODEL" and not store.runs


async def test_a_repeated_idempotency_key_returns_the_first_run():
    runs, store, *_ = make()
    first, _ = await runs.trigger("rec", idempotency_key="k1")
    again, duplicate = await runs.trigger("rec", idempotency_key="k1", reason="other")
    assert duplicate and again.run_id == first.run_id and len(store.runs) == 1


async def test_an_alert_queues_one_run_per_model_at_a_time():
    runs, store, *_ = make()
    first, _ = await runs.trigger("rec", trigger=Trigger.ALERT, alert_id="a1")
    again, duplicate = await runs.trigger("rec", trigger=Trigger.ALERT, alert_id="a2")
    assert duplicate and again.run_id == first.run_id
    manual, duplicate = await runs.trigger("rec")
    assert not duplicate and manual.run_id != first.run_id


async def test_malformed_ids_and_tokens_are_invalid_arguments():
    runs, *_ = make()
    for call in (runs.get("nope"), runs.cancel("nope")):
        with pytest.raises(InvalidArgument, match="run_id"):
            await call
    with pytest.raises(InvalidArgument, match="page_token"):
        await runs.list(page_token="x1")
    with pytest.raises(InvalidArgument, match="page_size"):
        await runs.list(page_size=1001)


async def test_runs_are_listed_newest_first_page_by_page():
    runs, *_ = make()
    ids = [(await runs.trigger("rec"))[0].run_id for _ in range(5)]
    seen, token = [], ""
    while True:
        page, token = await runs.list(page_size=2, page_token=token)
        seen += [run.run_id for run in page]
        if not token:
            break
    assert seen == ids[::-1]


# ----- cancels -----

async def test_a_queued_run_is_cancelled_at_once_and_an_ended_one_refuses():
    runs, store, _, _, worker = make()
    queued, _ = await runs.trigger("rec")
    cancelled = await runs.cancel(queued.run_id)
    assert cancelled.state is RunState.CANCELLED and cancelled.end_time is not None
    assert (await runs.cancel(queued.run_id)).state is RunState.CANCELLED  # again: as it is
    done, _ = await runs.trigger("rec")
    assert await worker().run_once()
    assert (await runs.get(done.run_id)).state is RunState.SUCCEEDED
    with pytest.raises(FailedPrecondition) as caught:
        await runs.cancel(done.run_id)
    assert caught.value.reason.name == "RUN_ALREADY_ENDED"


async def test_a_running_run_stops_at_its_next_step_once_cancelled():
    trainer = Trainer(steps=50)
    trainer.go.clear()
    runs, store, _, publisher, worker = make(trainer)
    run, _ = await runs.trigger("rec")
    working = asyncio.create_task(worker().run_once())
    await trainer.started.wait()
    assert (await runs.cancel(run.run_id)).cancel_requested
    trainer.go.set()
    await asyncio.wait_for(working, 10)
    ended = await runs.get(run.run_id)
    assert ended.state is RunState.CANCELLED and not publisher.published


# ----- a worker's outcomes -----

async def test_a_run_succeeds_with_its_metrics_mlflow_run_and_version():
    runs, store, trainer, publisher, worker = make(Trainer(steps=3))
    run, _ = await runs.trigger("rec")
    assert await worker().run_once()
    done = await runs.get(run.run_id)
    assert done.state is RunState.SUCCEEDED and done.attempt == 1 and done.worker_id == "w1"
    assert done.metrics == {"auc": 0.8, "rows": 3.0} and done.registered_version == "1"
    assert done.mlflow_run_id == f"mlflow-{run.run_id[:4]}" and done.error is None
    assert not await worker().run_once()  # nothing left


async def test_a_dependency_down_queues_the_run_again_until_its_attempts_are_spent():
    down = TrainingFailed("MLFLOW_UNAVAILABLE", "MLflow cannot be reached", code="UNAVAILABLE", retryable=True)
    runs, store, trainer, publisher, worker = make(publisher=Publisher(fail=down), max_attempts=2)
    run, _ = await runs.trigger("rec")
    assert await worker().run_once()
    again = await runs.get(run.run_id)
    assert again.state is RunState.QUEUED and again.error.reason == "MLFLOW_UNAVAILABLE"
    assert await worker("w2").run_once()  # attempt 2 fails alike: no attempt left
    failed = await runs.get(run.run_id)
    assert failed.state is RunState.FAILED and failed.attempt == 2 and failed.worker_id == "w2"
    assert (failed.error.reason, failed.error.code) == ("MLFLOW_UNAVAILABLE", "UNAVAILABLE")


async def test_a_refusal_fails_at_once_and_a_trainers_bug_fails_the_run_not_the_worker():
    refusal = TrainingFailed("REGISTRY_REFUSED", "gate: auc below 0.9", code="FAILED_PRECONDITION")
    runs, store, _, _, worker = make(publisher=Publisher(fail=refusal), max_attempts=3)
    run, _ = await runs.trigger("rec")
    await worker().run_once()
    assert (await runs.get(run.run_id)).error.reason == "REGISTRY_REFUSED"
    assert (await runs.get(run.run_id)).state is RunState.FAILED

    runs, store, _, _, worker = make(Trainer(fail=ZeroDivisionError("oops" * 1000)))
    run, _ = await runs.trigger("rec")
    await worker().run_once()
    failed = await runs.get(run.run_id)
    assert failed.state is RunState.FAILED and failed.error.reason == "TRAINING_FAILED"
    assert failed.error.message.startswith("ZeroDivisionError") and len(failed.error.message) <= 1000


async def test_a_worker_that_stops_beating_loses_its_run_to_another_and_writes_nothing():
    clock = Clock()
    trainer = Trainer(steps=50)
    trainer.go.clear()
    runs, store, _, publisher, worker = make(trainer, clock=clock, max_attempts=3)
    run, _ = await runs.trigger("rec")
    stalled = worker("w1")
    working = asyncio.create_task(stalled.run_once())
    await trainer.started.wait()
    store.down = True  # w1's heartbeats fail: it is "stalled" as far as the store can tell
    clock.now += timedelta(seconds=11)
    store.down = False
    store.runs[run.run_id].heartbeat_time = clock.now - timedelta(seconds=11)
    [swept] = await runs.sweep()
    assert swept.state is RunState.QUEUED and swept.error.reason == "WORKER_LOST"
    taken = await store.claim("w2", clock.now)  # another worker takes it: attempt 2
    assert taken.attempt == 2
    trainer.go.set()
    await asyncio.wait_for(working, 10)  # w1's next heartbeat finds the run gone: it stops, writes nothing
    after = await runs.get(run.run_id)
    assert after.state is RunState.RUNNING and after.worker_id == "w2" and not publisher.published


async def test_the_sweep_fails_a_lost_run_without_attempts_left_and_ends_a_cancelled_one():
    clock = Clock()
    runs, store, *_ = make(clock=clock, max_attempts=1)
    lost, _ = await runs.trigger("rec")
    cancelled, _ = await runs.trigger("rec")
    await store.claim("w1", clock.now)
    await store.claim("w1", clock.now)
    await runs.cancel(cancelled.run_id)
    clock.now += timedelta(seconds=11)
    swept = {run.run_id: run for run in await runs.sweep()}
    assert swept[lost.run_id].state is RunState.FAILED and swept[lost.run_id].error.reason == "WORKER_LOST"
    assert swept[cancelled.run_id].state is RunState.CANCELLED
    assert await runs.sweep() == []


async def test_a_released_run_is_queued_again_for_another_worker():
    trainer = Trainer(steps=50)
    trainer.go.clear()
    runs, store, _, publisher, worker = make(trainer, max_attempts=3)
    run, _ = await runs.trigger("rec")
    leaving = worker("w1")
    working = asyncio.create_task(leaving.run_once())
    await trainer.started.wait()
    leaving.release()
    trainer.go.set()
    await asyncio.wait_for(working, 10)
    again = await runs.get(run.run_id)
    assert again.state is RunState.QUEUED and again.error.reason == "WORKER_LOST" and not publisher.published


async def test_run_forever_waits_out_a_state_store_outage_and_stops_when_asked():
    runs, store, _, _, worker = make()
    run, _ = await runs.trigger("rec")
    store.down = True
    stopping = asyncio.Event()
    looping = asyncio.create_task(worker().run_forever(stopping))
    await asyncio.sleep(0.05)
    assert store.runs[run.run_id].state is RunState.QUEUED
    store.down = False
    for _ in range(200):
        if store.runs[run.run_id].state is RunState.SUCCEEDED:
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(looping, 5)
    assert store.runs[run.run_id].state is RunState.SUCCEEDED


def test_state_store_unavailable_is_the_ports_error():
    assert StateStoreUnavailable().reason.name == "STATE_STORE_UNAVAILABLE"


async def test_cancelled_run_raises_from_check_cancelled():
    from ml_serving_server.services.pipeline.domain.worker import _Context
    context = _Context()
    context.check_cancelled()
    context.stop("cancel")
    with pytest.raises(RunCancelled):
        context.check_cancelled()
    context.stop("lost")  # the first reason stays
    assert context.why == "cancel"


async def test_a_retryable_failure_of_a_run_cancelled_meanwhile_ends_it_cancelled():
    down = TrainingFailed("REGISTRY_UNAVAILABLE", "down", code="UNAVAILABLE", retryable=True)
    publisher = Publisher(fail=down)
    runs, store, trainer, _, worker = make(publisher=publisher, max_attempts=3)
    run, _ = await runs.trigger("rec")
    original = publisher.publish

    async def cancel_then_fail(r, model):
        await runs.cancel(r.run_id)
        return await original(r, model)

    publisher.publish = cancel_then_fail
    await worker().run_once()
    ended = await runs.get(run.run_id)
    assert ended.state is RunState.CANCELLED and ended.error is None


# ----- training samples -----

async def test_a_succeeded_run_keeps_its_training_samples_bounded_and_finite():
    kept = FakeDistributions()
    runs, store, trainer, publisher, worker = make(distributions=kept)
    trainer.samples = {"v:f": [float(v) for v in range(25_000)], "v:g": [1.0, math.nan, 2.0, math.inf]}
    run, _ = await runs.trigger("rec")
    assert await worker().run_once()
    [(model, version, run_id, samples, at)] = kept.saved
    assert (model, version, run_id, at) == ("rec", "1", run.run_id, T0)
    assert len(samples["v:f"]) == 10_000 and samples["v:f"][:3] == [0.0, 2.0, 5.0]  # evenly, every 2.5th
    assert samples["v:g"] == [1.0, 2.0]
    assert even_sample([3, 1, 2], 10) == [3.0, 1.0, 2.0]

    runs, store, trainer, publisher, worker = make(publisher=Publisher(fail=TrainingFailed("REGISTRY_REFUSED", "no")),
                                                   distributions=(kept := FakeDistributions()))
    trainer.samples = {"v:f": [1.0]}
    await runs.trigger("rec")
    await worker().run_once()
    assert not kept.saved  # a failed run trained nothing that serves


async def test_failing_to_keep_the_samples_leaves_the_run_succeeded(caplog):
    kept = FakeDistributions()
    kept.down = True
    runs, store, trainer, publisher, worker = make(distributions=kept)
    trainer.samples = {"v:f": [1.0, 2.0]}
    run, _ = await runs.trigger("rec")
    with caplog.at_level(logging.WARNING):
        assert await worker().run_once()
    assert (await runs.get(run.run_id)).state is RunState.SUCCEEDED and not kept.saved
    assert "training samples were not kept" in caplog.text
