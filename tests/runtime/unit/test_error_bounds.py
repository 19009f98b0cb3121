"""Errors never grow with user input: the domain quotes a short prefix of a few values and
bounds ErrorInfo metadata; the status mapping caps whatever reaches it."""

from __future__ import annotations

import base64
import urllib.parse

import grpc

from ml_serving_server import errors
from ml_serving_server.errors import listed, quoted
from ml_serving_server.runtime import status


def test_quoted_keeps_a_short_escaped_prefix():
    assert quoted("arm-1") == "'arm-1'"
    assert quoted("x" * 1000) == "'" + "x" * errors.QUOTE_CHARS + "'…"
    assert quoted("a\nb\x00") == "'a\\nb\\x00'"  # no raw control characters in logs or headers


def test_listed_shows_a_few_values_and_counts_the_rest():
    assert listed(["a", "b"]) == "'a', 'b'"
    assert listed(str(i) for i in range(20_000)) == "'0', '1', '2', '3', '4' and 19995 more"


def test_domain_error_metadata_values_are_bounded():
    error = errors.NotFound("gone", reason=errors.CommonReason.INVALID_FIELD, metadata={"bandit": "b" * 10_000})
    assert error.metadata["bandit"] == "b" * errors.METADATA_VALUE_CHARS + "…"
    assert errors.InvalidArgument("name", "bad", value="v" * 128).metadata["value"] == "v" * 128  # a valid id fits


def trailer_bytes(result: grpc.Status) -> int:
    """The status's size as HTTP/2 trailers: grpc-message percent-encoded, -bin values base64."""
    size = len(urllib.parse.quote(result.details.encode(), safe=" "))
    for key, value in result.trailing_metadata:
        size += len(key) + (len(base64.b64encode(value)) if key.endswith("-bin") else len(value))
    return size


def test_a_status_fits_in_the_trailers_whatever_it_is_given():
    metadata = {f"{i}" + "k" * 500: "ü" * 100_000 for i in range(100)}
    huge = status.rich_status(grpc.StatusCode.INVALID_ARGUMENT, "é" * 100_000, "INVALID_FIELD", "d", metadata)
    assert len(huge.details.encode()) <= status.MAX_MESSAGE_BYTES and huge.details.endswith("…")
    assert trailer_bytes(huge) < 6 * 1024  # gRPC's default limit is 8 KiB


def test_a_small_status_is_left_alone():
    small = status.rich_status(grpc.StatusCode.NOT_FOUND, "bandit 'b' not found", "BANDIT_NOT_FOUND", "d",
                               {"bandit": "b"})
    assert small.details == "bandit 'b' not found"
