"""RouterService's rules over in-memory ports (tests/router/unit/fakes.py): experiments and their
history, assignment, predictions through the assigned version, outcomes and results. No I/O."""

from __future__ import annotations

import asyncio
import math

import pytest

from ml_serving_server.errors import (
    Aborted,
    AlreadyExists,
    CommonReason,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from ml_serving_server.services.inference.domain.errors import ErrorReason as InferenceReason
from ml_serving_server.services.inference.domain.model import PRODUCTION, Selector, SelectorKind
from ml_serving_server.services.router.domain.assignment import AssignmentReason, Variant
from ml_serving_server.services.router.domain.canary import Canary, CanaryEvent, CanaryEventType, Thresholds
from ml_serving_server.services.router.domain.errors import ErrorReason
from ml_serving_server.services.router.domain.model import (
    ChangeAction,
    ExperimentDraft,
    ExperimentState,
    Exposure,
    OutcomeInput,
    OutcomeResult,
    RequestSample,
    RoutedAssignment,
    ShadowConfig,
)
from ml_serving_server.services.router.domain.service import DEFAULT_REASON, RouterService, selector_of
from ml_serving_server.services.router.domain.statistics import (
    ExperimentVerdict,
    MetricKind,
    VariantInput,
    experiment_results,
)

from .fakes import EPOCH, FakeServing, FixedClock, MemoryExperimentStore, MemoryMeasurements

BINARY, NUMERIC = MetricKind.BINARY, MetricKind.NUMERIC
SCOPE = "experiment:exp"


def two_variants(model: str = "fraud", control: str = "1", treatment: str = "2",
                 weights: tuple[int, int] = (5000, 5000)) -> tuple[Variant, ...]:
    return (Variant("control", model, control, weights[0], control=True),
            Variant("treatment", model, treatment, weights[1]))


def draft(name: str = "exp", model: str = "fraud", **fields) -> ExperimentDraft:
    fields.setdefault("variants", two_variants(model))
    fields.setdefault("metrics", (("click", BINARY), ("revenue", NUMERIC)))
    return ExperimentDraft(name=name, **fields)


OVERRIDES = (("u-control", "control"), ("u-treat", "treatment"))


@pytest.fixture
def store():
    return MemoryExperimentStore()


@pytest.fixture
def measurements():
    return MemoryMeasurements()


@pytest.fixture
def serving():
    serving = FakeServing()
    for model in ("fraud", "churn", "ranker"):
        serving.add(model, "1", "PRODUCTION")
        serving.add(model, "2", "STAGING", alias="challenger")
        serving.add(model, "3", "ARCHIVED")
        serving.add(model, "4", "DEVELOPMENT")
    return serving


@pytest.fixture
def clock():
    return FixedClock()


@pytest.fixture
async def service(store, measurements, serving, clock):
    service = RouterService(store, measurements, serving, tally_interval_s=3600, clock=clock,
                            outcome_dedupe_s=600, shadow_draw=lambda: 0.5)
    await service.start()
    yield service
    await service.close()


def nothing_stored(store: MemoryExperimentStore, service: RouterService) -> bool:
    return store.experiments == {} and store.changes == [] and service.catalog.running() == []


async def eventually(check, timeout_s: float = 2.0):
    """Wait (briefly) for something a background task does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for a background task")
        await asyncio.sleep(0.002)


# --- create ----------------------------------------------------------------------------------


async def test_create_fills_in_the_defaults_and_remembers_who(service, store, clock):
    created = await service.create_experiment(draft(), paused=False, actor="alice")
    assert (created.revision, created.created_by, created.state) == (1, "alice", ExperimentState.RUNNING)
    assert created.create_time is not None and created.update_time is not None
    assert created.definition.salt and created.metrics[0].name == "click"
    assert await service.get_experiment("exp") == created
    assert service.catalog.get("exp") == created and service.catalog.running("fraud") == [created]
    [change] = await store.history("exp")
    assert (change.action, change.actor, change.revision, change.time) == (ChangeAction.CREATED, "alice", 1, clock())

    paused = await service.create_experiment(draft("later", model="churn"), paused=True, actor="")
    assert (paused.state, paused.created_by, paused.start_time) == (ExperimentState.PAUSED, "anonymous", None)
    assert service.catalog.running("churn") == []


async def test_an_experiment_created_running_has_started(service, clock):
    created = await service.create_experiment(draft(), paused=False, actor="alice")
    assert created.start_time is not None  # "when it first ran"
    await service.pause_experiment("exp", "", "alice")
    clock.advance(60)
    assert (await service.resume_experiment("exp", "", "alice")).start_time == created.start_time


async def test_an_active_canary_holds_its_model(service, store):
    canary = Canary("c1", "fraud", "1", "2", (1000, 5000), 60.0, 100, Thresholds(0.01), "salt")
    await store.create_canary(canary, CanaryEvent("c1", CanaryEventType.STARTED, EPOCH, 0, 1000, 0))
    with pytest.raises(FailedPrecondition) as caught:
        await service.create_experiment(draft(), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.MODEL_HAS_ACTIVE_CANARY
    await service.create_experiment(draft(), paused=True, actor="a")
    with pytest.raises(FailedPrecondition) as caught:
        await service.resume_experiment("exp", "", "a")
    assert caught.value.reason is ErrorReason.MODEL_HAS_ACTIVE_CANARY
    assert store.experiments["exp"].state is ExperimentState.PAUSED


async def test_one_running_experiment_per_model(service, store):
    await service.create_experiment(draft("first"), paused=False, actor="a")
    with pytest.raises(FailedPrecondition) as caught:
        await service.create_experiment(draft("second"), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.MODEL_HAS_RUNNING_EXPERIMENT
    assert caught.value.metadata == {"model_name": "fraud", "experiment": "first"}
    assert set(store.experiments) == {"first"} and service.catalog.get("second") is None
    # paused, it may wait; resuming it while the first runs is refused the same way
    await service.create_experiment(draft("second"), paused=True, actor="a")
    with pytest.raises(FailedPrecondition) as caught:
        await service.resume_experiment("second", "", "a")
    assert caught.value.reason is ErrorReason.MODEL_HAS_RUNNING_EXPERIMENT
    assert (await service.get_experiment("second")).state is ExperimentState.PAUSED


async def test_names_are_never_reused(service, store):
    await service.create_experiment(draft(), paused=False, actor="a")
    await service.stop_experiment("exp", "done", "", "a")
    with pytest.raises(AlreadyExists) as caught:
        await service.create_experiment(draft(model="churn"), paused=True, actor="a")
    assert caught.value.reason is ErrorReason.EXPERIMENT_ALREADY_EXISTS
    assert caught.value.metadata == {"experiment": "exp"}
    assert store.experiments["exp"].model_name == "fraud"


async def test_variants_must_serve_one_model(service, store, serving):
    mixed = (Variant("control", "fraud", "1", 5000, control=True), Variant("treatment", "churn", "1", 5000))
    with pytest.raises(InvalidArgument) as caught:
        await service.create_experiment(draft(variants=mixed), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.INVALID_VARIANTS and caught.value.field == "experiment.variants"
    assert serving.resolve_calls == [] and nothing_stored(store, service)


@pytest.mark.parametrize("variants, field", [
    (two_variants(treatment="9"), "experiment.variants[1].model_version"),  # VERSION_NOT_FOUND
    (two_variants(control="nope"), "experiment.variants[0].model_version"),  # ALIAS_NOT_FOUND
    (two_variants(model="ghost"), "experiment.variants[0].model_version"),  # MODEL_NOT_FOUND
])
async def test_unknown_versions_are_not_found(service, store, variants, field):
    with pytest.raises(NotFound) as caught:
        await service.create_experiment(draft(variants=variants), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.MODEL_VERSION_NOT_FOUND
    assert caught.value.metadata["field"] == field and caught.value.message.startswith(field)
    assert nothing_stored(store, service)


async def test_an_unknown_shadow_version_is_not_found(service, store):
    with pytest.raises(NotFound) as caught:
        await service.create_experiment(draft(shadow=ShadowConfig("", "9", 100)), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.MODEL_VERSION_NOT_FOUND
    assert caught.value.metadata["field"] == "experiment.shadow.model_version"
    assert nothing_stored(store, service)


async def test_an_archived_version_cannot_serve(service, store):
    with pytest.raises(InvalidArgument) as caught:
        await service.create_experiment(draft(variants=two_variants(treatment="3")), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.INVALID_VARIANTS
    assert caught.value.field == "experiment.variants[1].model_version"
    assert nothing_stored(store, service)


async def test_registry_down_is_unavailable_with_the_routers_reason(service, store, serving):
    serving.registry_down = True
    with pytest.raises(Unavailable) as caught:
        await service.create_experiment(draft(), paused=False, actor="a")
    assert caught.value.reason is ErrorReason.REGISTRY_UNAVAILABLE
    assert nothing_stored(store, service)


@pytest.mark.parametrize("fields, field", [
    ({"metrics": ()}, "experiment.metrics"),
    ({"metrics": (("click", None),)}, "experiment.metrics[0].kind"),
    ({"metrics": (("click", BINARY), ("click", NUMERIC))}, "experiment.metrics[1].name"),
    ({"shadow": ShadowConfig("", "2", 10_001)}, "experiment.shadow.sample_bps"),
    ({"priority": 2_000_000}, "experiment.priority"),
    ({"description": "x" * 1025}, "experiment.description"),
])
async def test_bad_drafts_name_their_field(service, store, fields, field):
    with pytest.raises(InvalidArgument) as caught:
        await service.create_experiment(draft(**fields), paused=False, actor="a")
    assert caught.value.field == field
    assert nothing_stored(store, service)


async def test_list_pages_newest_first(service):
    for name, model in [("a", "fraud"), ("b", "churn"), ("c", "ranker"), ("d", "fraud"), ("e", "churn")]:
        await service.create_experiment(draft(name, model=model), paused=True, actor="x")
    seen, token = [], ""
    while True:
        page, token = await service.list_experiments((), "", 2, token)
        seen += [e.name for e in page]
        if not token:
            break
    assert seen == ["e", "d", "c", "b", "a"]
    page, _ = await service.list_experiments((), "fraud", 0, "")
    assert [e.name for e in page] == ["d", "a"]
    with pytest.raises(InvalidArgument) as caught:
        await service.list_experiments((), "", 2, "not-a-token")
    assert caught.value.reason is ErrorReason.INVALID_PAGE_TOKEN


# --- update ----------------------------------------------------------------------------------


async def test_update_changes_the_masked_fields_only(service, store):
    await service.create_experiment(draft(description="old", priority=1), paused=False, actor="a")
    changed = await service.update_experiment(draft(description="new", priority=9), ["description"], "bob")
    assert (changed.description, changed.priority, changed.revision) == ("new", 1, 2)
    assert service.catalog.get("exp") == changed == store.experiments["exp"]
    last = (await store.history("exp"))[-1]
    assert (last.action, last.actor, last.fields, last.revision) == (ChangeAction.UPDATED, "bob", ("description",), 2)


@pytest.mark.parametrize("paths, reason", [
    ([], CommonReason.INVALID_FIELD),
    (["colour"], CommonReason.INVALID_FIELD),
    (["salt"], ErrorReason.IMMUTABLE_FIELD),
    (["name"], ErrorReason.IMMUTABLE_FIELD),
    (["description", "state"], ErrorReason.IMMUTABLE_FIELD),
    (["revision"], ErrorReason.IMMUTABLE_FIELD),
])
async def test_the_update_mask_is_required_and_checked(service, store, paths, reason):
    await service.create_experiment(draft(), paused=False, actor="a")
    with pytest.raises(InvalidArgument) as caught:
        await service.update_experiment(draft(description="x"), paths, "a")
    assert caught.value.field == "update_mask" and caught.value.reason is reason
    assert store.writes == 1


async def test_a_stale_revision_is_refused(service, store):
    await service.create_experiment(draft(), paused=False, actor="a")
    await service.update_experiment(draft(description="one"), ["description"], "a")
    with pytest.raises(Aborted) as caught:
        await service.update_experiment(draft(description="two", revision=1), ["description"], "a")
    assert caught.value.reason is ErrorReason.REVISION_MISMATCH and caught.value.metadata == {"revision": "2"}
    assert store.experiments["exp"].description == "one"
    assert (await service.update_experiment(draft(description="two", revision=2), ["description"], "a")).revision == 3


async def test_a_concurrent_write_wins_the_compare_and_set(service, store, measurements, serving):
    await service.create_experiment(draft(), paused=False, actor="a")
    other = RouterService(store, measurements, serving, tally_interval_s=3600)  # another replica
    try:
        async def racing_pause():
            await other.pause_experiment("exp", "racing", "other")

        store.before_replace = racing_pause
        with pytest.raises(Aborted) as caught:
            await service.update_experiment(draft(description="mine"), ["description"], "a")
        assert caught.value.reason is ErrorReason.REVISION_MISMATCH
        stored = store.experiments["exp"]
        assert (stored.state, stored.description, stored.revision) == (ExperimentState.PAUSED, "", 2)
    finally:
        await other.close()


async def test_a_ramp_moves_users_only_into_the_raised_variant(service):
    await service.create_experiment(draft(variants=two_variants(weights=(9000, 1000))), paused=False, actor="a")
    users = [f"user-{i}" for i in range(3000)]
    before = {u: (await service.assign(u, None, (), experiment="exp", dry_run=True)).variant for u in users}
    await service.update_experiment(draft(variants=two_variants(weights=(8000, 2000))), ["variants"], "a")
    after = {u: (await service.assign(u, None, (), experiment="exp", dry_run=True)).variant for u in users}
    assert all(after[u] == "treatment" for u in users if before[u] == "treatment")
    moved = [u for u in users if before[u] != after[u]]
    assert moved and all(before[u] == "control" and after[u] == "treatment" for u in moved)
    assert 200 < len(moved) < 400  # about 10% of the users


async def test_a_variant_with_exposures_cannot_be_removed(service, store, measurements):
    three = (Variant("control", "fraud", "1", 4000, control=True), Variant("a", "fraud", "2", 3000),
             Variant("b", "fraud", "challenger", 3000))
    await service.create_experiment(draft(variants=three, overrides=(("u-b", "b"),)), paused=False, actor="x")
    await service.assign("u-b", None, (), experiment="exp")  # pending in the tally: the check flushes it
    two = (Variant("control", "fraud", "1", 5000, control=True), Variant("a", "fraud", "2", 5000))
    with pytest.raises(FailedPrecondition) as caught:
        await service.update_experiment(draft(variants=two), ["variants", "overrides"], "x")
    assert caught.value.reason is ErrorReason.VARIANT_HAS_EXPOSURES and caught.value.metadata == {"variant": "b"}
    assert store.writes == 1 and measurements.exposed[("exp", "b")] == {"u-b"}

    # without exposures it goes (its buckets move to the raised variants)
    def of_churn(variants):
        return tuple(Variant(v.name, "churn", v.model_version, v.weight_bps, v.control) for v in variants)

    await service.create_experiment(draft("other", model="churn", variants=of_churn(three)), paused=False, actor="x")
    changed = await service.update_experiment(draft("other", variants=of_churn(two)), ["variants"], "x")
    assert [v.name for v in changed.definition.variants] == ["control", "a"]
    assert changed.definition.layout.weights() == {"control": 5000, "a": 5000}


async def test_a_stopped_experiment_cannot_be_updated(service, store):
    await service.create_experiment(draft(), paused=False, actor="a")
    await service.stop_experiment("exp", "", "", "a")
    with pytest.raises(FailedPrecondition) as caught:
        await service.update_experiment(draft(description="x"), ["description"], "a")
    assert caught.value.reason is ErrorReason.EXPERIMENT_STOPPED
    assert store.writes == 2


async def test_a_metric_keeps_its_kind(service, store):
    await service.create_experiment(draft(), paused=False, actor="a")
    with pytest.raises(InvalidArgument) as caught:
        await service.update_experiment(draft(metrics=(("click", NUMERIC), ("revenue", NUMERIC))), ["metrics"], "a")
    assert caught.value.reason is ErrorReason.IMMUTABLE_FIELD and caught.value.field == "experiment.metrics[0].kind"
    added = await service.update_experiment(
        draft(metrics=(("click", BINARY), ("revenue", NUMERIC), ("dwell", NUMERIC))), ["metrics"], "a")
    assert [m.name for m in added.metrics] == ["click", "revenue", "dwell"]


async def test_a_metric_cannot_be_removed_so_it_keeps_its_kind(service):
    await service.create_experiment(draft(), paused=False, actor="a")
    with pytest.raises(InvalidArgument) as caught:  # else "click" could come back as a numeric metric
        await service.update_experiment(draft(metrics=(("revenue", NUMERIC),)), ["metrics"], "a")
    assert caught.value.reason is ErrorReason.IMMUTABLE_FIELD and "'click'" in caught.value.message


@pytest.mark.parametrize("variants, field", [
    (two_variants(treatment="4"), "experiment.variants[1].model_version"),  # an existing variant's version
    (two_variants(model="churn"), "experiment.variants[0].model_name"),  # another model
])
async def test_a_variants_model_is_immutable(service, store, variants, field):
    await service.create_experiment(draft(), paused=False, actor="a")
    with pytest.raises(InvalidArgument) as caught:
        await service.update_experiment(draft(variants=variants), ["variants"], "a")
    assert caught.value.reason is ErrorReason.IMMUTABLE_FIELD and caught.value.field == field
    assert store.writes == 1


async def test_new_variants_and_shadows_are_checked_against_the_registry(service, store):
    await service.create_experiment(draft(), paused=False, actor="a")
    grown = two_variants(weights=(4000, 3000)) + (Variant("third", "fraud", "9", 3000),)
    with pytest.raises(NotFound) as caught:
        await service.update_experiment(draft(variants=grown), ["variants"], "a")
    assert caught.value.metadata["field"] == "experiment.variants[2].model_version"
    with pytest.raises(InvalidArgument) as caught:
        await service.update_experiment(draft(shadow=ShadowConfig("", "3", 100)), ["shadow"], "a")
    assert caught.value.field == "experiment.shadow.model_version"
    assert store.writes == 1


async def test_unknown_experiments_are_not_found(service):
    for call in (service.get_experiment("ghost"), service.pause_experiment("ghost", "", "a"),
                 service.update_experiment(draft("ghost"), ["description"], "a"), service.results("ghost", "", 0)):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.reason is ErrorReason.EXPERIMENT_NOT_FOUND


# --- pause, resume, stop -----------------------------------------------------------------------


async def test_pause_resume_and_stop(service, store, clock):
    await service.create_experiment(draft(), paused=True, actor="alice")
    clock.advance(10)
    resumed = await service.resume_experiment("exp", "go", "bob")
    assert (resumed.state, resumed.revision, resumed.start_time) == (ExperimentState.RUNNING, 2, clock())
    assert await service.resume_experiment("exp", "again", "bob") == resumed  # a no-op: nothing written
    clock.advance(10)
    paused = await service.pause_experiment("exp", "incident", "carol")
    assert (paused.state, paused.revision) == (ExperimentState.PAUSED, 3)
    assert await service.pause_experiment("exp", "again", "carol") == paused
    assert service.catalog.running("fraud") == []
    clock.advance(10)
    again = await service.resume_experiment("exp", "fixed", "bob")
    assert again.start_time == resumed.start_time  # when it *first* ran
    clock.advance(10)
    stopped = await service.stop_experiment("exp", "shipped", "treatment", "dave")
    assert (stopped.state, stopped.winning_variant, stopped.stop_time) == (ExperimentState.STOPPED, "treatment",
                                                                           clock())
    assert service.catalog.get("exp") == stopped and service.catalog.running() == []

    history = await store.history("exp")
    assert [(c.action, c.actor, c.reason, c.revision) for c in history] == [
        (ChangeAction.CREATED, "alice", "", 1),
        (ChangeAction.RESUMED, "bob", "go", 2),
        (ChangeAction.PAUSED, "carol", "incident", 3),
        (ChangeAction.RESUMED, "bob", "fixed", 4),
        (ChangeAction.STOPPED, "dave", "shipped", 5),
    ]
    assert (history[-1].after.state, history[-1].after.revision) == (ExperimentState.STOPPED, 5)

    for call in (service.stop_experiment("exp", "", "", "x"), service.pause_experiment("exp", "", "x"),
                 service.resume_experiment("exp", "", "x")):
        with pytest.raises(FailedPrecondition) as caught:
            await call
        assert caught.value.reason is ErrorReason.EXPERIMENT_STOPPED
    assert len(store.changes) == 5


async def test_stop_names_a_known_winner(service, store):
    await service.create_experiment(draft(), paused=False, actor="a")
    with pytest.raises(InvalidArgument) as caught:
        await service.stop_experiment("exp", "", "nobody", "a")
    assert caught.value.reason is ErrorReason.UNKNOWN_VARIANT and caught.value.field == "winning_variant"
    with pytest.raises(InvalidArgument) as caught:
        await service.pause_experiment("exp", "x" * 1025, "a")
    assert caught.value.field == "reason"
    assert store.experiments["exp"].state is ExperimentState.RUNNING and store.writes == 1
    # a paused experiment can be stopped; with no winner named, none is
    await service.pause_experiment("exp", "", "a")
    assert (await service.stop_experiment("exp", "", "", "a")).winning_variant == ""


# --- assign ------------------------------------------------------------------------------------


async def test_assign_in_a_named_experiment_counts_an_exposure_once_flushed(service, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    routed = await service.assign("u-treat", None, (), experiment="exp")
    assert routed == RoutedAssignment("exp", "treatment", "fraud", "2", -1, AssignmentReason.USER_OVERRIDE.value)
    hashed = await service.assign("someone", None, (), experiment="exp")
    assert hashed.reason == AssignmentReason.EXPERIMENT_BUCKET.value and 0 <= hashed.bucket < 10_000
    assert await service.assign("someone", None, (), experiment="exp") == hashed  # sticky
    assert measurements.exposures == []  # not yet written
    await service.tally.flush()
    assert set(measurements.exposures) == {Exposure("exp", "treatment", "u-treat"),
                                           Exposure("exp", hashed.variant, "someone")}


async def test_dry_run_counts_nothing(service, measurements):
    await service.create_experiment(draft(), paused=False, actor="a")
    routed = await service.assign("u1", None, (), experiment="exp", dry_run=True)
    assert routed.experiment == "exp"
    await service.tally.flush()
    assert measurements.exposure_batches == []


async def test_held_out_users_get_control_and_are_counted_apart(service, measurements):
    await service.create_experiment(draft(holdout_bps=10_000), paused=False, actor="a")
    routed = await service.assign("u1", None, (), experiment="exp")
    assert (routed.variant, routed.model_version, routed.reason) == ("control", "1", AssignmentReason.HOLDOUT.value)
    assert routed.bucket >= 0
    await service.tally.flush()
    assert measurements.exposures == [Exposure("exp", Exposure.HOLDOUT, "u1")]


async def test_a_paused_experiment_serves_control_without_exposures(service, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=True, actor="a")
    routed = await service.assign("u-treat", None, (), experiment="exp")
    assert routed == RoutedAssignment("exp", "control", "fraud", "1", -1, 5)
    assert AssignmentReason.EXPERIMENT_INACTIVE.value == 5
    await service.tally.flush()
    assert measurements.exposure_batches == []


async def test_assign_by_model_takes_its_running_experiment(service, serving):
    await service.create_experiment(draft("fraud-exp", model="fraud"), paused=False, actor="a")
    await service.create_experiment(draft("churn-exp", model="churn", priority=100), paused=False, actor="a")
    assert (await service.assign("u1", None, (), model_name="fraud")).experiment == "fraud-exp"
    assert (await service.assign("u1", None, (), model_name="churn")).experiment == "churn-exp"
    # no experiment for the model: its Production version, through the registry
    routed = await service.assign("u1", None, (), model_name="ranker")
    assert routed == RoutedAssignment("", "", "ranker", "1", -1, DEFAULT_REASON)
    assert serving.resolve_calls[-1] == ("ranker", PRODUCTION)


async def test_without_a_model_the_highest_priority_then_oldest_experiment_wins(service):
    await service.create_experiment(draft("low", model="fraud", priority=0), paused=False, actor="a")
    await service.create_experiment(draft("older", model="churn", priority=5), paused=False, actor="a")
    await service.create_experiment(draft("newer", model="ranker", priority=5), paused=False, actor="a")
    assert [e.name for e in service.catalog.running()] == ["older", "newer", "low"]
    assert (await service.assign("u1", None, ())).experiment == "older"
    await service.pause_experiment("older", "", "a")
    assert (await service.assign("u1", None, ())).experiment == "newer"


async def test_an_experiment_that_does_not_target_the_user_passes_to_the_next(service, serving):
    german = {"conditions": [{"attribute": "country", "operator": "EQUALS", "values": ["DE"]}]}
    await service.create_experiment(draft("de-only", model="churn", priority=9, targeting=german), paused=False,
                                    actor="a")
    await service.create_experiment(draft("everyone", model="fraud"), paused=False, actor="a")
    assert (await service.assign("u1", {"country": "DE"}, ())).experiment == "de-only"
    assert (await service.assign("u1", {"country": "US"}, ())).experiment == "everyone"
    # restricted to the model, nothing else applies: its Production version
    routed = await service.assign("u1", {"country": "US"}, (), model_name="churn")
    assert (routed.experiment, routed.model_version, routed.reason) == ("", "1", DEFAULT_REASON)
    # named, the experiment answers itself: control, not targeted
    named = await service.assign("u1", {"country": "US"}, (), experiment="de-only")
    assert (named.variant, named.reason) == ("control", AssignmentReason.NOT_TARGETED.value)


async def test_no_model_and_no_experiment_is_not_found(service, serving):
    with pytest.raises(NotFound) as caught:
        await service.assign("u1", None, ())
    assert caught.value.reason is ErrorReason.NO_MATCHING_EXPERIMENT
    with pytest.raises(NotFound) as caught:
        await service.assign("u1", None, (), experiment="ghost")
    assert caught.value.reason is ErrorReason.EXPERIMENT_NOT_FOUND
    with pytest.raises(NotFound) as caught:
        await service.assign("u1", None, (), model_name="ghost")
    assert caught.value.reason is ErrorReason.MODEL_VERSION_NOT_FOUND
    serving.add("staged", "1", "STAGING")
    with pytest.raises(NotFound) as caught:
        await service.assign("u1", None, (), model_name="staged")
    assert caught.value.reason is ErrorReason.NO_VERSION_IN_STAGE
    serving.registry_down = True
    with pytest.raises(Unavailable) as caught:
        await service.assign("u1", None, (), model_name="ranker")
    assert caught.value.reason is ErrorReason.REGISTRY_UNAVAILABLE


@pytest.mark.parametrize("user_id, field", [("", "user_id"), ("x" * 257, "user_id")])
async def test_assign_checks_the_user(service, user_id, field):
    with pytest.raises(InvalidArgument) as caught:
        await service.assign(user_id, None, (), model_name="fraud")
    assert caught.value.field == field


async def test_another_replicas_experiment_is_found_and_followed(service, store, measurements, serving):
    other = RouterService(store, measurements, serving, tally_interval_s=3600)
    try:
        waits = store.waits
        await other.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
        # named: a miss in the catalog reads the change feed
        assert (await service.assign("u-treat", None, (), experiment="exp")).variant == "treatment"
        await eventually(lambda: _more(store.waits, waits))  # the follow loop woke, and waits again
        await other.pause_experiment("exp", "", "a")
        await eventually(lambda: _state_is(service, "exp", ExperimentState.PAUSED))  # the follow loop
        assert (await service.assign("u-treat", None, (), experiment="exp")).variant == "control"
    finally:
        await other.close()


async def _more(now, before):
    return now > before


async def _state_is(service, name, state):
    experiment = service.catalog.get(name)
    return experiment is not None and experiment.state is state


# --- predict -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version, selector", [
    ("12", Selector(SelectorKind.VERSION, "12")),
    ("Production", Selector(SelectorKind.STAGE, "PRODUCTION")),
    ("staging", Selector(SelectorKind.STAGE, "STAGING")),
    ("DEVELOPMENT", Selector(SelectorKind.STAGE, "DEVELOPMENT")),
    ("Archived", Selector(SelectorKind.STAGE, "ARCHIVED")),
    ("challenger", Selector(SelectorKind.ALIAS, "challenger")),
    ("v2", Selector(SelectorKind.ALIAS, "v2")),
])
def test_selector_of(version, selector):
    assert selector_of(version) == selector


async def test_predict_routes_to_the_assigned_version_and_samples_it(service, serving, measurements):
    variants = two_variants(control="Production", treatment="challenger")
    await service.create_experiment(draft(variants=variants, overrides=OVERRIDES), paused=False, actor="a")
    routed, prediction, shadowed = await service.predict("u-treat", None, (), b"[1]", experiment="exp",
                                                         timeout_s=2.0)
    assert (routed.variant, routed.model_version, shadowed) == ("treatment", "challenger", False)
    assert serving.predict_calls[-1] == ("fraud", Selector(SelectorKind.ALIAS, "challenger"), b"[1]", 2.0)
    assert prediction.output == b'{"echo": [1]}' and prediction.model.version == "2"
    routed, _, _ = await service.predict("u-control", None, (), b"[2]", model_name="fraud")
    assert serving.predict_calls[-1][:2] == ("fraud", Selector(SelectorKind.STAGE, "PRODUCTION"))
    await service.tally.flush()
    assert measurements.samples == [RequestSample(SCOPE, "treatment", 12.5, False),
                                    RequestSample(SCOPE, "control", 12.5, False)]
    assert measurements.exposures == [Exposure("exp", "treatment", "u-treat"), Exposure("exp", "control", "u-control")]


async def test_predict_without_an_experiment_serves_production_unmeasured(service, serving, measurements):
    routed, prediction, shadowed = await service.predict("u1", None, (), b"[1]", model_name="ranker")
    assert (routed.experiment, routed.reason, shadowed) == ("", DEFAULT_REASON, False)
    assert serving.predict_calls[-1][:2] == ("ranker", Selector(SelectorKind.VERSION, "1"))
    await service.tally.flush()
    assert measurements.samples == [] and measurements.exposures == []


async def test_predict_in_a_paused_experiment_samples_nothing(service, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES, shadow=ShadowConfig("", "4", 10_000)), paused=True,
                                    actor="a")
    routed, _, shadowed = await service.predict("u-treat", None, (), b"[1]", experiment="exp")
    assert (routed.variant, shadowed) == ("control", False)
    await service.tally.flush()
    assert measurements.samples == [] and measurements.exposures == []


@pytest.mark.parametrize("failure, kind, reason, sampled", [
    # TorchServe unreachable fails every variant alike: the infrastructure's failure, not the variant's
    (lambda: Unavailable("down", reason=InferenceReason.BACKEND_UNAVAILABLE), Unavailable,
     ErrorReason.BACKEND_UNAVAILABLE, False),
    (lambda: Unavailable("died", reason=InferenceReason.WORKER_DIED), Unavailable, ErrorReason.WORKER_DIED, True),
    (lambda: DeadlineExceeded("slow", reason=InferenceReason.PREDICTION_TIMEOUT), DeadlineExceeded,
     ErrorReason.PREDICTION_TIMEOUT, True),
    (lambda: ResourceExhausted("full", reason=InferenceReason.BACKEND_OVERLOADED), ResourceExhausted,
     ErrorReason.BACKEND_OVERLOADED, True),
    (lambda: Internal("raised", reason=InferenceReason.MODEL_HANDLER_ERROR), Internal,
     ErrorReason.MODEL_HANDLER_ERROR, True),
    (lambda: NotFound("not loaded", reason=InferenceReason.MODEL_NOT_LOADED), NotFound,
     ErrorReason.MODEL_NOT_LOADED, True),
    (lambda: NotFound("not ready", reason=InferenceReason.VERSION_NOT_READY), NotFound,
     ErrorReason.MODEL_NOT_LOADED, True),
    (lambda: InvalidArgument("inputs", "too big", reason=InferenceReason.INPUT_TOO_LARGE), InvalidArgument,
     ErrorReason.INPUT_TOO_LARGE, False),
    (lambda: InvalidArgument("inputs", "an input is required"), InvalidArgument, ErrorReason.INVALID_FIELD, False),
], ids=["backend-unavailable", "worker-died", "timeout", "overloaded", "handler-error", "not-loaded", "not-ready",
        "input-too-large", "invalid-input"])
async def test_predict_failures_get_the_routers_reasons(service, serving, measurements, failure, kind, reason,
                                                        sampled):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    serving.failures[("fraud", "2")] = failure
    with pytest.raises(kind) as caught:
        await service.predict("u-treat", None, (), b"[1]", experiment="exp")
    assert caught.value.reason is reason
    await service.tally.flush()
    assert measurements.samples == ([RequestSample(SCOPE, "treatment", 0.0, True)] if sampled else [])
    assert measurements.exposures == [Exposure("exp", "treatment", "u-treat")]  # assigned all the same


async def test_a_vanished_version_is_model_version_not_found(service, serving):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    del serving.versions[("fraud", "2")]  # deleted from the registry after the experiment was created
    with pytest.raises(NotFound) as caught:
        await service.predict("u-treat", None, (), b"[1]", experiment="exp")
    assert caught.value.reason is ErrorReason.MODEL_VERSION_NOT_FOUND


async def test_a_shadow_gets_a_copy_whose_failure_fails_nothing(service, serving, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES, shadow=ShadowConfig("", "4", 10_000)), paused=False,
                                    actor="a")
    serving.failures[("fraud", "4")] = lambda: Unavailable("down", reason=InferenceReason.BACKEND_UNAVAILABLE)
    routed, prediction, shadowed = await service.predict("u-treat", None, (), b"[7]", experiment="exp")
    assert shadowed and prediction.model.version == "2"

    async def shadow_samples():
        await service.tally.flush()
        return measurements.shadow_samples(SCOPE)

    assert await eventually(shadow_samples) == [RequestSample(SCOPE, "shadow", 0.0, True, shadow=True)]
    assert serving.predict_calls[-1] == ("fraud", Selector(SelectorKind.VERSION, "4"), b"[7]", None)
    assert RequestSample(SCOPE, "treatment", 12.5, False) in measurements.samples  # the served call

    del serving.failures[("fraud", "4")]
    serving.latency_ms = 3.0
    await service.predict("u-control", None, (), b"[8]", experiment="exp")
    await eventually(lambda: _more_than(shadow_samples, 1))
    assert measurements.shadow_samples(SCOPE)[-1] == RequestSample(SCOPE, "shadow", 3.0, False, shadow=True)


async def _more_than(samples, count):
    return len(await samples()) > count


@pytest.mark.parametrize("sample_bps, draw, copied", [(0, 0.0, False), (5000, 0.5, False), (5001, 0.5, True),
                                                      (10_000, 0.9999, True)])
async def test_the_shadow_draw_decides_the_copy(store, measurements, serving, sample_bps, draw, copied):
    service = RouterService(store, measurements, serving, tally_interval_s=3600, shadow_draw=lambda: draw)
    try:
        await service.create_experiment(draft(shadow=ShadowConfig("", "4", sample_bps)), paused=False, actor="a")
        _, _, shadowed = await service.predict("u1", None, (), b"[1]", experiment="exp")
        assert shadowed is copied
        if copied:
            await eventually(lambda: _calls_made(serving, 2))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(serving.predict_calls) == (2 if copied else 1)
    finally:
        await service.close()


async def _calls_made(serving, count):
    return len(serving.predict_calls) >= count


# --- outcomes ----------------------------------------------------------------------------------


def outcome(event_id: str = "e1", user_id: str = "u-treat", **fields) -> OutcomeInput:
    fields.setdefault("experiment", "exp")
    fields.setdefault("converted", True)
    return OutcomeInput(event_id=event_id, user_id=user_id, **fields)


async def test_an_outcome_right_after_its_assignment_counts(service, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    await service.assign("u-treat", None, (), experiment="exp")  # not flushed yet
    assert await service.record_outcomes([outcome()]) == [(OutcomeResult.COUNTED, "treatment")]
    assert measurements.exposure_batches == [[Exposure("exp", "treatment", "u-treat")]]
    assert await service.record_outcomes([outcome()]) == [(OutcomeResult.DUPLICATE, "treatment")]
    assert measurements.dedupe_seconds == [600, 600]
    # a user never exposed to the variant is remembered, not counted
    assert await service.record_outcomes([outcome("e2", "u-control")]) == [(OutcomeResult.NOT_COUNTED, "control")]


async def test_the_batch_is_checked_whole_first(service, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    await service.assign("u-treat", None, (), experiment="exp")
    batch = [outcome("e1"), outcome("e2"), outcome("e3", metric="revenue", converted=None, value=2.0),
             outcome("e4", metric="nope")]
    with pytest.raises(InvalidArgument) as caught:
        await service.record_outcomes(batch)
    assert caught.value.reason is ErrorReason.UNKNOWN_METRIC
    assert caught.value.metadata == {"field": "outcomes[3].metric", "index": "3"}
    assert measurements.outcome_calls == [] and measurements.exposure_batches == []
    assert [r for r, _ in await service.record_outcomes(batch[:3])] == [OutcomeResult.COUNTED,
                                                                         OutcomeResult.COUNTED,
                                                                         OutcomeResult.COUNTED]


@pytest.mark.parametrize("item, field, reason", [
    (outcome(metric="nope"), "metric", ErrorReason.UNKNOWN_METRIC),
    (outcome(converted=None, value=1.0), "value", ErrorReason.OUTCOME_KIND_MISMATCH),  # click is binary
    (outcome(metric="revenue"), "converted", ErrorReason.OUTCOME_KIND_MISMATCH),  # revenue is numeric
    (outcome(variant="nobody"), "variant", ErrorReason.UNKNOWN_VARIANT),
    (outcome(metric="revenue", converted=None, value=math.nan), "value", CommonReason.INVALID_FIELD),
    (outcome(metric="revenue", converted=None, value=math.inf), "value", CommonReason.INVALID_FIELD),
    (outcome(metric="revenue", converted=None, value=2e12), "value", CommonReason.INVALID_FIELD),
    (outcome(converted=None), "outcome", CommonReason.INVALID_FIELD),
    (outcome(event_id=""), "event_id", CommonReason.INVALID_FIELD),
    (outcome(event_id="e" * 129), "event_id", CommonReason.INVALID_FIELD),
    (outcome(user_id=""), "user_id", CommonReason.INVALID_FIELD),
    (outcome(experiment="bad name"), "experiment", CommonReason.INVALID_FIELD),
])
async def test_bad_outcomes_name_their_field(service, measurements, item, field, reason):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    with pytest.raises(InvalidArgument) as caught:
        await service.record_outcomes([item])
    assert (caught.value.field, caught.value.reason, caught.value.metadata["index"]) == (field, reason, "0")
    assert measurements.outcome_calls == []


async def test_outcomes_of_unknown_experiments_and_empty_batches(service):
    with pytest.raises(NotFound) as caught:
        await service.record_outcomes([outcome(experiment="ghost")])
    assert caught.value.reason is ErrorReason.EXPERIMENT_NOT_FOUND and caught.value.metadata["index"] == "0"
    with pytest.raises(InvalidArgument) as caught:
        await service.record_outcomes([])
    assert caught.value.field == "outcomes"


async def test_without_a_variant_the_outcome_follows_the_users_assignment(service, measurements):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    users = ["u-control", "u-treat"] + [f"user-{i}" for i in range(20)]
    assigned = {u: (await service.assign(u, None, (), experiment="exp")).variant for u in users}
    results = await service.record_outcomes([outcome(f"e-{u}", u) for u in users])
    assert [variant for _, variant in results] == [assigned[u] for u in users]
    assert {r for r, _ in results} == {OutcomeResult.COUNTED}
    assert len(set(assigned.values())) == 2
    # naming the variant: taken as named
    assert await service.record_outcomes([outcome("named", "u-treat", variant="control")]) == [
        (OutcomeResult.NOT_COUNTED, "control")]


async def test_held_out_users_and_stopped_experiments_do_not_reach_the_store(service, measurements):
    await service.create_experiment(draft(holdout_bps=10_000), paused=False, actor="a")
    await service.assign("u1", None, (), experiment="exp")
    assert await service.record_outcomes([outcome("e1", "u1")]) == [(OutcomeResult.NOT_COUNTED, "")]
    assert measurements.outcome_calls == []

    await service.create_experiment(draft("done", model="churn", overrides=OVERRIDES), paused=False, actor="a")
    await service.assign("u-treat", None, (), experiment="done")
    await service.stop_experiment("done", "", "", "a")
    assert await service.record_outcomes([outcome("e2", experiment="done")]) == [
        (OutcomeResult.NOT_COUNTED, "treatment")]
    assert measurements.outcome_calls == []

    # mixed with countable ones: each item gets its own answer, in order
    await service.create_experiment(draft("live", model="ranker", overrides=OVERRIDES), paused=False, actor="a")
    await service.assign("u-treat", None, (), experiment="live")
    results = await service.record_outcomes([outcome("e3", experiment="done"), outcome("e4", experiment="live"),
                                             outcome("e5", "u1")])
    assert results == [(OutcomeResult.NOT_COUNTED, "treatment"), (OutcomeResult.COUNTED, "treatment"),
                       (OutcomeResult.NOT_COUNTED, "")]
    assert [[e.event_id for e in call] for call in measurements.outcome_calls] == [["e4"]]


async def test_outcomes_still_count_while_paused(service):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    await service.assign("u-treat", None, (), experiment="exp")
    await service.pause_experiment("exp", "", "a")
    assert await service.record_outcomes([outcome()]) == [(OutcomeResult.COUNTED, "treatment")]


# --- exposures a client assigned itself ---------------------------------------------------------


async def test_record_exposures(service, measurements):
    await service.create_experiment(draft(), paused=False, actor="a")
    await service.create_experiment(draft("resting", model="churn"), paused=True, actor="a")
    accepted, ignored = await service.record_exposures([("exp", "u1", "treatment", False), ("exp", "u2", "", True),
                                                        ("resting", "u3", "control", False)])
    assert (accepted, ignored) == (2, 1)
    await service.tally.flush()
    assert measurements.exposures == [Exposure("exp", "treatment", "u1"), Exposure("exp", Exposure.HOLDOUT, "u2")]


@pytest.mark.parametrize("bad, kind, field, reason", [
    (("exp", "u9", "nobody", False), InvalidArgument, "exposures[2].variant", ErrorReason.UNKNOWN_VARIANT),
    (("exp", "", "control", False), InvalidArgument, "exposures[2].user_id", CommonReason.INVALID_FIELD),
    (("ghost", "u9", "control", False), NotFound, None, ErrorReason.EXPERIMENT_NOT_FOUND),
])
async def test_record_exposures_checks_the_whole_batch_first(service, measurements, bad, kind, field, reason):
    await service.create_experiment(draft(), paused=False, actor="a")
    with pytest.raises(kind) as caught:
        await service.record_exposures([("exp", "u1", "control", False), ("exp", "u2", "treatment", False), bad])
    assert caught.value.reason is reason and caught.value.metadata["index"] == "2"
    if field:
        assert caught.value.metadata["field"] == field
    await service.tally.flush()
    assert measurements.exposure_batches == []
    with pytest.raises(InvalidArgument):
        await service.record_exposures([])


# --- results -----------------------------------------------------------------------------------


async def test_results_are_made_of_the_measured_counts(service, measurements):
    await service.create_experiment(draft(holdout_bps=500), paused=False, actor="a")
    users = [f"user-{i}" for i in range(600)]
    assigned = {u: await service.assign(u, None, (), experiment="exp") for u in users}
    exposed = [u for u in users if assigned[u].reason == AssignmentReason.EXPERIMENT_BUCKET.value]
    converting = exposed[::3]
    await service.record_outcomes([outcome(f"c-{u}", u) for u in converting])
    await service.record_outcomes([outcome(f"r-{u}", u, metric="revenue", converted=None, value=float(len(u)))
                                   for u in exposed[::2]])
    await service.predict(exposed[0], None, (), b"[1]", experiment="exp")  # pending in the tally

    view = await service.results("exp", "", 0)  # "": the primary metric; 0: the default level
    assert view.metric.name == "click" and view.results.confidence_level == 0.95
    assert view.results.verdict is not ExperimentVerdict.NOT_ENOUGH_DATA
    counts, events, holdout = await measurements.counts("exp", ["control", "treatment"], "click", BINARY)
    assert [row.counts for row in view.results.variants] == [counts["control"], counts["treatment"]]
    assert sum(c.n for c in counts.values()) == len(exposed)
    assert sum(c.successes for c in counts.values()) == len(converting)
    assert view.holdout_exposures == holdout == len(users) - len(exposed) > 0
    assert view.outcome_events == events
    expected = experiment_results(BINARY, [VariantInput("control", 5000, counts["control"], True),
                                           VariantInput("treatment", 5000, counts["treatment"])])
    assert (view.results.verdict, view.results.winning_variant) == (expected.verdict, expected.winning_variant)
    assert [r.estimate.value for r in view.results.variants] == [r.estimate.value for r in expected.variants]
    assert view.requests[assigned[exposed[0]].variant].request_count == 1  # flushed before counting

    numeric = await service.results("exp", "revenue", 0.9)
    assert numeric.results.kind is NUMERIC and numeric.results.confidence_level == 0.9
    revenue, _, _ = await measurements.counts("exp", ["control", "treatment"], "revenue", NUMERIC)
    assert [row.counts for row in numeric.results.variants] == [revenue["control"], revenue["treatment"]]


async def test_results_need_enough_data_a_known_metric_and_a_valid_level(service):
    await service.create_experiment(draft(overrides=OVERRIDES), paused=False, actor="a")
    for user in ("u-control", "u-treat"):
        await service.assign(user, None, (), experiment="exp")
    view = await service.results("exp", "click", 0)
    assert view.results.verdict is ExperimentVerdict.NOT_ENOUGH_DATA
    assert [row.counts.n for row in view.results.variants] == [1, 1]
    with pytest.raises(InvalidArgument) as caught:
        await service.results("exp", "nope", 0)
    assert caught.value.reason is ErrorReason.UNKNOWN_METRIC and caught.value.field == "metric"
    for level in (1.0, -0.5, 1.5):
        with pytest.raises(InvalidArgument) as caught:
            await service.results("exp", "", level)
        assert caught.value.field == "confidence_level"
    # a stopped experiment's results stay readable
    await service.stop_experiment("exp", "", "", "a")
    assert (await service.results("exp", "", 0)).experiment.state is ExperimentState.STOPPED
