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

15-min buckets come from the raw rows in both modes. A bucket belongs to [start, end) when its
start does. 15-min and hourly buckets are UTC-aligned (``time_bucket`` / ``date_bin`` from the
epoch): the site's local quarters and hours in whole-hour zones, but UTC hours in a half-hour
zone (Asia/Kolkata: hourly buckets start at hh:30 local). Daily buckets are the site's local
days (a utility's day: 日冻结 at local midnight; 23 or 25 hours across a DST change):
``time_bucket('1 day', ts, zone)`` in the aggregate, ``date_trunc('day', ts, zone)`` natively.
The zone is the one recorded in ``gridread_meta`` (``rollup_timezone``) by the first `migrate`
that made the rollups: on TimescaleDB it is part of the aggregate's definition, so a later
different ``timezone`` setting keeps the recorded zone in both modes, with a warning.

Every bucket carries min/avg/max/count (what instantaneous quantities need) and the first and
last value with their instants (what registers need). ``delta`` = last − first within the
bucket. Deltas of consecutive buckets do not add up to the whole increase: the step from one
bucket's last reading to the next bucket's first falls between them. The exact consumption
between two bucket ends is ``last[j] − last[i]``, which the rows allow because the rollup keeps
first/last (not only the delta). A register rollover inside a bucket shows as a negative delta.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from ingest.exceptions import SchemaError
from ingest.retry import Backoff

if TYPE_CHECKING:  # ingest.schema imports this module for `ensure_rollups`
    from ingest.schema import StorageMode

log = logging.getLogger(__name__)

TIMESCALEDB = "timescaledb"  # StorageMode.TIMESCALEDB's value (a StrEnum compares equal)

ROLLUP_MIGRATION = 5  # recorded in schema_migrations by `ensure_rollups`
LOCAL_DAY_MIGRATION = 6  # daily buckets on local days (5 made them UTC days)
TIMEZONE_KEY = "rollup_timezone"  # gridread_meta: the zone of the daily buckets


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
SELECT device_id, quantity, {bucket} AS bucket,
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

# local days: rows from `start` on (earlier rows belong to days starting before it), up to
# a day (≤ 25 h) past `end`; the outer filter keeps the days that start in [start, end)
_LOCAL_DAYS = f"""
SELECT {_COLUMNS} FROM (
    SELECT device_id, date_trunc('day', ts, %(zone)s) AS bucket,
           min(value) AS min, avg(value) AS avg, max(value) AS max, count(*) AS count,
           (array_agg(value ORDER BY ts))[1] AS first,
           (array_agg(value ORDER BY ts DESC))[1] AS last,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM readings
    WHERE device_id = ANY(%(ids)s) AND quantity = %(q)s
      AND ts >= %(start)s AND ts < %(end)s::timestamptz + interval '26 hours'
    GROUP BY device_id, bucket
) b
WHERE bucket >= %(start)s AND bucket < %(end)s
ORDER BY device_id, bucket LIMIT %(limit)s
"""

_RAW = (
    "SELECT device_id, ts, value, quality FROM readings"
    " WHERE device_id = ANY(%(ids)s) AND quantity = %(q)s AND ts >= %(start)s AND ts < %(end)s"
    " ORDER BY device_id, ts LIMIT %(limit)s"
)


def ensure_rollups(conn: psycopg.Connection, mode: StorageMode, timezone: str) -> None:
    """Migrations 5 and 6: the continuous aggregates and their policies on TimescaleDB, the
    daily one on local days of `timezone` (recorded once; see the module doc); nothing to
    create natively (the rollups are queries). Runs inside `migrate`'s transaction."""
    done = {
        v
        for (v,) in conn.execute(
            "SELECT version FROM schema_migrations WHERE version IN (%s, %s)",
            (ROLLUP_MIGRATION, LOCAL_DAY_MIGRATION),
        )
    }
    zone = _record_timezone(conn, timezone)
    if ROLLUP_MIGRATION not in done:
        if mode == TIMESCALEDB:
            for res in CAGGS:
                _create_cagg(conn, res, zone)
        _record(conn, ROLLUP_MIGRATION, f"rollups: hourly and daily ({mode})")
    elif LOCAL_DAY_MIGRATION not in done and mode == TIMESCALEDB:
        # made on UTC days by migration 5: rebuilt (dropping the view drops its policy);
        # real-time aggregation answers until the policy has materialised it again
        conn.execute("DROP MATERIALIZED VIEW IF EXISTS readings_1d")
        _create_cagg(conn, Resolution.DAY, zone)
    if LOCAL_DAY_MIGRATION not in done:
        _record(conn, LOCAL_DAY_MIGRATION, f"rollups: daily buckets on local days ({zone})")


def _create_cagg(conn: psycopg.Connection, res: Resolution, zone: str) -> None:
    view, end_offset, schedule = CAGGS[res]
    step = sql.Literal(STEP[res])
    bucket = (
        sql.SQL("time_bucket({}, ts, {})").format(step, sql.Literal(zone))
        if res is Resolution.DAY
        else sql.SQL("time_bucket({}, ts)").format(step)
    )
    conn.execute(sql.SQL(_CAGG_SQL).format(view=sql.Identifier(view), bucket=bucket))
    conn.execute(
        "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
        " end_offset => %s::interval, schedule_interval => %s::interval)",
        (view, end_offset, schedule),
    )


def _record(conn: psycopg.Connection, version: int, name: str) -> None:
    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))


def _record_timezone(conn: psycopg.Connection, timezone: str) -> str:
    """The recorded zone of the daily buckets; `timezone` the first time. A different one
    later is warned about and not applied (the aggregate was built on the recorded one)."""
    stored = rollup_timezone(conn, missing_ok=True)
    if stored is None:
        conn.execute(
            "INSERT INTO gridread_meta (key, value) VALUES (%s, %s)", (TIMEZONE_KEY, timezone)
        )
        return timezone
    if stored != timezone:
        log.warning(
            "timezone = %r, but this database's daily rollups are on local days of %r, recorded"
            " when they were made; daily buckets stay on %r (a new database takes the setting)",
            timezone,
            stored,
            stored,
        )
    return stored


def rollup_timezone(conn: psycopg.Connection, *, missing_ok: bool = False) -> str | None:
    """The zone whose local days the daily buckets are (see the module doc)."""
    row = conn.execute("SELECT value FROM gridread_meta WHERE key = %s", (TIMEZONE_KEY,)).fetchone()
    if row is None and not missing_ok:
        raise SchemaError("database has not been migrated (run `gridread migrate`)")
    return row[0] if row else None


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
    timezone: str | None = None,
) -> tuple[sql.Composable, dict[str, Any]]:
    """The SQL and parameters of `load_series`, for a sync or an async connection;
    `timezone` (the recorded one) is needed for daily buckets natively."""
    params: dict[str, Any] = {"ids": device_ids, "q": quantity, "limit": limit}
    if resolution is Resolution.RAW:
        return sql.SQL(_RAW), {**params, "start": start, "end": end}
    if mode == TIMESCALEDB and resolution in CAGGS:
        view = sql.Identifier(CAGGS[resolution][0])
        return sql.SQL(_CAGG_QUERY).format(view=view), {**params, "start": start, "end": end}
    if resolution is Resolution.DAY:
        if timezone is None:
            raise ValueError("native daily buckets need the recorded timezone")
        return sql.SQL(_LOCAL_DAYS), {**params, "start": start, "end": end, "zone": timezone}
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
    mode = mode or storage_mode(conn)
    zone = rollup_timezone(conn) if _needs_zone(mode, res) else None
    query, params = series_query(mode, device_ids, quantity, start, end, res, limit, zone)
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
    zone = None
    if _needs_zone(mode, res):
        cur = await conn.execute("SELECT value FROM gridread_meta WHERE key = %s", (TIMEZONE_KEY,))
        row = await cur.fetchone()
        if row is None:
            raise SchemaError("database has not been migrated (run `gridread migrate`)")
        zone = row[0]
    query, params = series_query(mode, device_ids, quantity, start, end, res, limit, zone)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return _with_delta(await cur.fetchall(), res)


def _needs_zone(mode: StorageMode, res: Resolution) -> bool:
    return res is Resolution.DAY and mode != TIMESCALEDB


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
