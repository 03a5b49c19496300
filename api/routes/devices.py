from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from api import crud
from api.deps import Conn
from api.params import NOT_FOUND, UNAVAILABLE, DeviceName, IsoInstant, Kind, invalid, window
from api.schemas import (
    DevicePublic,
    DevicesPublic,
    EventPublic,
    EventsPublic,
    InstantBucketPublic,
    LatestPublic,
    LatestValue,
    ReadingPublic,
    ReadingsPublic,
    RegisterBucketPublic,
)
from api.security import AUTH_RESPONSES, Permission, require
from ingest.exceptions import UnknownQuantity
from ingest.quantities import QuantityKind, registry
from ingest.quantities import quantity as lookup_quantity
from ingest.rollups import Resolution

router = APIRouter(
    prefix="/devices",
    tags=["devices"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
    dependencies=[Depends(require(Permission.READ))],
)

MAX_ROWS = 100_000


@router.get("", response_model=DevicesPublic)
async def list_devices(conn: Conn, kind: Kind = None):
    rows = await crud.list_devices(conn=conn, kind=kind)
    return DevicesPublic(data=[DevicePublic(**r) for r in rows], count=len(rows))


async def _device(conn, name: str) -> dict:
    device = await crud.get_device(conn=conn, name=name)
    if device is None:
        raise HTTPException(404, f"no device named {name!r}")
    return device


@router.get("/{name}", response_model=DevicePublic, responses=NOT_FOUND)
async def get_device(conn: Conn, name: DeviceName):
    return DevicePublic(**await _device(conn, name))


@router.get("/{name}/readings", response_model=ReadingsPublic, responses=NOT_FOUND)
async def readings(
    conn: Conn,
    name: DeviceName,
    quantity: Annotated[str, Query(description="OBIS code, e.g. 1.8.0")],
    start: Annotated[
        IsoInstant | None, Query(description="inclusive; default: end − 1 day")
    ] = None,
    end: Annotated[IsoInstant | None, Query(description="exclusive; default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 10_000,
    resolution: Annotated[
        Resolution,
        Query(
            description="raw: the stored readings; 15min, 1h: UTC-aligned buckets; 1d: the"
            " site's local days (its timezone, recorded at migration; 23 or 25 h across DST);"
            " buckets starting in [start, end) — min/avg/max/count for instantaneous"
            " quantities, first/last/delta for registers (1h and 1d from the rollups)"
        ),
    ] = Resolution.RAW,
):
    """A device's readings of one quantity in [start, end), oldest first, raw or rolled up."""
    try:
        q = lookup_quantity(quantity)
    except UnknownQuantity as exc:
        raise invalid("quantity", quantity, str(exc)) from None
    start, end = window(start, end, default_span=timedelta(days=1))
    device = await _device(conn, name)
    rows = await crud.series(
        conn=conn,
        device_id=device["id"],
        quantity=q.obis,
        start=start,
        end=end,
        resolution=resolution,
        limit=limit,
    )
    item = (
        ReadingPublic
        if resolution is Resolution.RAW
        else RegisterBucketPublic
        if q.kind is QuantityKind.REGISTER
        else InstantBucketPublic
    )
    return ReadingsPublic(
        device=name,
        quantity=q.obis,
        unit=q.unit,
        kind=q.kind,
        resolution=resolution,
        data=[item.model_validate(r) for r in rows],  # extra keys (device_id …) ignored
        count=len(rows),
    )


@router.get("/{name}/latest", response_model=LatestPublic, responses=NOT_FOUND)
async def latest(conn: Conn, name: DeviceName):
    """The newest value of every quantity the device has reported."""
    device = await _device(conn, name)
    reg = registry()
    rows = await crud.latest(conn=conn, device_id=device["id"], quantities=sorted(reg))
    return LatestPublic(
        device=name,
        data=[
            LatestValue(name=reg[r["quantity"]].name, unit=reg[r["quantity"]].unit, **r)
            for r in rows
        ],
    )


@router.get("/{name}/events", response_model=EventsPublic, responses=NOT_FOUND)
async def events(
    conn: Conn,
    name: DeviceName,
    start: Annotated[
        IsoInstant | None, Query(description="inclusive; default: end − 30 days")
    ] = None,
    end: Annotated[IsoInstant | None, Query(description="exclusive; default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 1000,
):
    """A device's events (power down, cover opened, clock drift, relay operated …)."""
    start, end = window(start, end, default_span=timedelta(days=30))
    device = await _device(conn, name)
    rows = await crud.events(conn=conn, device_id=device["id"], start=start, end=end, limit=limit)
    return EventsPublic(device=name, data=[EventPublic(**r) for r in rows], count=len(rows))
