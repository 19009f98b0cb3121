"""Adaptive allocation over gRPC (and REST through Envoy): a THOMPSON experiment's weights move to
the variant that converts better once every variant has min_exposures users, and not before; every
move is in the experiment's history (ListExperimentChanges) with the figures behind it; results
carry a caveat and no sample-ratio check; bad allocations are refused naming the field.

The router here is a replica of its own (a mesh server with the Registry and the Router, on the
session's MLflow and PostgreSQL) that looks for due experiments every 0.2 s, with a Redis key
prefix of its own: the session mesh's router (and the end-to-end stack's, when started) see these
experiments too, but none of their exposures, so only this replica moves their weights. The
shortest interval is 10 s, so a test that waits for a move takes about that long."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving import RegistryClient, RouterClient, errors
from ml_serving_server.app import build_server
from ml_serving_tools import stack as stack_module

from ...conftest import router_settings_for
from ...registry.conftest import registry_settings_for, unique_name
from ...support import call, test_runtime
from .conftest import experiment

pytestmark = pytest.mark.timeout(60, func_only=True)  # setup starts servers (and the stack) and waits for a move

TICK_S = 0.2
INTERVAL_S = 10  # the shortest the allocation allows
MIN_EXPOSURES = 200
RATES = {"control": 0.10, "treatment": 0.30}
USERS = 320  # per variant


@pytest.fixture(scope="module")
async def allocating_router(dev_keys, redis_url, database_url, key_prefix, mlflow_uri, s3_endpoint,
                            torchserve_endpoints):
    """A mesh server of its own (Registry and Router, on the session's MLflow, PostgreSQL and
    Redis) whose router looks for due adaptive experiments every TICK_S, resolving versions
    through its own Registry."""
    token_file = str(stack_module.service_token_file(dev_keys, subject="router", scopes=stack_module.ROUTER_SCOPES))
    server = await build_server(
        test_runtime(redis_url, f"{key_prefix}-adaptive", keys=dev_keys, database_url=database_url,
                     services=("registry", "router")),
        service_settings={"registry": registry_settings_for(mlflow_uri, s3_endpoint),
                          "router": router_settings_for(torchserve_endpoints, token_file,
                                                        allocation_tick_seconds=TICK_S)})
    yield server
    await server.stop(1.0)


@pytest.fixture(scope="module")
async def module_router(allocating_router, token):
    async with RouterClient(f"127.0.0.1:{allocating_router.port}", token=token) as client:
        yield client


@pytest.fixture
def router(module_router):
    """Calls go to the allocating replica (overrides the package's `router`)."""
    return module_router


async def registered_model(server, token: str, archive: bytes) -> str:
    """A new model with versions 1 (Production) and 2 (Staging), registered only: experiments
    need versions the Registry knows; nothing here predicts."""
    name = unique_name("adaptive")
    async with RegistryClient(f"127.0.0.1:{server.port}", token=token) as registry:
        for _ in range(2):
            await registry.create_model_version(name, artifact=archive, artifact_file_name="model.mar",
                                                create_model_if_missing=True)
        for version in ("1", "2"):
            await registry.transition_stage(name, version, "STAGE_STAGING")
        await registry.transition_stage(name, "1", "STAGE_PRODUCTION")
    return name


@pytest.fixture(scope="module")
async def model(allocating_router, token, echo_archive):
    """The model of the tests below (one running experiment at a time: each stops its own)."""
    return await registered_model(allocating_router, token, echo_archive)


def thompson(*, floor_bps: int = 1000, ceiling_bps: int = 0, interval_s: int = INTERVAL_S,
             min_exposures: int = MIN_EXPOSURES) -> pb.Allocation:
    return pb.Allocation(mode=pb.ALLOCATION_MODE_THOMPSON, floor_bps=floor_bps, ceiling_bps=ceiling_bps,
                         interval=duration_pb2.Duration(seconds=interval_s), min_exposures=min_exposures)


async def expose(router, name: str, variant: str, users: list[str]) -> None:
    response = await router.record_exposures(pb.RecordExposuresRequest(exposures=[
        pb.ExposureRecord(experiment=name, user_id=user, variant=variant) for user in users]))
    assert response.accepted_count == len(users)


async def convert(router, name: str, variant: str, users: list[str], rng: random.Random) -> int:
    """A binary outcome of the primary metric for each user, converting at RATES[variant]; how many did."""
    outcomes = [pb.RecordOutcomeRequest(event_id=f"{name}-{user}", experiment=name, user_id=user, variant=variant,
                                        converted=rng.random() < RATES[variant]) for user in users]
    response = await router.batch_record_outcomes(pb.BatchRecordOutcomesRequest(outcomes=outcomes))
    assert (response.applied_count, response.not_counted_count) == (len(users), 0)
    return sum(o.converted for o in outcomes)


async def wait_for_revision(router, name: str, above: int, deadline_s: float) -> pb.Experiment:
    """The experiment once its revision is above `above`; fails after `deadline_s` seconds."""
    deadline = time.monotonic() + deadline_s
    while True:
        now = (await router.get_experiment(name)).experiment
        if now.revision > above:
            return now
        assert time.monotonic() < deadline, f"the weights did not move within {deadline_s} s: {now}"
        await asyncio.sleep(TICK_S)


def weights(message: pb.Experiment) -> dict[str, int]:
    return {v.name: v.weight_bps for v in message.variants}


def bucket_counts(message: pb.Experiment) -> dict[str, int]:
    return {v.name: sum(r.end - r.start for r in v.buckets) for v in message.variants}


async def changes_of(router, name: str) -> list[pb.ExperimentChange]:
    return [change async for change in router.iter_experiment_changes(name)]


# ----- the weights move to the better variant ------------------------------------------------

@dataclass(frozen=True)
class Reweighted:
    """An adaptive experiment whose weights the allocation moved, with what the test fed it."""

    created: pb.Experiment
    moved: pb.Experiment  # as first seen with a new revision
    converted: dict[str, int]  # users who converted, per variant (of USERS each)
    began: float  # time.time() before it was created
    moved_after_s: float  # from before its creation to the move being seen


@pytest.fixture(scope="module")
async def reweighted(allocating_router, token, echo_archive, module_router) -> Reweighted:
    """Two variants, THOMPSON (floor 1000, interval 10 s, min_exposures 200), USERS users each,
    treatment converting at 30% and control at 10%; waits (at most 30 s) for the weights to move.
    A model of its own: the experiment runs until the module ends (ListExperimentChanges over
    REST reads it too)."""
    router = module_router
    model_name = await registered_model(allocating_router, token, echo_archive)
    began = time.time()
    started = time.monotonic()
    created = (await router.create_experiment(
        pb.Experiment(**experiment(unique_name("thompson"), model_name), allocation=thompson()))).experiment
    try:
        rng = random.Random(20240607)
        converted = {}
        for variant in ("control", "treatment"):
            users = [f"{variant}-{index}" for index in range(USERS)]
            await expose(router, created.name, variant, users)
            converted[variant] = await convert(router, created.name, variant, users, rng)
        fed_after = time.monotonic() - started
        assert fed_after < INTERVAL_S / 2, f"feeding the data took {fed_after:.1f} s: the first look may miss it"
        moved = await wait_for_revision(router, created.name, created.revision, deadline_s=30)
        yield Reweighted(created, moved, converted, began, time.monotonic() - started)
    finally:
        await router.stop_experiment(pb.StopExperimentRequest(name=created.name))


async def test_weights_move_to_the_variant_that_converts_better(router, reweighted):
    created, moved = reweighted.created, reweighted.moved
    assert created.revision == 1 and weights(created) == {"control": 5000, "treatment": 5000}
    assert created.allocation.mode == pb.ALLOCATION_MODE_THOMPSON
    assert not created.allocation.HasField("last_change_time")
    # Not before the interval, and soon after it (a few ticks).
    assert INTERVAL_S - 1 <= reweighted.moved_after_s <= INTERVAL_S + 8, reweighted.moved_after_s

    assert moved.revision == 2 and moved.state == pb.EXPERIMENT_STATE_RUNNING
    assert weights(moved) == {"control": 1000, "treatment": 9000}  # the floor keeps control measured
    assert sum(weights(moved).values()) == 10000 and bucket_counts(moved) == weights(moved)
    assert moved.allocation == pb.Allocation(
        mode=pb.ALLOCATION_MODE_THOMPSON, floor_bps=1000, ceiling_bps=10000,
        interval=duration_pb2.Duration(seconds=INTERVAL_S), min_exposures=MIN_EXPOSURES,
        last_change_time=moved.allocation.last_change_time)
    changed_at = moved.allocation.last_change_time.ToNanoseconds() / 1e9
    assert created.start_time.ToNanoseconds() / 1e9 + INTERVAL_S <= changed_at + 0.5
    assert reweighted.began <= changed_at <= time.time()
    assert moved.salt == created.salt and moved.start_time == created.start_time

    before = {(r.start, r.end) for r in created.variants[1].buckets}
    after = {(r.start, r.end) for r in moved.variants[1].buckets}
    assert {b for s, e in before for b in range(s, e)} <= {b for s, e in after for b in range(s, e)}

    # The replica assigns with the new weights: each user to the variant owning their bucket.
    owner = {b: v.name for v in moved.variants for r in v.buckets for b in range(r.start, r.end)}
    deadline = time.monotonic() + 5
    while True:
        got = [(await router.assign_variant(f"new-{index}", experiment=moved.name, dry_run=True)).assignment
               for index in range(200)]
        if all(a.variant == owner[a.bucket] for a in got) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert all(a.variant == owner[a.bucket] and a.reason == pb.ASSIGNMENT_REASON_EXPERIMENT_BUCKET for a in got)
    assert sum(a.variant == "treatment" for a in got) > 150


async def test_the_history_shows_the_move_with_its_figures(router, reweighted):
    created, moved = reweighted.created, reweighted.moved
    page = await router.list_experiment_changes(created.name)
    assert not page.next_page_token
    assert [(c.revision, c.action) for c in page.changes] == [
        (1, pb.EXPERIMENT_CHANGE_ACTION_CREATED), (2, pb.EXPERIMENT_CHANGE_ACTION_REWEIGHTED)]
    first, change = page.changes
    assert first.actor == "test-suite" and not first.figures and first.experiment_after == created

    assert (change.experiment, change.actor, list(change.fields)) == (created.name, "router", ["variants"])
    assert change.change_time == moved.allocation.last_change_time
    assert change.experiment_after == moved
    assert "control 5000->1000" in change.reason and "treatment 5000->9000" in change.reason
    figures = {f.variant: f for f in change.figures}
    assert [f.variant for f in change.figures] == ["control", "treatment"]  # the experiment's order
    for variant, figure in figures.items():
        assert figure.exposures == USERS
        assert figure.mean == pytest.approx(reweighted.converted[variant] / USERS, abs=1e-9)
        assert abs(figure.mean - RATES[variant]) < 0.06
        assert figure.weight_before_bps == weights(created)[variant]
        assert figure.weight_after_bps == weights(moved)[variant]
    assert figures["treatment"].probability_best > 0.99
    assert figures["control"].probability_best < 0.01
    assert sum(f.probability_best for f in change.figures) == pytest.approx(1.0, abs=1e-9)


async def test_the_results_say_the_weights_moved_and_skip_the_sample_ratio_check(router, reweighted):
    results = await router.get_experiment_results(reweighted.created.name)
    assert list(results.caveats) and all(caveat.strip() for caveat in results.caveats)
    assert not results.HasField("sample_ratio")
    assert {v.variant: v.exposures for v in results.variants} == {"control": USERS, "treatment": USERS}
    assert results.verdict != pb.VERDICT_SAMPLE_RATIO_MISMATCH


async def test_a_fixed_experiment_has_no_caveats_and_keeps_its_sample_ratio_check(router, created, model):
    fixed = await created(experiment(unique_name("fixed"), model))
    assert fixed.allocation.mode == pb.ALLOCATION_MODE_FIXED
    results = await router.get_experiment_results(fixed.name)
    assert list(results.caveats) == [] and results.HasField("sample_ratio")


# ----- nothing moves before every variant has min_exposures users --------------------------

async def test_nothing_moves_until_every_variant_has_min_exposures(router, created, model):
    """The loop goes on looking after it holds (that the weights then move is the unit tests' part:
    one more interval here would cost 10 s of the suite)."""
    started = time.monotonic()
    running = await created(pb.Experiment(**experiment(unique_name("few"), model), allocation=thompson()))
    rng = random.Random(11)
    control = [f"control-{index}" for index in range(MIN_EXPOSURES + 50)]
    treatment = [f"treatment-{index}" for index in range(MIN_EXPOSURES - 50)]
    await expose(router, running.name, "control", control)
    await convert(router, running.name, "control", control, rng)
    await expose(router, running.name, "treatment", treatment)
    await convert(router, running.name, "treatment", treatment, rng)

    # Past the interval by several ticks: one variant is short of users, so the weights stay.
    await asyncio.sleep(max(0.0, INTERVAL_S + 8 * TICK_S - (time.monotonic() - started)))
    now = (await router.get_experiment(running.name)).experiment
    assert now.revision == running.revision and weights(now) == {"control": 5000, "treatment": 5000}
    assert not now.allocation.HasField("last_change_time")
    assert [c.action for c in await changes_of(router, running.name)] == [pb.EXPERIMENT_CHANGE_ACTION_CREATED]


# ----- bad allocations are refused, naming the field ------------------------------------------

def _set(**fields):
    def change(allocation: pb.Allocation) -> None:
        for name, value in fields.items():
            if name == "interval":
                allocation.interval.CopyFrom(value)
            else:
                setattr(allocation, name, value)
    return change


BAD_ALLOCATIONS = [
    (_set(floor_bps=5001), "experiment.allocation.floor_bps"),  # above 10000 / 2 variants
    (_set(floor_bps=-1), "experiment.allocation.floor_bps"),
    (_set(interval=duration_pb2.Duration(seconds=1)), "experiment.allocation.interval"),
    (_set(interval=duration_pb2.Duration(seconds=8 * 86_400)), "experiment.allocation.interval"),
    (_set(ceiling_bps=4999), "experiment.allocation.ceiling_bps"),  # below 10000 / 2 variants
    (_set(floor_bps=3000, ceiling_bps=10001), "experiment.allocation.ceiling_bps"),
    (_set(min_exposures=-5), "experiment.allocation.min_exposures"),
    (_set(mode=7), "experiment.allocation.mode"),  # no such AllocationMode
]
BAD_IDS = ["floor-above-share", "floor-negative", "interval-1s", "interval-8d", "ceiling-below-share",
           "ceiling-above-10000", "min-exposures-negative", "unknown-mode"]


@pytest.mark.parametrize("change, field", BAD_ALLOCATIONS, ids=BAD_IDS)
async def test_bad_allocations_are_refused_naming_the_field_and_create_nothing(router, model, change, field):
    name = unique_name("badalloc")
    body = pb.Experiment(**experiment(name, model), allocation=thompson())
    change(body.allocation)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await router.create_experiment(body)
    assert (caught.value.reason, caught.value.metadata["field"]) == ("INVALID_FIELD", field)
    with pytest.raises(errors.NotFoundError):
        await router.get_experiment(name)  # nothing was stored


async def test_a_bad_allocation_in_an_update_changes_nothing(router, created, model):
    paused = await created(experiment(unique_name("badupd"), model), paused=True)
    body = pb.Experiment(name=paused.name, allocation=thompson(floor_bps=6000))
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await router.update_experiment(pb.UpdateExperimentRequest(
            experiment=body, update_mask=field_mask_pb2.FieldMask(paths=["allocation"])))
    assert caught.value.metadata["field"] == "experiment.allocation.floor_bps"
    assert (await router.get_experiment(paused.name)).experiment == paused
    assert len(await changes_of(router, paused.name)) == 1


# ----- switching to THOMPSON, and the history's pages -----------------------------------------

async def test_an_update_switches_to_thompson_and_the_history_pages_oldest_first(router, created, model):
    fixed = await created(experiment(unique_name("switch"), model))
    assert fixed.allocation.mode == pb.ALLOCATION_MODE_FIXED
    # min_exposures far above the traffic here: the switch alone moves nothing.
    update = pb.Experiment(name=fixed.name, allocation=thompson(floor_bps=500, ceiling_bps=8000,
                                                                  min_exposures=100_000))
    switched = (await router.update_experiment(pb.UpdateExperimentRequest(
        experiment=update, update_mask=field_mask_pb2.FieldMask(paths=["allocation"])))).experiment
    assert switched.revision == 2 and weights(switched) == weights(fixed)
    assert switched.allocation == pb.Allocation(mode=pb.ALLOCATION_MODE_THOMPSON, floor_bps=500, ceiling_bps=8000,
                                                interval=duration_pb2.Duration(seconds=INTERVAL_S),
                                                min_exposures=100_000)
    await router.pause_experiment(pb.PauseExperimentRequest(name=fixed.name, reason="a look"))
    resumed = (await router.resume_experiment(pb.ResumeExperimentRequest(name=fixed.name))).experiment

    pages, token = [], ""
    while True:
        page = await router.list_experiment_changes(fixed.name, page_size=1, page_token=token)
        pages.append(list(page.changes))
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [1, 1, 1, 1]
    trail = [p[0] for p in pages]
    assert [(c.revision, c.action) for c in trail] == [
        (1, pb.EXPERIMENT_CHANGE_ACTION_CREATED), (2, pb.EXPERIMENT_CHANGE_ACTION_UPDATED),
        (3, pb.EXPERIMENT_CHANGE_ACTION_PAUSED), (4, pb.EXPERIMENT_CHANGE_ACTION_RESUMED)]
    assert list(trail[1].fields) == ["allocation"] and trail[1].actor == "test-suite" and not trail[1].figures
    assert trail[1].experiment_after == switched and trail[0].experiment_after == fixed
    assert trail[2].reason == "a look" and trail[3].experiment_after == resumed
    assert trail == await changes_of(router, fixed.name)  # the iterator walks the same pages
    everything = await router.list_experiment_changes(fixed.name, page_size=3)
    assert list(everything.changes) == trail[:3] and everything.next_page_token
    rest = await router.list_experiment_changes(fixed.name, page_token=everything.next_page_token)
    assert list(rest.changes) == trail[3:] and not rest.next_page_token


async def test_changes_of_an_unknown_experiment_are_not_found(router):
    with pytest.raises(errors.NotFoundError) as caught:
        await router.list_experiment_changes(unique_name("nobody"))
    assert caught.value.reason == "EXPERIMENT_NOT_FOUND"


@pytest.mark.parametrize("page_size, page_token, reason, field", [
    (0, "not-a-token", "INVALID_PAGE_TOKEN", "page_token"),
    (0, "-1", "INVALID_PAGE_TOKEN", "page_token"),
    (0, "1" * 21, "INVALID_PAGE_TOKEN", "page_token"),
    (1001, "", "INVALID_FIELD", "page_size"),
    (-1, "", "INVALID_FIELD", "page_size"),
], ids=["garbage-token", "negative-token", "long-token", "page-too-big", "page-negative"])
async def test_bad_paging_is_invalid_argument(router, created, model, page_size, page_token, reason, field):
    paused = await created(experiment(unique_name("paging"), model), paused=True)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await router.list_experiment_changes(paused.name, page_size=page_size, page_token=page_token)
    assert (caught.value.reason, caught.value.metadata["field"]) == (reason, field)


# ----- REST through Envoy ---------------------------------------------------------------------

def test_the_changes_through_rest(stack, reweighted):
    name = reweighted.created.name
    path = f"/api/v1/router/experiments/{name}/changes"
    first = call(stack.front_door, "GET", f"{path}?pageSize=1", token=stack.token)
    assert first.status == 200, first.body
    body = first.json()
    assert [c["action"] for c in body["changes"]] == ["EXPERIMENT_CHANGE_ACTION_CREATED"]
    assert body["changes"][0]["revision"] == "1"  # int64 prints as a JSON string
    second = call(stack.front_door, "GET", f"{path}?pageSize=1&pageToken={body['nextPageToken']}",
                  token=stack.token).json()
    [change] = second["changes"]
    assert (change["action"], change["actor"], change["fields"]) == (
        "EXPERIMENT_CHANGE_ACTION_REWEIGHTED", "router", ["variants"])
    figures = {f["variant"]: f for f in change["figures"]}
    assert figures["treatment"]["probabilityBest"] > 0.99
    assert (figures["treatment"]["weightBeforeBps"], figures["treatment"]["weightAfterBps"]) == (5000, 9000)
    assert figures["control"]["exposures"] == str(USERS)
    assert change["experimentAfter"]["allocation"]["mode"] == "ALLOCATION_MODE_THOMPSON"

    missing = call(stack.front_door, "GET", f"/api/v1/router/experiments/{unique_name('nobody')}/changes",
                   token=stack.token)
    assert missing.status == 404, missing.body
    bad = call(stack.front_door, "GET", f"{path}?pageToken=nope", token=stack.token)
    assert bad.status == 400 and bad.json()["details"][0]["reason"] == "INVALID_PAGE_TOKEN", bad.body
    reader = stack.mint(["router.read"], f"reader-{uuid.uuid4().hex[:6]}")
    assert call(stack.front_door, "GET", path, token=reader).status == 200
    nobody = stack.mint(["registry.read"], "no-router")
    assert call(stack.front_door, "GET", path, token=nobody).status == 403
