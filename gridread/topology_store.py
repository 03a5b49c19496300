"""Storing the topology: what a source (the config file, or one CSV table) says, merged with
what is stored, checked as a whole, then written with an ``audit_log`` row per change.

History is never silently rewritten:
- an entry is identified by its key (a name; a metering point by meter and ``valid_from``;
  an asset by meter; a replacement by old meter and quantity). The same entry again is a
  no-op; a changed one is updated and audited with before/after (a moved meter or a new
  multiplier from a date is a new metering point, the old one given a ``valid_to``).
- a source that has metering points must carry every stored one: dropping one is refused
  (close it with ``valid_to`` instead). A source with no ``[[metering_point]]`` at all leaves
  the stored ones as they are, as do sources without the other tables; stored substations,
  feeders, areas, assets and replacements a source omits are kept (like devices).
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import psycopg

from collectors.exceptions import ConfigError
from gridread.topology import SPECS, Topology, validate_topology

_DEV = "(SELECT id FROM devices WHERE name = %({0})s)"

# key → (table, identity condition, column → SQL value)
_SQL: dict[str, tuple[str, str, dict[str, str]]] = {
    "substation": (
        "substations",
        "name = %(name)s",
        {"name": "%(name)s", "voltage_kv": "%(voltage_kv)s"},
    ),
    "feeder": (
        "feeders",
        "name = %(name)s",
        {
            "name": "%(name)s",
            "substation_id": "(SELECT id FROM substations WHERE name = %(substation)s)",
            "voltage_kv": "%(voltage_kv)s",
        },
    ),
    "area": (
        "areas",
        "name = %(name)s",
        {
            "name": "%(name)s",
            "feeder_id": "(SELECT id FROM feeders WHERE name = %(feeder)s)",
            "kind": "%(kind)s",
            "transformer_kva": "%(transformer_kva)s",
            "lv_voltage_kv": "%(lv_voltage_kv)s",
        },
    ),
    "meter_asset": (
        "meter_assets",
        f"device_id = {_DEV.format('meter')}",
        {
            "device_id": _DEV.format("meter"),
            **{
                c: f"%({c})s"
                for c in (
                    "model",
                    "accuracy_class",
                    "ct_class",
                    "pt_class",
                    "installed",
                    "last_verified",
                    "next_verification",
                    "rotation_plan",
                )
            },
        },
    ),
    "metering_point": (
        "metering_points",
        f"device_id = {_DEV.format('meter')}"
        " AND valid_from = coalesce(%(valid_from)s::timestamptz, '-infinity')",
        {
            "device_id": _DEV.format("meter"),
            "role": "%(role)s",
            "feeder_id": "(SELECT id FROM feeders WHERE name = %(feeder)s)",
            "area_id": "(SELECT id FROM areas WHERE name = %(area)s)",
            **{
                c: f"%({c})s"
                for c in ("phase", "ct_ratio", "pt_ratio", "customer_class", "tariff", "location")
            },
            "valid_from": "coalesce(%(valid_from)s::timestamptz, '-infinity')",
            "valid_to": "%(valid_to)s",
        },
    ),
    "replacement": (
        "meter_replacements",
        f"old_device_id = {_DEV.format('old_meter')} AND quantity = %(quantity)s",
        {
            "old_device_id": _DEV.format("old_meter"),
            "new_device_id": _DEV.format("new_meter"),
            **{c: f"%({c})s" for c in ("at", "quantity", "old_final", "new_first")},
        },
    ),
}

_FINITE = "CASE WHEN isfinite({0}) THEN {0} END"
# key → the stored entries with the spec's fields
_LOAD: dict[str, str] = {
    "substation": "SELECT name, voltage_kv FROM substations ORDER BY name",
    "feeder": "SELECT f.name, s.name AS substation, f.voltage_kv FROM feeders f"
    " JOIN substations s ON s.id = f.substation_id ORDER BY f.name",
    "area": "SELECT a.name, f.name AS feeder, kind, transformer_kva, lv_voltage_kv FROM areas a"
    " JOIN feeders f ON f.id = a.feeder_id ORDER BY a.name",
    "metering_point": "SELECT d.name AS meter, role, a.name AS area, f.name AS feeder, phase,"
    " ct_ratio, pt_ratio, customer_class, tariff, location,"
    f" {_FINITE.format('p.valid_from')} AS valid_from, valid_to"
    " FROM metering_points p JOIN devices d ON d.id = p.device_id"
    " LEFT JOIN areas a ON a.id = p.area_id LEFT JOIN feeders f ON f.id = p.feeder_id"
    " ORDER BY d.name, p.valid_from",
    "meter_asset": "SELECT d.name AS meter, model, accuracy_class, ct_class, pt_class,"
    " installed, last_verified, next_verification, rotation_plan"
    " FROM meter_assets m JOIN devices d ON d.id = m.device_id ORDER BY d.name",
    "replacement": "SELECT o.name AS old_meter, n.name AS new_meter, at, quantity, old_final,"
    " new_first FROM meter_replacements r JOIN devices o ON o.id = r.old_device_id"
    " JOIN devices n ON n.id = r.new_device_id ORDER BY at, o.name",
}


def identity(key: str, spec: Any) -> tuple:
    return tuple(getattr(spec, k) for k in SPECS[key][1])


def _label(key: str, spec: Any) -> str:
    ident = identity(key, spec)
    if key == "metering_point":
        return f"{ident[0]}@{ident[1].astimezone(UTC).isoformat() if ident[1] else '-infinity'}"
    return ":".join(str(i) for i in ident)


def load_topology(conn: psycopg.Connection) -> Topology:
    """What is stored, as specs (every table provided)."""
    topo = Topology(provided=set(SPECS))
    for key, sql in _LOAD.items():
        model = SPECS[key][0]
        cur = conn.execute(sql)
        names = [c.name for c in cur.description or []]
        for row in cur.fetchall():
            data = {k: v for k, v in zip(names, row, strict=True) if v is not None}
            spec = model.model_validate(data)
            topo.entries[key].append((f"stored {key} {_label(key, spec)}", spec))
    return topo


def merged_topology(stored: Topology, incoming: Topology, *, source: str) -> Topology:
    """The topology once `incoming` is stored (see the module's docstring)."""
    out = Topology(provided=set(SPECS))
    for key in SPECS:
        if key not in incoming.provided:
            out.entries[key] = list(stored.entries[key])
            continue
        new = {identity(key, s) for s in incoming[key]}
        kept = [(w, s) for w, s in stored.entries[key] if identity(key, s) not in new]
        if key == "metering_point" and kept:
            _, spec = kept[0]
            raise ConfigError(
                f"{source}: metering_point {spec.meter} from"
                f" {spec.valid_from.isoformat() if spec.valid_from else 'the beginning'} is"
                " stored but missing: history is kept, give it a valid_to instead"
            )
        out.entries[key] = incoming.entries[key] + kept
    return out


def device_names(conn: psycopg.Connection) -> set[str]:
    """The stored meters (any protocol): what metering points may place."""
    return {name for (name,) in conn.execute("SELECT name FROM devices WHERE kind = 'meter'")}


def check_topology(
    conn: psycopg.Connection, incoming: Topology, *, source: str, meters: set[str]
) -> Topology:
    """Merge `incoming` with what is stored and validate the whole (writes nothing); `meters`:
    device names besides the stored ones (the file's, about to be stored)."""
    stored = load_topology(conn)
    merged = merged_topology(stored, incoming, source=source)
    totals = "metering_point" in incoming.provided
    validate_topology(merged, meters | device_names(conn), totals=totals)
    return merged


def write_topology(conn: psycopg.Connection, incoming: Topology, *, actor: str) -> int:
    """Write what `incoming` adds or changes (checked first with `check_topology`), inside
    the caller's transaction. Returns the number of audited changes."""
    stored = load_topology(conn)
    changes = 0
    for key in SPECS:  # parents before children
        table, where, cols = _SQL[key]
        before = {identity(key, s): s for s in stored[key]}
        updates, inserts = [], []
        for spec in incoming[key]:
            old = before.get(identity(key, spec))
            if old is None:
                inserts.append(spec)
            elif old.model_dump() != spec.model_dump():
                updates.append((old, spec))
        # closing periods before opening the ones that follow them (the exclusion holds)
        for old, spec in updates:
            conn.execute(
                f"UPDATE {table} SET {', '.join(f'{c} = {v}' for c, v in cols.items())}"
                f" WHERE {where}",
                spec.model_dump(),
            )
            _audit(conn, actor, "update", key, _label(key, spec), old, spec)
        for spec in inserts:
            conn.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(cols.values())})",
                spec.model_dump(),
            )
            _audit(conn, actor, "create", key, _label(key, spec), None, spec)
        changes += len(updates) + len(inserts)
    return changes


def store_topology(conn: psycopg.Connection, incoming: Topology, *, source: str, actor: str) -> int:
    """Check and write in one transaction (the meters must be stored devices)."""
    with conn.transaction():
        check_topology(conn, incoming, source=source, meters=set())
        return write_topology(conn, incoming, actor=actor)


def _audit(
    conn: psycopg.Connection, actor: str, action: str, key: str, name: str, before, after
) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            actor,
            action,
            key,
            name,
            json.dumps(before.model_dump(mode="json")) if before else None,
            json.dumps(after.model_dump(mode="json")),
        ),
    )
