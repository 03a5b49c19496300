"""Concentrators: read success per concentrator and area, from the data that arrived."""

from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from api.deps import Conn
from ingest.concentrators import READ_SQL, by_area, frozen_instant, read_rates

router = APIRouter(prefix="/concentrators", tags=["concentrators"])

TZ = ZoneInfo("Asia/Shanghai")


@router.get("/read-stats")
async def read_stats(
    conn: Conn,
    day: Annotated[date | None, Query(description="local day, default: yesterday")] = None,
) -> list[dict]:
    """Per concentrator: meters due, read (their daily frozen value arrived), the rate, and
    the failing meters with the last time each was read."""
    return await _rates(conn, day)


@router.get("/read-stats/by-area")
async def read_stats_by_area(
    conn: Conn,
    day: Annotated[date | None, Query(description="local day, default: yesterday")] = None,
) -> list[dict]:
    """Per transformer area (台区): the same figures over all its concentrators."""
    return by_area(await _rates(conn, day))


async def _rates(conn, day: date | None) -> list[dict]:
    day = day or date.fromordinal(datetime.now(TZ).date().toordinal() - 1)
    cur = await conn.execute(READ_SQL, {"frozen_at": frozen_instant(day, TZ)})
    return read_rates(await cur.fetchall(), day)
