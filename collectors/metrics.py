"""Prometheus metrics of the collecting side (``gridread_`` prefix, base units)."""

from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("gridread_polls", "Device polls finished", ["protocol", "result"])
POLL_ERRORS = Counter(
    "gridread_poll_errors", "Failed poll attempts, by kind of failure", ["protocol", "kind"]
)
READINGS_COLLECTED = Counter(
    "gridread_readings_collected", "Readings handed to the sink", ["protocol"]
)
POLL_SECONDS = Histogram(
    "gridread_poll_seconds",
    "Time of one successful poll of one device",
    ["protocol"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
READ_SUCCESS = Gauge(
    "gridread_read_success_ratio",
    "Meters read successfully / meters due today (抄表成功率), per bus (local day)",
    ["bus"],
)
READS_RESTORED = Counter(
    "gridread_reread_readings", "Readings restored by re-reading (补抄)", ["protocol"]
)


def declare(protocol: str) -> None:
    """Create a protocol's label sets up front, so dashboards see zeros, not gaps."""
    for result in ("ok", "failed"):
        POLLS.labels(protocol, result)
    for kind in ("timeout", "unreachable", "exception_response", "bad_frame"):
        POLL_ERRORS.labels(protocol, kind)
    READINGS_COLLECTED.labels(protocol)
