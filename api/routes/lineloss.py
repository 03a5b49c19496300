"""Line loss (线损) results: per area, feeder and voltage level and period; the ranking of the
worst areas of a day or month; an area's members and their share of its sales.

Rows are what the line-loss job stored (analytics.jobs): a not-computable (不可算) row has
no loss and no rate, and is never ranked by one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel

from analytics.contributions import load_contributions
from analytics.jobs import LineLossPolicy
from analytics.store import AnalyticsStore
from api.deps import Conn, LocalTz
from api.params import TEXT, UNAVAILABLE, IsoDate, IsoInstant, invalid, window
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES, Permission, require

router = APIRouter(
    prefix="/lineloss",
    tags=["line loss"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

Level = Literal["area", "feeder", "voltage"]
Period = Literal["15min", "day", "month"]
Status = Literal["not_computable", "negative", "normal", "high"]
_SPAN = {"15min": timedelta(days=1), "day": timedelta(days=31), "month": timedelta(days=366)}
AREA_NOT_FOUND: dict[int | str, dict] = {404: {"model": ErrorPublic, "description": "No such area"}}


class LineLossPublic(BaseModel):
    level: Level
    name: str
    period: Period
    start: datetime
    supply: float | None  # primary kWh of the supply meters present
    sales: float | None  # primary kWh of the member meters present
    loss: float | None  # None: not computable
    rate: float | None  # percent; None: not computable
    coverage: float  # share of expected meter-intervals present
    status: Status


class LineLossesPublic(BaseModel):
    data: list[LineLossPublic]
    count: int


class RankingPublic(BaseModel):
    period: Literal["day", "month"]
    start: datetime
    ranked: list[LineLossPublic]  # by rate, worst (highest) first
    not_computable: list[LineLossPublic]  # listed apart, never ranked by a rate


class MemberPublic(BaseModel):
    meter: str
    role: Literal["area_total", "customer"]
    multiplier: float
    energy: float | None  # primary kWh over the intervals present
    intervals_present: int
    intervals_expected: int
    share_pct: float | None  # of the area's sales (customers only)


class ContributionsPublic(BaseModel):
    area: str
    day: date
    result: LineLossPublic | None  # the job's day result; None: not computed yet
    members: list[MemberPublic]


_COLUMNS = "level, name, period, start, supply, sales, loss, rate, coverage, status"
Name = Annotated[str | None, Query(pattern=TEXT, description="one group's name")]
AreaName = Annotated[str, Path(pattern=TEXT, description="the area's name")]
Day = Annotated[IsoDate | None, Query(description="local day, default: yesterday")]


@router.get("", response_model=LineLossesPublic)
async def line_loss(
    conn: Conn,
    level: Level = "area",
    period: Period = "day",
    start: IsoInstant | None = None,
    end: IsoInstant | None = None,
    name: Name = None,
):
    """Results of one level and period whose periods start in [start, end) (default: the
    last day of 15-min results, 31 days of days, 366 of months)."""
    lo, hi = window(start, end, default_span=_SPAN[period])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM lineloss WHERE level = %s AND period = %s"
            " AND start >= %s AND start < %s AND (%s::text IS NULL OR name = %s)"
            " ORDER BY name, start",
            (level, period, lo, hi, name, name),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.get("/ranking", response_model=RankingPublic)
async def ranking(
    conn: Conn,
    tz: LocalTz,
    period: Literal["day", "month"] = "day",
    day: Day = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 20,
):
    """The areas of a local day (or of the month holding it) by loss rate, worst first; the
    not-computable ones apart."""
    first = _local_day(day, tz)
    if period == "month":
        first = first.replace(day=1)
    start = _midnight(first, tz)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM lineloss WHERE level = 'area' AND period = %s"
            " AND start = %s AND status <> 'not_computable' ORDER BY rate DESC, name LIMIT %s",
            (period, start, limit),
        )
        ranked = await cur.fetchall()
        await cur.execute(
            f"SELECT {_COLUMNS} FROM lineloss WHERE level = 'area' AND period = %s"
            " AND start = %s AND status = 'not_computable' ORDER BY coverage, name",
            (period, start),
        )
        missing = await cur.fetchall()
    return {"period": period, "start": start, "ranked": ranked, "not_computable": missing}


@router.get(
    "/areas/{name}/contributions", response_model=ContributionsPublic, responses=AREA_NOT_FOUND
)
async def contributions(request: Request, conn: Conn, tz: LocalTz, name: AreaName, day: Day = None):
    """An area's total meter and customers over a local day: each one's energy and share of
    the area's sales, with the job's result of that day."""
    the_day = _local_day(day, tz)
    start = _midnight(the_day, tz)
    end = _midnight(the_day + timedelta(days=1), tz)
    conninfo: str = request.app.state.conninfo
    policy: LineLossPolicy = request.app.state.analytics  # the job's register settings

    def load():
        with psycopg.connect(conninfo) as sync:
            return load_contributions(
                AnalyticsStore(sync),
                name,
                int(start.timestamp()),
                int(end.timestamp()),
                tolerance=policy.align_tolerance_s,
                modulus=policy.register_modulus,
                max_step=policy.register_max_step,
            )

    members = await asyncio.to_thread(load)
    if members is None:
        raise HTTPException(404, f"no area named {name!r}")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM lineloss WHERE level = 'area' AND period = 'day'"
            " AND name = %s AND start = %s",
            (name, start),
        )
        result = await cur.fetchone()
    return {"area": name, "day": the_day, "result": result, "members": members}


def _local_day(day: date | None, tz: ZoneInfo) -> date:
    if day is None:
        return datetime.now(tz).date() - timedelta(days=1)
    if not date(1, 1, 2) <= day < date(9999, 12, 31):
        raise invalid("day", day.isoformat(), "outside the calendar the database can hold")
    return day


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tz).astimezone(UTC)
