"""Every RPC of every mesh service declares the scope a caller's token must carry, in the
contract itself (option mnbara.mlserving.auth.v1.required_scope)."""

from __future__ import annotations

import re

import pytest
from mnbara.mlserving.auth.v1 import auth_pb2
from mnbara.mlserving.catalog import SERVICES

SCOPE = re.compile(r"^(?P<service>[a-z]+)\.(read|write|admin|promote)$")


def methods():
    for entry in SERVICES:
        for method in entry.messages.DESCRIPTOR.services_by_name[entry.full_name.rsplit(".", 1)[1]].methods:
            yield entry, method


@pytest.mark.parametrize("entry, method", list(methods()), ids=lambda v: getattr(v, "name", ""))
def test_every_rpc_declares_a_scope_of_its_own_service(entry, method):
    scope = method.GetOptions().Extensions[auth_pb2.required_scope]
    match = SCOPE.match(scope)
    assert match, f"{method.full_name} has no (or a malformed) required_scope: {scope!r}"
    assert match["service"] == entry.name


def test_reading_never_needs_more_than_read():
    for _, method in methods():
        if method.name.startswith(("Get", "List", "Describe", "Resolve", "Watch")):
            assert method.GetOptions().Extensions[auth_pb2.required_scope].endswith(".read"), method.full_name
