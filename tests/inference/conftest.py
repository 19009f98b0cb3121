"""Inference fixtures: one real TorchServe for the test session (private, in a temporary state
dir, stopped at the end) and small purpose-built models archived into its model store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ml_serving_tools.devservices.torchserve import TorchServeServer, start_torchserve

from .torchserve_models import HANDLERS, archive

MODEL_VERSION = "1.0"


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory) -> TorchServeServer:
    """A TorchServe for this session: `.endpoints` (gRPC and HTTP addresses, model store)."""
    server = start_torchserve(tmp_path_factory.mktemp("torchserve-state"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ts_archives(torchserve, tmp_path_factory) -> dict[str, str]:
    """Archive file names in the model store (the `url` to register), by handler kind
    ("echo", "error", "slow", "stream", "batch", "broken"), each at version 1.0; "echo-2.0"
    is the echo handler at version 2.0."""
    work = tmp_path_factory.mktemp("ts-handlers")
    store = torchserve.model_store
    wanted = {kind: (kind, MODEL_VERSION) for kind in HANDLERS} | {"echo-2.0": ("echo", "2.0")}
    with ThreadPoolExecutor(len(wanted)) as pool:  # each archiver run is a Python start-up
        futures = {key: pool.submit(archive, kind, kind, version, work, store)
                   for key, (kind, version) in wanted.items()}
        return {key: future.result().name for key, future in futures.items()}
