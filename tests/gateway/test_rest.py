"""REST through a real Envoy in front of a real mesh server and real Redis, with a token
carrying every scope (`stack.token`)."""

from __future__ import annotations

import uuid

import pytest

from ..support import call

PIPELINE_PATHS = [  # the seed's retraining and monitoring paths, asked wrongly: a 400 naming the field
    ("POST", "/api/v1/ml/retraining/trigger", {}, "model_name"),
    ("GET", "/api/v1/ml/retraining/status/run-1", None, "run_id"),
    ("POST", "/api/v1/ml/monitoring/record", {"modelName": "m", "metricName": "auc", "value": "NaN"}, "value"),
    ("GET", "/api/v1/ml/monitoring/alerts?pageSize=5000", None, "page_size"),
]


@pytest.fixture(scope="module")
def bandit(stack) -> str:
    name = f"rest-{uuid.uuid4().hex[:8]}"
    reply = call(stack.front_door, "POST", "/api/v1/bandits/definitions", {
        "name": name, "arms": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "contextDimension": 2}, token=stack.token)
    assert reply.status == 200, reply.body
    assert reply.json()["bandit"]["name"] == name
    return name


def stats(stack, name):
    reply = call(stack.front_door, "GET", f"/api/v1/bandits/stats?bandit={name}", token=stack.token)
    assert reply.status == 200, reply.body
    return reply.json()


def test_the_four_bandit_paths(stack, bandit):
    selected = call(stack.front_door, "POST", "/api/v1/bandits/select", {"bandit": bandit, "k": 2},
                    token=stack.token).json()
    assert len(selected["choices"]) == 2 and selected["decisionId"]

    contextual = call(stack.front_door, "POST", "/api/v1/bandits/select/contextual",
                      {"bandit": bandit, "context": [0.5, 1.0]}, token=stack.token).json()
    assert contextual["algorithm"] == "CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON"

    arm = selected["choices"][0]["armId"]
    reward = call(stack.front_door, "POST", "/api/v1/bandits/reward",
                  {"decisionId": selected["decisionId"], "armId": arm, "reward": 1, "eventId": "rest-1"},
                  token=stack.token)
    assert reward.status == 200 and reward.json() == {"duplicate": False, "bandit": bandit, "armId": arm}

    body = stats(stack, bandit)
    arms = {a["armId"]: a for a in body["arms"]}
    assert body["totalPulls"] == "3"  # int64 prints as a JSON string, as grpc-gateway does
    assert arms[arm]["rewardCount"] == "1" and arms[arm]["posteriorAlpha"] == 2
    assert set(arms[arm]) >= {"posteriorMean", "credibleIntervalLower", "credibleIntervalUpper", "selectionShare"}


@pytest.mark.parametrize("method, path, body, field", PIPELINE_PATHS)
def test_pipeline_paths_name_a_bad_field(stack, method, path, body, field):
    reply = call(stack.front_door, method, path, body, token=stack.token)
    assert reply.status == 400, reply.body
    error = reply.json()
    assert error["code"] == 3 and error["details"][0]["metadata"]["field"] == field, error


BAD_INPUTS = [
    # (what, method, path, body or raw bytes, expected HTTP status, text the message must contain)
    ("missing bandit", "POST", "/api/v1/bandits/select", {}, 400, "bandit"),
    ("empty bandit", "POST", "/api/v1/bandits/select", {"bandit": ""}, 400, "bandit"),
    ("k below 1", "POST", "/api/v1/bandits/select", {"bandit": "{b}", "k": 0}, 400, "k"),
    ("k above arms", "POST", "/api/v1/bandits/select", {"bandit": "{b}", "k": 4}, 400, "k"),
    ("unknown bandit", "POST", "/api/v1/bandits/select", {"bandit": "nope-nope"}, 404, "nope-nope"),
    ("reward above 1", "POST", "/api/v1/bandits/reward", {"bandit": "{b}", "armId": "a", "reward": 1.5}, 400,
     "reward"),
    ("reward below 0", "POST", "/api/v1/bandits/reward", {"bandit": "{b}", "armId": "a", "reward": -0.1}, 400,
     "reward"),
    ("context length", "POST", "/api/v1/bandits/select/contextual", {"bandit": "{b}", "context": [1, 2, 3]}, 400,
     "context"),
    ("malformed JSON", "POST", "/api/v1/bandits/select", b'{"bandit": ', 400, ""),
    ("wrong JSON type", "POST", "/api/v1/bandits/select", {"bandit": "{b}", "k": "many"}, 400, ""),
    ("unknown query parameter", "GET", "/api/v1/bandits/stats?bandit={b}&colour=red", None, 400, ""),
    ("unknown path", "GET", "/api/v1/bandits/nothing/here", None, 404, ""),
    ("unknown method", "DELETE", "/api/v1/bandits/select", None, 404, ""),
]


@pytest.mark.parametrize("what, method, path, body, status, mention", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_json_status_and_changes_nothing(stack, bandit, what, method, path, body, status, mention):
    before = stats(stack, bandit)
    path = path.replace("{b}", bandit)
    if isinstance(body, dict):
        body = {k: (v.replace("{b}", bandit) if isinstance(v, str) else v) for k, v in body.items()}
    reply = call(stack.front_door, method, path, raw=body, token=stack.token) if isinstance(body, bytes) else \
        call(stack.front_door, method, path, body, token=stack.token)
    assert reply.status == status, (what, reply.body)
    assert reply.content_type.startswith("application/json"), (what, reply.content_type, reply.body)
    error = reply.json()
    assert error["code"] != 0 and error["message"], error
    assert mention in error["message"], error
    if status in (400, 404) and "details" in error and error["details"]:
        assert error["details"][0]["@type"].endswith("google.rpc.ErrorInfo")
    assert stats(stack, bandit) == before


def test_no_traceback_in_server_logs(stack, bandit):
    # Runs after the bad-input tests in this module: none of them may reach a traceback.
    assert "Traceback" not in stack.log_path.read_text()
