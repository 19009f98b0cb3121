"""Errors a REST caller gets through the real Envoy: bounded however large the request,
and precise (a reused event id is 409)."""

from __future__ import annotations

import uuid

import pytest

from ...support import call


@pytest.fixture(scope="module")
def bandit(stack) -> str:
    name = f"rest-errors-{uuid.uuid4().hex[:8]}"
    reply = call(stack.front_door, "POST", "/api/v1/bandits/definitions",
                 {"name": name, "arms": [{"id": "a"}, {"id": "b"}]}, token=stack.token)
    assert reply.status == 200, reply.body
    return name


@pytest.mark.parametrize("candidates, mention", [
    ([f"arm-{i}" for i in range(20_000)], "candidate_arm_ids: must hold at most 1000 ids, got 20000"),
    ([f"{'x' * 100}-{i}" for i in range(1000)], "and 995 more"),
], ids=["20000 ids", "1000 unknown long ids"])
def test_a_select_with_many_unknown_candidates_is_a_short_400(stack, bandit, candidates, mention):
    reply = call(stack.front_door, "POST", "/api/v1/bandits/select", {"bandit": bandit, "candidateArmIds": candidates},
                 token=stack.token)
    assert reply.status == 400, reply.body[:300]
    error = reply.json()
    assert mention in error["message"] and len(error["message"]) < 512
    assert error["details"][0]["metadata"]["field"] == "candidate_arm_ids"


def test_a_reused_event_id_with_another_reward_is_409(stack, bandit):
    reward = {"bandit": bandit, "armId": "a", "reward": 1, "eventId": f"click-{uuid.uuid4().hex[:6]}"}
    assert call(stack.front_door, "POST", "/api/v1/bandits/reward", reward, token=stack.token).status == 200
    again = call(stack.front_door, "POST", "/api/v1/bandits/reward", reward, token=stack.token)
    assert again.status == 200 and again.json()["duplicate"] is True
    conflict = call(stack.front_door, "POST", "/api/v1/bandits/reward", {**reward, "armId": "b"}, token=stack.token)
    assert conflict.status == 409, conflict.body
    assert conflict.json()["details"][0]["reason"] == "EVENT_ID_CONFLICT"


def test_no_traceback_in_server_logs(stack, bandit):
    assert "Traceback" not in stack.log_path.read_text()


def test_the_path_decides_which_bandit_a_patch_changes(stack):
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    assert call(stack.front_door, "POST", "/api/v1/bandits/definitions", {"name": victim, "arms": [{"id": "a"}]},
                token=stack.token).status == 200
    reply = call(stack.front_door, "PATCH", "/api/v1/bandits/definitions/does-not-exist",
                 {"name": victim, "description": "hijacked"}, token=stack.token)
    assert reply.status == 400, reply.body
    stored = call(stack.front_door, "GET", f"/api/v1/bandits/definitions/{victim}", token=stack.token).json()
    assert stored["bandit"]["description"] == ""
