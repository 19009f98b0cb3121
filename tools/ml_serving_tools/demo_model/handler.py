"""TorchServe handler of the demo `recommendation-model` (both versions).

Self-contained on purpose: inside TorchServe this file runs as the top-level module `handler`
next to the archive's extra files (`model_meta.json`, `features.npz`), so it imports nothing
from the project, only torch and numpy. Training imports `build_network` from here, so the
network served is the network trained.

Request (one per TorchServe request; JSON under "body"/"data" as bytes, str or an already
decoded dict, or the fields themselves as separate inputs, as gRPC's `input` map sends them):
    {"user_id": 123, "context": {"device": "mobile"}, "item_ids": [1, 2], "top_k": 5}
    {"user_id": 123, "item_id": 7}
Numbers may arrive as integral floats (123.0): a google.protobuf.Struct, which the mesh's
Predict carries, has only doubles.
Response: {"user_id", "model_version", "scores": [{"item_id", "score"}, ...]} ranked by score
(top_k, default 10), or {"user_id", "model_version", "item_id", "score"} for one item_id.

Tensor-style requests, those giving `user_id` as a list (a length-1 tensor), as the mesh's Open
Inference Protocol sends them (`{"user_id": [123], "top_k": [5], "context": ["{...}"]}`), or a
KServe v2 body (`{"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data":
[123]}, ...]}`), get the same ranking as the signature's output tensors, parallel arrays keyed
by output name: {"item_ids": [...], "scores": [...]} (one element each for one item_id).

A bad request gets status 400 and {"error": message}; the others in its batch still succeed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

META_FILE = "model_meta.json"
FEATURES_FILE = "features.npz"
DEFAULT_TOP_K = 10
MAX_ITEM_IDS = 10_000


def build_network(in_dim: int, hidden: list[int]) -> nn.Sequential:
    """An MLP from concatenated [user, item, context] features to a click logit; with no hidden
    layers it is logistic regression."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class BadRequest(ValueError):
    """The request cannot be scored; the message says why, for the caller."""


@dataclass
class Query:
    user_row: int
    user_id: int
    items: torch.Tensor  # item rows to score
    context: list[float]
    top_k: int
    single_item: int | None  # set when the caller asked for one item's score
    tensors: bool = False  # answer as output tensors: {"item_ids": [...], "scores": [...]}


def _json(value: Any, what: str, strict: bool = True) -> Any:
    """Bytes or text decoded as JSON; not strict: text that is no JSON stays text (a gRPC
    input like b"abc"), to be judged by the field's own check."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            if strict:
                raise BadRequest(f"{what} is not valid JSON: {err.msg}") from None
    return value


def _fields(request: Any) -> tuple[dict[str, Any], bool]:
    """The request's fields as one dict, whatever envelope they came in, and whether they came
    as tensors (a KServe v2 `inputs` list, or `user_id` given as a list)."""
    if not isinstance(request, dict):
        raise BadRequest("request must be a JSON object")
    if "body" in request or "data" in request:
        body = request.get("body") if request.get("body") is not None else request.get("data")
        fields = _json(body, "request body")
    else:  # gRPC `input` map: one entry per field, each value JSON-encoded bytes
        fields = {key: _json(value, key, strict=False) for key, value in request.items()}
    if not isinstance(fields, dict):
        raise BadRequest("request body must be a JSON object")
    if isinstance(fields.get("inputs"), list):  # OIP request: named tensors
        tensors = {}
        for tensor in fields["inputs"]:
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise BadRequest("each OIP input must be an object with a name")
            tensors[tensor["name"]] = tensor.get("data")
        return tensors, True
    return fields, isinstance(fields.get("user_id"), list)


def _scalar(value: Any, name: str) -> Any:
    """A scalar, unwrapping an OIP length-1 tensor."""
    if isinstance(value, list):
        if len(value) != 1:
            raise BadRequest(f"{name} must be a single value, got a list of {len(value)}")
        value = value[0]
    return value


def _int(value: Any, name: str) -> int:
    value = _scalar(value, name)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # ids often travel as strings
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON from a protobuf Struct: every number is a double
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return value


class RecommendationHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, META_FILE)) as f:
            self.meta = json.load(f)
        self.version = self.meta["model_version"]
        # Read-only features, looked up by id: tensors built once, so a request only indexes.
        with np.load(os.path.join(model_dir, FEATURES_FILE), allow_pickle=False) as tables:
            self.user_x = torch.from_numpy(tables["user_x"])
            self.item_x = torch.from_numpy(tables["item_x"])
            self.user_row = {int(uid): n for n, uid in enumerate(tables["user_ids"])}
            self.item_row = {int(iid): n for n, iid in enumerate(tables["item_ids"])}
            self.item_ids = tables["item_ids"].astype(np.int64)
        self.all_items = torch.arange(len(self.item_ids))
        self.context_values: dict[str, list[str]] = self.meta["context_features"]
        serialized = (context.manifest or {}).get("model", {}).get("serializedFile", "model.pt")
        in_dim = self.user_x.shape[1] + self.item_x.shape[1] + len(self.context_values)
        self.net = build_network(in_dim, self.meta["hidden"])
        state = torch.load(os.path.join(model_dir, serialized), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net.eval()
        self.initialized = True

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, request: Any) -> Query:
        fields, tensors = _fields(request)
        if fields.get("user_id") is None:
            raise BadRequest("user_id is required")
        user_id = _int(fields["user_id"], "user_id")
        if user_id not in self.user_row:
            raise BadRequest(f"unknown user_id {user_id}: this model knows {len(self.user_row)} users")

        single = None
        if fields.get("item_id") is not None:
            single = _int(fields["item_id"], "item_id")
            rows = [self._item_row(single)]
        elif fields.get("item_ids") is not None:
            ids = fields["item_ids"]
            if not isinstance(ids, list) or not ids:
                raise BadRequest("item_ids must be a non-empty list of integers")
            if len(ids) > MAX_ITEM_IDS:
                raise BadRequest(f"item_ids has {len(ids)} entries; at most {MAX_ITEM_IDS}")
            rows = [self._item_row(_int(i, "item_ids[]")) for i in ids]
        else:
            rows = None

        top_k = DEFAULT_TOP_K
        if fields.get("top_k") is not None:
            top_k = _int(fields["top_k"], "top_k")
            if top_k < 1:
                raise BadRequest(f"top_k must be at least 1, got {top_k}")

        return Query(
            user_row=self.user_row[user_id], user_id=user_id,
            items=self.all_items if rows is None else torch.tensor(rows),
            context=self._context(fields.get("context")), top_k=top_k, single_item=single, tensors=tensors,
        )

    def _item_row(self, item_id: int) -> int:
        row = self.item_row.get(item_id)
        if row is None:
            raise BadRequest(f"unknown item_id {item_id}: this model knows {len(self.item_row)} items")
        return row

    def _context(self, raw: Any) -> list[float]:
        """Context features this version uses, each encoded as its value's index; the first
        value when absent. Keys the model does not use (user_segments, ...) are ignored."""
        raw = _json(_scalar(raw, "context"), "context") if raw is not None else {}
        if not isinstance(raw, dict):
            raise BadRequest("context must be a JSON object")
        encoded = []
        for name, values in self.context_values.items():
            value = raw.get(name, values[0])
            if value not in values:
                raise BadRequest(f"context.{name} must be one of {values}, got {value!r}")
            encoded.append(float(values.index(value)))
        return encoded

    # -- scoring -------------------------------------------------------------------------------

    @torch.inference_mode()
    def score(self, queries: list[Query]) -> list[torch.Tensor]:
        """Click probabilities of every query's candidates, all queries in one forward pass."""
        if not queries:
            return []
        sizes = [len(q.items) for q in queries]
        users = torch.repeat_interleave(torch.tensor([q.user_row for q in queries]), torch.tensor(sizes))
        items = torch.cat([q.items for q in queries])
        ctx = torch.tensor([q.context for q in queries], dtype=torch.float32)
        ctx = torch.repeat_interleave(ctx.reshape(len(queries), len(self.context_values)), torch.tensor(sizes), dim=0)
        x = torch.cat([self.user_x[users], self.item_x[items], ctx], dim=1)
        return list(torch.sigmoid(self.net(x).squeeze(1)).split(sizes))

    def respond(self, query: Query, scores: torch.Tensor) -> dict[str, Any]:
        if query.single_item is not None:
            ids, values = [query.single_item], [round(float(scores[0]), 6)]
        else:
            order = torch.sort(scores, descending=True, stable=True).indices[: query.top_k]
            ids = [int(i) for i in self.item_ids[query.items[order].numpy()]]
            values = [round(float(s), 6) for s in scores[order].tolist()]
        if query.tensors:  # the signature's outputs: INT64 item_ids [-1], FP32 scores [-1]
            return {"item_ids": ids, "scores": values}
        out: dict[str, Any] = {"user_id": query.user_id, "model_version": self.version}
        if query.single_item is not None:
            out.update(item_id=ids[0], score=values[0])
        else:
            out["scores"] = [{"item_id": i, "score": s} for i, s in zip(ids, values)]
        return out

    def handle(self, data: list[Any], context: Any) -> list[dict[str, Any]]:
        """N requests in, N responses out. A bad request answers 400 with its message and does
        not fail its neighbours in the batch."""
        parsed: list[Query | BadRequest] = []
        for request in data:
            try:
                parsed.append(self.parse(request))
            except BadRequest as err:
                parsed.append(err)
        if len(parsed) == 1 and isinstance(parsed[0], BadRequest):
            raise _rejection(parsed[0])
        good = [q for q in parsed if isinstance(q, Query)]
        scores = iter(self.score(good))
        responses: list[dict[str, Any]] = []
        for idx, item in enumerate(parsed):
            if isinstance(item, BadRequest):
                if hasattr(context, "set_response_status"):
                    context.set_response_status(400, str(item), idx)
                responses.append({"error": str(item)})
            else:
                responses.append(self.respond(item, next(scores)))
        return responses


def _rejection(err: BadRequest) -> Exception:
    """What to raise for a lone bad request: TorchServe's PredictionException carries its
    message and a 400 to the caller over REST and gRPC (any other exception is reported as
    "Prediction failed", 503). Outside TorchServe the BadRequest itself."""
    try:
        from ts.utils.util import PredictionException
    except ImportError:
        return err
    return PredictionException(str(err), 400)


_service = RecommendationHandler()


def handle(data: list[Any] | None, context: Any) -> list[dict[str, Any]] | None:
    """TorchServe's module-level entry point; called with data=None once at load time."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
