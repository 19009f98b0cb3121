"""Logs, traces and metrics: set up once by the composition root.

- Logs are JSON lines on stderr; each carries the request id and trace id of the RPC
  that wrote it (kept in a context variable by the transport's interceptor).
- Traces: OpenTelemetry. With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are exported over
  OTLP; without it no spans are recorded, but an incoming W3C traceparent still flows
  through to outgoing calls, so a caller's trace is never broken by this hop.
- Metrics: prometheus-client, served on their own HTTP port.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from opentelemetry import trace
from prometheus_client import Counter, Histogram

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
subject_var: contextvars.ContextVar[str] = contextvars.ContextVar("subject", default="")
"""The `sub` of the caller's verified token, set by the auth interceptor for the RPC's task."""

RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to completing it, by service and method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with request and trace ids when inside an RPC."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        subject = subject_var.get()
        if subject:
            entry["subject"] = subject
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def setup_tracing(service_name: str, otlp_endpoint: str) -> trace.TracerProvider:
    """A recording tracer provider when an exporter is configured, else the no-op one."""
    if not otlp_endpoint:
        return trace.get_tracer_provider()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    return provider
