"""Queries the API runs. Keyword-only functions taking an async connection."""

from __future__ import annotations

from datetime import date, datetime

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from ingest.readstats import METER_STATS_SQL, SUCCESS_RATES_SQL, rates
from ingest.rollups import Resolution, aload_series
from ingest.schema import StorageMode

_DEVICE_COLUMNS = "id, name, kind, protocol, endpoint, unit_id, register_map, poll_interval"


async def list_devices(*, conn: AsyncConnection, kind: str | None = None) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices"
            " WHERE %(kind)s::text IS NULL OR kind = %(kind)s ORDER BY name",
            {"kind": kind},
        )
        return await cur.fetchall()


async def get_device(*, conn: AsyncConnection, name: str) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE name = %s", (name,))
        return await cur.fetchone()


async def series(
    *,
    conn: AsyncConnection,
    device_id: int,
    quantity: str,
    start: datetime,
    end: datetime,
    resolution: Resolution,
    limit: int,
) -> list[dict]:
    """Raw readings or rollup buckets (`ingest.rollups`), in the database's storage mode."""
    mode = StorageMode(await storage_mode(conn=conn))
    return await aload_series(
        conn, [device_id], quantity, start, end, resolution, mode=mode, limit=limit
    )


async def latest(*, conn: AsyncConnection, device_id: int, quantities: list[str]) -> list[dict]:
    """The newest reading of each quantity: one index probe per quantity (LATERAL … LIMIT 1)
    rather than a scan of the device's history."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT q.quantity, r.ts, r.value, r.quality"
            " FROM unnest(%s::text[]) AS q(quantity)"
            " CROSS JOIN LATERAL (SELECT ts, value, quality FROM readings"
            "   WHERE device_id = %s AND quantity = q.quantity ORDER BY ts DESC LIMIT 1) r"
            " ORDER BY q.quantity",
            (quantities, device_id),
        )
        return await cur.fetchall()


async def storage_mode(*, conn: AsyncConnection) -> str | None:
    cur = await conn.execute("SELECT value FROM gridread_meta WHERE key = 'storage_mode'")
    row = await cur.fetchone()
    return row[0] if row else None


async def read_success(*, conn: AsyncConnection, day: date, bus: str | None = None) -> list[dict]:
    cur = await conn.execute(SUCCESS_RATES_SQL, {"day": day, "bus": bus})
    return rates(await cur.fetchall(), day)


async def meter_read_stats(*, conn: AsyncConnection, bus: str, day: date) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(METER_STATS_SQL, {"day": day, "bus": bus})
        return await cur.fetchall()


async def events(
    *, conn: AsyncConnection, device_id: int, start: datetime, end: datetime, limit: int
) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT ts, kind, detail FROM events WHERE device_id = %s AND ts >= %s AND ts < %s"
            " ORDER BY ts LIMIT %s",
            (device_id, start, end, limit),
        )
        return await cur.fetchall()
