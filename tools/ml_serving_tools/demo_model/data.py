"""Seeded synthetic data for the demo `recommendation-model`: users, items, and labelled
interactions drawn from a hidden ground truth.

Everything is a pure function of `SEED` and the sizes below, so training, the handler's feature
tables and a later feature store all see the same users and items. Raw features are plain
dicts (what a feature store serves); `encode_*` turns them into the float vectors a model eats.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SEED = 20240601
N_USERS = 1_000
N_ITEMS = 200
N_INTERACTIONS = 50_000
N_AGE_BUCKETS = 5
N_CATEGORIES = 6
N_PRICE_TIERS = 3
TASTE_DIMS = 4
DEVICES = ("desktop", "mobile")

USER_FEATURES = {  # name -> dtype, the schema a feature store publishes
    "age_bucket": "int", "activity": "float", "is_premium": "int",
    **{f"pref_{d}": "float" for d in range(TASTE_DIMS)},
}
ITEM_FEATURES = {
    "category": "int", "price_tier": "int", "popularity": "float",
    **{f"emb_{d}": "float" for d in range(TASTE_DIMS)},
}
CONTEXT_FEATURES = {"device": "str"}  # one of DEVICES; desktop when absent


@dataclass(frozen=True)
class World:
    """Column arrays, indexed by user id (0..N_USERS-1) and item id (0..N_ITEMS-1)."""

    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    affinity: np.ndarray  # hidden [age bucket, category] taste, never a feature


@dataclass(frozen=True)
class Interactions:
    user_id: np.ndarray  # int64
    item_id: np.ndarray  # int64
    device: np.ndarray  # int64 index into DEVICES
    label: np.ndarray  # float32, 1 = clicked


@functools.cache
def world(seed: int = SEED) -> World:
    rng = np.random.default_rng(seed)
    users = {
        "age_bucket": rng.integers(0, N_AGE_BUCKETS, N_USERS),
        "activity": rng.beta(2.0, 5.0, N_USERS),
        "is_premium": (rng.random(N_USERS) < 0.3).astype(np.int64),
        "pref": rng.normal(0.0, 1.0, (N_USERS, TASTE_DIMS)),
    }
    items = {
        "category": rng.integers(0, N_CATEGORIES, N_ITEMS),
        "price_tier": rng.integers(0, N_PRICE_TIERS, N_ITEMS),
        "popularity": rng.beta(2.0, 3.0, N_ITEMS),
        "emb": rng.normal(0.0, 1.0, (N_ITEMS, TASTE_DIMS)),
    }
    affinity = rng.normal(0.0, 0.7, (N_AGE_BUCKETS, N_CATEGORIES))
    return World(users, items, affinity)


def true_logit(w: World, user_id: np.ndarray, item_id: np.ndarray, device: np.ndarray) -> np.ndarray:
    """The hidden click propensity. Most of the signal is in user x item crosses (taste dot
    product, age x category affinity, price sensitivity of non-premium and mobile users),
    which an additive model cannot express: that is what separates v1 from v2."""
    u, i = w.users, w.items
    taste = np.einsum("nd,nd->n", u["pref"][user_id], i["emb"][item_id]) / np.sqrt(TASTE_DIMS)
    price = i["price_tier"][item_id]
    return (
        -1.2
        + 1.5 * i["popularity"][item_id]
        + 1.0 * u["activity"][user_id]
        + 1.4 * taste
        + w.affinity[u["age_bucket"][user_id], i["category"][item_id]]
        - 0.5 * price * (1 - u["is_premium"][user_id])
        - 0.4 * price * device
    )


@functools.cache
def interactions(seed: int = SEED) -> Interactions:
    w = world(seed)
    rng = np.random.default_rng(seed + 1)
    user_id = rng.integers(0, N_USERS, N_INTERACTIONS)
    item_id = rng.integers(0, N_ITEMS, N_INTERACTIONS)
    device = (rng.random(N_INTERACTIONS) < 0.6).astype(np.int64)
    p = 1.0 / (1.0 + np.exp(-true_logit(w, user_id, item_id, device)))
    label = (rng.random(N_INTERACTIONS) < p).astype(np.float32)
    return Interactions(user_id, item_id, device, label)


def split(seed: int = SEED, holdout: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out row indices into `interactions(seed)`."""
    order = np.random.default_rng(seed + 2).permutation(N_INTERACTIONS)
    cut = int(N_INTERACTIONS * (1 - holdout))
    return order[:cut], order[cut:]


def _check_id(value: int, count: int, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
        raise KeyError(f"unknown {kind} id {value!r} (ids are 0..{count - 1})")
    return int(value)


def user_features(user_id: int, seed: int = SEED) -> dict[str, float | int]:
    u = world(seed).users
    n = _check_id(user_id, N_USERS, "user")
    row: dict[str, float | int] = {
        "age_bucket": int(u["age_bucket"][n]),
        "activity": float(u["activity"][n]),
        "is_premium": int(u["is_premium"][n]),
    }
    row.update({f"pref_{d}": float(u["pref"][n, d]) for d in range(TASTE_DIMS)})
    return row


def item_features(item_id: int, seed: int = SEED) -> dict[str, float | int]:
    i = world(seed).items
    n = _check_id(item_id, N_ITEMS, "item")
    row: dict[str, float | int] = {
        "category": int(i["category"][n]),
        "price_tier": int(i["price_tier"][n]),
        "popularity": float(i["popularity"][n]),
    }
    row.update({f"emb_{d}": float(i["emb"][n, d]) for d in range(TASTE_DIMS)})
    return row


def user_ids() -> range:
    return range(N_USERS)


def item_ids() -> range:
    return range(N_ITEMS)


# Encoding: raw feature columns -> float32 model inputs. "basic" is the v1 feature set (no taste
# vectors); "full" adds them. One-hot for categorical ids, as linear models need.


def _one_hot(values: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[values]


def encode_users(feature_set: str, seed: int = SEED) -> np.ndarray:
    """[N_USERS, D] float32, row n = user n."""
    u = world(seed).users
    cols = [_one_hot(u["age_bucket"], N_AGE_BUCKETS), u["activity"][:, None], u["is_premium"][:, None]]
    if feature_set == "full":
        cols.append(u["pref"])
    return np.concatenate(cols, axis=1).astype(np.float32)


def encode_items(feature_set: str, seed: int = SEED) -> np.ndarray:
    """[N_ITEMS, D] float32, row n = item n."""
    i = world(seed).items
    cols = [_one_hot(i["category"], N_CATEGORIES), i["price_tier"][:, None] / (N_PRICE_TIERS - 1),
            i["popularity"][:, None]]
    if feature_set == "full":
        cols.append(i["emb"])
    return np.concatenate(cols, axis=1).astype(np.float32)
