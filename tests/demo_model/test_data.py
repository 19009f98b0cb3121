"""The seeded data: the same every time, served as plain dicts, and labelled by a ground truth
with enough user x item signal to separate an additive model from a personalised one."""

from __future__ import annotations

import numpy as np
import pytest

from ml_serving_tools.demo_model import data, train


def _fresh(seed: int = data.SEED):
    data.world.cache_clear()
    data.interactions.cache_clear()
    return data.world(seed), data.interactions(seed)


def test_same_seed_same_data():
    w1, ev1 = _fresh()
    w2, ev2 = _fresh()
    assert w1 is not w2
    for table1, table2 in ((w1.users, w2.users), (w1.items, w2.items)):
        for name in table1:
            np.testing.assert_array_equal(table1[name], table2[name])
    for name in ("user_id", "item_id", "device", "label"):
        np.testing.assert_array_equal(getattr(ev1, name), getattr(ev2, name))
    np.testing.assert_array_equal(data.split()[1], data.split()[1])


def test_another_seed_other_data():
    _, ev = _fresh()
    _, other = _fresh(data.SEED + 100)
    assert not np.array_equal(ev.label, other.label)
    _fresh()


def test_sizes_and_label_balance():
    _, ev = _fresh()
    assert len(ev.label) == data.N_INTERACTIONS
    assert ev.user_id.max() < data.N_USERS and ev.item_id.max() < data.N_ITEMS
    assert 0.3 < ev.label.mean() < 0.7  # neither class swamps the other
    train_rows, test_rows = data.split()
    assert len(set(train_rows) & set(test_rows)) == 0
    assert len(train_rows) + len(test_rows) == data.N_INTERACTIONS


def test_features_by_id_are_plain_dicts_matching_the_schema():
    user = data.user_features(123)
    item = data.item_features(7)
    assert list(user) == list(data.USER_FEATURES) and list(item) == list(data.ITEM_FEATURES)
    for row, schema in ((user, data.USER_FEATURES), (item, data.ITEM_FEATURES)):
        for name, kind in schema.items():
            assert type(row[name]) is {"int": int, "float": float}[kind], name
    assert user == data.user_features(123)
    assert user["age_bucket"] == int(data.world().users["age_bucket"][123])


@pytest.mark.parametrize("bad", [-1, data.N_USERS, "12", 1.0, True])
def test_unknown_user_id_is_a_key_error(bad):
    with pytest.raises(KeyError, match="unknown user id"):
        data.user_features(bad)


def test_encodings_line_up_with_ids():
    basic, full = data.encode_users("basic"), data.encode_users("full")
    assert basic.shape == (data.N_USERS, data.N_AGE_BUCKETS + 2)
    assert full.shape == (data.N_USERS, data.N_AGE_BUCKETS + 2 + data.TASTE_DIMS)
    assert full.dtype == np.float32
    np.testing.assert_allclose(full[123, -data.TASTE_DIMS:],
                               [data.user_features(123)[f"pref_{d}"] for d in range(data.TASTE_DIMS)], rtol=1e-6)
    assert data.encode_items("full").shape == (data.N_ITEMS, data.N_CATEGORIES + 2 + data.TASTE_DIMS)


def test_ground_truth_is_learnable_but_noisy():
    """The oracle's held-out AUC: the ceiling both versions are measured against."""
    w, ev = _fresh()
    _, test_rows = data.split()
    oracle = train.auc(ev.label[test_rows], data.true_logit(w, ev.user_id[test_rows], ev.item_id[test_rows],
                                                            ev.device[test_rows]))
    assert 0.78 < oracle < 0.9, oracle
