"""ErrorInfo reasons are declared in the contracts: each service's proto has an ErrorReason
enum, and each built service raises only members of a Python enum equal to it."""

from __future__ import annotations

import pytest
from mnbara.mlserving.catalog import SERVICES

from ml_serving_server.app import SERVICE_PACKAGES
from ml_serving_server.errors import CommonReason


def proto_reasons(entry) -> set[str]:
    return {name for name in entry.error_reasons.keys() if name != "ERROR_REASON_UNSPECIFIED"}


@pytest.mark.parametrize("entry", SERVICES, ids=lambda e: e.name)
def test_every_contract_declares_the_reasons_the_runtime_raises(entry):
    assert {r.name for r in CommonReason} <= proto_reasons(entry)


@pytest.mark.parametrize("package", SERVICE_PACKAGES, ids=lambda p: p.entry.name)
def test_a_built_service_raises_exactly_the_reasons_of_its_contract(package):
    assert {r.name for r in package.reasons} == proto_reasons(package.entry)
