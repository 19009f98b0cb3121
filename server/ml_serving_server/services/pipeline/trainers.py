"""The trainers named by PIPELINE_TRAINERS (`model=module:Class,...`), imported at start: a bad
entry stops the server (or worker), naming it."""

from __future__ import annotations

import importlib

from .domain.retraining import Trainer


def load_trainers(spec: str) -> dict[str, Trainer]:
    trainers: dict[str, Trainer] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        model, _, target = entry.partition("=")
        module_name, _, class_name = target.strip().partition(":")
        if not model.strip() or not module_name or not class_name:
            raise ValueError(f"PIPELINE_TRAINERS: {entry!r} is not model=module:Class")
        try:
            trainer_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"PIPELINE_TRAINERS: cannot load {target.strip()!r} for {model.strip()!r}: {error}") \
                from None
        if model.strip() in trainers:
            raise ValueError(f"PIPELINE_TRAINERS: model {model.strip()!r} is named twice")
        trainers[model.strip()] = trainer_class()
    return trainers
