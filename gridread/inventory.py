"""The device inventory: ``[[device]]`` tables in the config file, loaded into ``devices``.

    [[device]]
    name = "meter-001"              # unique, used in the API's URLs
    kind = "meter"                  # meter | concentrator | voltage_monitor
    protocol = "modbus_tcp"
    host = "192.0.2.10"
    port = 502
    unit_id = 1                     # Modbus unit / slave id
    register_map = "three_phase_meter"   # bundled map name, or a path relative to the file
    poll_interval = 15              # seconds

The whole file is validated before anything is written; the load is one transaction and
each added or changed device leaves a row in ``audit_log``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.exceptions import ConfigError
from collectors.modbus.registermap import RegisterMap, load_register_map
from gridread.settings import one_line

PROTOCOLS = ("modbus_tcp",)


class DeviceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    kind: Literal["meter", "concentrator", "voltage_monitor"] = "meter"
    protocol: Literal["modbus_tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    register_map: str
    poll_interval: float = Field(default=60.0, gt=0)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "protocol": self.protocol,
            "endpoint": self.endpoint,
            "unit_id": self.unit_id,
            "register_map": self.register_map,
            "poll_interval": self.poll_interval,
        }


class Inventory:
    def __init__(self, devices: list[DeviceSpec], maps: dict[str, RegisterMap]) -> None:
        self.devices = devices
        self.maps = maps  # register_map entry → loaded map


def parse_inventory(config: dict[str, Any], *, source: str, base_dir: Path) -> Inventory:
    entries = config.get("device", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'device' must be an array of tables ([[device]])")
    devices: list[DeviceSpec] = []
    maps: dict[str, RegisterMap] = {}
    names: set[str] = set()
    for n, entry in enumerate(entries, 1):
        where = f"{source}: device {n} ({entry.get('name', '?')})"
        try:
            spec = DeviceSpec.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {one_line(exc)}") from None
        if spec.name in names:
            raise ConfigError(f"{where}: duplicate device name")
        names.add(spec.name)
        if spec.register_map not in maps:
            ref = spec.register_map
            path = base_dir / ref if ref.endswith(".toml") else ref
            try:
                maps[ref] = load_register_map(path)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        devices.append(spec)
    return Inventory(devices, maps)


def store_inventory(
    conn: psycopg.Connection, inventory: Inventory, *, actor: str
) -> dict[str, int]:
    """Upsert every device in one transaction; audit each change. Returns name → id."""
    ids: dict[str, int] = {}
    with conn.transaction():
        for spec in inventory.devices:
            new = spec.row()
            old = conn.execute(
                "SELECT id, name, kind, protocol, endpoint, unit_id, register_map, poll_interval"
                " FROM devices WHERE name = %s",
                (spec.name,),
            ).fetchone()
            if old is None:
                (ids[spec.name],) = conn.execute(
                    "INSERT INTO devices (name, kind, protocol, endpoint, unit_id, register_map,"
                    " poll_interval) VALUES (%(name)s, %(kind)s, %(protocol)s, %(endpoint)s,"
                    " %(unit_id)s, %(register_map)s, %(poll_interval)s) RETURNING id",
                    new,
                ).fetchone()
                _audit(conn, actor, "create", spec.name, None, new)
                continue
            ids[spec.name] = old[0]
            before = dict(
                zip(
                    (
                        "name",
                        "kind",
                        "protocol",
                        "endpoint",
                        "unit_id",
                        "register_map",
                        "poll_interval",
                    ),
                    old[1:],
                    strict=True,
                )
            )
            if before != new:
                conn.execute(
                    "UPDATE devices SET kind = %(kind)s, protocol = %(protocol)s,"
                    " endpoint = %(endpoint)s, unit_id = %(unit_id)s,"
                    " register_map = %(register_map)s, poll_interval = %(poll_interval)s,"
                    " updated_at = now() WHERE name = %(name)s",
                    new,
                )
                _audit(conn, actor, "update", spec.name, before, new)
    return ids


def _audit(
    conn: psycopg.Connection, actor: str, action: str, name: str, before: Any, after: Any
) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, 'device', %s, %s, %s)",
        (actor, action, name, json.dumps(before) if before else None, json.dumps(after)),
    )
