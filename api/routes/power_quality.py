"""Power quality (电能质量) results: voltage qualification rates (电压合格率) per monitor, meter
phase, area, monitoring class and the composite, per local day, week and month; three-phase
unbalance per meter; voltage monitors whose own statistics disagree with gridread's.

Rows are what the power-quality job stored (analytics.power_quality_job): a rate is None where
nothing was monitored, and the missing time is always given beside it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel

from api.deps import Conn, LocalTz
from api.params import TEXT, UNAVAILABLE, IsoDate, IsoInstant, invalid, window
from api.security import AUTH_RESPONSES, Permission, require

router = APIRouter(
    prefix="/power-quality",
    tags=["power quality"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

Kind = Literal["monitor", "meter", "area", "class", "composite"]
Period = Literal["day", "week", "month"]
_SPAN = {"day": timedelta(days=31), "week": timedelta(days=92), "month": timedelta(days=366)}
Name = Annotated[str | None, Query(pattern=TEXT, description="one subject's name")]


class VoltageRatePublic(BaseModel):
    kind: Kind
    name: str
    phase: Literal["A", "B", "C", "-"]
    period: Period
    start: datetime
    nominal_v: float | None  # phase-to-neutral V the meter or monitor should see
    upper_pct: float | None
    lower_pct: float | None
    monitoring_class: str | None
    monitored_s: float  # seconds with a voltage
    missing_s: float  # seconds expected but without one (not in the rate)
    over_s: float
    under_s: float
    rate: float | None  # percent; None: nothing monitored
    max_v: float | None
    min_v: float | None
    tenmin_means: int  # 10-min means (EN 50160) counted
    tenmin_within: int
    tenmin_outside_wide: int
    tenmin_incomplete: int
    days: int
    compliant: bool | None  # week rows: EN 50160-style weekly compliance


class VoltageRatesPublic(BaseModel):
    data: list[VoltageRatePublic]
    count: int


class CompositePublic(BaseModel):
    period: Period
    start: datetime
    rate: float | None  # Σ w·rate over the classes with monitored time / Σ w
    classes: list[VoltageRatePublic]  # A, B, C, D


class UnbalancePublic(BaseModel):
    name: str
    quantity: Literal["voltage", "current"]
    period: Period
    start: datetime
    n_values: int
    n_sequence: int  # of them from angles (negative-sequence ratio)
    within_normal: int
    beyond_short: int
    max_pct: float | None
    share_pct: float | None
    compliant: bool | None  # week rows
    days: int


class UnbalancesPublic(BaseModel):
    data: list[UnbalancePublic]
    count: int


class MonitorFlagPublic(BaseModel):
    name: str
    day: date
    own_rate: float | None  # from the monitor's own statistics
    own_monitored_min: int
    own_over_min: int
    own_under_min: int
    own_upper_v: float
    own_lower_v: float
    rate: float | None  # gridread's, from the stored minutes and the configured limits
    monitored_min: float
    over_min: float
    under_min: float
    upper_v: float
    lower_v: float
    diff_pp: float | None
    reasons: list[Literal["rate", "limits", "monitored"]]
    flagged: bool


class MonitorFlagsPublic(BaseModel):
    data: list[MonitorFlagPublic]
    count: int


_V = (
    "kind, name, phase, period, start, nominal_v, upper_pct, lower_pct, monitoring_class,"
    " monitored_s, missing_s, over_s, under_s, rate, max_v, min_v, tenmin_means,"
    " tenmin_within, tenmin_outside_wide, tenmin_incomplete, days, compliant"
)


@router.get("/voltage", response_model=VoltageRatesPublic)
async def voltage(
    conn: Conn,
    kind: Kind = "monitor",
    period: Period = "day",
    start: IsoInstant | None = None,
    end: IsoInstant | None = None,
    name: Name = None,
):
    """Voltage qualification rates of one kind of subject and period whose periods start in
    [start, end) (default: 31 days of days, 92 of weeks, 366 of months)."""
    lo, hi = window(start, end, default_span=_SPAN[period])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_V} FROM pq_voltage WHERE kind = %s AND period = %s AND start >= %s"
            " AND start < %s AND (%s::text IS NULL OR name = %s) ORDER BY name, phase, start",
            (kind, period, lo, hi, name, name),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.get("/composite", response_model=list[CompositePublic])
async def composite(
    conn: Conn,
    period: Period = "day",
    start: IsoInstant | None = None,
    end: IsoInstant | None = None,
):
    """The composite voltage qualification rate (综合电压合格率) of each period, with its
    classes A–D."""
    lo, hi = window(start, end, default_span=_SPAN[period])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_V} FROM pq_voltage WHERE kind IN ('composite', 'class') AND period = %s"
            " AND start >= %s AND start < %s ORDER BY start, kind DESC, name",
            (period, lo, hi),
        )
        rows = await cur.fetchall()
    out: dict[datetime, dict] = {}
    for r in rows:
        entry = out.setdefault(
            r["start"], {"period": period, "start": r["start"], "rate": None, "classes": []}
        )
        if r["kind"] == "composite":
            entry["rate"] = r["rate"]
        else:
            entry["classes"].append(r)
    return list(out.values())


@router.get("/unbalance", response_model=UnbalancesPublic)
async def unbalance(
    conn: Conn,
    quantity: Literal["voltage", "current"] = "voltage",
    period: Period = "day",
    start: IsoInstant | None = None,
    end: IsoInstant | None = None,
    name: Name = None,
):
    """Three-phase unbalance per meter and period."""
    lo, hi = window(start, end, default_span=_SPAN[period])
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT name, quantity, period, start, n_values, n_sequence, within_normal,"
            " beyond_short, max_pct, share_pct, compliant, days FROM pq_unbalance"
            " WHERE quantity = %s AND period = %s AND start >= %s AND start < %s"
            " AND (%s::text IS NULL OR name = %s) ORDER BY name, start",
            (quantity, period, lo, hi, name, name),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.get("/monitor-flags", response_model=MonitorFlagsPublic)
async def monitor_flags(
    conn: Conn,
    tz: LocalTz,
    first: Annotated[IsoDate | None, Query(description="first local day, default: 31 back")] = None,
    last: Annotated[IsoDate | None, Query(description="last local day, default: today")] = None,
    flagged: Annotated[bool | None, Query(description="only the flagged (or not) days")] = None,
    name: Name = None,
):
    """The voltage monitors' own daily statistics beside gridread's, per local day."""
    last_ = last or datetime.now(tz).date()
    first_ = first or date.fromordinal(max(1, last_.toordinal() - 31))  # not before year 1
    for field, d in (("first", first_), ("last", last_)):
        if not date(1, 1, 2) <= d < date(9999, 12, 31):
            raise invalid(field, d.isoformat(), "outside the calendar the database can hold")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT name, day, own_rate, own_monitored_min, own_over_min, own_under_min,"
            " own_upper_v, own_lower_v, rate, monitored_min, over_min, under_min, upper_v,"
            " lower_v, diff_pp, reasons, flagged FROM pq_monitor_flags"
            " WHERE day >= %s AND day <= %s AND (%s::bool IS NULL OR flagged = %s)"
            " AND (%s::text IS NULL OR name = %s) ORDER BY day, name",
            (first_, last_, flagged, flagged, name, name),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}
