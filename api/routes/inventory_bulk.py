"""Bulk inventory: the whole inventory as JSON (the file's tables), one topology table as CSV
(the command line's format), and a GeoJSON FeatureCollection of the located areas and
meters."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from api.deps import Conn, LocalTz
from api.params import TEXT
from api.routes.inventory import Writer
from api.routes.inventory_run import READ_RESPONSES, WRITE_RESPONSES, invalid_inventory, run
from api.security import Permission, require
from gridread import inventory_edit as edit
from gridread.topology_csv import TABLES

router = APIRouter(
    prefix="/inventory",
    tags=["inventory"],
    responses=READ_RESPONSES,
    dependencies=[Depends(require(Permission.READ))],
)
Table = Annotated[
    Literal["substations", "feeders", "areas", "metering_points", "meter_assets", "replacements"],
    Path(description="the topology table"),
]
_CSV = "text/csv"
_GEOJSON = "application/geo+json"

IMPORT_EXAMPLE = {
    "substation": [{"name": "sub-01", "voltage_kv": 35}],
    "feeder": [{"name": "f-01", "substation": "sub-01"}],
    "area": [{"name": "a-01", "feeder": "f-01", "transformer_kva": 400}],
    "concentrator": [{"name": "a-01-jzq", "area": "a-01", "meters": ["a-01-total"]}],
    "metering_point": [
        {"meter": "a-01-total", "role": "area_total", "area": "a-01", "ct_ratio": 80}
    ],
}


GEOJSON_EXAMPLE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "area/a-01",
            "geometry": {"type": "Point", "coordinates": [121.5, 31.25]},
            "properties": {
                "kind": "area",
                "name": "a-01",
                "feeder": "f-01",
                "area_kind": "public",
                "transformer_kva": 400.0,
            },
        }
    ],
}


class Imported(BaseModel):
    changes: int  # audited creations and updates

    model_config = {"json_schema_extra": {"examples": [{"changes": 3}]}}


@router.get(
    "/export",
    response_model=dict[str, list[dict[str, Any]]],
    responses={200: {"content": {"application/json": {"example": IMPORT_EXAMPLE}}}},
)
async def export(request: Request):
    """The stored inventory: the topology in the inventory file's tables (``substation`` …
    ``replacement``, importable again with `POST /inventory/import`) and ``devices``, the
    stored device rows (for reading: devices are written by their file tables)."""
    return await run(request, edit.export_json)


@router.post("/import", response_model=Imported, responses=WRITE_RESPONSES)
async def import_(
    request: Request,
    tz: LocalTz,
    who: Writer,
    body: Annotated[
        dict[str, list[dict[str, Any]]],
        Body(
            description="the inventory file's tables as JSON: device, voltage_monitor,"
            " concentrator, substation, feeder, area, metering_point, meter_asset,"
            " replacement (a date is local midnight, as in the file)",
            openapi_examples={"a small site": {"value": IMPORT_EXAMPLE}},
        ),
    ],
):
    """Validated as the inventory file is (as a whole, with what is stored; a source with
    metering points carries every stored one), stored in one transaction, each change
    audited with the caller as actor; its entries are then the database's."""
    changes = await run(request, edit.import_json, body, actor=who.actor, tz=tz.key)
    return Imported(changes=changes)


@router.get(
    "/csv/{table}",
    response_class=Response,
    responses={
        200: {
            "content": {
                _CSV: {
                    "schema": {"type": "string"},
                    "example": "name,feeder,kind,transformer_kva,lv_voltage_kv\n"
                    "a-01,f-01,public,400.0,0.4\n",
                }
            }
        }
    },
)
async def export_csv(request: Request, tz: LocalTz, table: Table) -> Response:
    """One topology table as CSV: the header is the file's keys, instants ISO 8601 with the
    site zone's offset."""
    text = await run(request, edit.export_csv, table, tz=tz.key)
    return Response(text, media_type=_CSV)


@router.put(
    "/csv/{table}",
    response_model=Imported,
    responses=WRITE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _CSV: {
                    "schema": {"type": "string"},
                    "example": "name,voltage_kv\nsub-01,35\nsub-02,110\n",
                }
            },
        }
    },
)
async def import_csv(request: Request, tz: LocalTz, who: Writer, table: Table):
    """One topology table from CSV, as `gridread topology import` does: errors name the CSV
    line; one transaction; audited; import parents first (substations, feeders, areas, then
    points, assets, replacements)."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_inventory(f"{table}.csv: not UTF-8 text") from None
    if table not in TABLES:  # the Literal already refuses; kept for the type checker
        raise invalid_inventory(f"unknown table {table!r}")
    return Imported(
        changes=await run(request, edit.import_csv, text, table, actor=who.actor, tz=tz.key)
    )


_FEATURES = """
SELECT 'area' AS kind, a.name, a.longitude, a.latitude,
       jsonb_build_object('feeder', f.name, 'area_kind', a.kind,
                          'transformer_kva', a.transformer_kva) AS props
  FROM areas a JOIN feeders f ON f.id = a.feeder_id
 WHERE a.longitude IS NOT NULL AND (%(feeder)s::text IS NULL OR f.name = %(feeder)s)
UNION ALL
SELECT 'meter', d.name, d.longitude, d.latitude,
       jsonb_build_object('protocol', d.protocol, 'role', p.role, 'area', a.name,
                          'feeder', f.name, 'multiplier', p.multiplier)
  FROM devices d
  LEFT JOIN metering_points p ON p.device_id = d.id AND p.valid_from <= now()
       AND (p.valid_to IS NULL OR p.valid_to > now())
  LEFT JOIN areas a ON a.id = p.area_id
  LEFT JOIN feeders f ON f.id = coalesce(p.feeder_id, a.feeder_id)
 WHERE d.kind = 'meter' AND d.longitude IS NOT NULL
   AND (%(feeder)s::text IS NULL OR f.name = %(feeder)s)
 ORDER BY 1, 2
"""


class Geometry(BaseModel):
    type: Literal["Point"]
    coordinates: list[float]  # [longitude, latitude]


class Feature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: Geometry
    properties: dict[str, Any]


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"]
    features: list[Feature]


@router.get(
    "/geojson",
    response_model=FeatureCollection,
    responses={200: {"content": {_GEOJSON: {"example": GEOJSON_EXAMPLE}}}},
)
async def geojson(
    conn: Conn,
    feeder: Annotated[str | None, Query(pattern=TEXT, description="one feeder's only")] = None,
) -> Response:
    """The located areas (their transformer) and meters (with their placement in force now)
    as a GeoJSON FeatureCollection (RFC 7946, WGS 84): for a map of a feeder or the site."""
    cur = await conn.execute(_FEATURES, {"feeder": feeder})
    features = [
        Feature(
            type="Feature",
            id=f"{kind}/{name}",
            geometry=Geometry(type="Point", coordinates=[lon, lat]),
            properties={"kind": kind, "name": name, **props},
        )
        for kind, name, lon, lat, props in await cur.fetchall()
    ]
    body = FeatureCollection(type="FeatureCollection", features=features)
    return Response(body.model_dump_json(), media_type=_GEOJSON)
