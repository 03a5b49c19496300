"""Inventory edits one entry at a time (the API's), with the inventory file's validation: each
change merged with what is stored and checked as a whole (`gridread.topology`), written in
one transaction with an ``audit_log`` row per change (`gridread.topology_store`,
`gridread.inventory.store_inventory`), and the entry claimed for the database
(`gridread.inventory_overrides`). Sync psycopg: the API runs these in a thread.

Errors: `ConfigError` (invalid: one line naming the field), `NotFound`, `InUse` (a delete
that would orphan something: readings, points, areas …).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from collectors.exceptions import ConfigError
from collectors.modbus.registermap import load_register_map
from gridread.inventory import Inventory, store_inventory
from gridread.inventory_overrides import claim
from gridread.settings import one_line
from gridread.specs import ConcentratorSpec, DeviceSpec, VoltageMonitorSpec
from gridread.topology import (
    SPECS,
    MeteringPointSpec,
    Topology,
    entry_name,
    parse_entry,
    parse_topology,
)
from gridread.topology_csv import TABLES, read_csv, write_csv
from gridread.topology_store import (
    check_topology,
    load_topology,
    store_topology,
    write_topology,
)
from ingest.audit import record


class NotFound(LookupError):
    pass


class InUse(Exception):
    pass


# the API's collections of topology entries known by one name → the inventory file's key
ENTRIES = {
    "substations": "substation",
    "feeders": "feeder",
    "areas": "area",
    "meter-assets": "meter_asset",
}
# the device tables the API writes → their spec (a DL/T 645 meter belongs to its bus: the file's)
DEVICE_TABLES: dict[str, Any] = {
    "device": DeviceSpec,
    "voltage_monitor": VoltageMonitorSpec,
    "concentrator": ConcentratorSpec,
}
_TABLE_OF_KEY = {"substation": "substations", "feeder": "feeders", "area": "areas"}


def _one(key: str, spec: Any, source: str) -> Topology:
    topo = Topology(provided={key}, source=source)
    topo.entries[key] = [(source, spec)]
    return topo


def get_entry(conn: psycopg.Connection, key: str, name: str) -> Any | None:
    return next((s for s in load_topology(conn)[key] if entry_name(key, s) == name), None)


def put_entry(
    conn: psycopg.Connection, key: str, name: str, entry: dict[str, Any], *, actor: str, tz: str
) -> tuple[Any, bool]:
    """Create or replace the entry `name` of `key`; returns (the entry, created)."""
    ident = SPECS[key][1][0]
    if entry.get(ident, name) != name:
        raise ConfigError(f"{key} {name}: {ident} {entry[ident]!r} differs from the path's")
    where = f"{key} {name}"
    spec = parse_entry(key, {**entry, ident: name}, where, ZoneInfo(tz))
    with conn.transaction():
        created = get_entry(conn, key, name) is None
        topo = _one(key, spec, where)
        check_topology(conn, topo, source=where, meters=set())
        write_topology(conn, topo, actor=actor)
        claim(conn, key, name, actor)
    return spec, created


def delete_entry(conn: psycopg.Connection, key: str, name: str, *, actor: str) -> None:
    """Delete a substation, feeder, area or meter asset nothing refers to."""
    with conn.transaction():
        before = get_entry(conn, key, name)
        if before is None:
            raise NotFound(f"no {key} named {name!r}")
        if key == "meter_asset":
            conn.execute(
                "DELETE FROM meter_assets WHERE device_id = (SELECT id FROM devices"
                " WHERE name = %s)",
                (name,),
            )
        else:
            if key in ("area", "feeder"):
                devices = conn.execute(
                    "SELECT string_agg(name, ', ' ORDER BY name) FROM devices"
                    " WHERE attributes->>%s = %s",
                    (key, name),
                ).fetchone()[0]
                if devices:
                    raise InUse(f"{key} {name} is where {devices} are: move them first")
            try:
                with conn.transaction():
                    conn.execute(f"DELETE FROM {_TABLE_OF_KEY[key]} WHERE name = %s", (name,))
            except psycopg.errors.ForeignKeyViolation as exc:
                raise InUse(
                    f"{key} {name} is still referred to by {exc.diag.table_name}:"
                    " delete or move those first"
                ) from None
        record(conn, actor, "delete", key, name, before.model_dump(mode="json"), None)
        claim(conn, key, name, actor)


def placements(conn: psycopg.Connection, meter: str) -> list[MeteringPointSpec]:
    return [p for p in load_topology(conn)["metering_point"] if p.meter == meter]


def place(
    conn: psycopg.Connection, meter: str, entry: dict[str, Any], *, actor: str, tz: str
) -> list[MeteringPointSpec]:
    """A new placement of `meter` from ``valid_from`` (a move, a new CT ratio): the point in
    force then is closed at that instant (one starting at that very instant is replaced), a
    later point keeps its start and bounds the new one. Returns the meter's points."""
    if "valid_from" not in entry:
        raise ConfigError(f"metering_point {meter}: valid_from: a new placement needs its start")
    if entry.get("meter", meter) != meter:
        raise ConfigError(f"metering_point {meter}: meter {entry['meter']!r} differs")
    where = f"metering_point {meter}"
    new = parse_entry("metering_point", {**entry, "meter": meter}, where, ZoneInfo(tz))
    with conn.transaction():
        stored = load_topology(conn)
        start = new.valid_from
        points: list[tuple[str, MeteringPointSpec]] = []
        for w, p in stored.entries["metering_point"]:
            if p.meter != meter:
                points.append((w, p))
            elif p.valid_from == start:
                continue  # replaced by the new one
            elif (p.valid_from is None or p.valid_from < start) and (
                p.valid_to is None or p.valid_to > start
            ):
                points.append((w, p.model_copy(update={"valid_to": start})))
            else:
                later = p.valid_from is not None and p.valid_from > start
                if later and (new.valid_to is None or new.valid_to > p.valid_from):
                    new = new.model_copy(update={"valid_to": p.valid_from})
                points.append((w, p))
        topo = Topology(provided={"metering_point"}, source=where)
        topo.entries["metering_point"] = [*points, (where, new)]
        check_topology(conn, topo, source=where, meters=set())
        # a replaced point (same start) is an update of its row; a closed one too
        write_topology(conn, topo, actor=actor)
        claim(conn, "metering_point", meter, actor)
    return placements(conn, meter)


def end_placement(
    conn: psycopg.Connection, meter: str, at: datetime, *, actor: str
) -> list[MeteringPointSpec]:
    """The meter leaves the grid at `at`: the point in force then gets ``valid_to``."""
    with conn.transaction():
        stored = load_topology(conn)
        ours = [
            p
            for p in stored["metering_point"]
            if p.meter == meter
            and (p.valid_from is None or p.valid_from < at)
            and (p.valid_to is None or p.valid_to > at)
        ]
        if not ours:
            raise NotFound(f"meter {meter} has no metering point in force at {at.isoformat()}")
        closed = ours[0].model_copy(update={"valid_to": at})
        where = f"metering_point {meter}"
        topo = Topology(provided={"metering_point"}, source=where)
        topo.entries["metering_point"] = [
            (w, closed if p is ours[0] else p) for w, p in stored.entries["metering_point"]
        ]
        check_topology(conn, topo, source=where, meters=set())
        write_topology(conn, topo, actor=actor)
        claim(conn, "metering_point", meter, actor)
    return placements(conn, meter)


def _device_inventory(table: str, entries: list[dict[str, Any]], tz: str) -> Inventory:
    """Device tables of the inventory file (as JSON) validated as the file's are."""
    model = DEVICE_TABLES[table]
    specs, maps = [], {}
    for n, entry in enumerate(entries, 1):
        where = f"{table} {n} ({entry.get('name', '?')})"
        try:
            spec = model.model_validate(entry)
        except ValueError as exc:
            raise ConfigError(f"{where}: {one_line(exc)}") from None
        if table == "device":
            if spec.register_map.endswith(".toml"):
                raise ConfigError(
                    f"{where}: register_map: by bundled name through the API (a map file is"
                    " the config file's)"
                )
            try:
                maps[spec.register_map] = load_register_map(spec.register_map)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        specs.append(spec)
    return Inventory(
        specs if table == "device" else [],
        maps,
        monitors=specs if table == "voltage_monitor" else [],
        concentrators=specs if table == "concentrator" else [],
        timezone=tz,
    )


_DEVICE = (
    "SELECT name, kind, protocol, endpoint, unit_id, register_map, poll_interval,"
    " attributes, longitude, latitude FROM devices"
)


def device_rows(conn: psycopg.Connection, kind: str | None = None) -> list[dict[str, Any]]:
    cur = conn.execute(
        _DEVICE + " WHERE %(k)s::text IS NULL OR kind = %(k)s ORDER BY name", {"k": kind}
    )
    cols = [c.name for c in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def device_row(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    cur = conn.execute(_DEVICE + " WHERE name = %s", (name,))
    row = cur.fetchone()
    return None if row is None else dict(zip([c.name for c in cur.description], row, strict=True))


def put_device(
    conn: psycopg.Connection, table: str, name: str, entry: dict[str, Any], *, actor: str, tz: str
) -> tuple[list[str], bool]:
    """Create or replace a device (a concentrator with its meters); returns (the device
    names written, created)."""
    if entry.get("name", name) != name:
        raise ConfigError(f"{table} {name}: name {entry['name']!r} differs from the path's")
    inventory = _device_inventory(table, [{**entry, "name": name}], tz)
    names = [r["name"] for r in inventory.rows()]
    with conn.transaction():
        old = device_row(conn, name)
        if old is not None and old["kind"] != inventory.rows()[0]["kind"]:
            raise ConfigError(f"{table} {name}: {name} is a stored {old['kind']}")
        store_inventory(conn, inventory, actor=actor)
        for n in names:
            claim(conn, "device", n, actor)
    return names, old is None


def delete_device(conn: psycopg.Connection, name: str, *, actor: str) -> None:
    """Delete a device that never produced data and is placed nowhere."""
    with conn.transaction():
        before = device_row(conn, name)
        if before is None:
            raise NotFound(f"no device named {name!r}")
        (has,) = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM readings WHERE device_id ="
            " (SELECT id FROM devices WHERE name = %s))",
            (name,),
        ).fetchone()
        if has:
            raise InUse(f"device {name} has readings: keep it (its history stays meaningful)")
        try:
            with conn.transaction():
                conn.execute("DELETE FROM devices WHERE name = %s", (name,))
        except psycopg.errors.ForeignKeyViolation as exc:
            raise InUse(
                f"device {name} is still referred to by {exc.diag.table_name}: a placed or"
                " read device is kept (close its placement with valid_to)"
            ) from None
        record(conn, actor, "delete", "device", name, before, None)
        claim(conn, "device", name, actor)


def set_location(
    conn: psycopg.Connection,
    entity: str,
    name: str,
    lon: float | None,
    lat: float | None,
    *,
    actor: str,
) -> None:
    """An area's (its transformer) or a device's coordinates (WGS 84), or none."""
    table = {"area": "areas", "device": "devices"}[entity]
    with conn.transaction():
        row = conn.execute(
            f"SELECT longitude, latitude FROM {table} WHERE name = %s FOR UPDATE", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no {entity} named {name!r}")
        conn.execute(
            f"UPDATE {table} SET longitude = %s, latitude = %s WHERE name = %s", (lon, lat, name)
        )
        record(
            conn,
            actor,
            "update",
            entity,
            name,
            {"longitude": row[0], "latitude": row[1]},
            {"longitude": lon, "latitude": lat},
        )


def import_json(conn: psycopg.Connection, doc: dict[str, Any], *, actor: str, tz: str) -> int:
    """The inventory file's tables as JSON (device, voltage_monitor, concentrator and the
    topology's): validated as the file is, stored in one transaction, the entries it created
    or changed claimed for the database; returns the number of audited changes."""
    known = set(DEVICE_TABLES) | set(SPECS)
    if unknown := sorted(set(doc) - known):
        raise ConfigError(
            f"unknown table {unknown[0]!r}: expected among {', '.join(sorted(known))}"
        )
    for table, entries in doc.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"{table}: expected an array of objects")
    parts = [_device_inventory(t, doc.get(t, []), tz) for t in DEVICE_TABLES]
    topology = parse_topology(doc, source="request body", timezone=tz)
    inventory = Inventory(
        parts[0].devices,
        parts[0].maps,
        monitors=parts[1].monitors,
        concentrators=parts[2].concentrators,
        timezone=tz,
        topology=topology,
    )
    names = [r["name"] for r in inventory.rows()]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"request body: duplicate device name {dup!r}")
    with conn.transaction():
        since = _last_audit(conn)
        store_inventory(conn, inventory, actor=actor)
        return _claim_written(conn, since, actor)


def _last_audit(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0]


# audit_log's entity_id → the entry's name (a point is "meter@start", a replacement
# "old_meter:quantity")
_NAME_OF = {"metering_point": "@", "replacement": ":"}


def _claim_written(conn: psycopg.Connection, since: int, actor: str) -> int:
    """Claim the entries a bulk import created or changed (its audit rows after `since`);
    entries it carried unchanged stay the file's. Returns the number of changes."""
    rows = conn.execute(
        "SELECT entity, entity_id FROM audit_log WHERE id > %s AND action IN ('create', 'update')",
        (since,),
    ).fetchall()
    for entity, entity_id in {(e, i) for e, i in rows}:
        sep = _NAME_OF.get(entity)
        claim(conn, entity, entity_id.split(sep)[0] if sep else entity_id, actor)
    return len(rows)


def export_json(conn: psycopg.Connection) -> dict[str, Any]:
    """The stored topology in the file's tables (importable again), and the devices as
    stored rows (``devices``: for reading; devices are imported by their file tables)."""
    topo = load_topology(conn)
    out: dict[str, Any] = {
        key: [s.model_dump(mode="json", exclude_none=True) for s in topo[key]] for key in SPECS
    }
    out["devices"] = device_rows(conn)
    return out


def import_csv(conn: psycopg.Connection, text: str, table: str, *, actor: str, tz: str) -> int:
    """One topology table as CSV (`gridread.topology_csv`), stored as the command line's
    import is; the entries it created or changed claimed. Returns the number of changes."""
    topo = read_csv(text, table, source=f"{table}.csv", timezone=tz)
    with conn.transaction():
        since = _last_audit(conn)
        store_topology(conn, topo, source=topo.source, actor=actor)
        return _claim_written(conn, since, actor)


def export_csv(conn: psycopg.Connection, table: str, *, tz: str) -> str:
    out = io.StringIO()
    write_csv(load_topology(conn)[TABLES[table]], table, out, timezone=tz)
    return out.getvalue()
