"""Read statistics (抄表成功率): which meters were read, per bus and local day."""

from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query

from api import crud
from api.deps import Conn
from api.schemas import BusReadStats, MeterReadStats

router = APIRouter(prefix="/read-stats", tags=["read statistics"])

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
Day = Annotated[date | None, Query(description="local day, default: today (Asia/Shanghai)")]


def _day(day: date | None) -> date:
    return day or datetime.now(DEFAULT_TZ).date()


@router.get("", response_model=list[BusReadStats])
async def per_bus(conn: Conn, day: Day = None):
    """Per bus: meters due, read and failed, and the read success rate of the day."""
    return await crud.read_success(conn=conn, day=_day(day))


@router.get("/{bus}", response_model=list[MeterReadStats])
async def per_meter(conn: Conn, bus: str, day: Day = None):
    """Per meter of one bus: attempts, successes, the last success and the last error."""
    rows = await crud.meter_read_stats(conn=conn, bus=bus, day=_day(day))
    if not rows:
        raise HTTPException(404, f"no DL/T 645 bus named {bus!r}")
    return rows
