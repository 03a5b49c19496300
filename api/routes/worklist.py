"""The inspection worklist (issue 10): cases the abnormal-reading rules opened, ranked per
area, with what, why (each rule's evidence) and since when; the status workflow
open → assigned → confirmed | false_positive (assigned → open to hand a case back), every
transition kept; the outcomes per rule, to tune the rules' weights. Transitions need
`cases.work` (inspector) and are audited as the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api.deps import Conn
from api.params import TEXT, UNAVAILABLE, invalid
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES, Permission, Principal, require
from ingest.audit import arecord

router = APIRouter(
    prefix="/worklist",
    tags=["worklist"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

CaseStatus = Literal["open", "assigned", "confirmed", "false_positive"]
ALLOWED: dict[str, set[str]] = {
    "open": {"assigned"},
    "assigned": {"confirmed", "false_positive", "open"},
    "confirmed": set(),
    "false_positive": set(),
}
NOT_FOUND: dict[int | str, dict] = {404: {"model": ErrorPublic, "description": "No such case"}}
CONFLICT: dict[int | str, dict] = {
    400: {"model": ErrorPublic, "description": "The body is not JSON"},
    409: {"model": ErrorPublic, "description": "Transition not allowed from the case's status"},
}


class CasePublic(BaseModel):
    id: int
    meter: str
    area: str | None
    kind: str  # theft | stopped | reverse_wiring | wrong_multiplier | misassigned | …
    score: float  # Σ weights of the rules that hit (analytics/anomaly_rules.toml)
    theft_score: float
    rank: int  # within its area at the last run
    since: datetime | None  # the earliest hit
    status: CaseStatus
    assignee: str | None
    note: str | None
    evidence: dict[str, Any]  # rule → severity, weight, first, intervals, value, …
    window_start: datetime
    window_end: datetime
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class TransitionPublic(BaseModel):
    at: datetime
    from_status: CaseStatus | None  # None: opened by the job
    to_status: CaseStatus
    assignee: str | None
    note: str | None


class CaseDetailPublic(CasePublic):
    history: list[TransitionPublic]


class CasesPublic(BaseModel):
    data: list[CasePublic]
    count: int


class TransitionIn(BaseModel):
    status: CaseStatus
    assignee: str | None = Field(default=None, min_length=1, max_length=200, pattern=TEXT)
    note: str | None = Field(default=None, max_length=2000, pattern=TEXT)


class OutcomePublic(BaseModel):
    rule: str
    confirmed: int
    false_positive: int
    precision: float | None  # confirmed / (confirmed + false_positive)


class OutcomesPublic(BaseModel):
    data: list[OutcomePublic]


_CASE = (
    "SELECT c.id, d.name AS meter, c.area, c.kind, c.score, c.theft_score, c.rank, c.since,"
    " c.status, c.assignee, c.note, c.evidence, c.window_start, c.window_end, c.opened_at,"
    " c.updated_at, c.closed_at FROM anomaly_cases c JOIN devices d ON d.id = c.device_id"
)
Worker = Annotated[Principal, Depends(require(Permission.CASES_WORK))]
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the case's id")]


@router.get("", response_model=CasesPublic)
async def cases(
    conn: Conn,
    area: Annotated[str | None, Query(pattern=TEXT, description="one area")] = None,
    status: Annotated[list[CaseStatus] | None, Query(description="default: open, assigned")] = None,
    kind: Annotated[str | None, Query(pattern=TEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
):
    """The worklist: per area (by name), highest score first."""
    wanted = status or ["open", "assigned"]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CASE + " WHERE c.status = ANY(%s) AND (%s::text IS NULL OR c.area = %s)"
            " AND (%s::text IS NULL OR c.kind = %s)"
            " ORDER BY c.area NULLS LAST, c.score DESC, c.id LIMIT %s",
            (wanted, area, area, kind, kind, limit),
        )
        rows = await cur.fetchall()
    return {"data": rows, "count": len(rows)}


@router.get("/outcomes", response_model=OutcomesPublic)
async def outcomes(conn: Conn):
    """Per rule: how often a case it contributed to was confirmed or a false positive."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT r.rule, count(*) FILTER (WHERE c.status = 'confirmed')::int AS confirmed,"
            " count(*) FILTER (WHERE c.status = 'false_positive')::int AS false_positive"
            " FROM anomaly_cases c, jsonb_object_keys(c.evidence) AS r(rule)"
            " WHERE c.status IN ('confirmed', 'false_positive') GROUP BY r.rule ORDER BY r.rule"
        )
        rows = await cur.fetchall()
    for r in rows:
        total = r["confirmed"] + r["false_positive"]
        r["precision"] = r["confirmed"] / total if total else None
    return {"data": rows}


@router.get("/cases/{case_id}", response_model=CaseDetailPublic, responses=NOT_FOUND)
async def case(conn: Conn, case_id: CaseId):
    """One case with its evidence and every transition."""
    return await _detail(conn, case_id)


@router.patch(
    "/cases/{case_id}/status",
    response_model=CaseDetailPublic,
    responses={**NOT_FOUND, **CONFLICT},
)
async def update_case(conn: Conn, case_id: CaseId, body: TransitionIn, who: Worker):
    """Move a case along open → assigned → confirmed | false_positive (or assigned → open);
    'assigned' needs an assignee. Any other move: 409. Audited as the caller."""
    return await _transition(conn, case_id, body, who.actor)


@router.post(
    "/cases/{case_id}/transitions",
    response_model=CaseDetailPublic,
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
)
async def add_transition(conn: Conn, case_id: CaseId, body: TransitionIn, who: Worker):
    """The same as PATCH, as a new transition record."""
    return await _transition(conn, case_id, body, who.actor)


async def _transition(conn, case_id: int, body: TransitionIn, actor: str) -> dict:
    if body.status == "assigned" and not body.assignee:
        raise invalid("assignee", None, "an assigned case needs an assignee", where="body")
    async with conn.transaction():
        row = await (
            await conn.execute(
                "SELECT status, assignee FROM anomaly_cases WHERE id = %s FOR UPDATE", (case_id,)
            )
        ).fetchone()
        if row is None:
            raise HTTPException(404, f"no case {case_id}")
        current, assignee = row
        if body.status not in ALLOWED[current]:
            allowed = ", ".join(sorted(ALLOWED[current])) or "none (closed)"
            raise HTTPException(409, f"case {case_id} is {current}: allowed {allowed}")
        assignee = body.assignee or (None if body.status == "open" else assignee)
        closed = body.status in ("confirmed", "false_positive")
        await conn.execute(
            "UPDATE anomaly_cases SET status = %s, assignee = %s, note = COALESCE(%s, note),"
            " updated_at = now(), closed_at = CASE WHEN %s THEN now() END WHERE id = %s",
            (body.status, assignee, body.note, closed, case_id),
        )
        await conn.execute(
            "INSERT INTO anomaly_case_history (case_id, from_status, to_status, assignee, note)"
            " VALUES (%s, %s, %s, %s, %s)",
            (case_id, current, body.status, assignee, body.note),
        )
        before = {"status": current, "assignee": row[1]}
        after = {"status": body.status, "assignee": assignee, "note": body.note}
        await arecord(conn, actor, "transition", "anomaly_case", case_id, before, after)
    return await _detail(conn, case_id)


async def _detail(conn, case_id: int) -> dict:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CASE + " WHERE c.id = %s", (case_id,))
        row = await cur.fetchone()
        if row is None:
            raise HTTPException(404, f"no case {case_id}")
        await cur.execute(
            "SELECT at, from_status, to_status, assignee, note FROM anomaly_case_history"
            " WHERE case_id = %s ORDER BY at, ctid",
            (case_id,),
        )
        row["history"] = await cur.fetchall()
    return row
