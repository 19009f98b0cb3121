"""Experiment definitions and sticky assignment: pure functions, no I/O."""

from __future__ import annotations

import hashlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ml_serving_server.errors import CommonReason, InvalidArgument
from ml_serving_server.services.router.domain.assignment import (
    BUCKETS,
    MAX_OVERRIDES,
    MAX_VARIANTS,
    Assignment,
    AssignmentReason,
    BucketLayout,
    Variant,
    assign,
    check_user_id,
    define_experiment,
    generate_salt,
    hash_user,
    updated,
)
from ml_serving_server.services.router.domain.errors import ErrorReason

USERS = [f"user-{i}" for i in range(100_000)]
ALPHA = 0.001  # the chi-square tests' significance level: a correct split fails 1 run in 1000 (deterministic here)


def variants(*weights: int, control: int = 0) -> list[Variant]:
    names = ["control"] + [f"treatment{i}" for i in range(1, len(weights))]
    return [Variant(name, "fraud", str(i + 1), weight, control=(i == control)) for i, (name, weight)
            in enumerate(zip(names, weights))]


def experiment(*weights: int, **options):
    options.setdefault("salt", "salt-1")
    return define_experiment("exp-1", variants(*weights), **options)


def spec_hash(salt: str, user_id: str) -> tuple[int, int]:
    """The module doc's hashing spec, written out again: what another client must compute."""
    digest = hashlib.blake2b(b"mlserving.router.v1\x00" + salt.encode("utf-8") + b"\x00" + user_id.encode("utf-8"),
                             digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") % 10000, int.from_bytes(digest[8:], "big") % 10000


# --- hashing -------------------------------------------------------------------------------


def test_hashing_follows_the_written_spec_and_is_pinned():
    # Pinned values: changing the scheme reshuffles every running experiment, so it must not happen by accident.
    assert hash_user("salt-1", "user123") == (9139, 5912)
    assert hash_user("0f3a", "alice") == (4773, 7545)
    assert hash_user("exp.salt", "ü-ser") == (6672, 3194)
    for user in USERS[:5000]:
        assert hash_user("salt-1", user) == spec_hash("salt-1", user)


def test_assignment_is_deterministic_across_definitions_built_apart():
    first, second = experiment(5000, 3000, 2000), experiment(5000, 3000, 2000)
    assert first.assigner is not second.assigner
    for user in USERS[:20_000]:
        one, two = assign(first, user), assign(second, user)
        assert one == two
        assert one.bucket == hash_user("salt-1", user)[0]
        assert assign(first, user) is one  # precomputed answers: no allocation per call


def test_the_salt_decides_the_split():
    a, b = experiment(5000, 5000, salt="salt-a"), experiment(5000, 5000, salt="salt-b")
    same = sum(assign(a, u).variant_name == assign(b, u).variant_name for u in USERS[:20_000])
    # Independent salts agree on about half of the users (a 50/50 split), not on all.
    assert 9_500 < same < 10_500


def test_chi_square_accepts_the_configured_split_over_100000_users():
    weights = (5000, 3000, 1500, 500)
    definition = experiment(*weights)
    counts = Counter(assign(definition, user).variant_name for user in USERS)
    observed = [counts[v.name] for v in definition.variants]
    expected = [len(USERS) * w / BUCKETS for w in weights]
    assert sum(observed) == len(USERS)
    assert stats.chisquare(observed, expected).pvalue > ALPHA


def test_buckets_are_uniform_over_100000_users():
    counts = Counter(hash_user("salt-1", user)[0] for user in USERS)
    observed = [counts[b] for b in range(BUCKETS)]
    assert stats.chisquare(observed).pvalue > ALPHA


def test_users_get_the_owner_of_their_bucket():
    definition = experiment(2500, 2500, 5000)
    owners = definition.layout.owner_table([v.name for v in definition.variants])
    for user in USERS[:5000]:
        result = assign(definition, user)
        assert result.reason is AssignmentReason.EXPERIMENT_BUCKET and result.is_exposure
        assert result.variant is definition.variants[owners[result.bucket]]
        assert (result.model_name, result.model_version) == ("fraud", result.variant.model_version)


def test_a_zero_weight_variant_gets_nobody():
    definition = experiment(0, 10000)
    assert {assign(definition, user).variant_name for user in USERS[:5000]} == {"treatment1"}


# --- holdout -------------------------------------------------------------------------------


def test_holdout_takes_its_share_and_gives_control():
    definition = experiment(5000, 5000, holdout_bps=1000)
    held = [assign(definition, user) for user in USERS]
    held = [a for a in held if a.reason is AssignmentReason.HOLDOUT]
    assert stats.binomtest(len(held), len(USERS), 0.1).pvalue > ALPHA
    assert all(a.variant.control and not a.is_exposure and 0 <= a.bucket < BUCKETS for a in held)


def test_holdout_is_independent_of_the_variant_buckets():
    plain = experiment(7000, 3000)
    held = experiment(7000, 3000, holdout_bps=2000)
    table = Counter()
    for user in USERS:
        in_holdout = assign(held, user).reason is AssignmentReason.HOLDOUT
        table[in_holdout, assign(plain, user).variant_name] += 1
        if not in_holdout:  # the others keep the variant they would have without a holdout
            assert assign(held, user) == assign(plain, user)
    contingency = [[table[h, v] for v in ("control", "treatment1")] for h in (False, True)]
    assert stats.chi2_contingency(contingency).pvalue > ALPHA
    # Among users not held out, the split is still the configured one.
    kept = contingency[0]
    assert stats.chisquare(kept, [sum(kept) * 0.7, sum(kept) * 0.3]).pvalue > ALPHA


def test_raising_the_holdout_only_moves_users_into_it():
    small, large = experiment(5000, 5000, holdout_bps=500), experiment(5000, 5000, holdout_bps=1500)
    moved = 0
    for user in USERS[:30_000]:
        before, after = assign(small, user), assign(large, user)
        if before.reason is AssignmentReason.HOLDOUT:
            assert after == before
        elif after != before:
            assert after.reason is AssignmentReason.HOLDOUT
            moved += 1
    assert stats.binomtest(moved, 30_000, 0.1).pvalue > ALPHA


@pytest.mark.parametrize("holdout, share", [(0, 0.0), (10000, 1.0)])
def test_holdout_extremes(holdout, share):
    definition = experiment(5000, 5000, holdout_bps=holdout)
    held = sum(assign(definition, u).reason is AssignmentReason.HOLDOUT for u in USERS[:2000])
    assert held == 2000 * share


# --- overrides, targeting, inactive ----------------------------------------------------------


def test_overrides_win_over_targeting_holdout_and_hashing():
    definition = experiment(10000, 0, holdout_bps=10000, overrides={"vip": "treatment1"},
                            targeting={"include_segments": ["premium"]})
    pinned = assign(definition, "vip")
    assert pinned == Assignment(definition.variants[1], AssignmentReason.USER_OVERRIDE, -1)
    assert pinned.is_exposure
    assert assign(definition, "vip", segments=["premium"]) == pinned
    other = assign(definition, "someone", segments=["premium"])
    assert other.reason is AssignmentReason.HOLDOUT


def test_overrides_leave_other_users_alone():
    plain = experiment(5000, 5000)
    pinned = experiment(5000, 5000, overrides=[(USERS[0], "treatment1"), (USERS[1], "control")])
    assert [assign(pinned, u).variant_name for u in USERS[:2]] == ["treatment1", "control"]
    assert all(assign(pinned, u) == assign(plain, u) for u in USERS[2:5000])


def test_users_outside_the_targeting_get_control_unhashed():
    definition = experiment(0, 10000, targeting={"include_segments": ["premium"]})
    assert assign(definition, "u1", segments=["premium"]).variant_name == "treatment1"
    out = assign(definition, "u1", segments=["free"])
    assert out == Assignment(definition.control, AssignmentReason.NOT_TARGETED, -1)
    assert not out.is_exposure
    assert assign(definition, "u1").reason is AssignmentReason.NOT_TARGETED  # no segments at all


def test_the_seed_context_targets_premium_users():
    definition = experiment(0, 10000, targeting={"include_segments": ["premium"],
                                                 "conditions": [{"attribute": "country", "operator": "IN",
                                                                 "values": ["DE", "FR"]}]})
    context = {"user_segments": ["premium"], "country": "DE"}  # as the client splits the seed's context
    assert assign(definition, "user123", context, context["user_segments"]).variant_name == "treatment1"
    assert assign(definition, "user123", {"country": "US"}, ["premium"]).reason is AssignmentReason.NOT_TARGETED


def test_an_inactive_experiment_gives_everyone_control():
    definition = experiment(0, 10000, overrides={"vip": "treatment1"})
    for user in ("vip", "u1", "u2"):
        result = assign(definition, user, active=False)
        assert result == Assignment(definition.control, AssignmentReason.EXPERIMENT_INACTIVE, -1)


# --- definitions and their checks ------------------------------------------------------------


def test_a_definition_is_frozen_and_compiles_once():
    definition = experiment(5000, 5000)
    with pytest.raises(FrozenInstanceError):
        definition.salt = "other"  # type: ignore[misc]
    assert definition.assigner is definition.assigner
    assert definition.control.name == "control" and definition.variant("nope") is None
    assert definition.layout == BucketLayout.initial({"control": 5000, "treatment1": 5000})


def test_an_empty_salt_is_generated():
    one, two = experiment(5000, 5000, salt=""), experiment(5000, 5000, salt="")
    assert one.salt != two.salt and len(one.salt) == 32
    assert generate_salt() != generate_salt()


@contextmanager
def raises(field: str, reason=CommonReason.INVALID_FIELD):
    """InvalidArgument naming `field`, with `reason` (compared by name: the wire's reason)."""
    with pytest.raises(InvalidArgument) as info:
        yield info
    assert info.value.field == field, info.value.message
    assert info.value.reason.name == reason.name, info.value.message


@pytest.mark.parametrize("weights, field", [
    ((5000, 4000), "experiment.variants"),
    ((5000, 5001), "experiment.variants"),
    ((10001, -1), "experiment.variants[0].weight_bps"),
    ((5000, -5000, 10000), "experiment.variants[1].weight_bps"),
])
def test_weights_must_add_up_to_10000(weights, field):
    with raises(field, ErrorReason.INVALID_WEIGHTS):
        experiment(*weights)


@pytest.mark.parametrize("weight", [True, 50.0, "5000", None])
def test_weights_are_whole_numbers(weight):
    with raises("experiment.variants[1].weight_bps", ErrorReason.INVALID_WEIGHTS):
        define_experiment("e", [Variant("a", "m", "1", 5000, True), Variant("b", "m", "2", weight)])


@pytest.mark.parametrize("build, field, reason", [
    (lambda: [Variant("a", "m", "1", 10000, True)], "experiment.variants", ErrorReason.INVALID_VARIANTS),
    (lambda: [], "experiment.variants", ErrorReason.INVALID_VARIANTS),
    (lambda: [Variant(f"v{i}", "m", "1", 0, i == 0) for i in range(MAX_VARIANTS)] + [Variant("x", "m", "1", 10000)],
     "experiment.variants", ErrorReason.INVALID_VARIANTS),
    (lambda: [Variant("a", "m", "1", 5000), Variant("b", "m", "2", 5000)], "experiment.variants",
     ErrorReason.INVALID_VARIANTS),
    (lambda: [Variant("a", "m", "1", 5000, True), Variant("b", "m", "2", 5000, True)], "experiment.variants",
     ErrorReason.INVALID_VARIANTS),
    (lambda: [Variant("a", "m", "1", 5000, True), Variant("a", "m", "2", 5000)], "experiment.variants[1]",
     ErrorReason.INVALID_VARIANTS),
    (lambda: [Variant("a b", "m", "1", 5000, True), Variant("b", "m", "2", 5000)], "experiment.variants[0].name",
     CommonReason.INVALID_FIELD),
    (lambda: [Variant("a", "m", "1", 5000, True), Variant("b" * 65, "m", "2", 5000)],
     "experiment.variants[1].name", CommonReason.INVALID_FIELD),
    (lambda: [Variant("a", "", "1", 5000, True), Variant("b", "m", "2", 5000)], "experiment.variants[0].model_name",
     CommonReason.INVALID_FIELD),
    (lambda: [Variant("a", "m", "1", 5000, True), Variant("b", "m", "", 5000)],
     "experiment.variants[1].model_version", CommonReason.INVALID_FIELD),
    (lambda: [Variant("a", "m", "1", 5000, True), Variant("b", "m", "v" * 257, 5000)],
     "experiment.variants[1].model_version", CommonReason.INVALID_FIELD),
    (lambda: [Variant("a", "m", "1", 5000, True), Variant("b", "m", "2", 5000, description="d" * 1025)],
     "experiment.variants[1].description", CommonReason.INVALID_FIELD),
])
def test_variants_are_checked(build, field, reason):
    with raises(field, reason):
        define_experiment("e", build())


def test_a_variant_may_name_an_alias():
    definition = define_experiment("e", [Variant("a", "m", "production", 5000, True), Variant("b", "m", "@champion",
                                                                                              5000)])
    assert {v.model_version for v in definition.variants} == {"production", "@champion"}


@pytest.mark.parametrize("options, field, reason", [
    ({"overrides": {"u": "nope"}}, "experiment.overrides[0].variant", ErrorReason.UNKNOWN_VARIANT),
    ({"overrides": [("u", "control"), ("u", "treatment1")]}, "experiment.overrides[1].user_id",
     CommonReason.INVALID_FIELD),
    ({"overrides": {"": "control"}}, "experiment.overrides[0].user_id", CommonReason.INVALID_FIELD),
    ({"overrides": {"u" * 257: "control"}}, "experiment.overrides[0].user_id", CommonReason.INVALID_FIELD),
    ({"overrides": {f"u{i}": "control" for i in range(MAX_OVERRIDES + 1)}}, "experiment.overrides",
     CommonReason.INVALID_FIELD),
    ({"holdout_bps": -1}, "experiment.holdout_bps", CommonReason.INVALID_FIELD),
    ({"holdout_bps": 10001}, "experiment.holdout_bps", CommonReason.INVALID_FIELD),
    ({"holdout_bps": 1.5}, "experiment.holdout_bps", CommonReason.INVALID_FIELD),
    ({"salt": "has space"}, "experiment.salt", CommonReason.INVALID_FIELD),
    ({"salt": "s" * 129}, "experiment.salt", CommonReason.INVALID_FIELD),
    ({"salt": "nul\x00"}, "experiment.salt", CommonReason.INVALID_FIELD),
    ({"targeting": {"include_segments": [""]}}, "experiment.targeting.include_segments[0]",
     ErrorReason.INVALID_TARGETING),
    ({"layout": BucketLayout.initial({"control": 4000, "treatment1": 6000})}, "experiment.layout",
     ErrorReason.INVALID_WEIGHTS),
    ({"layout": BucketLayout.initial({"control": 5000, "other": 5000})}, "experiment.layout",
     ErrorReason.INVALID_WEIGHTS),
    ({"layout": BucketLayout((("control", ((0, 5000),)), ("treatment1", ((4000, 9000),))))},
     "experiment.layout.treatment1[0]", CommonReason.INVALID_FIELD),
])
def test_other_fields_are_checked(options, field, reason):
    with raises(field, reason):
        experiment(5000, 5000, **options)


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "slash/name"])
def test_experiment_names_are_checked(name):
    with raises("experiment.name"):
        define_experiment(name, variants(5000, 5000))


@pytest.mark.parametrize("user_id", ["", "u" * 257, "bad\ud800surrogate", 7])
def test_user_ids_are_checked(user_id):
    with raises("user_id"):
        check_user_id(user_id)
    assert check_user_id("u" * 256) == "u" * 256


def test_a_stored_layout_is_kept():
    layout = BucketLayout((("control", ((5000, 10000),)), ("treatment1", ((0, 5000),))))
    definition = experiment(5000, 5000, layout=layout)
    assert definition.layout == layout
    user = next(u for u in USERS if hash_user("salt-1", u)[0] < 5000)
    assert assign(definition, user).variant_name == "treatment1"


# --- updates ---------------------------------------------------------------------------------


def test_updating_weights_reweights_the_layout_and_keeps_the_salt():
    before = experiment(9000, 1000)
    after = updated(before, variants=variants(8000, 2000))
    assert after.salt == before.salt and after.name == before.name
    assert after.layout.weights() == {"control": 8000, "treatment1": 2000}
    assert before.layout.buckets_of("treatment1") < after.layout.buckets_of("treatment1")
    for user in USERS[:20_000]:
        old, new = assign(before, user).variant_name, assign(after, user).variant_name
        assert old == new or (old, new) == ("control", "treatment1")


def test_updating_other_fields_keeps_the_layout():
    before = updated(experiment(9000, 1000), variants=variants(8000, 2000))
    after = updated(before, holdout_bps=100, overrides={"vip": "control"}, targeting={"exclude_segments": ["bots"]})
    assert after.layout == before.layout
    assert (after.holdout_bps, after.overrides) == (100, (("vip", "control"),))
    assert not after.targeting.matches({}, ["bots"])
    assert updated(after, targeting=None).targeting.is_empty


def test_a_variant_keeps_its_model_version():
    changed = variants(5000, 5000)
    changed[1] = Variant("treatment1", "fraud", "99", 5000)
    with raises("experiment.variants[1].model_version", ErrorReason.IMMUTABLE_FIELD):
        updated(experiment(5000, 5000), variants=changed)


def test_variants_can_be_added_and_removed():
    before = experiment(5000, 5000)
    added = updated(before, variants=variants(4000, 4000, 2000))
    assert added.layout.buckets_of("control") <= before.layout.buckets_of("control")
    assert added.layout.buckets_of("treatment1") <= before.layout.buckets_of("treatment1")
    removed = updated(added, variants=[Variant("control", "fraud", "1", 5000, control=True),
                                       Variant("treatment2", "fraud", "3", 5000)])
    assert removed.layout.weights() == {"control": 5000, "treatment2": 5000}
    assert removed.layout.buckets_of("treatment2") >= added.layout.buckets_of("treatment2")
    assert removed.layout.buckets_of("control") >= added.layout.buckets_of("control")


def test_an_override_of_a_removed_variant_is_refused():
    before = experiment(4000, 3000, 3000, overrides={"vip": "treatment2"})
    with raises("experiment.overrides[0].variant", ErrorReason.UNKNOWN_VARIANT):
        updated(before, variants=variants(5000, 5000))


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(user_id=st.text(min_size=1, max_size=256),
       salt=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
       holdout=st.integers(0, 10000))
def test_assignment_matches_the_spec_for_any_user(user_id, salt, holdout):
    try:
        user_id.encode()
    except UnicodeEncodeError:
        return  # not a valid user id (check_user_id refuses it)
    definition = experiment(3000, 7000, salt=salt, holdout_bps=holdout)
    bucket, draw = spec_hash(salt, user_id)
    result = assign(definition, user_id)
    assert result.bucket == bucket
    if draw < holdout:
        assert result.reason is AssignmentReason.HOLDOUT and result.variant.control
    else:
        assert result.variant_name == ("control" if bucket < 3000 else "treatment1")
