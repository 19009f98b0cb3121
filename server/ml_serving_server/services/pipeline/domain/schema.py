"""The feature schema: every declared view, read once at start, and its version."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from ....errors import InvalidArgument, NotFound, quoted
from .errors import ErrorReason, InvalidDefinition
from .feature_views import MAX_NAME_CHARS, NAME_PATTERN, FeatureView, is_name

VERSION_CHARS = 16
"""Hex digits of a schema version (64 bits: no two schemas of a deployment collide)."""


@dataclass(frozen=True)
class FeatureSchema:
    views: tuple[FeatureView, ...]  # in name order

    def __post_init__(self) -> None:
        views = tuple(sorted(self.views, key=lambda view: view.name))
        for before, after in zip(views, views[1:]):
            if before.name == after.name:
                raise InvalidDefinition(("name",), f"two feature views are named {before.name!r}")
        object.__setattr__(self, "views", views)

    @functools.cached_property
    def version(self) -> str:
        """Changes whenever any view is added, removed or changed."""
        lines = "".join(f"{view.name} {view.definition_hash}\n" for view in self.views)
        return hashlib.sha256(lines.encode()).hexdigest()[:VERSION_CHARS]

    @functools.cached_property
    def _by_name(self) -> dict[str, FeatureView]:
        return {view.name: view for view in self.views}

    def select(self, feature_view: str) -> tuple[FeatureView, ...]:
        """The view named `feature_view`, or every view when it is empty."""
        if not feature_view:
            return self.views
        return (self.view(feature_view, field="feature_view"),)

    def view(self, name: str, *, field: str) -> FeatureView:
        """The view `name`, which the request field `field` gave."""
        if len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(field, f"must be at most {MAX_NAME_CHARS} characters, got {len(name)}")
        if not is_name(name):
            raise InvalidArgument(field, f"must match {NAME_PATTERN}, got {quoted(name)}")
        view = self._by_name.get(name)
        if view is None:
            raise NotFound(f"no feature view named {quoted(name)}", reason=ErrorReason.FEATURE_VIEW_NOT_FOUND,
                           metadata={"feature_view": name})
        return view
