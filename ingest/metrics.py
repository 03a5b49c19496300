"""Prometheus metrics of the storage side (``gridread_`` prefix, base units)."""

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter("gridread_ingest_rows_written", "Readings committed to the readings table")
ROWS_DUPLICATE = Counter(
    "gridread_ingest_rows_duplicate",
    "Readings not written because the same (device, quantity, ts) was already stored",
)
ROWS_DEAD = Counter(
    "gridread_ingest_rows_dead_lettered", "Readings parked in dead_letters", ["reason"]
)
WRITE_RETRIES = Counter(
    "gridread_ingest_write_retries", "Batch writes retried after a temporary error", ["sqlstate"]
)
QUEUE_DEPTH = Gauge("gridread_ingest_queue_rows", "Readings waiting in the writer's queue")
BATCH_SECONDS = Histogram(
    "gridread_ingest_batch_write_seconds",
    "Time to write and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LIVE_UNANNOUNCED = Counter(
    "gridread_live_unannounced_rows",
    "Readings stored without a live-feed notification (the NOTIFY queue was full)",
)
