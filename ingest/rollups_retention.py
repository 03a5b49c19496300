"""Retention of raw readings by quantity kind, run by the maintenance service in both modes.

Readings of every quantity share one table (one hypertable on TimescaleDB), and dropping a
partition or chunk drops all of its quantities at once. So:

* instantaneous quantities (kind from `ingest.quantities`) older than ``instant_days`` are
  DELETEd; the deleted range starts where the last run stopped (kept in ``gridread_meta``), so
  each run touches only the rows that expired since, not years of registers again. On
  TimescaleDB the delete also works on compressed chunks (segmented by quantity) and the
  rollups over that range are refreshed, so hourly/daily buckets go with their raw rows, as
  they do natively where rollups are queries;
* registers, curves and quantities the registry does not know (kept: safer) older than
  ``register_days`` (0 = keep for ever) go the same way;
* a whole day partition / chunk whose every row has expired (older than both limits) is
  dropped instead: cheap, no dead tuples.

An instantaneous row older than its limit that arrives after the run passed its day (a very
late re-read) is kept until the limit is shortened; nothing re-scans old days.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from ingest.quantities import QuantityKind, registry
from ingest.rollups import CAGGS, STEP, Resolution, ceil_to, refresh_rollup
from ingest.schema import StorageMode, storage_mode

log = logging.getLogger(__name__)

_DEADLOCK_RETRIES = 3
_DONE_KEY = "retention_done_until:{}"  # gridread_meta key per kind: expired rows before it gone


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)  # kind → rows deleted
    dropped: list[str] = field(default_factory=list)  # partitions or chunks


def apply_retention(
    conn: psycopg.Connection,
    *,
    instant_days: int,
    register_days: int,
    now: datetime | None = None,
) -> RetentionResult:
    """Remove readings past their kind's retention (0 days = keep). `conn` in autocommit."""
    now = now or datetime.now(UTC)
    mode = storage_mode(conn)
    result = RetentionResult()
    instant = [q.obis for q in registry().values() if q.kind is QuantityKind.INSTANTANEOUS]
    cut_i = now - timedelta(days=instant_days) if instant_days > 0 else None
    cut_r = now - timedelta(days=register_days) if register_days > 0 else None
    if cut_i and cut_r:
        result.dropped = _drop_whole(conn, mode, min(cut_i, cut_r))
        if result.dropped and mode is StorageMode.TIMESCALEDB:
            _refresh(conn, None, min(cut_i, cut_r))
    for kind, cutoff, where in (
        (QuantityKind.INSTANTANEOUS, cut_i, "quantity = ANY(%(codes)s)"),
        (QuantityKind.REGISTER, cut_r, "quantity <> ALL(%(codes)s)"),
    ):
        if cutoff is None:
            continue
        key = _DONE_KEY.format(kind)
        row = conn.execute("SELECT value FROM gridread_meta WHERE key = %s", (key,)).fetchone()
        since = datetime.fromisoformat(row[0]) if row else None
        if since is not None and since >= cutoff:
            continue
        with conn.transaction():
            cur = conn.execute(
                f"DELETE FROM readings WHERE {where}"
                " AND ts < %(cutoff)s AND (%(since)s::timestamptz IS NULL OR ts >= %(since)s)",
                {"codes": instant, "cutoff": cutoff, "since": since},
            )
            result.deleted[kind.value] = cur.rowcount
            conn.execute(
                "INSERT INTO gridread_meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, cutoff.isoformat()),
            )
        if mode is StorageMode.TIMESCALEDB and cur.rowcount:
            _refresh(conn, since, cutoff)
    if any(result.deleted.values()) or result.dropped:
        log.info("retention: deleted %s; dropped %s", result.deleted, result.dropped or "none")
    return result


def _refresh(conn: psycopg.Connection, since: datetime | None, cutoff: datetime) -> None:
    """Recompute the aggregates' buckets over [since, cutoff) now, as natively (where rollups
    are queries) they follow the raw rows at once. Outside a transaction, as Timescale needs."""
    for res, (view, *_) in CAGGS.items():
        # widened to whole buckets: a window narrower than one is refused. Daily buckets are
        # local days (any zone within ±14 h of UTC): a UTC day more on each side covers them
        step = STEP[res]
        pad = step if res is Resolution.DAY else timedelta(0)
        lo = None if since is None else ceil_to(since, step) - step - pad
        hi = ceil_to(cutoff, step) + pad
        refresh_rollup(conn, view, lo, hi)


def _drop_whole(conn: psycopg.Connection, mode: StorageMode, cutoff: datetime) -> list[str]:
    """Drop the day partitions / chunks that end at or before `cutoff`."""
    if mode is StorageMode.TIMESCALEDB:
        rows = conn.execute(
            "SELECT show_chunks('readings', older_than => %s::timestamptz)", (cutoff,)
        ).fetchall()
        for attempt in range(_DEADLOCK_RETRIES) if rows else ():
            try:  # may deadlock with a policy job on the same chunks: the loser is rolled back
                conn.execute(
                    "SELECT drop_chunks('readings', older_than => %s::timestamptz)", (cutoff,)
                )
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise
        return [str(r[0]) for r in rows]
    dropped = []
    for (name,) in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'readings'::regclass ORDER BY 1"
    ).fetchall():
        day = _partition_day(name)
        if (
            day is not None
            and datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) <= cutoff
        ):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped


def _partition_day(name: str) -> date | None:
    """The day of a `readings_pYYYYMMDD` partition (see `ingest.schema.partition_name`)."""
    try:
        return datetime.strptime(name.removeprefix("readings_p"), "%Y%m%d").date()
    except ValueError:
        return None
