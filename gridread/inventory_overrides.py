"""Who owns an inventory entry: the config file, or — once edited through the API — the
database.

The rule (README "Inventory API"): an entry created, changed or deleted through the API is
recorded in ``inventory_overrides``; from then on the config file's sync at start never
touches it. Where the file says something else, the sync keeps the database's and logs the
conflict (one line, naming the entry, who edited it and when, and how to hand it back).
``DELETE /inventory/overrides/{entity}/{id}`` hands an entry back to the file: the next
start applies the file's version.

Entities as in ``audit_log``: device, substation, feeder, area, meter_asset, replacement and
metering_point; a metering point's id is its meter (a meter's placements are owned as a
whole: they form one history).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from gridread.topology import SPECS, Topology, entry_name
from gridread.topology_store import load_topology

log = logging.getLogger(__name__)

FILE_ACTOR = "config-file"  # the actor of the sync at start


@dataclass(frozen=True)
class Override:
    entity: str
    entity_id: str
    actor: str
    at: datetime


def overrides(conn: psycopg.Connection) -> dict[tuple[str, str], Override]:
    rows = conn.execute(
        "SELECT entity, entity_id, actor, at FROM inventory_overrides ORDER BY entity, entity_id"
    ).fetchall()
    return {(r[0], r[1]): Override(*r) for r in rows}


def claim(conn: psycopg.Connection, entity: str, entity_id: str, actor: str) -> None:
    """The API now owns the entry (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO inventory_overrides (entity, entity_id, actor) VALUES (%s, %s, %s)"
        " ON CONFLICT (entity, entity_id) DO UPDATE SET actor = excluded.actor, at = now()",
        (entity, entity_id, actor),
    )


def release(conn: psycopg.Connection, entity: str, entity_id: str) -> bool:
    """Hand the entry back to the config file; False if the API did not own it."""
    cur = conn.execute(
        "DELETE FROM inventory_overrides WHERE entity = %s AND entity_id = %s",
        (entity, entity_id),
    )
    return cur.rowcount > 0


def _conflict(what: str, o: Override, source: str) -> str:
    line = (
        f"{source}: {what} differs from the database, where it was edited through the API by"
        f" {o.actor} at {o.at.isoformat()}: the database's is kept (DELETE"
        f" /inventory/overrides/{o.entity}/{o.entity_id} hands it back to the file)"
    )
    log.warning("inventory conflict: %s", line)
    return line


def defer_topology(
    conn: psycopg.Connection, topo: Topology, owned: dict[tuple[str, str], Override]
) -> tuple[Topology, list[str]]:
    """`topo` (the file's) with the API's entries replaced by what is stored; the conflicts."""
    if not owned:
        return topo, []
    stored = load_topology(conn)
    out = Topology(provided=set(topo.provided), source=topo.source)
    conflicts: list[str] = []
    for key in SPECS:
        if key not in topo.provided:
            continue
        mine = {entry_name(key, s) for s in topo[key]} | {entry_name(key, s) for s in stored[key]}
        for name in sorted(n for n in mine if (key, n) in owned):
            theirs = [s.model_dump() for s in topo[key] if entry_name(key, s) == name]
            ours = [s.model_dump() for s in stored[key] if entry_name(key, s) == name]
            if theirs and _sorted(theirs) != _sorted(ours):
                conflicts.append(_conflict(f"{key} {name}", owned[(key, name)], topo.source))
        out.entries[key] = [
            (w, s) for w, s in topo.entries[key] if (key, entry_name(key, s)) not in owned
        ] + [
            (f"stored {key} {entry_name(key, s)} (owned by the API)", s)
            for s in stored[key]
            if (key, entry_name(key, s)) in owned
        ]
    return out, conflicts


def _sorted(dumps: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(d.items())) for d in dumps)


def defer_device(
    name: str, before: dict[str, Any] | None, new: dict[str, Any], owned, source: str
) -> str | None:
    """A conflict line if the API owns device `name` and the file differs; else None."""
    o = owned.get(("device", name))
    if o is None:
        return None
    if before != new:
        return _conflict(f"device {name}", o, source)
    return ""  # owned, no difference: nothing to write either
