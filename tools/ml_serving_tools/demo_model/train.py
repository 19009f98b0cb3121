"""Training of the two demo versions on the seeded interactions.

v1: logistic regression on the basic features (demographics, category, price, popularity), no
context. Additive, so it ranks items the same way for every user.
v2: an MLP on all features (adds taste vectors) plus the request context (device). It can learn
the user x item crosses of the ground truth, so it personalises and scores better held out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from . import data
from .handler import FEATURES_FILE, META_FILE, build_network

WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class VersionSpec:
    version: str
    feature_set: str  # "basic" or "full", see data.encode_users
    hidden: tuple[int, ...]
    use_context: bool
    epochs: int
    lr: float
    batch_size: int


VERSIONS = {
    "v1": VersionSpec("v1", "basic", (), False, epochs=4, lr=0.05, batch_size=512),
    "v2": VersionSpec("v2", "full", (64, 32), True, epochs=10, lr=0.005, batch_size=512),
}
TORCH_SEED = 7


@dataclass
class TrainedModel:
    spec: VersionSpec
    net: torch.nn.Module
    user_x: np.ndarray
    item_x: np.ndarray
    context_features: dict[str, list[str]]
    metrics: dict[str, float]

    def save(self, folder: Path) -> None:
        """The files the handler reads: weights, feature tables, and what ties them together."""
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / WEIGHTS_FILE)
        np.savez(folder / FEATURES_FILE, user_x=self.user_x, item_x=self.item_x,
                 user_ids=np.arange(len(self.user_x)), item_ids=np.arange(len(self.item_x)))
        meta = {
            "model_version": self.spec.version, "feature_set": self.spec.feature_set,
            "hidden": list(self.spec.hidden), "context_features": self.context_features,
            "data_seed": data.SEED, "metrics": self.metrics,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half)."""
    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _inputs(spec: VersionSpec, rows: np.ndarray, user_x, item_x) -> torch.Tensor:
    events = data.interactions()
    cols = [user_x[events.user_id[rows]], item_x[events.item_id[rows]]]
    if spec.use_context:
        cols.append(events.device[rows, None].astype(np.float32))
    return torch.from_numpy(np.concatenate(cols, axis=1))


def train(version: str) -> TrainedModel:
    spec = VERSIONS[version]
    torch.manual_seed(TORCH_SEED)
    user_x, item_x = data.encode_users(spec.feature_set), data.encode_items(spec.feature_set)
    train_rows, test_rows = data.split()
    labels = torch.from_numpy(data.interactions().label)
    x_train, y_train = _inputs(spec, train_rows, user_x, item_x), labels[train_rows]
    x_test, y_test = _inputs(spec, test_rows, user_x, item_x), labels[test_rows]

    net = build_network(x_train.shape[1], list(spec.hidden))
    optimiser = torch.optim.Adam(net.parameters(), lr=spec.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    shuffle = torch.Generator().manual_seed(TORCH_SEED)
    for _ in range(spec.epochs):
        for batch in torch.randperm(len(x_train), generator=shuffle).split(spec.batch_size):
            optimiser.zero_grad()
            loss_fn(net(x_train[batch]).squeeze(1), y_train[batch]).backward()
            optimiser.step()

    net.eval()
    with torch.inference_mode():
        logits = net(x_test).squeeze(1)
        log_loss = float(loss_fn(logits, y_test))
        prob = torch.sigmoid(logits).numpy()
    y = y_test.numpy()
    metrics = {
        "holdout_auc": round(auc(y, prob), 4),
        "holdout_log_loss": round(log_loss, 4),
        "holdout_accuracy": round(float(((prob >= 0.5) == (y == 1)).mean()), 4),
        "holdout_rows": int(len(y)),
        "train_rows": int(len(train_rows)),
    }
    context = {"device": list(data.DEVICES)} if spec.use_context else {}
    return TrainedModel(spec, net, user_x, item_x, context, metrics)


def train_all() -> dict[str, TrainedModel]:
    # One thread: deterministic results, and the build shares 2 cores with whatever runs beside.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {version: train(version) for version in VERSIONS}
    finally:
        torch.set_num_threads(threads)
