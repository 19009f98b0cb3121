"""GetFeatures and MaterializeFeatures through the real Envoy in front of a real mesh process (the
checkout's demo views; their source tables are the demo loader's, so these calls stay clear of
the source): the JSON shape of an answer, and errors as REST statuses."""

from __future__ import annotations

from ...support import call

GET = "/api/v1/ml/features/get"
MATERIALIZE = "/api/v1/ml/features/materialize"


def test_an_entity_missing_online_without_read_through_is_answered_not_found(stack):
    reply = call(stack.front_door, "POST", GET, token=stack.token,
                 body={"featureView": "user_profile", "entityIds": ["123456789"], "featureNames": ["country"],
                       "disableReadThrough": True})
    assert reply.status == 200, reply.body
    body = reply.json()
    (entity,) = body["entities"]
    assert (entity["entityId"], entity["found"], entity["readThrough"]) == ("123456789", False, False)
    assert entity["features"]["country"]["source"] == "FEATURE_VALUE_SOURCE_NOT_FOUND"
    assert body["onlineStoreUnavailable"] is False and body["readThroughCount"] == 0


def test_bad_reads_are_rest_errors_naming_the_field(stack):
    bad_key = call(stack.front_door, "POST", GET, token=stack.token,
                   body={"featureView": "user_profile", "entityIds": ["1", "abc"]})
    assert bad_key.status == 400, bad_key.body
    assert bad_key.json()["details"][0]["metadata"]["field"] == "entity_ids[1]"
    unknown = call(stack.front_door, "POST", GET, token=stack.token,
                   body={"featureView": "user_profile", "entityId": "1", "featureNames": ["shoe_size"]})
    assert unknown.status == 400 and unknown.json()["details"][0]["reason"] == "UNKNOWN_FEATURE"
    missing = call(stack.front_door, "POST", GET, token=stack.token, body={"featureView": "nope", "entityId": "1"})
    assert missing.status == 404 and missing.json()["details"][0]["reason"] == "FEATURE_VIEW_NOT_FOUND"


def test_materialising_needs_pipeline_write(stack):
    reply = call(stack.front_door, "POST", MATERIALIZE, token=stack.mint(["pipeline.read"], "reader"),
                 body={"featureViews": ["user_profile"]})
    assert reply.status == 403, reply.body


def test_a_materialisation_job_is_read_at_its_path(stack):
    unknown = call(stack.front_door, "GET", "/api/v1/ml/features/materialization-jobs/"
                   "6f1c1c4e-0000-4000-8000-000000000000", token=stack.token)
    assert unknown.status == 404 and unknown.json()["details"][0]["reason"] == "MATERIALIZATION_JOB_NOT_FOUND"
    bad = call(stack.front_door, "GET", "/api/v1/ml/features/materialization-jobs/not-a-job", token=stack.token)
    assert bad.status == 400 and bad.json()["details"][0]["metadata"]["field"] == "job_id"


def test_the_columns_layout_over_rest(stack):
    reply = call(stack.front_door, "POST", GET, token=stack.token,
                 body={"views": [{"featureView": "user_profile", "featureNames": ["country"]}],
                       "entityIds": ["123456789"], "disableReadThrough": True, "layout": "FEATURES_LAYOUT_COLUMNS"})
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["entityIds"] == ["123456789"] and not body.get("entities")
    (status,) = body["viewStatuses"]
    assert status["found"] == [False] and status["sources"] == ["FEATURE_VALUE_SOURCE_NOT_FOUND"]
    (column,) = body["columns"]
    assert (column["featureView"], column["name"], column["type"]) == ("user_profile", "country",
                                                                       "FEATURE_TYPE_STRING")
    assert column["values"]["nullRows"] == [0]
