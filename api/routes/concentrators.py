"""Concentrators: read success per concentrator and area, from the data that arrived."""

from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query

from api.deps import Conn, LocalTz
from api.params import UNAVAILABLE, IsoDate, frozen_day
from api.schemas import AreaReadStats, ConcentratorReadStats
from api.security import AUTH_RESPONSES, Permission, require
from ingest.concentrators import READ_SQL, by_area, read_params, read_rates

router = APIRouter(
    prefix="/concentrators",
    tags=["concentrators"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

Day = Annotated[IsoDate | None, Query(description="local day, default: yesterday")]


@router.get("/read-stats", response_model=list[ConcentratorReadStats])
async def read_stats(conn: Conn, tz: LocalTz, day: Day = None):
    """Per concentrator: meters due, read (their daily frozen value arrived), the rate, and
    the failing meters with the last time each was read."""
    return await _rates(conn, tz, day)


@router.get("/read-stats/by-area", response_model=list[AreaReadStats])
async def read_stats_by_area(conn: Conn, tz: LocalTz, day: Day = None):
    """Per transformer area (台区): the same figures over all its concentrators."""
    return by_area(await _rates(conn, tz, day))


async def _rates(conn, tz: ZoneInfo, day: date | None) -> list[dict]:
    day = frozen_day(day) if day else datetime.now(tz).date() - timedelta(days=1)
    cur = await conn.execute(READ_SQL, read_params(day, tz))
    return read_rates(await cur.fetchall(), day)
