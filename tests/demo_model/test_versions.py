"""The two versions behave measurably differently, and v2 is the better model held out."""

from __future__ import annotations

import numpy as np

from ml_serving_tools.demo_model import train

USERS = (3, 42, 123, 777)


def test_v2_beats_v1_held_out(artifacts):
    v1, v2 = artifacts["v1"].metrics, artifacts["v2"].metrics
    print(f"\nheld-out v1: {v1}\nheld-out v2: {v2}")
    assert v1["holdout_rows"] == v2["holdout_rows"] == 10_000
    assert 0.6 < v1["holdout_auc"] < 0.7
    assert v2["holdout_auc"] > v1["holdout_auc"] + 0.1
    assert v2["holdout_log_loss"] < v1["holdout_log_loss"] - 0.05
    assert v2["holdout_accuracy"] > v1["holdout_accuracy"] + 0.03


def test_training_is_deterministic(artifacts):
    retrained = train.train_all()
    assert {v: m.metrics for v, m in retrained.items()} == {v: a.metrics for v, a in artifacts.items()}


def _all_scores(handler, user_id):
    ranked = handler.one({"user_id": user_id, "top_k": 1000})["scores"]
    return {s["item_id"]: s["score"] for s in ranked}, [s["item_id"] for s in ranked[:10]]


def test_versions_score_the_same_pairs_differently(handlers):
    diffs = []
    for user in USERS:
        s1, _ = _all_scores(handlers["v1"], user)
        s2, _ = _all_scores(handlers["v2"], user)
        assert s1.keys() == s2.keys() and len(s1) == 200
        diffs += [abs(s1[i] - s2[i]) for i in s1]
    print(f"\nmean |v1 - v2| score over {len(diffs)} pairs: {np.mean(diffs):.3f}")
    assert np.mean(diffs) > 0.1


def test_v1_ranks_alike_for_everyone_v2_personalises(handlers):
    """v1 is additive in user and item features: the same item order for every user."""
    top1 = {user: _all_scores(handlers["v1"], user)[1] for user in USERS}
    top2 = {user: _all_scores(handlers["v2"], user)[1] for user in USERS}
    assert len({tuple(t) for t in top1.values()}) == 1
    assert len({tuple(t) for t in top2.values()}) == len(USERS)


def test_only_v2_uses_the_context(handlers):
    for version, should_change in (("v1", False), ("v2", True)):
        desktop = handlers[version].one({"user_id": 42, "item_id": 5, "context": {"device": "desktop"}})
        mobile = handlers[version].one({"user_id": 42, "item_id": 5, "context": {"device": "mobile"}})
        assert (desktop["score"] != mobile["score"]) is should_change, version
