"""Reads in bulk: raw readings, 15-min intervals and VEE-validated reads of one quantity, for
one device or all, paged by a keyset cursor (JSON) or streamed whole (NDJSON, CSV) from a
server-side cursor in constant memory. Order: device, then time."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, Field

from api.params import TEXT, UNAVAILABLE, IsoInstant, invalid, window
from api.reads_sql import (
    FIRST,
    SQL,
    CursorError,
    ReadKind,
    decode_cursor,
    encode_cursor,
    key_of,
    params,
)
from api.security import AUTH_RESPONSES, Permission, require
from ingest.exceptions import UnknownQuantity
from ingest.quantities import quantity as lookup_quantity

router = APIRouter(
    prefix="/reads",
    tags=["reads"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

MAX_PAGE = 10_000
STREAM_BATCH = 2_000  # rows fetched from the server-side cursor at a time
NDJSON = "application/x-ndjson"
CSV = "text/csv"


class RawRead(BaseModel):
    device: str
    quantity: str
    ts: datetime
    value: float
    quality: int

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device": "meter-01",
                    "quantity": "1.8.0",
                    "ts": "2026-11-25T00:15:00Z",
                    "value": 1234.56,
                    "quality": 0,
                }
            ]
        }
    }


class IntervalRead(BaseModel):
    """A 15-min bucket (UTC-aligned) of a device's readings: min/avg/max for instantaneous
    quantities, first/last/delta (last − first within it) for registers."""

    device: str
    quantity: str
    bucket: datetime
    count: int
    min: float
    avg: float
    max: float
    first: float
    last: float
    delta: float
    first_ts: datetime
    last_ts: datetime

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device": "meter-01",
                    "quantity": "32.7.0",
                    "bucket": "2026-11-25T00:00:00Z",
                    "count": 15,
                    "min": 229.8,
                    "avg": 231.2,
                    "max": 233.0,
                    "first": 230.1,
                    "last": 232.4,
                    "delta": 2.3,
                    "first_ts": "2026-11-25T00:00:00Z",
                    "last_ts": "2026-11-25T00:14:00Z",
                }
            ]
        }
    }


class ValidatedRead(BaseModel):
    """The current version of a VEE-validated read: ``1.8.0`` the validated interval energy
    of the 15 minutes from ``ts`` (secondary kWh), ``1.8.x*d`` a daily frozen register."""

    device: str
    quantity: str
    ts: datetime
    value: float | None  # None: could not be estimated
    method: str  # actual | estimated | edited
    rules: int
    valid: bool
    version: int
    edited_by: str | None
    reason: str | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device": "meter-01",
                    "quantity": "1.8.0",
                    "ts": "2026-11-25T00:00:00Z",
                    "value": 0.25,
                    "method": "estimated",
                    "rules": 2,
                    "valid": True,
                    "version": 1,
                    "edited_by": None,
                    "reason": None,
                }
            ]
        }
    }


MODELS: dict[ReadKind, type[BaseModel]] = {
    ReadKind.RAW: RawRead,
    ReadKind.INTERVAL: IntervalRead,
    ReadKind.VALIDATED: ValidatedRead,
}


class Page(BaseModel):
    kind: ReadKind
    quantity: str
    unit: str
    count: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null: this was the last"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "raw",
                    "quantity": "1.8.0",
                    "unit": "kWh",
                    "count": 1000,
                    "next_cursor": "WyJyYXciLCAiMS44LjAiLCA3LCAiMjAyNi0xMS0yNVQxMDowMDowMCJd",
                }
            ]
        }
    }


class RawPage(Page):
    data: list[RawRead]


class IntervalPage(Page):
    data: list[IntervalRead]


class ValidatedPage(Page):
    data: list[ValidatedRead]


Quantity = Annotated[str, Query(pattern=TEXT, description="OBIS code, e.g. 1.8.0")]
Device = Annotated[
    str | None, Query(pattern=TEXT, description="one device's reads; default: every device's")
]
Start = Annotated[IsoInstant | None, Query(description="inclusive; default: end − 1 day")]
End = Annotated[IsoInstant | None, Query(description="exclusive; default: now")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page (json)")]
Cursor = Annotated[
    str | None,
    Query(max_length=400, pattern=TEXT, description="a page's `next_cursor`: the page after"),
]
Format = Annotated[
    Literal["json", "ndjson", "csv"],
    Query(description="json: one page; ndjson, csv: every row from the cursor on, streamed"),
]


def _streamed(example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {
                NDJSON: {"schema": {"type": "string"}, "example": example},
                CSV: {"schema": {"type": "string"}},
            }
        }
    }


async def _answer(
    request: Request,
    kind: ReadKind,
    quantity: str,
    device: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
    fmt: str,
):
    try:
        q = lookup_quantity(quantity)
    except UnknownQuantity as exc:
        raise invalid("quantity", quantity, str(exc)) from None
    start_, end_ = window(start, end, default_span=timedelta(days=1))
    try:
        after = decode_cursor(cursor, kind, q.obis) if cursor else FIRST
    except CursorError as exc:
        raise invalid("cursor", cursor, str(exc)) from None
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=5) as conn:
            device_id = None
            if device is not None:
                cur = await conn.execute("SELECT id FROM devices WHERE name = %s", (device,))
                row = await cur.fetchone()
                if row is None:
                    raise HTTPException(404, f"no device named {device!r}")
                device_id = row[0]
            if fmt == "json":
                p = params(kind, q.obis, start_, end_, device_id, after, limit + 1)
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(SQL[kind], p)
                    rows = await cur.fetchall()
    except PoolTimeout as exc:
        raise HTTPException(503, "database unavailable") from exc
    if fmt != "json":
        p = params(kind, q.obis, start_, end_, device_id, after, None)
        media = NDJSON if fmt == "ndjson" else CSV
        return StreamingResponse(_stream(pool, kind, p, fmt), media_type=media)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(kind, q.obis, key_of(kind, rows[-1])) if more else None
    model = MODELS[kind]
    return {
        "kind": kind,
        "quantity": q.obis,
        "unit": q.unit,
        "count": len(rows),
        "next_cursor": next_cursor,
        "data": [model.model_validate(r) for r in rows],
    }


async def _stream(
    pool: AsyncConnectionPool, kind: ReadKind, p: dict[str, Any], fmt: str
) -> AsyncIterator[str]:
    """Every row, read from a server-side cursor STREAM_BATCH rows at a time: memory holds
    one batch whatever the range."""
    columns = list(MODELS[kind].model_fields)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(columns)
    async with pool.connection(timeout=5) as conn, conn.transaction():
        async with conn.cursor(name="reads_stream", row_factory=dict_row) as cur:
            cur.itersize = STREAM_BATCH
            await cur.execute(SQL[kind], p)
            n = 0
            async for row in cur:
                if fmt == "csv":
                    writer.writerow([_cell(row[c]) for c in columns])
                else:
                    out.write(json.dumps({c: _cell(row[c]) for c in columns}) + "\n")
                n += 1
                if n % STREAM_BATCH == 0:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
    yield out.getvalue()


def _cell(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


@router.get(
    "/raw",
    response_model=RawPage,
    responses=_streamed(
        '{"device": "meter-01", "quantity": "1.8.0", "ts": "2026-11-25T00:00:00+00:00",'
        ' "value": 1234.5, "quality": 0}\n'
    ),
)
async def raw(
    request: Request,
    quantity: Quantity,
    device: Device = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
    format: Format = "json",
):
    """The stored readings of a quantity in [start, end), by device then time."""
    return await _answer(request, ReadKind.RAW, quantity, device, start, end, limit, cursor, format)


@router.get(
    "/interval",
    response_model=IntervalPage,
    responses=_streamed(
        '{"device": "meter-01", "quantity": "1.8.0", "bucket": "2026-11-25T00:00:00+00:00",'
        ' "count": 1, "min": 1234.5, "avg": 1234.5, "max": 1234.5, "first": 1234.5,'
        ' "last": 1234.5, "delta": 0.0, "first_ts": "2026-11-25T00:00:00+00:00",'
        ' "last_ts": "2026-11-25T00:00:00+00:00"}\n'
    ),
)
async def interval(
    request: Request,
    quantity: Quantity,
    device: Device = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
    format: Format = "json",
):
    """15-min buckets (UTC-aligned) starting in [start, end), by device then bucket."""
    return await _answer(
        request, ReadKind.INTERVAL, quantity, device, start, end, limit, cursor, format
    )


@router.get(
    "/validated",
    response_model=ValidatedPage,
    responses=_streamed(
        '{"device": "meter-01", "quantity": "1.8.0", "ts": "2026-11-25T00:00:00+00:00",'
        ' "value": 0.25, "method": "actual", "rules": 0, "valid": true, "version": 1,'
        ' "edited_by": null, "reason": null}\n'
    ),
)
async def validated(
    request: Request,
    quantity: Quantity,
    device: Device = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
    format: Format = "json",
):
    """The current VEE-validated reads in [start, end): ``1.8.0`` interval energy,
    ``1.8.0*d`` … ``1.8.4*d`` daily frozen registers; each with its method and rules."""
    return await _answer(
        request, ReadKind.VALIDATED, quantity, device, start, end, limit, cursor, format
    )
