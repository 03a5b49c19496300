"""Supply reliability (供电可靠性): the interruptions per area and the indices per area,
feeder and system and local month or year, as the reliability job stored them
(analytics/reliability_job.py), and the outage notices that make an interruption planned.

An interruption whose end is null has a customer whose power-up was never recorded: its
customers are in `open`, in no index (their duration is unknown, not guessed).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.routing import APIRoute
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from analytics.reliability_store import add_notice
from api.deps import Conn
from api.params import TEXT, UNAVAILABLE, IsoInstant, aware, invalid, window
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES, Permission, Principal, require
from ingest.audit import record


class _SharedPathRoute(APIRoute):
    """A 405's `Allow` lists every method of the path (/notices: GET and POST); Starlette's
    lists only those of the first route matching the path."""

    async def handle(self, scope, receive, send) -> None:
        if self.methods and scope["method"] not in self.methods and "router" in scope:
            allowed = {
                m
                for r in scope["router"].routes
                if isinstance(r, APIRoute) and r.path == self.path
                for m in r.methods
            }
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().handle(scope, receive, send)


router = APIRouter(
    prefix="/reliability",
    tags=["reliability"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    route_class=_SharedPathRoute,
    dependencies=[Depends(require(Permission.READ))],
)

Level = Literal["area", "feeder", "system"]
Period = Literal["month", "year"]
InterruptionKind = Literal["unplanned", "planned", "limited"]
Name = Annotated[str | None, Query(pattern=TEXT, description="one group's name")]
_SPAN = {"month": timedelta(days=366), "year": timedelta(days=3660)}


class InterruptionPublic(BaseModel):
    area: str
    feeder: str
    start: datetime
    end: datetime | None  # None: some customer's power-up unknown
    customers: int  # customer interruptions in it
    open: int  # of those, with an unknown end
    customer_minutes: float  # of the known ends
    kind: InterruptionKind
    momentary: bool


class InterruptionsPublic(BaseModel):
    data: list[InterruptionPublic]
    count: int


class IndicesPublic(BaseModel):
    level: Level
    name: str
    period: Period
    start: datetime
    hours: float
    customers: int
    sustained: int
    momentary: int
    open: int  # customer interruptions of unknown duration, in no index
    customer_minutes: float
    minutes_rs3: float
    saifi: float | None
    saidi: float | None  # minutes
    caidi: float | None  # minutes; None without sustained interruptions
    asai: float | None
    maifi: float | None
    rs1: float | None  # percent
    rs3: float | None  # percent


class IndicesListPublic(BaseModel):
    data: list[IndicesPublic]
    count: int


class NoticePublic(BaseModel):
    scope: Literal["area", "feeder"]
    name: str
    kind: Literal["planned", "limited"]
    start: datetime
    end: datetime
    reason: str | None


class NoticeCreate(BaseModel):
    scope: Literal["area", "feeder"]
    name: str = Field(min_length=1, max_length=64, pattern=TEXT)
    kind: Literal["planned", "limited"]
    start: IsoInstant
    end: IsoInstant
    reason: str | None = Field(default=None, min_length=1, max_length=2000, pattern=TEXT)


class NoticesPublic(BaseModel):
    data: list[NoticePublic]
    count: int


@router.get("/interruptions", response_model=InterruptionsPublic)
async def interruptions(
    conn: Conn,
    start: IsoInstant | None = None,
    end: IsoInstant | None = None,
    area: Name = None,
    feeder: Name = None,
    kind: InterruptionKind | None = None,
    momentary: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
):
    """Interruptions starting in [start, end) (default: the last 31 days), oldest first."""
    lo, hi = window(start, end, default_span=timedelta(days=31))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            'SELECT area, feeder, start, "end", customers, open, customer_minutes, kind,'
            " momentary FROM interruptions WHERE start >= %(lo)s AND start < %(hi)s"
            " AND (%(area)s::text IS NULL OR area = %(area)s)"
            " AND (%(feeder)s::text IS NULL OR feeder = %(feeder)s)"
            " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
            " AND (%(mom)s::boolean IS NULL OR momentary = %(mom)s)"
            " ORDER BY start, area LIMIT %(limit)s",
            {
                "lo": lo,
                "hi": hi,
                "area": area,
                "feeder": feeder,
                "kind": kind,
                "mom": momentary,
                "limit": limit,
            },
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.get("/indices", response_model=IndicesListPublic)
async def indices(
    conn: Conn,
    level: Level = "system",
    period: Period = "month",
    start: IsoInstant | None = None,
    end: IsoInstant | None = None,
    name: Name = None,
):
    """SAIFI, SAIDI, CAIDI, ASAI, MAIFI, RS-1, RS-3 with their sums, for the periods starting
    in [start, end) (default: the last 366 days of months, 10 years of years)."""
    lo, hi = window(start, end, default_span=_SPAN[period])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT level, name, period, start, hours, customers, sustained, momentary, open,"
            " customer_minutes, minutes_rs3, saifi, saidi, caidi, asai, maifi, rs1, rs3"
            " FROM reliability_indices WHERE level = %s AND period = %s"
            " AND start >= %s AND start < %s AND (%s::text IS NULL OR name = %s)"
            " ORDER BY name, start",
            (level, period, lo, hi, name, name),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.get("/notices", response_model=NoticesPublic)
async def notices(conn: Conn, start: IsoInstant | None = None, end: IsoInstant | None = None):
    """Outage notices (planned, limited supply) overlapping [start, end) (default: 31 days)."""
    lo, hi = window(start, end, default_span=timedelta(days=31))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            'SELECT scope, name, kind, start, "end", reason FROM outage_notices'
            ' WHERE start < %s AND "end" > %s ORDER BY start, scope, name',
            (hi, lo),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.post(
    "/notices",
    response_model=NoticePublic,
    status_code=201,
    responses={400: {"model": ErrorPublic, "description": "The body is not JSON"}},
)
async def add(
    request: Request,
    body: NoticeCreate,
    who: Annotated[Principal, Depends(require(Permission.NOTICES_WRITE))],
) -> dict:
    """Enter an outage notice (planned 计划停电 / limited supply 限电) of an area or feeder: an
    interruption of its customers starting in it is of its kind (the next reliability run
    recomputes). 422: an unknown area or feeder, an end not after the start. Audited as
    the caller."""
    start, end = aware(body.start), aware(body.end)

    def run() -> None:
        with psycopg.connect(request.app.state.conninfo) as sync, sync.transaction():
            nid = add_notice(sync, body.scope, body.name, body.kind, start, end, body.reason)
            after = {**body.model_dump(), "start": start.isoformat(), "end": end.isoformat()}
            record(sync, who.actor, "create", "outage_notice", nid, None, after)

    try:
        await asyncio.to_thread(run)
    except ValueError as exc:
        field = "end" if "not after" in str(exc) else "name"
        raise invalid(field, getattr(body, field), str(exc), where="body") from None
    return {**body.model_dump(), "start": start, "end": end}
