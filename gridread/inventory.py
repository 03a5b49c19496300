"""The device inventory: ``[[device]]`` and ``[[bus]]`` tables in the config file, loaded into
``devices``; and the site's own quantities, ``[[quantity]]`` tables, added to the registry.

    [[quantity]]                    # a quantity the built-in list lacks
    code = "1.7.128"                # OBIS C.D.E (optionally *suffix); not a built-in code
    name = "active power, 1-minute demand"
    unit = "kW"
    kind = "instantaneous"          # or "register" (cumulative)

    [[device]]                      # a Modbus TCP device
    name = "meter-001"              # unique, used in the API's URLs
    kind = "meter"                  # meter | concentrator | voltage_monitor
    protocol = "modbus_tcp"
    host = "192.0.2.10"
    port = 502
    unit_id = 1                     # Modbus unit / slave id
    register_map = "three_phase_meter"   # bundled map name, or a path relative to the file
    poll_interval = 15              # seconds
    commissioned = 2024-03-01       # optional, any device table: readings dated earlier are
                                    # implausible (midnight in the device's zone; not future)
    nominal_voltage = 57.7          # optional, any device table, V phase-to-neutral: the
                                    # plausibility screen's nominal (default: the setting);
                                    # on [[bus]] / [[concentrator]]: for their meters

    [[bus]]                         # an RS-485 bus of DL/T 645-2007 meters
    name = "area-0412-485-1"
    port = "/dev/ttyUSB0"           # or "tcp://10.0.0.5:4001" for a serial-to-Ethernet converter
    baud = 2400                     # 1200 2400 4800 9600 19200; 8E1
    timezone = "Asia/Shanghai"      # the meters' clocks; default: the site's `timezone`
    instant_interval = 300          # seconds between reads of the instantaneous values
    clock_bound = 60                # clock drift (s) corrected by broadcast; beyond: an event
    reread_days = 7                 # 补抄 window
    [[bus.meter]]
    name = "area-0412-m001"
    address = "202107070001"        # 12 digits, as printed on the meter

    [[voltage_monitor]]             # a Modbus RTU voltage monitor (电压监测仪)
    name = "area-0412-vm"
    port = "/dev/ttyUSB1"
    baud = 9600
    unit_id = 1
    poll_interval = 600             # ≤ 3600: the monitor keeps the last hour of minutes
    area = "area-0412"              # or feeder = "…": whose customers its loss of voltage
                                    # (失压) interrupts (supply reliability); optional

    [[concentrator]]                # a concentrator (集中器) uploading its meters by MQTT
    name = "area-0412-jzq"
    area = "area-0412"
    meters = ["area-0412-c0001", "area-0412-c0002"]   # their topics: gridread/v1/<meter>/…
    timezone = "Asia/Shanghai"      # its local days; default: the site's `timezone`

The grid's topology ([[substation]], [[feeder]], [[area]], [[metering_point]], [[meter_asset]],
[[replacement]]) is `gridread.topology`'s (format: the README's "Grid topology").

The whole file is validated before anything is written; the load is one transaction and
each added or changed device or topology entry leaves a row in ``audit_log``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from pydantic import BaseModel, ValidationError

from collectors.exceptions import ConfigError
from collectors.modbus.registermap import RegisterMap, load_register_map
from gridread.inventory_overrides import FILE_ACTOR, defer_device, defer_topology, overrides
from gridread.settings import one_line
from gridread.specs import (
    BusMeterSpec,
    BusSpec,
    ConcentratorSpec,
    DeviceSpec,
    QuantitySpec,
    VoltageMonitorSpec,
)
from gridread.topology import Topology, parse_topology, validate_topology
from gridread.topology_store import check_topology, write_topology
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.quantities import Quantity, builtin, use_extra

M = TypeVar("M", bound=BaseModel)


class Inventory:
    def __init__(
        self,
        devices: list[DeviceSpec],
        maps: dict[str, RegisterMap],
        buses: list[BusSpec] | None = None,
        monitors: list[VoltageMonitorSpec] | None = None,
        concentrators: list[ConcentratorSpec] | None = None,
        *,
        timezone: str = DEFAULT_TIMEZONE,
        topology: Topology | None = None,
    ) -> None:
        self.devices = devices
        self.maps = maps  # register_map entry → loaded map
        self.monitors = monitors or []
        # the default chain: a bus's or concentrator's own zone, else the site's
        self.timezone = timezone
        self.buses = [_zoned(b, timezone) for b in buses or []]
        self.concentrators = [_zoned(c, timezone) for c in concentrators or []]
        self.topology = topology or Topology()  # [[substation]] … [[replacement]]

    def rows(self) -> list[dict[str, Any]]:
        return (
            [d.row(self.timezone) for d in self.devices]
            + [r for b in self.buses for r in b.rows()]
            + [m.row(self.timezone) for m in self.monitors]
            + [r for c in self.concentrators for r in c.rows()]
        )

    def nominals(self, ids: dict[str, int]) -> dict[int, float]:
        """Device id → nominal voltage, for the devices that set one (or inherit a bus's or
        concentrator's); `ids` as `store_inventory` returns them."""
        return {
            ids[row["name"]]: row["attributes"]["nominal_voltage"]
            for row in self.rows()
            if "nominal_voltage" in row["attributes"]
        }


Z = TypeVar("Z", BusSpec, ConcentratorSpec)


def _zoned(spec: Z, timezone: str) -> Z:
    return spec if spec.timezone else spec.model_copy(update={"timezone": timezone})


def parse_inventory(
    config: dict[str, Any], *, source: str, base_dir: Path, timezone: str = DEFAULT_TIMEZONE
) -> Inventory:
    """`timezone`: the site's (setting `timezone`), for buses and concentrators that set none."""
    maps: dict[str, RegisterMap] = {}
    names: set[str] = set()

    def claim(name: str, where: str) -> None:
        if name in names:
            raise ConfigError(f"{where}: duplicate device name {name!r}")
        names.add(name)

    def specs(key: str, model: type[M], id_key: str = "name") -> Iterator[tuple[str, M]]:
        """Each [[key]] table validated as `model`, with where it stands, its name claimed."""
        for n, entry in enumerate(_tables(config, key, source), 1):
            where = f"{source}: {key} {n} ({entry.get(id_key, '?')})"
            try:
                spec = model.model_validate(entry)
            except ValidationError as exc:
                raise ConfigError(f"{where}: {one_line(exc)}") from None
            if id_key == "name":
                claim(spec.name, where)  # type: ignore[attr-defined]
            yield where, spec

    # the site's quantities first: its register maps may name them
    quantities: dict[str, Quantity] = {}
    for where, qspec in specs("quantity", QuantitySpec, id_key="code"):
        if qspec.code in quantities:
            raise ConfigError(f"{where}: defined twice")
        if known := builtin().get(qspec.code):
            raise ConfigError(
                f"{where}: {qspec.code} is built in ({known.name}); choose another code"
            )
        quantities[qspec.code] = qspec.quantity()
    use_extra(quantities.values())

    devices: list[DeviceSpec] = []
    for where, spec in specs("device", DeviceSpec):
        ref = spec.register_map
        if ref not in maps:
            try:
                maps[ref] = load_register_map(base_dir / ref if ref.endswith(".toml") else ref)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        devices.append(spec)

    buses: list[BusSpec] = []
    for where, bus in specs("bus", BusSpec):
        addresses: set[str] = set()
        for m in bus.meter:
            claim(m.name, f"{where}: meter {m.name}")
            if m.address in addresses:
                raise ConfigError(f"{where}: meter {m.name}: address {m.address} is used twice")
            addresses.add(m.address)
        buses.append(bus)

    monitors = [spec for _, spec in specs("voltage_monitor", VoltageMonitorSpec)]

    concentrators: list[ConcentratorSpec] = []
    for where, conc in specs("concentrator", ConcentratorSpec):
        for meter in conc.meters:
            claim(meter, f"{where}: meter {meter}")
        concentrators.append(conc)
    inventory = Inventory(devices, maps, buses, monitors, concentrators, timezone=timezone)
    # the file's topology is checked on its own here, and with what is stored when stored
    topology = parse_topology(config, source=source, timezone=timezone)
    if topology:
        meters = {r["name"] for r in inventory.rows() if r["kind"] == "meter"}
        validate_topology(topology, meters, totals="metering_point" in topology.provided)
        _check_places(monitors, topology)
    inventory.topology = topology
    return inventory


def _check_places(monitors: list[VoltageMonitorSpec], topology) -> None:
    """A monitor naming an area / feeder the file's topology defines must name a known one
    (else its loss-of-voltage records would interrupt nobody)."""
    for what in ("area", "feeder"):
        if what not in topology.provided:
            continue
        names = {spec.name for _, spec in topology.entries[what]}
        for m in monitors:
            name = getattr(m, what)
            if name is not None and name not in names:
                raise ConfigError(f"voltage_monitor {m.name}: unknown {what} {name!r}")


def _tables(config: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    entries = config.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{source}: '{key}' must be an array of tables ([[{key}]])")
    return entries


_COLUMNS = (
    "name",
    "kind",
    "protocol",
    "endpoint",
    "unit_id",
    "register_map",
    "poll_interval",
    "attributes",
)


def store_inventory(
    conn: psycopg.Connection, inventory: Inventory, *, actor: str
) -> dict[str, int]:
    """Upsert every device in one transaction; audit each change. Returns name → id.

    Devices that are in the database but no longer in the file are left as they are (their
    readings stay meaningful); removing a device is an explicit act, not a side effect.
    The config file's sync (`actor` FILE_ACTOR) leaves the entries the API owns as they are
    and logs each difference as a conflict (`gridread.inventory_overrides`)."""
    ids: dict[str, int] = {}
    topology = inventory.topology
    with conn.transaction():
        owned = overrides(conn) if actor == FILE_ACTOR else {}
        if topology and owned:
            topology, _ = defer_topology(conn, topology, owned)
        if topology:  # before anything is written
            meters = {r["name"] for r in inventory.rows() if r["kind"] == "meter"}
            check_topology(conn, topology, source=topology.source, meters=meters)
        for new in inventory.rows():
            params = {**new, "attributes": json.dumps(new["attributes"])}
            old = conn.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM devices WHERE name = %s", (new["name"],)
            ).fetchone()
            if old is None and (o := owned.get(("device", new["name"]))):
                # deleted through the API, still wired by the file: nothing to poll it into
                raise ConfigError(
                    f"config file: device {new['name']} was deleted through the API by"
                    f" {o.actor} at {o.at.isoformat()}: remove it from the file, or hand it"
                    f" back (DELETE /inventory/overrides/device/{new['name']})"
                )
            if old is None:
                (ids[new["name"]],) = conn.execute(
                    f"INSERT INTO devices ({', '.join(_COLUMNS)}) VALUES"
                    f" ({', '.join(f'%({c})s' for c in _COLUMNS)}) RETURNING id",
                    params,
                ).fetchone()
                _audit(conn, actor, "create", new["name"], None, new)
                continue
            ids[new["name"]] = old[0]
            before = dict(zip(_COLUMNS, old[1:], strict=True))
            if defer_device(new["name"], before, new, owned, "config file") is not None:
                continue
            if before != new:
                conn.execute(
                    "UPDATE devices SET "
                    + ", ".join(f"{c} = %({c})s" for c in _COLUMNS if c != "name")
                    + ", updated_at = now() WHERE name = %(name)s",
                    params,
                )
                _audit(conn, actor, "update", new["name"], before, new)
        if topology:
            write_topology(conn, topology, actor=actor)
    return ids


def stored_nominals(conn: psycopg.Connection) -> dict[int, float]:
    """`Inventory.nominals` as stored: device id → nominal voltage of those that have one."""
    return dict(
        conn.execute(
            "SELECT id, (attributes->>'nominal_voltage')::float8 FROM devices"
            " WHERE attributes ? 'nominal_voltage'"
        ).fetchall()
    )


def _audit(
    conn: psycopg.Connection, actor: str, action: str, name: str, before: Any, after: Any
) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, 'device', %s, %s, %s)",
        (actor, action, name, json.dumps(before) if before else None, json.dumps(after)),
    )


__all__ = [
    "BusMeterSpec",
    "BusSpec",
    "ConcentratorSpec",
    "DeviceSpec",
    "Inventory",
    "QuantitySpec",
    "VoltageMonitorSpec",
    "parse_inventory",
    "store_inventory",
    "stored_nominals",
]
