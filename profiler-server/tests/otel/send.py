"""Sends a trace (a server span with a child) and `http.server.request.duration` histograms to
an OTLP/gRPC endpoint with the real OpenTelemetry Python SDK, then prints what it sent as JSON.

Usage: python3 send.py http://127.0.0.1:4317

Requires: pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc
"""

import json
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

# The semantic conventions' advised buckets for HTTP durations, in seconds.
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


def main() -> None:
    endpoint = sys.argv[1]
    resource = Resource.create({"service.name": "checkout", "service.version": "1.2.3"})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10))
    )
    tracer = tracer_provider.get_tracer("profiler-server-test")
    with tracer.start_as_current_span(
        "GET /users/{id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.route": "/users/{id}",
            "http.response.status_code": 200,
            "url.path": "/users/42",
        },
    ) as root:
        time.sleep(0.02)
        with tracer.start_as_current_span(
            "SELECT users", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        ) as child:
            time.sleep(0.01)
            child.set_status(Status(StatusCode.ERROR, "timeout"))
        time.sleep(0.005)
    trace_id = format(root.get_span_context().trace_id, "032x")
    root_span_id = format(root.get_span_context().span_id, "016x")
    child_span_id = format(child.get_span_context().span_id, "016x")
    tracer_provider.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=10),
        export_interval_millis=3_600_000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    histogram = meter_provider.get_meter("profiler-server-test").create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=BUCKETS,
    )
    ok = {"http.request.method": "GET", "http.route": "/users/{id}", "http.response.status_code": 200}
    failed = dict(ok, **{"http.response.status_code": 500, "error.type": "500"})
    for _ in range(8):
        histogram.record(0.02, ok)
    for _ in range(2):
        histogram.record(0.3, failed)
    reader.force_flush()
    meter_provider.shutdown()

    print(
        json.dumps(
            {
                "trace_id": trace_id,
                "root_span_id": root_span_id,
                "child_span_id": child_span_id,
                "requests": 10,
                "errors": 2,
            }
        )
    )


if __name__ == "__main__":
    main()
