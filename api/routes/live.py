"""The live feed over server-sent events, and the live page (static files, no build step).

`GET /live/stream` sends `reading`, `event` and `alarm` events as they are stored, filtered
by device, area (its metering points in force), quantity and kind. A client reconnecting with
`Last-Event-ID` gets exactly what it missed while that is still in the feed's window;
otherwise a `reset` event (re-read the state, live events follow) — never a silent gap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from api import live_guard as guard
from api.live import KINDS, Filter, LiveFeed, Reset
from api.params import TEXT, UNAVAILABLE, invalid
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES, Permission, Principal, require
from ingest.quantities import registry

STATIC = Path(__file__).resolve().parent.parent / "static" / "live"

router = APIRouter(prefix="/live", tags=["live"], responses={**UNAVAILABLE, **AUTH_RESPONSES})

_AREA_METERS = """
SELECT p.device_id FROM metering_points p JOIN areas a ON a.id = p.area_id
WHERE a.name = %s AND p.valid_from <= now() AND (p.valid_to IS NULL OR p.valid_to > now())
"""

Names = Annotated[str | None, Query(pattern=TEXT, description="comma-separated; any when absent")]


def _split(field: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise invalid(field, text, "an empty name in the list")
    return parts


async def _area_meters(conn, area: str) -> frozenset[int]:
    cur = await conn.execute("SELECT 1 FROM areas WHERE name = %s", (area,))
    if await cur.fetchone() is None:
        raise HTTPException(404, f"no such area: {area}")
    cur = await conn.execute(_AREA_METERS, (area,))
    return frozenset(r[0] for r in await cur.fetchall())


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={
        404: {"model": ErrorPublic, "description": "No such device or area"},
        200: {
            "content": {"text/event-stream": {}},
            "description": "events `ready`, `reading`, `event`, `alarm` and `reset`; id"
            " `<feed>-<seq>` for Last-Event-ID",
        },
    },
)
async def stream(
    request: Request,
    who: Annotated[Principal, Depends(require(Permission.READ))],
    device: Names = None,
    area: Annotated[str | None, Query(pattern=TEXT, description="its meters in force")] = None,
    quantity: Names = None,
    kind: Annotated[
        str | None, Query(description="comma-separated of reading, event, alarm")
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Readings, events and alarms (events of alarm kinds, newly opened inspection cases) as
    they are stored. Data: JSON; a reading `{device, quantity, ts, value, quality}`, an
    event `{device, ts, kind, detail}`, an alarm either of those or `{kind: "case_opened",
    case, case_kind, area, device, score}`. First `ready` (or `reset` `{reason}`: the client
    missed events and should re-read the state; live events follow either). The caller's
    credentials are re-checked every `live_recheck_seconds` and at their expiry: when they
    no longer hold, a last `closed` `{reason}` ends the stream."""
    feed: LiveFeed = request.app.state.live
    kinds = _split("kind", kind)
    if kinds is not None and (bad := set(kinds) - set(KINDS)):
        raise invalid("kind", kind, f"{sorted(bad)}: expected reading, event or alarm")
    quantities = _split("quantity", quantity)
    if quantities is not None and (bad := set(quantities) - registry().keys()):
        raise invalid("quantity", quantity, f"unknown quantity {sorted(bad)[0]}")
    if feed.streams[who.name] >= feed.policy.streams_per_caller:
        raise HTTPException(
            429, f"{who.name} has {feed.policy.streams_per_caller} live streams open already"
        )
    pool = request.app.state.pool
    devices: frozenset[int] | None = None
    # a connection only for the lookups: the stream itself holds none
    try:
        async with pool.connection(timeout=5) as conn:
            if (names := _split("device", device)) is not None:
                cur = await conn.execute(
                    "SELECT name, id FROM devices WHERE name = ANY(%s)", (names,)
                )
                found = dict(await cur.fetchall())
                if missing := [n for n in names if n not in found]:
                    raise HTTPException(404, f"no such device: {missing[0]}")
                devices = frozenset(found.values())
            area_ids = await _area_meters(conn, area) if area is not None else None
            expiry = await guard.expiry(conn, request)
    except PoolTimeout as exc:
        raise HTTPException(503, "database unavailable") from exc

    def accept(meters: frozenset[int] | None) -> Filter:
        ids = devices if meters is None else (meters if devices is None else devices & meters)
        return Filter(
            ids,
            frozenset(quantities) if quantities is not None else None,
            frozenset(kinds) if kinds is not None else None,
        )

    current = [accept(area_ids)]  # swapped when the area's meters are re-read

    async def reread_area() -> None:
        while True:
            await asyncio.sleep(feed.policy.area_refresh)
            async with pool.connection() as c:
                current[0] = accept(await _area_meters(c, area))

    async def items() -> AsyncIterator[dict[str, Any]]:
        try:
            cursor = feed.cursor_of(last_event_id)
        except Reset as reset:
            cursor = feed.newest()
            yield _reset(feed, cursor, reset.reason)
        else:  # the client follows from here: an id to resume from even if nothing matches
            yield {"id": feed.event_id(cursor), "event": "ready", "data": "{}"}
        while not feed.closing:
            try:
                async for item in feed.follow(cursor, lambda i: current[0](i)):
                    cursor = item.seq
                    yield {"id": feed.event_id(item.seq), "event": item.kind, "data": item.json()}
            except Reset as reset:
                cursor = feed.newest()
                yield _reset(feed, cursor, reset.reason)

    async def events() -> AsyncIterator[dict[str, Any]]:
        refresher = asyncio.create_task(reread_area()) if area is not None else None
        try:
            async for event in guard.guarded(request, feed, items(), expiry):
                yield event
        finally:
            if refresher is not None:
                refresher.cancel()
            feed.streams[who.name] -= 1
            if feed.streams[who.name] <= 0:
                del feed.streams[who.name]

    feed.streams[who.name] += 1  # counted from here: events() gives it back at its end
    return EventSourceResponse(events(), ping=15)


def _reset(feed: LiveFeed, cursor: int, reason: str) -> dict[str, Any]:
    return {
        "id": feed.event_id(cursor),
        "event": "reset",
        "data": json.dumps({"reason": reason}),
    }


class LimitPublic(BaseModel):
    nominal: float  # V; a system uses the row of the largest nominal ≤ its own
    upper_pct: float
    lower_pct: float


class LiveConfigPublic(BaseModel):
    timezone: str
    today: date  # the site's local day
    nominal_voltage: float  # V phase-to-neutral of a device that sets none
    voltage_limits: list[LimitPublic]


@router.get("/config", response_model=LiveConfigPublic)
async def config(
    request: Request, _who: Annotated[Principal, Depends(require(Permission.READ))]
) -> LiveConfigPublic:
    """What the live page needs besides the data: the site's day and the voltage limits."""
    feed: LiveFeed = request.app.state.live
    tz = request.app.state.tz
    return LiveConfigPublic(
        timezone=str(tz),
        today=datetime.now(tz).date(),
        nominal_voltage=feed.policy.nominal_voltage,
        voltage_limits=[
            LimitPublic(nominal=n, upper_pct=u, lower_pct=lo)
            for n, u, lo in feed.policy.voltage_limits
        ],
    )


@router.get("", include_in_schema=False)
async def page() -> FileResponse:
    """The live page (open; its data calls need credentials)."""
    return FileResponse(STATIC / "index.html")
