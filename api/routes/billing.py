"""Billing export from VEE-validated reads (``validated_reads``, analytics/vee_job.py), and
the editing of a read (with a reason; the audit log keeps who and why).

Per meter and local day or month: the frozen total 1.8.0 at the period's start and end,
energy, TOU energy (1.8.1 sharp 尖, 1.8.2 peak 峰, 1.8.3 flat 平, 1.8.4 valley 谷), reactive
energy (the validated 15-min 3.8.0 energy summed) and the average power factor
P/√(P² + Q²), demand (largest validated 15-min energy × 4).
Energies are primary (× the multiplier in force at the period start; 1 for a meter not
placed in the grid), registers secondary. A figure whose inputs are not all validated is
null and named in the row's ``unvalidated``: only validated data is exported. Where the
total register rolled over within the period the energy is the validated intervals' sum.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from analytics.vee import Rule
from analytics.vee_store import FROZEN, EditError, edit_read
from api.deps import Conn, LocalTz
from api.params import (
    NOT_FOUND,
    TEXT,
    UNAVAILABLE,
    DeviceName,
    IsoDate,
    IsoInstant,
    aware,
    invalid,
)
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES, Permission, Principal, require

router = APIRouter(
    prefix="/billing",
    tags=["billing"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

TOU = ("sharp", "peak", "flat", "valley")
_MAX_PERIODS = {"day": 366, "month": 36}
MeterQ = Annotated[str | None, Query(pattern=TEXT, description="one meter; default: all")]


class BillingRowPublic(BaseModel):
    meter: str
    period_start: datetime
    period_end: datetime
    multiplier: float
    register_start: float | None  # 1.8.0 frozen, secondary kWh
    register_end: float | None
    energy_kwh: float | None  # primary
    sharp_kwh: float | None
    peak_kwh: float | None
    flat_kwh: float | None
    valley_kwh: float | None
    reactive_kvarh: float | None
    power_factor: float | None
    demand_kw: float | None
    demand_at: datetime | None
    estimated: bool  # an estimated or edited value went into the row
    unvalidated: list[str]  # what is still not validated (its figures are null)


class BillingSummaryPublic(BaseModel):
    rows: int
    complete: int
    incomplete: int


class BillingExportPublic(BaseModel):
    data: list[BillingRowPublic]
    summary: BillingSummaryPublic


class ValidatedReadPublic(BaseModel):
    quantity: str
    ts: datetime
    version: int
    value: float | None
    method: Literal["actual", "estimated", "edited"]
    rules: list[str]
    valid: bool
    current: bool
    edited_by: str | None
    reason: str | None


class EditCreate(BaseModel):
    quantity: Literal["1.8.0", "1.8.0*d", "1.8.1*d", "1.8.2*d", "1.8.3*d", "1.8.4*d"]
    ts: IsoInstant
    value: float = Field(ge=0, allow_inf_nan=False)
    reason: str = Field(min_length=1, max_length=2000, pattern=TEXT)


def _bounds(start: date, end: date, period: str, tz) -> list[datetime]:
    if end <= start:
        raise invalid("end", str(end), "end must be after start")
    if period == "month":
        if start.day != 1 or end.day != 1:
            raise invalid("start", str(start), "monthly periods start and end on the 1st")
        days = []
        d = start
        while d <= end:
            days.append(d)
            d = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    else:
        days = [date.fromordinal(o) for o in range(start.toordinal(), end.toordinal() + 1)]
    if len(days) - 1 > _MAX_PERIODS[period]:
        raise invalid("end", str(end), f"at most {_MAX_PERIODS[period]} periods at once")
    return [datetime.combine(d, time(), tz).astimezone(UTC) for d in days]


_EXPORT = """
WITH p AS (
    SELECT b AS start, lead(b) OVER (ORDER BY b) AS stop FROM unnest(%(bounds)s::timestamptz[]) b
), d AS (
    SELECT id, name FROM devices
    WHERE (%(meter)s::text IS NULL OR name = %(meter)s)
      AND EXISTS (SELECT 1 FROM validated_reads v WHERE v.device_id = devices.id AND v.current
                  AND v.ts >= %(lo)s AND v.ts <= %(hi)s)
)
SELECT d.name, p.start, p.stop, coalesce(mp.multiplier, 1),
       fs.v, fe.v, iv.peak, iv.peak_at, iv.n_valid, iv.n_est, iv.e_sum, q.q_sum, q.q_valid,
       q.q_est
FROM d CROSS JOIN p
LEFT JOIN LATERAL (
    SELECT multiplier FROM metering_points m WHERE m.device_id = d.id
      AND m.valid_from <= p.start AND (m.valid_to IS NULL OR m.valid_to > p.start)
) mp ON true
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(quantity, jsonb_build_array(value, valid, method)) AS v
    FROM validated_reads v WHERE v.device_id = d.id AND v.current AND v.ts = p.start
      AND v.quantity = ANY(%(frozen)s)
) fs ON true
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(quantity, jsonb_build_array(value, valid, method)) AS v
    FROM validated_reads v WHERE v.device_id = d.id AND v.current AND v.ts = p.stop
      AND v.quantity = ANY(%(frozen)s)
) fe ON true
LEFT JOIN LATERAL (
    SELECT max(value) FILTER (WHERE valid) AS peak, sum(value) FILTER (WHERE valid) AS e_sum,
           (array_agg(ts ORDER BY value DESC, ts) FILTER (WHERE valid))[1] AS peak_at,
           count(*) FILTER (WHERE valid) AS n_valid,
           count(*) FILTER (WHERE valid AND method <> 'actual') AS n_est
    FROM validated_reads v WHERE v.device_id = d.id AND v.current AND v.quantity = '1.8.0'
      AND v.ts >= p.start AND v.ts < p.stop
) iv ON true
LEFT JOIN LATERAL (
    SELECT sum(value) FILTER (WHERE valid) AS q_sum, count(*) FILTER (WHERE valid) AS q_valid,
           count(*) FILTER (WHERE valid AND method <> 'actual') AS q_est
    FROM validated_reads v WHERE v.device_id = d.id AND v.current AND v.quantity = '3.8.0'
      AND v.ts >= p.start AND v.ts < p.stop
) q ON true
WHERE p.stop IS NOT NULL
ORDER BY d.name, p.start
"""


def _row(rec: tuple) -> dict:
    name, start, stop, mult, fs, fe, peak, peak_at, n_valid, n_est, e_sum, q_sum, q_valid, q_est = (
        rec
    )
    fs, fe = fs or {}, fe or {}
    missing: list[str] = []
    estimated = bool(n_est)

    def reg(side: dict, q: str) -> float | None:
        nonlocal estimated
        got = side.get(q)
        if got is None or got[0] is None or not got[1]:
            return None
        estimated |= got[2] != "actual"
        return float(got[0])

    r0, r1 = reg(fs, FROZEN[0]), reg(fe, FROZEN[0])
    if r0 is None:
        missing.append("register_start")
    if r1 is None:
        missing.append("register_end")
    expected = round((stop - start).total_seconds() / 900)
    energy = (r1 - r0) * mult if r0 is not None and r1 is not None else None
    if energy is not None and energy < 0:  # the register rolled over: the intervals know
        energy = e_sum * mult if n_valid == expected else None
        if energy is None:
            missing.append("energy (the register rolled over; intervals not all validated)")
    tou: dict[str, float | None] = {}
    for k, label in enumerate(TOU, 1):
        a, b = reg(fs, FROZEN[k]), reg(fe, FROZEN[k])
        tou[f"{label}_kwh"] = (b - a) * mult if a is not None and b is not None else None
    if any(v is None for v in tou.values()):
        missing.append("tou")
    elif any(v < 0 for v in tou.values() if v is not None):
        tou = dict.fromkeys(tou)
        missing.append("tou (a tariff register rolled over)")
    reactive = q_sum * mult if q_sum is not None and q_valid == expected else None
    if reactive is None:
        missing.append(f"reactive ({q_valid or 0} of {expected} intervals validated)")
    else:
        estimated |= bool(q_est)
    pf = None
    if energy is not None and reactive is not None and (energy > 0 or reactive > 0):
        pf = energy / math.hypot(energy, reactive)
    demand = peak * 4 * mult if peak is not None and n_valid == expected else None
    if demand is None:
        missing.append(f"demand ({n_valid or 0} of {expected} intervals validated)")
    return {
        "meter": name,
        "period_start": start,
        "period_end": stop,
        "multiplier": float(mult),
        "register_start": r0,
        "register_end": r1,
        "energy_kwh": energy,
        **tou,
        "reactive_kvarh": reactive,
        "power_factor": pf,
        "demand_kw": demand,
        "demand_at": peak_at if demand is not None else None,
        "estimated": estimated,
        "unvalidated": missing,
    }


async def _rows(pool: AsyncConnectionPool, params: dict) -> AsyncIterator[dict]:
    # a connection of its own: the body is streamed after the route has returned
    async with pool.connection(timeout=5) as conn, conn.transaction():
        async with conn.cursor(name="billing_export") as cur:  # server-side: streamed
            await cur.execute(_EXPORT, params)
            async for rec in cur:
                yield _row(rec)


def _json_value(v):
    return v.isoformat() if isinstance(v, datetime) else v


async def _json(rows: AsyncIterator[dict]) -> AsyncIterator[str]:
    n = complete = 0
    yield '{"data": ['
    async for row in rows:
        yield ("," if n else "") + json.dumps({k: _json_value(v) for k, v in row.items()})
        n += 1
        complete += not row["unvalidated"]
    summary = {"rows": n, "complete": complete, "incomplete": n - complete}
    yield '], "summary": ' + json.dumps(summary) + "}"


async def _csv(rows: AsyncIterator[dict]) -> AsyncIterator[str]:
    fields = list(BillingRowPublic.model_fields)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    async for row in rows:
        row = {**row, "unvalidated": "; ".join(row["unvalidated"])}
        writer.writerow(["" if row[f] is None else _json_value(row[f]) for f in fields])
        if buf.tell() > 65536:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


@router.get(
    "/export",
    response_model=BillingExportPublic,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    dependencies=[Depends(require(Permission.BILLING_EXPORT))],
)
async def export(
    request: Request,
    tz: LocalTz,
    start: Annotated[IsoDate, Query(description="first local day (or month: the 1st)")],
    end: Annotated[IsoDate, Query(description="local day after the last (exclusive)")],
    period: Annotated[Literal["day", "month"], Query()] = "day",
    meter: MeterQ = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> StreamingResponse:
    """Validated billing figures per meter and period, streamed; unvalidated figures are
    null and listed in each row's `unvalidated`, with counts in the summary."""
    bounds = _bounds(start, end, period, tz)
    params = {
        "bounds": bounds,
        "meter": meter,
        "lo": bounds[0],
        "hi": bounds[-1],
        "frozen": FROZEN,
    }
    rows = _rows(request.app.state.pool, params)
    if format == "csv":
        return StreamingResponse(_csv(rows), media_type="text/csv")
    return StreamingResponse(_json(rows), media_type="application/json")


@router.get("/reads/{name}", response_model=list[ValidatedReadPublic], responses=NOT_FOUND)
async def reads(
    conn: Conn,
    name: DeviceName,
    start: Annotated[IsoInstant, Query()],
    end: Annotated[IsoInstant, Query()],
    quantity: Annotated[str | None, Query(pattern=TEXT)] = None,
    history: Annotated[bool, Query(description="include previous versions")] = False,
) -> list[dict]:
    """A meter's validated reads in [start, end) with their provenance."""
    row = await (await conn.execute("SELECT id FROM devices WHERE name = %s", (name,))).fetchone()
    if row is None:
        raise HTTPException(404, f"no device {name!r}")
    cur = await conn.execute(
        "SELECT quantity, ts, version, value, method, rules, valid, current, edited_by, reason"
        " FROM validated_reads WHERE device_id = %s AND ts >= %s AND ts < %s"
        " AND (%s::text IS NULL OR quantity = %s) AND (current OR %s)"
        " ORDER BY quantity, ts, version LIMIT 10000",
        (row[0], aware(start), aware(end), quantity, quantity, history),
    )
    keys = ["quantity", "ts", "version", "value", "method", "rules", "valid", "current"]
    keys += ["edited_by", "reason"]
    out = []
    for rec in await cur.fetchall():
        item = dict(zip(keys, rec, strict=True))
        item["rules"] = Rule(item["rules"]).names()
        out.append(item)
    return out


@router.post(
    "/reads/{name}/edit",
    response_model=ValidatedReadPublic,
    responses={**NOT_FOUND, 400: {"model": ErrorPublic, "description": "The body is not JSON"}},
)
async def edit(
    request: Request,
    conn: Conn,
    name: DeviceName,
    body: EditCreate,
    who: Annotated[Principal, Depends(require(Permission.READS_EDIT))],
) -> dict:
    """Replace a validated read with a person's value (a new version, method `edited`; the
    previous version kept; an audit_log row). The editor is the caller (`edited_by`)."""
    row = await (await conn.execute("SELECT id FROM devices WHERE name = %s", (name,))).fetchone()
    if row is None:
        raise HTTPException(404, f"no device {name!r}")

    ts = aware(body.ts)

    def run() -> dict:
        with psycopg.connect(request.app.state.conninfo, autocommit=True) as sync:
            return edit_read(
                sync,
                device_id=row[0],
                quantity=body.quantity,
                ts=ts,
                value=body.value,
                actor=who.actor,
                reason=body.reason,
            )

    try:
        out = await asyncio.to_thread(run)
    except EditError as exc:
        if "no validated read" in str(exc):
            raise HTTPException(404, str(exc)) from None
        raise invalid("body", body.value, str(exc), where="body") from None
    return {
        "quantity": body.quantity,
        "ts": ts,
        "version": out["version"],
        "value": out["value"],
        "method": "edited",
        "rules": Rule(out["rules"]).names(),
        "valid": True,
        "current": True,
        "edited_by": who.actor,
        "reason": body.reason,
    }
