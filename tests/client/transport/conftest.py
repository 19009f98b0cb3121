"""Clients in these tests find their token where users put it: ML_SERVING_TOKEN."""

import pytest


@pytest.fixture(autouse=True)
def ml_serving_token(monkeypatch, token):
    monkeypatch.setenv("ML_SERVING_TOKEN", token)
    return token
