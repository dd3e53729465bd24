"""Parses the Prometheus text exposition format read on stdin with the
Prometheus project's own parser (prometheus_client.parser) and prints the
families as JSON: [{"name", "type", "samples": [{"name", "labels", "value"}]}].
A malformed exposition fails with a non-zero exit and the parser's message."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = [
    {
        "name": family.name,
        "type": family.type,
        "samples": [{"name": sample.name, "labels": sample.labels, "value": sample.value} for sample in family.samples],
    }
    for family in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
