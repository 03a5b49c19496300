"""Devices in the inventory (the ``devices`` table): Modbus TCP meters, voltage monitors and
concentrators with their MQTT meters, written as the inventory file's tables (JSON) and
validated as the file's are. A DL/T 645 meter is its bus's (the config file's ``[[bus]]``).

When the collectors see a change: an MQTT meter or concentrator is picked up by the ingest
workers at their next message from it (they reload the inventory on an unknown device, at
most every 5 s); a polled device (Modbus TCP, a voltage monitor on its serial line) is
polled by the collectors the config file wires at start (README "Inventory API")."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from api.deps import LocalTz
from api.params import TEXT
from api.routes.inventory import Writer, edit_not_found
from api.routes.inventory_run import READ_RESPONSES, WRITE_RESPONSES, run
from api.security import Permission, require
from gridread import inventory_edit as edit
from gridread.specs import ConcentratorSpec, DeviceSpec, VoltageMonitorSpec

router = APIRouter(
    prefix="/inventory",
    tags=["inventory"],
    responses=READ_RESPONSES,
    dependencies=[Depends(require(Permission.READ))],
)
Name = Annotated[str, Path(pattern=TEXT, description="the device's name")]


class InventoryDevicePublic(BaseModel):
    name: str
    kind: str
    protocol: str
    endpoint: str
    unit_id: int | None
    register_map: str | None
    poll_interval: float
    attributes: dict[str, Any]
    longitude: float | None
    latitude: float | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "name": "a-01-c0001",
                    "kind": "meter",
                    "protocol": "mqtt",
                    "endpoint": "mqtt",
                    "unit_id": None,
                    "register_map": None,
                    "poll_interval": 86400.0,
                    "attributes": {
                        "area": "a-01",
                        "concentrator": "jzq-1",
                        "timezone": "Asia/Shanghai",
                    },
                    "longitude": 121.47,
                    "latitude": 31.23,
                }
            ]
        }
    }


class DeviceWritten(BaseModel):
    devices: list[str]  # the rows written (a concentrator's own and its meters')
    created: bool
    collected: Literal["at its next message", "as the config file wires it"]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "devices": ["jzq-2", "a-02-c0001"],
                    "created": True,
                    "collected": "at its next message",
                }
            ]
        }
    }


@router.get("/devices", response_model=list[InventoryDevicePublic])
async def devices(
    request: Request,
    kind: Annotated[Literal["meter", "concentrator", "voltage_monitor"] | None, Query()] = None,
):
    """Every device (of one kind), by name, with its attributes and location."""
    return await run(request, edit.device_rows, kind)


@router.get("/devices/{name}", response_model=InventoryDevicePublic, responses=WRITE_RESPONSES)
async def device(request: Request, name: Name):
    row = await run(request, edit.device_row, name)
    if row is None:
        raise edit_not_found("device", name)
    return row


@router.delete("/devices/{name}", status_code=204, responses=WRITE_RESPONSES)
async def delete_device(request: Request, who: Writer, name: Name) -> Response:
    """Delete a device that has no readings and was never placed or read (409 otherwise:
    its history stays meaningful — close its placement instead)."""
    await run(request, edit.delete_device, name, actor=who.actor)
    return Response(status_code=204)


async def _put(request, response, who, tz, table: str, name: str, body: BaseModel):
    data = body.model_dump(mode="json", exclude_none=True)
    names, created = await run(
        request, edit.put_device, table, name, data, actor=who.actor, tz=tz.key
    )
    response.status_code = 201 if created else 200
    mqtt = table == "concentrator"
    return DeviceWritten(
        devices=names,
        created=created,
        collected="at its next message" if mqtt else "as the config file wires it",
    )


_PUT = {**WRITE_RESPONSES, 201: {"model": DeviceWritten, "description": "Created"}}


@router.put("/meters/{name}", response_model=DeviceWritten, responses=_PUT)
async def put_meter(
    request: Request,
    response: Response,
    tz: LocalTz,
    who: Writer,
    name: Name,
    body: Annotated[
        DeviceSpec,
        Body(
            openapi_examples={
                "a Modbus TCP meter": {
                    "value": {
                        "name": "meter-001",
                        "protocol": "modbus_tcp",
                        "host": "192.0.2.10",
                        "port": 502,
                        "unit_id": 1,
                        "register_map": "three_phase_meter",
                        "poll_interval": 15,
                    }
                }
            }
        ),
    ],
):
    """Create or replace a Modbus TCP device (the file's ``[[device]]``)."""
    return await _put(request, response, who, tz, "device", name, body)


@router.put("/monitors/{name}", response_model=DeviceWritten, responses=_PUT)
async def put_monitor(
    request: Request,
    response: Response,
    tz: LocalTz,
    who: Writer,
    name: Name,
    body: Annotated[
        VoltageMonitorSpec,
        Body(
            openapi_examples={
                "a class C monitor of an area": {
                    "value": {
                        "name": "a-01-vm",
                        "port": "/dev/ttyUSB1",
                        "baud": 9600,
                        "unit_id": 1,
                        "poll_interval": 600,
                        "area": "a-01",
                    }
                }
            }
        ),
    ],
):
    """Create or replace a voltage monitor (电压监测仪, the file's ``[[voltage_monitor]]``)."""
    return await _put(request, response, who, tz, "voltage_monitor", name, body)


@router.put("/concentrators/{name}", response_model=DeviceWritten, responses=_PUT)
async def put_concentrator(
    request: Request,
    response: Response,
    tz: LocalTz,
    who: Writer,
    name: Name,
    body: Annotated[
        ConcentratorSpec,
        Body(
            openapi_examples={
                "a concentrator and its meters": {
                    "value": {
                        "name": "a-01-jzq",
                        "area": "a-01",
                        "meters": ["a-01-c0001", "a-01-c0002"],
                        "timezone": "Asia/Shanghai",
                    }
                }
            }
        ),
    ],
):
    """Create or replace a concentrator (集中器) and its MQTT meters (the file's
    ``[[concentrator]]``)."""
    return await _put(request, response, who, tz, "concentrator", name, body)
