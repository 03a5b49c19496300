"""The daily diagnostics' results with their evidence: each meter's estimated error (with its
confidence interval; none where the data cannot separate it) and the meter-to-area check."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel

from api.deps import Conn
from api.params import TEXT, UNAVAILABLE
from api.security import AUTH_RESPONSES, Permission, require

router = APIRouter(
    prefix="/analytics",
    tags=["analytics"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)


class MeterErrorPublic(BaseModel):
    area: str
    meter: str
    window_start: datetime
    window_end: datetime
    error_pct: float | None  # + = the meter reads fast; None: not identifiable
    ci_low: float | None
    ci_high: float | None
    identifiable: bool
    flagged: bool  # the whole CI beyond the meter's accuracy class


class MappingFlagPublic(BaseModel):
    meter: str
    window_start: datetime
    window_end: datetime
    assigned_area: str
    own_corr: float | None
    best_area: str | None  # the other area its voltage follows best
    best_corr: float | None
    overlap: int  # voltage steps in common with its own area's
    flagged: bool


class MultiplierFlagPublic(BaseModel):
    meter: str
    area: str
    window_start: datetime
    window_end: datetime
    check_kind: str  # step: at a ledger multiplier change; factor: from the estimated error
    at: datetime  # the change (step) or the window's start (factor)
    multiplier_before: float | None
    multiplier_after: float | None  # the ledger's in force
    expected_jump: float | None  # kWh per interval of the area's loss, if the change is wrong
    observed_jump: float | None
    stderr: float | None
    error_pct: float | None  # factor: the estimated meter error
    implied_multiplier: float | None  # factor: the multiplier that makes the meter right
    flagged: bool


Area = Annotated[str | None, Query(pattern=TEXT, description="one area's name")]
Flagged = Annotated[bool, Query(description="only the flagged meters")]

# The latest window computed (the job writes one per local day).
_LATEST = "window_end = (SELECT max(window_end) FROM {table})"


@router.get("/meter-errors", response_model=list[MeterErrorPublic])
async def meter_errors(conn: Conn, area: Area = None, flagged: Flagged = False):
    """The latest window's estimated meter errors, flagged ones first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT e.area, d.name AS meter, window_start, window_end, error_pct, ci_low,"
            " ci_high, identifiable, flagged FROM meter_errors e"
            " JOIN devices d ON d.id = e.device_id"
            f" WHERE {_LATEST.format(table='meter_errors')}"
            " AND (%(area)s::text IS NULL OR e.area = %(area)s)"
            " AND (NOT %(flagged)s OR flagged)"
            " ORDER BY flagged DESC, abs(error_pct) DESC NULLS LAST, e.area, d.name",
            {"area": area, "flagged": flagged},
        )
        return await cur.fetchall()


@router.get("/mapping-flags", response_model=list[MappingFlagPublic])
async def mapping_flags(conn: Conn, area: Area = None, flagged: Flagged = True):
    """The latest window's meter-to-area check (default: the flagged meters only)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT d.name AS meter, window_start, window_end, assigned_area, own_corr,"
            " best_area, best_corr, overlap, flagged FROM mapping_flags f"
            " JOIN devices d ON d.id = f.device_id"
            f" WHERE {_LATEST.format(table='mapping_flags')}"
            " AND (%(area)s::text IS NULL OR assigned_area = %(area)s)"
            " AND (NOT %(flagged)s OR flagged)"
            " ORDER BY flagged DESC, best_corr - own_corr DESC NULLS LAST, d.name",
            {"area": area, "flagged": flagged},
        )
        return await cur.fetchall()


@router.get("/multiplier-flags", response_model=list[MultiplierFlagPublic])
async def multiplier_flags(conn: Conn, area: Area = None, flagged: Flagged = True):
    """The latest window's wrong-multiplier check (default: the flagged meters only)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT d.name AS meter, area, window_start, window_end, check_kind, at,"
            " multiplier_before, multiplier_after, expected_jump, observed_jump, stderr,"
            " error_pct, implied_multiplier, flagged FROM multiplier_flags f"
            " JOIN devices d ON d.id = f.device_id"
            f" WHERE {_LATEST.format(table='multiplier_flags')}"
            " AND (%(area)s::text IS NULL OR area = %(area)s)"
            " AND (NOT %(flagged)s OR flagged)"
            " ORDER BY flagged DESC, abs(observed_jump) DESC NULLS LAST, d.name",
            {"area": area, "flagged": flagged},
        )
        return await cur.fetchall()
