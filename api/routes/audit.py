"""The audit log: who changed what, when, before and after; its hash chain's verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api import audit_head
from api.deps import Conn
from api.params import TEXT, UNAVAILABLE, IsoInstant, aware, invalid
from api.security import AUTH_RESPONSES, Permission, require
from ingest.audit import LIST_COLUMNS, LIST_SQL, verdict, verify_chain_sql

router = APIRouter(
    prefix="/audit",
    tags=["audit"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.AUDIT_READ))],
)

Rule = Literal["multiplier_change", "meter_moved_area", "large_read_edit"]


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: Any
    after: Any
    prev_hash: str  # hex
    hash: str  # hex: sha256(prev_hash || the row's canonical content)
    unusual: list[Rule] = Field(
        description="rules this change trips: a metering point's multiplier (CT × PT)"
        " changed, a meter moved to another area, a read edited by more than"
        " `audit_edit_flag_share` of its value"
    )


class AuditPagePublic(BaseModel):
    data: list[AuditEntryPublic]  # newest first
    count: int
    next_before_id: int | None  # pass as before_id for the next (older) page; null: no more


class BrokenRow(BaseModel):
    id: int
    reason: str


class VerifyPublic(BaseModel):
    ok: bool
    rows: int
    first_broken: BrokenRow | None
    head: str | None  # the chain's head hash (hex): keep it elsewhere to compare later


Text = Annotated[str | None, Query(max_length=200, pattern=TEXT)]


@router.get("", response_model=AuditPagePublic)
async def entries(
    request: Request,
    conn: Conn,
    entity: Text = None,
    entity_id: Text = None,
    actor: Text = None,
    start: Annotated[IsoInstant | None, Query(description="at or after")] = None,
    end: Annotated[IsoInstant | None, Query(description="before")] = None,
    unusual: Annotated[bool, Query(description="only flagged changes")] = False,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    """Audit entries, newest first, filtered by entity, entity id, actor and time window
    [start, end); paginated by id (`next_before_id`)."""
    if start is not None and end is not None and aware(end) <= aware(start):
        raise invalid("end", end.isoformat(), "end must be after start")
    params = {
        "entity": entity,
        "entity_id": entity_id,
        "actor": actor,
        "start": aware(start) if start else None,
        "end": aware(end) if end else None,
        "before_id": before_id,
        "unusual_only": unusual,
        "edit_share": request.app.state.audit_edit_flag_share,
        "limit": limit + 1,  # one more: is there a next page?
    }
    cur = await conn.execute(LIST_SQL, params)
    rows = [dict(zip(LIST_COLUMNS, r, strict=True)) for r in await cur.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "data": rows,
        "count": len(rows),
        "next_before_id": rows[-1]["id"] if more else None,
    }


@router.get("/verify", response_model=VerifyPublic)
async def verify(conn: Conn) -> dict:
    """Recompute the whole chain: each row's hash from the previous row's hash and its own
    content. `first_broken` names the first row where it does not hold. The head is exported
    too (metric `gridread_audit_chain_head_info`, a log line): compare it with one kept
    earlier, since a chain rewritten whole by the database's owner verifies ok."""
    sql, params = verify_chain_sql()
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    audit_head.export(row[5] or 0, row[6])  # the head, anchored outside the database
    return verdict(row)
