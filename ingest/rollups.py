"""Rollups of the readings table: 15-min, hourly and daily buckets behind one interface.

`load_series(conn, device_ids, quantity, start, end, resolution)` answers the same rows in
both storage modes, so the API and analytics do not care which one runs:

* ``timescaledb``: hourly and daily come from continuous aggregates (``readings_1h``,
  ``readings_1d``) with real-time aggregation on (buckets not yet materialised are computed
  from the raw rows at query time) and refresh policies. The policies refresh from the start
  of time (``start_offset => NULL``): Timescale only recomputes invalidated ranges, so a late
  re-read (补抄) or a retention delete months back is folded in at the next run, not lost.
* ``native``: the same aggregates as plain SQL over the day partitions at query time. Chosen
  over tables kept by the maintenance service because a query is never stale (late re-reads,
  deletes) and needs no invalidation bookkeeping; partition pruning bounds the rows read.
  `bench/` measures what the aggregates save on TimescaleDB.

15-min buckets come from the raw rows in both modes. Buckets are UTC (``time_bucket`` /
``date_bin`` aligned to the epoch); a bucket belongs to [start, end) when its start does.

Every bucket carries min/avg/max/count (what instantaneous quantities need) and the first and
last value with their instants (what registers need). ``delta`` = last − first within the
bucket. Deltas of consecutive buckets do not add up to the whole increase: the step from one
bucket's last reading to the next bucket's first falls between them. The exact consumption
between two bucket ends is ``last[j] − last[i]``, which the rows allow because the rollup keeps
first/last (not only the delta). A register rollover inside a bucket shows as a negative delta.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from ingest.retry import Backoff

if TYPE_CHECKING:  # ingest.schema imports this module for `ensure_rollups`
    from ingest.schema import StorageMode

TIMESCALEDB = "timescaledb"  # StorageMode.TIMESCALEDB's value (a StrEnum compares equal)

ROLLUP_MIGRATION = 5  # recorded in schema_migrations by `ensure_rollups`


class Resolution(StrEnum):
    RAW = "raw"
    MIN15 = "15min"
    HOUR = "1h"
    DAY = "1d"


STEP = {
    Resolution.MIN15: timedelta(minutes=15),
    Resolution.HOUR: timedelta(hours=1),
    Resolution.DAY: timedelta(days=1),
}

# view name, refresh policy's end_offset (the newest buckets are real-time), schedule
CAGGS = {
    Resolution.HOUR: ("readings_1h", "1 hour", "30 minutes"),
    Resolution.DAY: ("readings_1d", "1 day", "1 hour"),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_CAGG_SQL = """
CREATE MATERIALIZED VIEW {view}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id, quantity, time_bucket({step}, ts) AS bucket,
       min(value) AS min, avg(value) AS avg, max(value) AS max, count(*) AS count,
       first(value, ts) AS first, last(value, ts) AS last,
       min(ts) AS first_ts, max(ts) AS last_ts
FROM readings
GROUP BY device_id, quantity, bucket
WITH NO DATA
"""

_COLUMNS = "device_id, bucket, min, avg, max, count, first, last, first_ts, last_ts"

_CAGG_QUERY = (
    f"SELECT {_COLUMNS} FROM {{view}}"
    " WHERE device_id = ANY(%(ids)s) AND quantity = %(q)s"
    " AND bucket >= %(start)s AND bucket < %(end)s"
    " ORDER BY device_id, bucket LIMIT %(limit)s"
)

# first/last by ts without Timescale's aggregates: ordered array_agg, one element kept.
_RAW_BUCKETS = f"""
SELECT {_COLUMNS} FROM (
    SELECT device_id, date_bin(%(step)s, ts, %(origin)s) AS bucket,
           min(value) AS min, avg(value) AS avg, max(value) AS max, count(*) AS count,
           (array_agg(value ORDER BY ts))[1] AS first,
           (array_agg(value ORDER BY ts DESC))[1] AS last,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM readings
    WHERE device_id = ANY(%(ids)s) AND quantity = %(q)s AND ts >= %(lo)s AND ts < %(hi)s
    GROUP BY device_id, bucket
) b
ORDER BY device_id, bucket LIMIT %(limit)s
"""

_RAW = (
    "SELECT device_id, ts, value, quality FROM readings"
    " WHERE device_id = ANY(%(ids)s) AND quantity = %(q)s AND ts >= %(start)s AND ts < %(end)s"
    " ORDER BY device_id, ts LIMIT %(limit)s"
)


def ensure_rollups(conn: psycopg.Connection, mode: StorageMode) -> None:
    """Migration 5: the continuous aggregates and their policies on TimescaleDB; nothing to
    create natively (the rollups are queries). Runs inside `migrate`'s transaction, once."""
    done = conn.execute(
        "SELECT 1 FROM schema_migrations WHERE version = %s", (ROLLUP_MIGRATION,)
    ).fetchone()
    if done:
        return
    if mode == TIMESCALEDB:
        for res, (view, end_offset, schedule) in CAGGS.items():
            conn.execute(
                sql.SQL(_CAGG_SQL).format(view=sql.Identifier(view), step=sql.Literal(STEP[res]))
            )
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
                " end_offset => %s::interval, schedule_interval => %s::interval)",
                (view, end_offset, schedule),
            )
    conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
        (ROLLUP_MIGRATION, f"rollups: hourly and daily ({mode})"),
    )


def refresh_rollup(
    conn: psycopg.Connection,
    view: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    patience: float = 60.0,
) -> None:
    """Materialise `view` over [start, end) now (None: unbounded), outside a transaction.

    A refresh policy's background job may be refreshing the same window: Timescale then
    refuses at once (55P03, "concurrent refresh"), so wait for it and try again, within
    `patience` seconds."""
    delays = Backoff(initial=0.1, maximum=2.0).delays()
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
                (view, start, end),
            )
            return
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(next(delays))


def series_query(
    mode: StorageMode,
    device_ids: list[int],
    quantity: str,
    start: datetime,
    end: datetime,
    resolution: Resolution,
    limit: int | None = None,
) -> tuple[sql.Composable, dict[str, Any]]:
    """The SQL and parameters of `load_series`, for a sync or an async connection."""
    params: dict[str, Any] = {"ids": device_ids, "q": quantity, "limit": limit}
    if resolution is Resolution.RAW:
        return sql.SQL(_RAW), {**params, "start": start, "end": end}
    if mode == TIMESCALEDB and resolution in CAGGS:
        view = sql.Identifier(CAGGS[resolution][0])
        return sql.SQL(_CAGG_QUERY).format(view=view), {**params, "start": start, "end": end}
    step = STEP[resolution]
    # buckets starting in [start, end) hold exactly the rows in [ceil(start), ceil(end))
    lo, hi = ceil_to(start, step), ceil_to(end, step)
    return sql.SQL(_RAW_BUCKETS), {**params, "step": step, "origin": _EPOCH, "lo": lo, "hi": hi}


def load_series(
    conn: psycopg.Connection,
    device_ids: list[int],
    quantity: str,
    start: datetime,
    end: datetime,
    resolution: Resolution | str,
    *,
    mode: StorageMode | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Rows ordered by device and time: ``device_id, ts, value, quality`` for raw data, else
    ``device_id, bucket, min, avg, max, count, first, last, first_ts, last_ts, delta``."""
    from ingest.schema import storage_mode

    res = Resolution(resolution)
    query, params = series_query(
        mode or storage_mode(conn), device_ids, quantity, start, end, res, limit
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return _with_delta(cur.fetchall(), res)


async def aload_series(
    conn: AsyncConnection,
    device_ids: list[int],
    quantity: str,
    start: datetime,
    end: datetime,
    resolution: Resolution | str,
    *,
    mode: StorageMode,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """`load_series` on an async connection (the API's); the caller knows the mode."""
    res = Resolution(resolution)
    query, params = series_query(mode, device_ids, quantity, start, end, res, limit)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return _with_delta(await cur.fetchall(), res)


def _with_delta(rows: list[dict[str, Any]], res: Resolution) -> list[dict[str, Any]]:
    if res is not Resolution.RAW:
        for r in rows:
            r["delta"] = r["last"] - r["first"]
    return rows


def ceil_to(ts: datetime, step: timedelta) -> datetime:
    """The first bucket boundary (epoch-aligned, UTC) at or after `ts`; `ts` itself past the
    last one a datetime can hold (year 9999)."""
    n = -((_EPOCH - ts) // step)  # integer ceiling, exact to the microsecond
    try:
        return _EPOCH + n * step
    except OverflowError:
        return ts
