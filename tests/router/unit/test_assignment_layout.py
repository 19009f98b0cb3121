"""The bucket layout and its reweighting: ramps move exactly the users they imply, no others."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_serving_server.errors import InvalidArgument
from ml_serving_server.services.router.domain.assignment import (
    BUCKETS,
    BucketLayout,
    Variant,
    assign,
    define_experiment,
    hash_user,
    reweighted,
    updated,
)

USERS = [f"user-{i}" for i in range(100_000)]
SALT = "ramp-salt"
BUCKET_OF = {user: hash_user(SALT, user)[0] for user in USERS}


def definition(weights: dict[str, int], layout: BucketLayout | None = None):
    variants = [Variant(name, "fraud", str(i + 1), w, control=(i == 0)) for i, (name, w) in enumerate(weights.items())]
    return define_experiment("ramp", variants, salt=SALT, layout=layout)


def owners(layout: BucketLayout) -> dict[int, str]:
    return {b: name for name, ranges in layout.ranges for start, end in ranges for b in range(start, end)}


def moved_users(before, after) -> dict[str, tuple[str, str]]:
    """user -> (old variant, new variant), for the users whose variant changed."""
    moved = {}
    for user in USERS:
        old, new = assign(before, user).variant_name, assign(after, user).variant_name
        if old != new:
            moved[user] = (old, new)
    return moved


def test_a_new_experiment_gets_contiguous_ranges_in_variant_order():
    layout = BucketLayout.initial({"control": 5000, "a": 3000, "b": 0, "c": 2000})
    assert layout.ranges == (("control", ((0, 5000),)), ("a", ((5000, 8000),)), ("b", ()), ("c", ((8000, 10000),)))
    assert layout.weights() == {"control": 5000, "a": 3000, "b": 0, "c": 2000}


def test_ramping_a_variant_from_10_to_20_percent_moves_exactly_the_implied_users():
    before = definition({"control": 9000, "treatment": 1000})
    after = definition({"control": 8000, "treatment": 2000}, reweighted(before.layout, {"control": 8000,
                                                                                        "treatment": 2000}))
    gained = after.layout.buckets_of("treatment") - before.layout.buckets_of("treatment")
    assert len(gained) == 1000
    assert before.layout.buckets_of("treatment") <= after.layout.buckets_of("treatment")
    implied = {user for user in USERS if BUCKET_OF[user] in gained}
    moved = moved_users(before, after)
    assert set(moved) == implied  # exactly the users of the moved buckets, no one else
    assert set(moved.values()) == {("control", "treatment")}  # only into the raised variant
    assert 9_000 < len(moved) < 11_000  # about 10% of 100,000 users
    assert after.layout.ranges == (("control", ((0, 8000),)), ("treatment", ((8000, 10000),)))  # still contiguous


def test_raising_one_of_three_variants_never_reshuffles_the_others():
    before = definition({"control": 8000, "a": 1000, "b": 1000})
    weights = {"control": 7000, "a": 2000, "b": 1000}
    after = definition(weights, reweighted(before.layout, weights))
    assert after.layout.buckets_of("b") == before.layout.buckets_of("b")
    moved = moved_users(before, after)
    assert set(moved.values()) == {("control", "a")}
    gained = after.layout.buckets_of("a") - before.layout.buckets_of("a")
    assert set(moved) == {user for user in USERS if BUCKET_OF[user] in gained} and len(gained) == 1000


def test_a_raise_taken_from_a_non_adjacent_variant_still_moves_only_into_it():
    before = definition({"control": 4000, "a": 3000, "b": 3000})
    weights = {"control": 4000, "a": 1000, "b": 5000}  # b takes from a; control untouched
    after = definition(weights, reweighted(before.layout, weights))
    assert after.layout.buckets_of("control") == before.layout.buckets_of("control")
    assert set(moved_users(before, after).values()) == {("a", "b")}


def test_lowering_a_variant_only_moves_users_out_of_it():
    before = definition({"control": 6000, "a": 2000, "b": 2000})
    weights = {"control": 7000, "a": 1000, "b": 2000}
    after = definition(weights, reweighted(before.layout, weights))
    moved = moved_users(before, after)
    assert set(moved.values()) == {("a", "control")}
    lost = before.layout.buckets_of("a") - after.layout.buckets_of("a")
    assert len(lost) == 1000 and set(moved) == {user for user in USERS if BUCKET_OF[user] in lost}


def test_a_ramp_down_after_a_ramp_up_restores_the_layout():
    start = BucketLayout.initial({"control": 9000, "treatment": 1000})
    up = reweighted(reweighted(start, {"control": 8000, "treatment": 2000}), {"control": 5000, "treatment": 5000})
    assert reweighted(up, {"control": 9000, "treatment": 1000}) == start


def test_unchanged_weights_change_nothing():
    layout = reweighted(BucketLayout.initial({"c": 3000, "a": 3000, "b": 4000}), {"c": 1000, "a": 3000, "b": 6000})
    assert reweighted(layout, layout.weights()) == layout


def test_a_new_variant_takes_only_from_lowered_ones_and_a_removed_one_gives_all():
    layout = BucketLayout.initial({"control": 6000, "a": 4000})
    grown = reweighted(layout, {"control": 6000, "a": 2000, "new": 2000})
    assert grown.buckets_of("control") == layout.buckets_of("control")
    assert grown.buckets_of("new") | grown.buckets_of("a") == layout.buckets_of("a")
    shrunk = reweighted(grown, {"control": 8000, "new": 2000})  # "a" removed
    assert shrunk.names == ("control", "new")
    assert shrunk.buckets_of("new") == grown.buckets_of("new")
    assert shrunk.buckets_of("control") == grown.buckets_of("control") | grown.buckets_of("a")


@pytest.mark.parametrize("weights, field", [
    ({"control": 5000, "a": 4000}, "weights"),
    ({"control": 11000, "a": -1000}, "weights[0].weight_bps"),
    ([("control", 5000), ("control", 5000)], "weights[1]"),
])
def test_reweighting_checks_the_weights(weights, field):
    with pytest.raises(InvalidArgument) as info:
        reweighted(BucketLayout.initial({"control": 5000, "a": 5000}), weights)
    assert info.value.field == field


def test_the_layout_round_trips_as_plain_data():
    layout = reweighted(BucketLayout.initial({"c": 5000, "a": 2500, "b": 2500}), {"c": 2000, "a": 5000, "b": 3000})
    data = layout.as_data()
    assert all(isinstance(pair, list) and len(pair) == 2 for ranges in data.values() for pair in ranges)
    assert BucketLayout.from_data(data) == layout
    # Adjacent ranges given apart are coalesced.
    assert BucketLayout.from_data({"x": [[0, 10], [10, 10000]]}) == BucketLayout((("x", ((0, 10000),)),))


@pytest.mark.parametrize("data, field", [
    ({"x": [[0, 5000]], "y": [[4000, 10000]]}, "layout.y[0]"),
    ({"x": [[0, 5000]], "y": [[5001, 10000]]}, "layout"),
    ({"x": [[0, 10001]]}, "layout.x[0]"),
    ({"x": [[-1, 10000]]}, "layout.x[0]"),
    ({"x": [[5000, 10000], [0, 5000]]}, "layout.x[1]"),
    ({"x": [[0, 0], [0, 10000]]}, "layout.x[0]"),
    ({"x": [[0, 10000.0]]}, "layout.x[0]"),
    ({"x": [[0, True]]}, "layout.x[0]"),
    ({"x": [[0, 5000, 10000]]}, "layout.x[0]"),
    ({"x": "0-10000"}, "layout.x"),
    ({"bad name": [[0, 10000]]}, "layout"),
    ([["x", [[0, 10000]]]], "layout"),
])
def test_a_malformed_layout_is_refused(data, field):
    with pytest.raises(InvalidArgument) as info:
        BucketLayout.from_data(data)
    assert info.value.field == field


# --- properties ------------------------------------------------------------------------------

NAMES = ["control", "a", "b", "c", "d"]


@st.composite
def weight_vectors(draw, count: int):
    """Weights for `count` variants adding up to 10000 (zeros included)."""
    cuts = sorted(draw(st.lists(st.integers(0, BUCKETS), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, BUCKETS]
    return {NAMES[i]: bounds[i + 1] - bounds[i] for i in range(count)}


@st.composite
def ramps(draw):
    count = draw(st.integers(2, 5))
    return count, draw(st.lists(weight_vectors(count), min_size=2, max_size=8))


@settings(max_examples=60, deadline=None)
@given(ramps())
def test_every_reweighting_moves_buckets_only_from_lowered_to_raised_variants(ramp):
    _, sequence = ramp
    layout = BucketLayout.initial(sequence[0])
    for weights in sequence[1:]:
        old, new = layout.weights(), weights
        after = reweighted(layout, weights)
        assert after.weights() == new
        assert BucketLayout.from_data(after.as_data()) == after  # a partition of the buckets, coalesced
        before_owner, after_owner = owners(layout), owners(after)
        moved = [b for b in range(BUCKETS) if before_owner[b] != after_owner[b]]
        assert len(moved) == sum(max(0, new[n] - old[n]) for n in new)  # the fewest moves possible
        for bucket in moved:
            giver, taker = before_owner[bucket], after_owner[bucket]
            assert new[giver] < old[giver] and new[taker] > old[taker]
        for name in new:
            kept, now = layout.buckets_of(name), after.buckets_of(name)
            if new[name] >= old[name]:
                assert kept <= now
            if new[name] <= old[name]:
                assert now <= kept
        layout = after


@settings(max_examples=20, deadline=None)
@given(ramps(), st.sampled_from(USERS[:1000]))
def test_a_user_changes_variant_only_towards_a_raised_one(ramp, user):
    _, sequence = ramp
    current = definition(sequence[0])
    for weights in sequence[1:]:
        following = updated(current, variants=[Variant(name, "fraud", str(i + 1), w, control=(i == 0))
                                               for i, (name, w) in enumerate(weights.items())])
        old, new = assign(current, user).variant_name, assign(following, user).variant_name
        if old != new:
            assert weights[new] > current.weights()[new] and weights[old] < current.weights()[old]
        current = following


def test_a_two_variant_ramp_stays_one_range_each():
    layout = BucketLayout.initial({"control": 10000, "canary": 0})
    for step in (100, 1000, 2500, 5000, 10000, 5000, 100):
        layout = reweighted(layout, {"control": BUCKETS - step, "canary": step})
        assert all(len(ranges) <= 1 for _, ranges in layout.ranges)
