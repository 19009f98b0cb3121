"""Traces and metrics from a real mesh process behind a real Envoy.

A W3C traceparent sent to Envoy's REST front door must come out of the mesh, over OTLP,
as a server span of the same trace; every RPC must show in the Prometheus endpoint.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ml_serving_tools import stack as stack_module

from ...support import call

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver: keeps the spans it is sent."""

    def __init__(self):
        self.spans = []
        self.received = threading.Event()

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory, stack_env, dev_keys):
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    env = {**stack_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    running = stack_module.start_stack(
        tmp_path_factory.mktemp("traced"), env,
        grpc_addr=f"127.0.0.1:{stack_module.free_port()}", front_door=f"127.0.0.1:{stack_module.free_port()}",
        admin_addr=f"127.0.0.1:{stack_module.free_port()}", metrics_addr=f"127.0.0.1:{stack_module.free_port()}",
        base_id=stack_module.free_port(), auth=dev_keys)
    yield running, collector
    running.stop()
    server.stop(0)


def test_traceparent_through_envoy_reaches_the_exported_span(traced_stack):
    running, collector = traced_stack
    request = urllib.request.Request(
        f"http://{running.front_door}/api/v1/bandits/stats?bandit=no-such-bandit",
        headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01", "authorization": f"Bearer {running.token}"})
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 404
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(s.trace_id.hex() == TRACE_ID for s in collector.spans):
        collector.received.wait(0.2)
    ours = [s for s in collector.spans if s.trace_id.hex() == TRACE_ID]
    assert ours, f"no span of trace {TRACE_ID} among {len(collector.spans)} exported"
    assert ours[0].name.endswith("BanditService/GetStats")
    assert ours[0].parent_span_id.hex() == "b7ad6b7169203331"  # the caller's span is its parent


def test_metrics_endpoint_counts_rpcs_by_code(traced_stack):
    running, _ = traced_stack
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    call(running.front_door, "POST", "/api/v1/bandits/definitions", {"name": name, "arms": [{"id": "a"}]},
         token=running.token)
    call(running.front_door, "POST", "/api/v1/bandits/select", {"bandit": name}, token=running.token)
    call(running.front_door, "POST", "/api/v1/bandits/select", {"bandit": ""}, token=running.token)
    body = urllib.request.urlopen(f"http://{running.metrics_addr}/metrics", timeout=5).read().decode()
    select = 'grpc_method="Select",grpc_service="mnbara.mlserving.bandit.v1.BanditService"'
    assert f'grpc_server_handled_total{{grpc_code="OK",{select}}} 1.0' in body
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{select}}} 1.0' in body
    assert f"grpc_server_handling_seconds_count{{{select}}} 2.0" in body
