"""Parses Prometheus text exposition with the official client's parser and
prints every sample as JSON: {"name{label=value,...}": value}. Used by
tests/metrics.rs so that /metrics is checked by a real Prometheus parser,
not by our own reading of it."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
types = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    types[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
json.dump({"samples": samples, "types": types}, sys.stdout)
