"""The compression (columnstore) policy of the readings hypertable; TimescaleDB only.

`ingest.schema` enables compression when it creates the hypertable (segment by device and
quantity, order by time). This module keeps the background job that compresses each chunk once
it is ``compress_after_days`` old: created when missing, its age changed when the setting
changes, left alone when it already matches, so calling it at every start is harmless.

Late data is safe in compressed chunks (TimescaleDB 2.28, measured in
tests/test_compression.py): COPY or INSERT of a key already stored there raises the unique
violation as on a plain table, and ``INSERT … ON CONFLICT DO NOTHING`` keeps the stored row and
adds the new ones, so the writer's COPY-then-staging path needs nothing special.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

COMPRESS_AFTER_DAYS = 7  # the default of Settings.compress_after_days
_LOCK_KEY = 0x636D7072  # "cmpr": serialises processes changing the policy at once

_POLICY = """
SELECT job_id, (config->>'compress_after')::interval = make_interval(days => %s)
FROM timescaledb_information.jobs
WHERE proc_name = 'policy_compression'
  AND hypertable_schema = current_schema() AND hypertable_name = 'readings'
"""


def ensure_compression_policy(
    conn: psycopg.Connection, after_days: int | None = None
) -> int | None:
    """Make the readings' compression policy compress chunks older than `after_days` days.

    ``None`` keeps an existing policy's age and creates a missing one with the default. Returns
    the policy's job id, or None in native mode (no hypertable, nothing to compress)."""
    if after_days is not None and after_days < 1:
        raise ValueError(f"compress_after_days must be at least 1 (got {after_days})")
    from ingest.schema import StorageMode, storage_mode  # here: schema calls this module

    if storage_mode(conn) is not StorageMode.TIMESCALEDB:
        return None
    days = COMPRESS_AFTER_DAYS if after_days is None else after_days
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = conn.execute(_POLICY, (days,)).fetchone()
        if row is not None and (row[1] or after_days is None):
            return row[0]
        if row is not None:
            conn.execute("CALL remove_columnstore_policy('readings')")
        conn.execute(
            "CALL add_columnstore_policy('readings', after => make_interval(days => %s))",
            (days,),
        )
        job_id = conn.execute(_POLICY, (days,)).fetchone()[0]
    log.info("compression: readings chunks are compressed after %d days (job %d)", days, job_id)
    return job_id
