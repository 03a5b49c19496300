"""Read statistics (抄表成功率): which meters were read, per bus and local day."""

from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query

from api import crud
from api.deps import Conn, LocalTz
from api.params import NOT_FOUND, UNAVAILABLE, BusName, IsoDate
from api.schemas import BusReadStats, MeterReadStats
from api.security import AUTH_RESPONSES, Permission, require

router = APIRouter(
    prefix="/read-stats",
    tags=["read statistics"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

Day = Annotated[IsoDate | None, Query(description="local day, default: today (site time zone)")]


def _day(day: date | None, tz: ZoneInfo) -> date:
    return day or datetime.now(tz).date()


@router.get("", response_model=list[BusReadStats])
async def per_bus(conn: Conn, tz: LocalTz, day: Day = None):
    """Per bus: meters due, read and failed, and the read success rate of the day."""
    return await crud.read_success(conn=conn, day=_day(day, tz))


@router.get("/{bus}", response_model=list[MeterReadStats], responses=NOT_FOUND)
async def per_meter(conn: Conn, tz: LocalTz, bus: BusName, day: Day = None):
    """Per meter of one bus: attempts, successes, the last success and the last error."""
    rows = await crud.meter_read_stats(conn=conn, bus=bus, day=_day(day, tz))
    if not rows:
        raise HTTPException(404, f"no DL/T 645 bus named {bus!r}")
    return rows
