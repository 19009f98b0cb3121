"""GetTrainingSet through the real Envoy in front of a real mesh process (the checkout's demo views;
their source tables are the demo loader's and absent here, so these calls stop before the source):
errors of the server-streaming RPC as REST statuses, and its scope."""

from __future__ import annotations

from ...support import call

TRAINING_SET = "/api/v1/ml/features/training-set"
ROWS = {"rows": [{"entityIds": {"user_id": "1"}, "timestamp": "2026-03-01T10:00:00Z"}]}


def test_refusals_are_rest_errors_naming_the_view_or_field(stack):
    aggregate = call(stack.front_door, "POST", TRAINING_SET, token=stack.token,
                     body={"features": ["user_profile", "user_engagement"], "entityRows": ROWS})
    assert aggregate.status == 400, aggregate.body
    (detail,) = aggregate.json()["details"]
    assert (detail["reason"], detail["metadata"]["feature_view"], detail["metadata"]["field"]) == (
        "VIEW_NOT_POINT_IN_TIME", "user_engagement", "features[1]")
    unknown = call(stack.front_door, "POST", TRAINING_SET, token=stack.token,
                   body={"features": ["user_profile:shoe_size"], "entityQuery": "SELECT 1"})
    assert unknown.status == 400 and unknown.json()["details"][0]["reason"] == "UNKNOWN_FEATURE"
    bad_key = call(stack.front_door, "POST", TRAINING_SET, token=stack.token,
                   body={"features": ["user_profile"], "entityRows": {"rows": [{"entityIds": {"user_id": "x"},
                                                                               "timestamp": "2026-03-01T10:00:00Z"}]}})
    assert bad_key.status == 400, bad_key.body
    assert bad_key.json()["details"][0]["metadata"]["field"] == "entity_rows.rows[0].entity_ids[user_id]"


def test_it_needs_pipeline_read(stack):
    reply = call(stack.front_door, "POST", TRAINING_SET, token=stack.mint(["pipeline.write"], "writer"),
                 body={"features": ["user_profile"], "entityRows": ROWS})
    assert reply.status == 403, reply.body
