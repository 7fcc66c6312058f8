"""Parses /metrics (stdin) with the Prometheus project's own OpenMetrics parser (PyPI
`prometheus_client`, strict) and prints every sample as JSON: [{"name", "labels", "value"}].
A malformed exposition raises, and the test fails."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels,
                        "value": s.value})
json.dump(samples, sys.stdout)
