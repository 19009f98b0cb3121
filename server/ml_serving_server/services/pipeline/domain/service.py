"""The feature store's use cases in one place: the schema with its materialisation state, online
reads (online.py), materialisation (materialization.py) and point-in-time training sets
(training.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .feature_views import FeatureView
from .materialization import Materializer
from .online import FeatureReader
from .ports import MaterializationState, ViewState
from .schema import FeatureSchema
from .training import TrainingSets


@dataclass(frozen=True)
class ViewDescription:
    view: FeatureView
    state: ViewState | None  # None: never materialised with this definition


class FeatureStore:
    def __init__(self, schema: FeatureSchema, reader: FeatureReader, materializer: Materializer,
                 state: MaterializationState, training: TrainingSets | None = None):
        self.schema = schema
        self.training = training
        self.reader = reader
        self.materializer = materializer
        self._state = state

    async def describe(self, feature_view: str = "") -> list[ViewDescription]:
        """The views (one, or all), each with what is materialised of its current definition."""
        views: Sequence[FeatureView] = self.schema.select(feature_view)
        states = await self._state.view_states()
        described = []
        for view in views:
            state = states.get(view.name)
            if state is not None and state.definition_hash != view.definition_hash:
                state = None  # the watermark of another definition says nothing about this one
            described.append(ViewDescription(view, state))
        return described

    async def close(self) -> None:
        await self.materializer.close()
