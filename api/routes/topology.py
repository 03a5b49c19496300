"""The grid's topology, read-only: substations, feeders, areas, an area's members at an
instant, a meter's placements over time, and the meters due for periodic verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.deps import Conn, LocalTz
from api.params import TEXT, UNAVAILABLE, IsoInstant, aware
from api.schemas import (
    AreaMembersPublic,
    AreaPublic,
    ErrorPublic,
    FeederPublic,
    MeterHistoryPublic,
    MeteringPointPublic,
    SubstationPublic,
    VerificationDuePublic,
)
from api.security import AUTH_RESPONSES, Permission, require

router = APIRouter(
    prefix="/topology",
    tags=["topology"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)
meters_router = APIRouter(
    prefix="/meters",
    tags=["topology"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

NO_AREA: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such area"}
}
NO_METER: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such meter"}
}
AreaName = Annotated[str, Path(pattern=TEXT, description="the area's name")]
MeterName = Annotated[str, Path(pattern=TEXT, description="the meter's name")]

_IN_FORCE = "p.valid_from <= {0} AND (p.valid_to IS NULL OR p.valid_to > {0})"

_POINTS = """
SELECT d.name AS meter, p.role, a.name AS area, f.name AS feeder, p.phase, p.ct_ratio,
       p.pt_ratio, p.multiplier, p.customer_class, p.tariff, p.location,
       CASE WHEN isfinite(p.valid_from) THEN p.valid_from END AS valid_from, p.valid_to
  FROM metering_points p
  JOIN devices d ON d.id = p.device_id
  LEFT JOIN areas a ON a.id = p.area_id
  JOIN feeders f ON f.id = coalesce(p.feeder_id, a.feeder_id)
"""


async def _rows(conn, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = await conn.execute(sql, params)
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]


@router.get("/substations", response_model=list[SubstationPublic])
async def substations(conn: Conn):
    return await _rows(
        conn,
        "SELECT s.name, s.voltage_kv, count(f.id) AS feeders FROM substations s"
        " LEFT JOIN feeders f ON f.substation_id = s.id GROUP BY s.id ORDER BY s.name",
    )


@router.get("/feeders", response_model=list[FeederPublic])
async def feeders(conn: Conn):
    """Each feeder with the head meter in force now."""
    return await _rows(
        conn,
        "SELECT f.name, s.name AS substation, f.voltage_kv,"
        " (SELECT d.name FROM metering_points p JOIN devices d ON d.id = p.device_id"
        f"   WHERE p.feeder_id = f.id AND {_IN_FORCE.format('now()')}) AS head_meter,"
        " (SELECT count(*) FROM areas a WHERE a.feeder_id = f.id) AS areas"
        " FROM feeders f JOIN substations s ON s.id = f.substation_id ORDER BY f.name",
    )


@router.get("/areas", response_model=list[AreaPublic])
async def areas(conn: Conn):
    """Each transformer area (台区) with its feeder, kind, rated kVA and the total meter in
    force now."""
    return await _rows(
        conn,
        "SELECT a.name, f.name AS feeder, a.kind, a.transformer_kva,"
        " (SELECT d.name FROM metering_points p JOIN devices d ON d.id = p.device_id"
        f"   WHERE p.area_id = a.id AND p.role = 'area_total' AND {_IN_FORCE.format('now()')})"
        " AS total_meter FROM areas a JOIN feeders f ON f.id = a.feeder_id ORDER BY a.name",
    )


@router.get("/areas/{name}/members", response_model=AreaMembersPublic, responses=NO_AREA)
async def area_members(
    conn: Conn,
    name: AreaName,
    at: Annotated[IsoInstant | None, Query(description="the instant; default: now")] = None,
):
    """The metering points in force in the area at an instant: the total meter first."""
    at_ = aware(at) if at else datetime.now(UTC)
    cur = await conn.execute("SELECT id FROM areas WHERE name = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no area named {name!r}")
    data = await _rows(
        conn,
        _POINTS + f" WHERE p.area_id = %(area)s AND {_IN_FORCE.format('%(at)s')}"
        " ORDER BY p.role <> 'area_total', d.name",
        {"area": row[0], "at": at_},
    )
    return AreaMembersPublic(
        area=name, at=at_, data=[MeteringPointPublic(**r) for r in data], count=len(data)
    )


@router.get("/meters/{name}/history", response_model=MeterHistoryPublic, responses=NO_METER)
async def meter_history(conn: Conn, name: MeterName):
    """A meter's metering points over time, oldest first (moves, multiplier changes)."""
    cur = await conn.execute("SELECT id FROM devices WHERE name = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no meter named {name!r}")
    data = await _rows(conn, _POINTS + " WHERE p.device_id = %s ORDER BY p.valid_from", (row[0],))
    return MeterHistoryPublic(
        meter=name, data=[MeteringPointPublic(**r) for r in data], count=len(data)
    )


@meters_router.get("/verification-due", response_model=list[VerificationDuePublic])
async def verification_due(
    conn: Conn,
    tz: LocalTz,
    within_days: Annotated[int, Query(ge=0, le=3660, description="the window, days")] = 90,
):
    """Meters whose periodic verification (周期检定) is due within the window of the site's
    today, or past: soonest (most overdue) first."""
    today = datetime.now(tz).date()
    return await _rows(
        conn,
        "SELECT d.name AS meter, m.model, m.accuracy_class, m.last_verified,"
        " m.next_verification, m.next_verification < %(today)s AS overdue, m.rotation_plan"
        " FROM meter_assets m JOIN devices d ON d.id = m.device_id"
        " WHERE m.next_verification <= %(until)s ORDER BY m.next_verification, d.name",
        {"today": today, "until": today + timedelta(days=within_days)},
    )
