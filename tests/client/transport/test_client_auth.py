"""The client sends a bearer token: from ML_SERVING_TOKEN, given, or from a provider per call."""

from __future__ import annotations

import pytest

import ml_serving
from ml_serving import BanditClient
from ml_serving_tools.devauth import mint_token


async def test_without_a_token_the_call_is_unauthenticated(mesh, monkeypatch):
    monkeypatch.delenv("ML_SERVING_TOKEN")
    async with BanditClient(address=f"127.0.0.1:{mesh.port}") as bandits:
        with pytest.raises(ml_serving.UnauthenticatedError) as caught:
            await bandits.get_stats(bandit="any")
    assert caught.value.reason == "UNAUTHENTICATED"


async def test_a_token_without_the_scope_is_permission_denied(mesh, dev_keys):
    read_only = mint_token(dev_keys, scopes=["bandit.read"])
    async with BanditClient(address=f"127.0.0.1:{mesh.port}", token=read_only) as bandits:
        with pytest.raises(ml_serving.PermissionDeniedError) as caught:
            await bandits.create_bandit(name="not-allowed", arms=["a"])
    assert (caught.value.reason, caught.value.metadata["scope"]) == ("SCOPE_REQUIRED", "bandit.admin")


async def test_a_token_provider_is_asked_on_every_call(mesh, dev_keys, monkeypatch):
    monkeypatch.delenv("ML_SERVING_TOKEN")
    asked = []

    def provider() -> str:
        asked.append(1)
        return mint_token(dev_keys, scopes=["bandit.read"])

    async with BanditClient(address=f"127.0.0.1:{mesh.port}", token=provider) as bandits:
        for _ in range(2):
            with pytest.raises(ml_serving.NotFoundError):  # authenticated: the bandit is simply unknown
                await bandits.get_stats(bandit="no-such-bandit")
    assert len(asked) == 2
