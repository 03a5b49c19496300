"""Inventory CRUD: substations, feeders, areas, meter assets (by name), a meter's placements in
the grid (metering points), locations, and the entries the API owns. Reads need `read`,
writes `inventory.write`; every write is validated with the whole stored inventory, as the
inventory file is, audited with the caller as actor, and claimed for the database (README
"Inventory API")."""

# no `from __future__ import annotations`: the routes made in `_entries` name their body
# model by a variable, which FastAPI must see as a class.

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field

from api.deps import LocalTz
from api.params import TEXT, IsoInstant, aware
from api.routes.inventory_run import READ_RESPONSES, WRITE_RESPONSES, invalid_inventory, run
from api.security import Permission, Principal, require
from gridread import inventory_edit as edit
from gridread import inventory_overrides as owners
from gridread.topology import AreaSpec, FeederSpec, MeterAssetSpec, SubstationSpec

router = APIRouter(
    prefix="/inventory",
    tags=["inventory"],
    responses=READ_RESPONSES,
    dependencies=[Depends(require(Permission.READ))],
)
Writer = Annotated[Principal, Depends(require(Permission.INVENTORY_WRITE))]
Name = Annotated[str, Path(pattern=TEXT, description="the entry's name (a meter's, for assets)")]

EXAMPLES: dict[str, dict[str, Any]] = {
    "substations": {"name": "sub-01", "voltage_kv": 35},
    "feeders": {"name": "f-01", "substation": "sub-01", "voltage_kv": 10},
    "areas": {
        "name": "a-01",
        "feeder": "f-01",
        "kind": "public",
        "transformer_kva": 400,
        "lv_voltage_kv": 0.4,
    },
    "meter-assets": {
        "meter": "a-01-total",
        "model": "DTZY71",
        "accuracy_class": "0.5S",
        "installed": "2024-03-01",
        "next_verification": "2032-02-20",
    },
}


def _tz(tz: Any) -> str:
    return tz.key


def _entries(collection: str, model: type[BaseModel], noun: str) -> None:
    key = edit.ENTRIES[collection]
    example = EXAMPLES[collection]

    @router.get(
        f"/{collection}",
        response_model=list[model],
        name=f"list_{key}s",
        responses={200: {"content": {"application/json": {"example": [example]}}}},
    )
    async def list_entries(request: Request):
        topo = await run(request, edit.load_topology)
        return topo[key]

    list_entries.__doc__ = f"Every stored {noun}, by name."

    @router.get(
        f"/{collection}/{{name}}",
        response_model=model,
        responses={
            **WRITE_RESPONSES,
            200: {"content": {"application/json": {"example": example}}},
        },
        name=f"get_{key}",
    )
    async def get_entry(request: Request, name: Name):
        spec = await run(request, edit.get_entry, key, name)
        if spec is None:
            raise edit_not_found(key, name)
        return spec

    get_entry.__doc__ = f"One {noun}."

    @router.put(
        f"/{collection}/{{name}}",
        response_model=model,
        status_code=200,
        responses={
            **WRITE_RESPONSES,
            200: {"content": {"application/json": {"example": example}}},
            201: {"model": model, "description": "Created"},
        },
        name=f"put_{key}",
    )
    async def put_entry(
        request: Request,
        response: Response,
        tz: LocalTz,
        who: Writer,
        name: Name,
        body: Annotated[model, Body(openapi_examples={noun: {"value": example}})],  # type: ignore[valid-type]
    ):
        data = body.model_dump(mode="json", exclude_none=True)
        spec, created = await run(
            request, edit.put_entry, key, name, data, actor=who.actor, tz=_tz(tz)
        )
        response.status_code = 201 if created else 200
        return spec

    put_entry.__doc__ = (
        f"Create or replace the {noun} `name` (the body's name must be the path's): checked"
        " with the whole stored inventory (unknown parents, duplicates …), audited."
    )

    @router.delete(
        f"/{collection}/{{name}}", status_code=204, responses=WRITE_RESPONSES, name=f"del_{key}"
    )
    async def delete_entry(request: Request, who: Writer, name: Name) -> Response:
        await run(request, edit.delete_entry, key, name, actor=who.actor)
        return Response(status_code=204)

    delete_entry.__doc__ = (
        f"Delete the {noun} `name`; 409 while anything refers to it (feeders of a substation,"
        " areas of a feeder, points or devices of an area)."
    )


def edit_not_found(key: str, name: str) -> HTTPException:
    return HTTPException(404, f"no {key.replace('_', ' ')} named {name!r}")


_entries("substations", SubstationSpec, "substation")
_entries("feeders", FeederSpec, "feeder")
_entries("areas", AreaSpec, "transformer area (台区)")
_entries("meter-assets", MeterAssetSpec, "meter asset record (电能计量管理)")


# ---- a meter's placements -------------------------------------------------------------


class PlacementPublic(BaseModel):
    """A meter placed in the grid for [valid_from, valid_to) (null: −infinity; open)."""

    meter: str
    role: str
    area: str | None
    feeder: str | None
    phase: str
    ct_ratio: float
    pt_ratio: float
    customer_class: str | None
    tariff: str | None
    location: str | None
    valid_from: datetime | None
    valid_to: datetime | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "meter": "a-01-c0001",
                    "role": "customer",
                    "area": "a-01",
                    "feeder": None,
                    "phase": "B",
                    "ct_ratio": 1.0,
                    "pt_ratio": 1.0,
                    "customer_class": "residential",
                    "tariff": "residential-tou",
                    "location": None,
                    "valid_from": "2026-02-28T16:00:00Z",
                    "valid_to": None,
                }
            ]
        }
    }


class PlacementsPublic(BaseModel):
    meter: str
    data: list[PlacementPublic]
    count: int


class EndPlacement(BaseModel):
    at: IsoInstant = Field(description="the instant the meter leaves its place (UTC if naive)")

    model_config = {"json_schema_extra": {"examples": [{"at": "2026-12-10T00:00:00+08:00"}]}}


PLACEMENT_EXAMPLE = {
    "role": "customer",
    "area": "a-02",
    "phase": "A",
    "ct_ratio": 1,
    "customer_class": "residential",
    "valid_from": "2026-12-01",
}


def _placements(meter: str, points: list[Any]) -> PlacementsPublic:
    data = [PlacementPublic(**p.model_dump()) for p in points]
    return PlacementsPublic(meter=meter, data=data, count=len(data))


@router.get("/meters/{name}/placements", response_model=PlacementsPublic, responses=WRITE_RESPONSES)
async def placements(request: Request, name: Name):
    """The meter's metering points, oldest first."""
    if await run(request, edit.device_row, name) is None:
        raise edit_not_found("meter", name)
    return _placements(name, await run(request, edit.placements, name))


@router.post(
    "/meters/{name}/placements", response_model=PlacementsPublic, responses=WRITE_RESPONSES
)
async def place(
    request: Request,
    tz: LocalTz,
    who: Writer,
    name: Name,
    body: Annotated[
        dict[str, Any],
        Body(
            description="a [[metering_point]] of the inventory file without `meter`:"
            " role, area or feeder, phase, ct_ratio, pt_ratio, customer_class, tariff,"
            " location, valid_from (required; a date is local midnight), valid_to",
            openapi_examples={"a move to a-02": {"value": PLACEMENT_EXAMPLE}},
        ),
    ],
):
    """A new placement from `valid_from` (a move, a new CT ratio): the point in force then is
    closed at that instant, as a utility's ledger does; the meter's points are returned."""
    points = await run(request, edit.place, name, body, actor=who.actor, tz=_tz(tz))
    return _placements(name, points)


@router.post(
    "/meters/{name}/placements/end", response_model=PlacementsPublic, responses=WRITE_RESPONSES
)
async def end_placement(request: Request, who: Writer, name: Name, body: EndPlacement):
    """The meter leaves the grid at `at`: its point in force then gets that `valid_to`."""
    points = await run(request, edit.end_placement, name, aware(body.at), actor=who.actor)
    return _placements(name, points)


# ---- locations and ownership ----------------------------------------------------------


class Location(BaseModel):
    longitude: float | None = Field(ge=-180, le=180, description="WGS 84 degrees; null: none")
    latitude: float | None = Field(ge=-90, le=90, description="WGS 84 degrees; null: none")

    model_config = {"json_schema_extra": {"examples": [{"longitude": 121.47, "latitude": 31.23}]}}


async def _locate(request: Request, entity: str, name: str, body: Location, who: Principal):
    if (body.longitude is None) != (body.latitude is None):
        raise invalid_inventory("location: longitude and latitude come together (or neither)")
    await run(
        request, edit.set_location, entity, name, body.longitude, body.latitude, actor=who.actor
    )
    return body


@router.put("/areas/{name}/location", response_model=Location, responses=WRITE_RESPONSES)
async def area_location(request: Request, who: Writer, name: Name, body: Location):
    """Where the area's transformer stands (the GeoJSON's point of the area)."""
    return await _locate(request, "area", name, body, who)


@router.put("/devices/{name}/location", response_model=Location, responses=WRITE_RESPONSES)
async def device_location(request: Request, who: Writer, name: Name, body: Location):
    """Where a meter, concentrator or monitor is."""
    return await _locate(request, "device", name, body, who)


class OverridePublic(BaseModel):
    entity: str
    entity_id: str
    actor: str
    at: datetime

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "entity": "area",
                    "entity_id": "a-01",
                    "actor": "eng/key:3",
                    "at": "2026-11-28T03:40:00Z",
                }
            ]
        }
    }


@router.get("/overrides", response_model=list[OverridePublic])
async def overrides(request: Request):
    """The entries the API owns: the config file's sync at start leaves them as they are and
    logs any difference as a conflict."""
    owned = await run(request, owners.overrides)
    return [OverridePublic(**vars(o)) for o in owned.values()]


@router.delete("/overrides/{entity}/{entity_id}", status_code=204, responses=WRITE_RESPONSES)
async def release(
    request: Request,
    who: Writer,
    entity: Annotated[str, Path(pattern=TEXT)],
    entity_id: Annotated[str, Path(pattern=TEXT)],
) -> Response:
    """Hand an entry back to the config file: the next start applies the file's version."""
    if not await run(request, _release, entity, entity_id, who.actor):
        raise edit_not_found("override", f"{entity}/{entity_id}")
    return Response(status_code=204)


def _release(conn, entity: str, entity_id: str, actor: str) -> bool:
    with conn.transaction():
        done = owners.release(conn, entity, entity_id)
        if done:
            edit.record(conn, actor, "release", entity, entity_id, None, None)
        return done
