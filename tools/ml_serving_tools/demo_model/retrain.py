"""Retraining of the demo `recommendation-model` from the Feature Store's demo data.

The Pipeline's retraining worker loads `RecommendationTrainer` by import path
(`ml_serving_tools.demo_model.retrain:RecommendationTrainer`). The server imports this module
to check a trigger's parameters, so torch is imported only inside the functions that train.

The recipe is v2's (`train.VERSIONS["v2"]`): an MLP on the "full" user and item features plus
the request context (device), encoded exactly as `data.encode_users` / `data.encode_items`, so
the archive is served by the same `handler.py`. What changes is where the rows come from:

- Training rows: the `max_rows` most recent events of `demo_interactions`, each with its user's
  and its item's features as of the event's own time (the feature store's point-in-time join,
  `EVENTS_QUERY`). A row whose user or item has no value as of then (no row yet, or one older
  than the view's ttl) is dropped and counted (`rows_dropped_null`).
- Held out: the latest `holdout_fraction` of those events by time; every training event is
  strictly earlier than every held-out one, so nothing from the future trains.
- Training samples: the raw values of the numeric scalar features (`SAMPLED_FEATURES`) of the
  training rows, at most 10,000 per feature spread evenly over them in time order, handed over
  with the model; the worker keeps them, and the monitor measures those features' drift
  against them.
- The handler's feature tables (every user and item, looked up by id): each entity's latest
  row, read as of that row's own time (`USERS_QUERY`, `ITEMS_QUERY`). Not "as of now": the
  views' ttl would then drop every entity whose profile has not changed lately, and the
  handler would refuse those users; online, `GetFeatures` serves them too (reading through to
  the source), so the latest row is what serving sees. Ids are kept as they are (the handler
  maps ids to rows through `user_ids` / `item_ids`), so they need not be dense.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ml_serving_server.services.pipeline.domain.retraining import (
    Run, TrainedModel, TrainingContext, TrainingFailed, TrainingSetReader, even_sample,
)

from . import archive, data

USER_FEATURES = ("user_profile:age_bucket", "user_profile:activity", "user_profile:is_premium",
                 "user_profile:taste")
ITEM_FEATURES = ("item_catalog:category", "item_catalog:price_tier", "item_catalog:popularity",
                 "item_catalog:embedding")
# The numeric scalar features read (ints and floats: neither a bool nor a vector), whose training
# values the run keeps as its training sample.
SAMPLED_FEATURES = ("user_profile:age_bucket", "user_profile:activity", "item_catalog:category",
                    "item_catalog:price_tier", "item_catalog:popularity")
EVENT_COLUMNS = ("user_id", "item_id", "device", "clicked", "event_time")
# The most recent events, newest first (id breaks ties, so the same data gives the same rows).
# A subquery, so the entity query stays a plain SELECT of the five columns.
EVENTS_QUERY = ("SELECT user_id, item_id, device, clicked, event_time FROM ("
                "SELECT user_id, item_id, device, clicked, event_time FROM demo_interactions "
                "ORDER BY event_time DESC, id DESC LIMIT {max_rows}) AS recent")
USERS_QUERY = "SELECT user_id, max(updated_at) AS as_of FROM demo_users GROUP BY user_id"
ITEMS_QUERY = "SELECT item_id, max(updated_at) AS as_of FROM demo_items GROUP BY item_id"
CONTEXT_FEATURES = {"device": list(data.DEVICES)}
BATCH_SIZE = 512  # v2's

# Progress: where each stage starts (training spreads over its epochs up to "evaluating").
_STAGES = {"training set": 0.0, "feature tables": 0.1, "training": 0.15, "evaluating": 0.85,
           "archiving": 0.9}


# ----------------------------------------------------------------------------- parameters


def _shown(value: Any) -> str:
    """A value for a message, never longer than a line."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python prints
        return f"a huge {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _int(value: Any, low: int, high: int) -> int:
    # A google.protobuf.Struct (how parameters travel) has only doubles: 4.0 is 4.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {_shown(value)}")
    if not low <= value <= high:
        raise ValueError(f"must be from {low:,} to {high:,}, got {_shown(value)}")
    return value


def _float(value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(_as_float(value)):
        raise ValueError(f"must be a finite number, got {_shown(value)}")
    if value < low or value > high or (low_open and value == low):
        bounds = f"in ({low:g}, {high:g}]" if low_open else f"from {low:g} to {high:g}"
        raise ValueError(f"must be {bounds}, got {_shown(value)}")
    return float(value)


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        return math.inf


def _hidden(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of layer widths, got {_shown(value)}")
    if len(value) > 3:
        raise ValueError(f"must have at most 3 layers, got {len(value)}")
    widths = []
    for index, width in enumerate(value):
        try:
            widths.append(_int(width, 1, 512))
        except ValueError as why:
            raise ValueError(f"layer {index} {why}") from None
    return widths


# name -> (default, check): a check returns the value, normalised, or raises ValueError(why).
PARAMETERS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "epochs": (4, lambda v: _int(v, 1, 50)),
    "learning_rate": (0.005, lambda v: _float(v, 0.0, 1.0, low_open=True)),
    "hidden": ([64, 32], _hidden),
    "max_rows": (200_000, lambda v: _int(v, 1_000, 2_000_000)),
    "holdout_fraction": (0.2, lambda v: _float(v, 0.05, 0.5)),
    "seed": (7, lambda v: _int(v, 0, 2**32 - 1)),
}


def check_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters, checked and completed with defaults (JSON-able). A bad one raises
    ValueError("<name>: <why>")."""
    given = dict(parameters or {})
    for name in given:
        if name not in PARAMETERS:
            raise ValueError(f"{str(name)[:64]}: unknown parameter (known: {', '.join(PARAMETERS)})")
    checked = {}
    for name, (default, check) in PARAMETERS.items():
        try:
            checked[name] = check(given[name]) if name in given else default
        except ValueError as why:
            raise ValueError(f"{name}: {why}") from None
    checked["hidden"] = list(checked["hidden"])  # never the default's own list
    return checked


# ----------------------------------------------------------------------------- rows to arrays


Columns = Mapping[str, Sequence[Any]]


def _bad_data(message: str) -> TrainingFailed:
    return TrainingFailed("TRAINING_FAILED", message)


def _nulls(columns: Columns, names: Sequence[str], n: int) -> np.ndarray:
    """Rows where any of `names` is null."""
    null = np.zeros(n, dtype=bool)
    for name in names:
        if name not in columns:
            raise _bad_data(f"the training set has no column {name}")
        if len(columns[name]) != n:
            raise _bad_data(f"column {name} has {len(columns[name])} values, not {n}")
        null |= np.fromiter((value is None for value in columns[name]), dtype=bool, count=n)
    return null


def _array(columns: Columns, name: str, rows: np.ndarray, dtype) -> np.ndarray:
    column = columns[name]
    try:
        values = np.array([column[r] for r in rows.tolist()], dtype=dtype)
    except (TypeError, ValueError) as why:
        raise _bad_data(f"{name}: values of the wrong type or shape ({str(why)[:100]})") from None
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise _bad_data(f"{name}: has values that are not finite numbers")
    return values


def _codes(columns: Columns, name: str, rows: np.ndarray, size: int) -> np.ndarray:
    values = _array(columns, name, rows, np.int64)
    if len(values) and not (0 <= values.min() and values.max() < size):
        bad = values[(values < 0) | (values >= size)][0]
        raise _bad_data(f"{name}: {bad} is outside 0..{size - 1}, which the model's encoding expects")
    return values


def _vectors(columns: Columns, name: str, rows: np.ndarray, dims: int) -> np.ndarray:
    values = _array(columns, name, rows, np.float64)
    if values.shape != (len(rows), dims):
        raise _bad_data(f"{name}: expected {dims} values per row")
    return values


def _one_hot(values: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[values]


def encode_users(columns: Columns, rows: np.ndarray) -> np.ndarray:
    """[len(rows), D] float32 of the users' features, as data.encode_users("full") lays them out."""
    age, activity, premium, taste = USER_FEATURES
    return np.concatenate([
        _one_hot(_codes(columns, age, rows, data.N_AGE_BUCKETS), data.N_AGE_BUCKETS),
        _array(columns, activity, rows, np.float64)[:, None],
        _array(columns, premium, rows, np.float64)[:, None],  # a bool: 0 or 1
        _vectors(columns, taste, rows, data.TASTE_DIMS),
    ], axis=1).astype(np.float32)


def encode_items(columns: Columns, rows: np.ndarray) -> np.ndarray:
    """[len(rows), D] float32 of the items' features, as data.encode_items("full") lays them out."""
    category, price_tier, popularity, embedding = ITEM_FEATURES
    return np.concatenate([
        _one_hot(_codes(columns, category, rows, data.N_CATEGORIES), data.N_CATEGORIES),
        _codes(columns, price_tier, rows, data.N_PRICE_TIERS)[:, None] / (data.N_PRICE_TIERS - 1),
        _array(columns, popularity, rows, np.float64)[:, None],
        _vectors(columns, embedding, rows, data.TASTE_DIMS),
    ], axis=1).astype(np.float32)


def _micros(value: Any) -> int:
    """An event time as microseconds since the epoch (the reader's form), or from a datetime."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (moment - _EPOCH) // timedelta(microseconds=1)
    return int(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ids(columns: Columns, name: str, rows: np.ndarray) -> np.ndarray:
    """Entity ids (the reader gives them as text) as int64."""
    try:
        return np.array([int(columns[name][r]) for r in rows.tolist()], dtype=np.int64)
    except (TypeError, ValueError):
        raise _bad_data(f"{name}: ids must be integers") from None


@dataclass
class Examples:
    """Labelled events, in the reader's order: inputs laid out as the handler builds them
    ([user features, item features, device])."""

    x: np.ndarray  # [n, D] float32
    label: np.ndarray  # [n] float32, 1 = clicked
    time: np.ndarray  # [n] int64, microseconds since the epoch
    popularity: np.ndarray  # [n] the item's popularity feature: the baseline's score
    rows_read: int
    rows_dropped_null: int
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # SAMPLED_FEATURES' values, [n] float64 each


def build_examples(columns: Columns) -> Examples:
    """The training set's rows as model inputs; rows with a null dropped. TRAINING_SET_EMPTY
    when none is left."""
    n = len(columns.get("event_time", ()))
    null = _nulls(columns, (*EVENT_COLUMNS, *USER_FEATURES, *ITEM_FEATURES), n)
    rows = np.flatnonzero(~null)
    if not len(rows):
        if not n:
            raise TrainingFailed("TRAINING_SET_EMPTY", "demo_interactions has no events to train on")
        raise TrainingFailed("TRAINING_SET_EMPTY", (
            f"none of the {n:,} events has its user's and its item's features as of its time (rows "
            "with a null feature are dropped): are the views' rows older than their ttl?"))
    index = {name: i for i, name in enumerate(data.DEVICES)}
    devices = [columns["device"][r] for r in rows.tolist()]
    unknown = next((d for d in devices if d not in index), None)
    if unknown is not None:
        raise _bad_data(f"device: {_shown(unknown)} is not one of {', '.join(data.DEVICES)}")
    label = _array(columns, "clicked", rows, np.float32)
    if not np.isin(label, (0.0, 1.0)).all():
        raise _bad_data("clicked: must be true or false")
    x = np.concatenate([encode_users(columns, rows), encode_items(columns, rows),
                        np.array([index[d] for d in devices], dtype=np.float32)[:, None]], axis=1)
    popularity = _array(columns, ITEM_FEATURES[2], rows, np.float64)
    times = np.array([_micros(columns["event_time"][r]) for r in rows.tolist()], dtype=np.int64)
    raw = {name: _array(columns, name, rows, np.float64) for name in SAMPLED_FEATURES}
    return Examples(x, label, times, popularity, n, int(null.sum()), raw)


def training_samples(examples: Examples, train_rows: np.ndarray) -> dict[str, list[float]]:
    """The training rows' raw values of each sampled feature (at most 10,000, evenly over the rows
    in time order: `split_by_time` gives them so)."""
    return {name: even_sample(values[train_rows]) for name, values in examples.raw.items()}


def split_by_time(times: np.ndarray, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of the training and the held-out rows: the latest `holdout_fraction` of the rows
    by time are held out, and rows at the cut's very time go with them, so every training row
    is strictly earlier than every held-out one."""
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    cut = len(order) - max(1, round(len(order) * holdout_fraction))
    cut = int(np.searchsorted(ordered, ordered[cut], side="left"))
    return order[:cut], order[cut:]


def _check_classes(labels: np.ndarray, which: str) -> None:
    if not len(labels):
        raise _bad_data(f"no {which} rows: too few events (or all at one time) to hold some out")
    if labels.min() == labels.max():
        kind = "clicks" if labels[0] == 1 else "non-clicks"
        raise _bad_data(f"the {len(labels):,} {which} rows are all {kind}: AUC is undefined and "
                        f"there is nothing to learn; train on more rows (max_rows)")


@dataclass
class FeatureTable:
    """The handler's lookup table of one entity: sorted ids and their encoded features."""

    ids: np.ndarray  # int64
    x: np.ndarray  # float32, row n = ids[n]


def build_table(columns: Columns, key: str, features: Sequence[str],
                encode: Callable[[Columns, np.ndarray], np.ndarray]) -> FeatureTable:
    """Every entity with all its features (one row per id: the first when repeated)."""
    n = len(columns.get(key, ()))
    rows = np.flatnonzero(~_nulls(columns, (key, *features), n))
    if not len(rows):
        raise _bad_data(f"no {key.removesuffix('_id')} has features to serve with ({n:,} read)")
    ids, first = np.unique(_ids(columns, key, rows), return_index=True)
    return FeatureTable(ids, encode(columns, rows[first]))


# ----------------------------------------------------------------------------- training (torch)


@dataclass
class Fitted:
    state: dict  # the network's state_dict
    metrics: dict[str, float]


def _progress(context: TrainingContext, stage: str, within: float = 0.0) -> None:
    """Report `stage`, `within` (0 to 1) of the way to the next stage's start."""
    starts = list(_STAGES.values())
    start = _STAGES[stage]
    following = next((s for s in starts if s > start), 1.0)
    context.report(round(start + within * (following - start), 4), stage)


def fit(examples: Examples, train_rows: np.ndarray, holdout_rows: np.ndarray, params: Mapping[str, Any],
        context: TrainingContext) -> Fitted:
    """Trains v2's network on `train_rows` and measures it on `holdout_rows`. One torch thread
    (deterministic, and the worker shares its cores), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = _train(examples, train_rows, params, context)
        _progress(context, "evaluating")
        context.check_cancelled()
        metrics = _evaluate(net, examples, holdout_rows)
    finally:
        torch.set_num_threads(threads)
    metrics.update(train_rows=int(len(train_rows)), rows_dropped_null=examples.rows_dropped_null)
    return Fitted(net.state_dict(), metrics)


def _train(examples: Examples, rows: np.ndarray, params: Mapping[str, Any], context: TrainingContext):
    import torch

    from .handler import build_network

    x, y = torch.from_numpy(examples.x[rows]), torch.from_numpy(examples.label[rows])
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(params["seed"])
        net = build_network(x.shape[1], list(params["hidden"]))
    optimiser = torch.optim.Adam(net.parameters(), lr=params["learning_rate"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    shuffle = torch.Generator().manual_seed(params["seed"])
    epochs = params["epochs"]
    _progress(context, "training")
    for epoch in range(epochs):
        for batch in torch.randperm(len(x), generator=shuffle).split(BATCH_SIZE):
            context.check_cancelled()
            optimiser.zero_grad()
            loss_fn(net(x[batch]).squeeze(1), y[batch]).backward()
            optimiser.step()
        _progress(context, "training", (epoch + 1) / epochs)
    net.eval()
    return net


def _evaluate(net, examples: Examples, rows: np.ndarray) -> dict[str, float]:
    import torch

    from .train import auc

    y = examples.label[rows]
    with torch.inference_mode():
        logits = net(torch.from_numpy(examples.x[rows])).squeeze(1)
        log_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y)))
        prob = torch.sigmoid(logits).numpy()
    return {
        "holdout_auc": round(auc(y, prob), 4),
        # What ranking by the item's popularity alone scores: the model should beat it.
        "baseline_auc": round(auc(y, examples.popularity[rows]), 4),
        "holdout_log_loss": round(log_loss, 4),
        "holdout_accuracy": round(float(((prob >= 0.5) == (y == 1)).mean()), 4),
        "holdout_rows": int(len(rows)),
    }


# ----------------------------------------------------------------------------- the archive


def model_version(run_id: str) -> str:
    """What the archive's handler answers as model_version, and its TorchServe version: the
    run's, recognisably (the Registry's version number is only known once it is registered)."""
    short = re.sub(r"[^A-Za-z0-9]", "", run_id)[:8]
    return f"run-{short}" if short else "run"


def write_archive(fitted: Fitted, users: FeatureTable, items: FeatureTable, meta: dict[str, Any],
                  workdir: Path) -> Path:
    """The .mar, built by torch-model-archiver as archive.py builds the demo's, in `workdir`."""
    import torch

    from .handler import FEATURES_FILE, META_FILE
    from .train import WEIGHTS_FILE

    version = meta["model_version"]
    staging = workdir / "archive-staging"
    shutil.rmtree(staging, ignore_errors=True)  # a retried attempt's leftovers
    staging.mkdir(parents=True)
    torch.save(fitted.state, staging / WEIGHTS_FILE)
    np.savez(staging / FEATURES_FILE, user_x=users.x, item_x=items.x, user_ids=users.ids, item_ids=items.ids)
    (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    scratch_tmp = staging / "tmp"  # the archiver copies its inputs under $TMPDIR/<model name>
    scratch_tmp.mkdir()
    handler = Path(archive.__file__).parent / "handler.py"
    command = archive._archiver() + [
        "--model-name", archive.MODEL_NAME, "--version", version,
        "--serialized-file", str(staging / WEIGHTS_FILE), "--handler", str(handler),
        "--extra-files", ",".join(str(staging / f) for f in (META_FILE, FEATURES_FILE)),
        "--export-path", str(staging), "--force",
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "TMPDIR": str(scratch_tmp)})
    if done.returncode != 0:
        raise TrainingFailed("TRAINING_FAILED", f"torch-model-archiver failed: {done.stdout[-500:]}")
    mar = workdir / f"{archive.MODEL_NAME}-{version}.mar"
    (staging / f"{archive.MODEL_NAME}.mar").replace(mar)
    shutil.rmtree(staging)
    return mar


# ----------------------------------------------------------------------------- the trainer


class RecommendationTrainer:
    """Retrains `recommendation-model` (v2's recipe) on the demo tables through the feature store."""

    def check_parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        return check_parameters(parameters)

    async def train(self, run: Run, training_set: TrainingSetReader, context: TrainingContext,
                    workdir: Path) -> TrainedModel:
        params = check_parameters(run.parameters)  # again: a stored Struct turns ints into doubles
        workdir = Path(workdir)
        query = EVENTS_QUERY.format(max_rows=params["max_rows"])

        _progress(context, "training set")
        events = await training_set(USER_FEATURES + ITEM_FEATURES, query, "event_time")
        context.check_cancelled()
        examples = await asyncio.to_thread(build_examples, events)
        del events
        train_rows, holdout_rows = split_by_time(examples.time, params["holdout_fraction"])
        _check_classes(examples.label[train_rows], "training")
        _check_classes(examples.label[holdout_rows], "held-out")

        _progress(context, "feature tables")
        users = await self._table(training_set, "user_id", USER_FEATURES, USERS_QUERY, encode_users)
        items = await self._table(training_set, "item_id", ITEM_FEATURES, ITEMS_QUERY, encode_items)
        context.check_cancelled()

        fitted = await asyncio.to_thread(fit, examples, train_rows, holdout_rows, params, context)
        fitted.metrics.update(serving_users=int(len(users.ids)), serving_items=int(len(items.ids)))

        _progress(context, "archiving")
        context.check_cancelled()
        version = model_version(run.run_id)
        meta = {
            "model_version": version, "feature_set": "full", "hidden": params["hidden"],
            "context_features": CONTEXT_FEATURES, "metrics": fitted.metrics,
            "retraining": {"run_id": run.run_id, "parameters": params,
                           "features": [*USER_FEATURES, *ITEM_FEATURES], "entity_query": query},
        }
        mar = await asyncio.to_thread(write_archive, fitted, users, items, meta, workdir)
        context.report(1.0, "archiving")
        return TrainedModel(
            artifact_path=mar, metrics=fitted.metrics, parameters={k: str(v) for k, v in params.items()},
            signature=archive.signature({name: list(values) for name, values in CONTEXT_FEATURES.items()}),
            description=_description(params, examples, run),
            tags={"retraining.run_id": run.run_id},
            feature_samples=training_samples(examples, train_rows),
        )

    @staticmethod
    async def _table(training_set: TrainingSetReader, key: str, features: Sequence[str], query: str,
                     encode: Callable[[Columns, np.ndarray], np.ndarray]) -> FeatureTable:
        columns = await training_set(features, query, "as_of")
        return await asyncio.to_thread(build_table, columns, key, features, encode)


def _description(params: Mapping[str, Any], examples: Examples, run: Run) -> str:
    hidden = params["hidden"]
    network = f"MLP ({', '.join(map(str, hidden))})" if hidden else "logistic regression"
    used = examples.rows_read - examples.rows_dropped_null
    return (f"{network} on all features, taste vectors included, plus the request context (device); "
            f"retrained by run {run.run_id} from the {used:,} latest demo interaction events, with features "
            f"as of their time (the latest {params['holdout_fraction']:.0%} held out)")
