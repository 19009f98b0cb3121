"""The feature schema through the real Envoy in front of a real mesh process, and a mesh process
that refuses to start on a bad declaration."""

from __future__ import annotations

import os
import subprocess
import sys

from ml_serving_server.services.pipeline.declarations import load_directory
from ml_serving_tools import stack as stack_module
from ml_serving_tools.paths import ROOT

from ...support import call

SCHEMA = "/api/v1/ml/features/schema"


def test_get_the_schema_over_rest(stack):
    reply = call(stack.front_door, "GET", SCHEMA, token=stack.token)
    assert reply.status == 200, reply.body
    body = reply.json()
    declared = load_directory(ROOT / "features")
    assert body["version"] == declared.version
    assert [v["name"] for v in body["featureViews"]] == [v.name for v in declared.views]
    profile = next(v for v in body["featureViews"] if v["name"] == "user_profile")
    taste = next(f for f in profile["features"] if f["name"] == "taste")
    assert taste == {"name": "taste", "type": "FEATURE_TYPE_DOUBLE_LIST", "dimension": 4,
                     "description": taste["description"]}
    assert profile["entity"]["valueType"] == "FEATURE_TYPE_INT64" and profile["ttl"] == "7776000s"
    assert profile["computeOnMiss"] is True and len(profile["definitionHash"]) == 64
    assert "materializedUntil" not in profile


def test_one_view_and_an_unknown_one_over_rest(stack):
    one = call(stack.front_door, "GET", f"{SCHEMA}?featureView=item_catalog", token=stack.token)
    assert one.status == 200, one.body
    assert [v["name"] for v in one.json()["featureViews"]] == ["item_catalog"]
    missing = call(stack.front_door, "GET", f"{SCHEMA}?feature_view=no_such_view", token=stack.token)
    assert missing.status == 404, missing.body
    assert missing.json()["details"][0]["reason"] == "FEATURE_VIEW_NOT_FOUND"
    too_long = call(stack.front_door, "GET", f"{SCHEMA}?featureView={'v' * 100}", token=stack.token)
    assert too_long.status == 400 and too_long.json()["details"][0]["metadata"]["field"] == "feature_view"


def test_reading_the_schema_needs_pipeline_read(stack):
    reply = call(stack.front_door, "GET", SCHEMA, token=stack.mint(["pipeline.write"], "no-reader"))
    assert reply.status == 403, reply.body


def test_a_bad_declaration_stops_the_server_process(tmp_path):
    (tmp_path / "items.yaml").write_text((ROOT / "features" / "items.yaml").read_text().replace(
        "key_type: int", "key_type: uuid", 1))
    env = {**os.environ, "MESH_SERVICES": "pipeline", "AUTH_ENABLED": "false", "MESH_METRICS_ADDR": "",
           "MESH_GRPC_ADDR": f"127.0.0.1:{stack_module.free_port()}", "PIPELINE_FEATURE_VIEWS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "ml_serving_server"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert f"{tmp_path / 'items.yaml'}:" in result.stderr
    assert "views[0].entity.key_type: must be one of int, string, got 'uuid'" in result.stderr
