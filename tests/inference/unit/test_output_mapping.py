"""The model's output bytes as the response carries them: JSON as a protobuf Value (every JSON
type, nested), anything else as raw bytes. No I/O."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from mnbara.mlserving.inference.v1 import inference_pb2 as pb

from ml_serving_server.services.inference.servicer import fill_output


@pytest.mark.parametrize("value", [
    {"scores": [{"item_id": 7, "score": 0.25}], "user": None, "ok": True, "name": "é"},
    [1, "2", None, [False]], None, True, 3.5, "text", {},
])
def test_json_outputs_become_values(value):
    response = pb.PredictResponse()
    fill_output(response, json.dumps(value).encode(), raw=False)
    assert response.WhichOneof("output") == "prediction"
    assert json_format.MessageToDict(response.prediction) == value


@pytest.mark.parametrize("output", [b"\xff\x00", b"not json", b'{"unterminated": '])
def test_other_outputs_stay_raw(output):
    response = pb.PredictResponse()
    fill_output(response, output, raw=False)
    assert response.WhichOneof("output") == "raw_prediction" and response.raw_prediction == output


def test_raw_output_when_asked_even_for_json():
    response = pb.PredictResponse()
    fill_output(response, b'{"a": 1}', raw=True)
    assert response.raw_prediction == b'{"a": 1}'
