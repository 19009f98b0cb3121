"""The deployer's rules over in-memory ports: Staging and Production serve, anything else is
unloaded after the grace period, drift is repaired by the reconcile, the cursor is kept. No I/O."""

from __future__ import annotations

import asyncio

from ml_serving_server.services.inference.domain.deployer import Deployer, StageEvent
from ml_serving_server.services.inference.domain.model import LoadSpec, ResolvedVersion
from ml_serving_server.services.inference.domain.service import InferenceService

from .test_service import Backend, Resolver


class Feed:
    def __init__(self, serving=(), sequence=10):
        self.serving = set(serving)
        self.sequence = sequence

    async def serving_versions(self):
        return set(self.serving), self.sequence

    async def events(self, after):
        if False:
            yield []


class Cursor:
    def __init__(self, value=None):
        self.value = value

    async def load(self):
        return self.value

    async def save(self, sequence):
        self.value = sequence


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def deployer(serving=(), hand_loaded=()):
    resolver, backend = Resolver(), Backend()
    for model, version in {*serving, *hand_loaded}:
        resolver.versions[(model, version)] = ResolvedVersion(model, version, "STAGING", f"s3://b/{model}/{version}.mar")
    for model, version in hand_loaded:
        backend.registered[f"{model}-v{version}"] = dict(url="u", initial_workers=1, batch_size=1,
                                                         max_batch_delay_ms=5, response_timeout_s=120)
    service = InferenceService(backend, resolver, max_input_bytes=64)
    clock = Clock()
    return Deployer(service, Feed(serving), Cursor(), grace_s=30, load_spec=LoadSpec(batch_size=4),
                    clock=clock), backend, clock


def run(coro):
    return asyncio.run(coro)


def test_reconcile_loads_what_should_serve_and_unloads_the_rest_after_the_grace_period():
    d, backend, clock = deployer(serving={("fraud", "2"), ("churn", "1")}, hand_loaded={("fraud", "1")})
    run(d.reconcile())
    assert set(backend.registered) == {"fraud-v1", "fraud-v2", "churn-v1"}  # fraud 1 still in its grace period
    assert backend.registered["fraud-v2"]["batch_size"] == 4
    clock.now += 31
    run(d.reconcile())
    assert set(backend.registered) == {"fraud-v2", "churn-v1"}


def test_models_not_named_by_the_mesh_are_left_alone():
    d, backend, clock = deployer()
    backend.registered["someone-elses-model"] = dict(url="u", initial_workers=1, batch_size=1,
                                                     max_batch_delay_ms=5, response_timeout_s=120)
    clock.now += 100
    run(d.reconcile())
    run(d.reconcile())
    assert "someone-elses-model" in backend.registered


def test_reconcile_restores_what_a_model_server_restart_lost():
    d, backend, _ = deployer(serving={("fraud", "2")})
    run(d.reconcile())
    backend.registered.clear()  # TorchServe restarted
    run(d.reconcile())
    assert set(backend.registered) == {"fraud-v2"}


def test_events_load_promotions_and_retire_what_leaves_serving_stages():
    d, backend, clock = deployer(hand_loaded=set())
    d.service.resolver.versions[("fraud", "3")] = ResolvedVersion("fraud", "3", "STAGING", "s3://b/f3.mar")
    run(d.apply(StageEvent(11, "STAGE_CHANGED", "fraud", "3", "STAGING")))
    assert "fraud-v3" in backend.registered
    run(d.apply(StageEvent(12, "STAGE_CHANGED", "fraud", "3", "ARCHIVED")))
    run(d.unload_expired())
    assert "fraud-v3" in backend.registered  # the grace period
    clock.now += 30
    run(d.unload_expired())
    assert "fraud-v3" not in backend.registered


def test_a_version_back_in_a_serving_stage_within_its_grace_period_is_kept():
    d, backend, clock = deployer(serving={("fraud", "2")})
    run(d.reconcile())
    run(d.apply(StageEvent(11, "STAGE_CHANGED", "fraud", "2", "ARCHIVED")))
    run(d.apply(StageEvent(12, "STAGE_CHANGED", "fraud", "2", "PRODUCTION")))
    clock.now += 60
    run(d.unload_expired())
    assert "fraud-v2" in backend.registered


def test_model_deletion_retires_all_its_versions():
    d, backend, clock = deployer(serving={("fraud", "1"), ("fraud", "2"), ("churn", "1")})
    run(d.reconcile())
    run(d.apply(StageEvent(11, "MODEL_DELETED", "fraud")))
    clock.now += 30
    run(d.unload_expired())
    assert set(backend.registered) == {"churn-v1"}


def test_the_cursor_follows_the_applied_events():
    d, backend, _ = deployer()

    class Stream(Feed):
        async def events(self, after):
            self.after = after
            yield [StageEvent(after + 1, "MODEL_CREATED", "x"), StageEvent(after + 2, "MODEL_DELETED", "y")]
            raise asyncio.CancelledError

    d.feed = Stream()
    d.cursor = Cursor(40)
    d.sequence = 40
    try:
        run(d._follow())
    except asyncio.CancelledError:
        pass
    assert d.feed.after == 40 and d.cursor.value == 42


def test_between_refreshes_the_reconcile_compares_with_the_events_view_only():
    d, backend, clock = deployer(serving={("fraud", "2")})

    class CountingFeed(Feed):
        reads = 0

        async def serving_versions(self):
            CountingFeed.reads += 1
            return await super().serving_versions()

    d.feed = CountingFeed({("fraud", "2")})
    run(d.reconcile())
    backend.registered.clear()  # TorchServe restarted
    run(d.reconcile(refresh=False))
    assert set(backend.registered) == {"fraud-v2"} and CountingFeed.reads == 1
