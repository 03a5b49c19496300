"""A world's readings into PostgreSQL through gridread's real ReadingWriter, and its truth
re-stated the way an inventory-based analysis should see it (for bench/accuracy.py and
tests/test_accuracy*.py).

Stored per meter, like the concentrator's daily upload: 1.8.0 at every 15-min boundary (the
shown register, secondary kWh, as many digits as the meter keeps) and its voltage curve
(32.7.0; a three-phase meter's 52.7.0 and 72.7.0 as `WorldMeter.voltages` gives them).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from gridread.inventory import parse_inventory, store_inventory, stored_nominals
from ingest.model import Reading
from ingest.plausibility import DEFAULT_NOMINAL_VOLTAGE, shipped_rules
from ingest.schema import ensure_partitions, migrate
from ingest.writer import ReadingWriter
from simulators.world.spec import INVENTORY_FAULTS
from simulators.world.world import World

TIMEZONE = "Asia/Shanghai"


def store_world(url: str, world: World, drop: dict[str, tuple[int, int]] | None = None) -> dict:
    """Migrate, store the inventory and every reading; `drop`: meter → [k0, k1) boundaries
    whose registers are not stored (a meter removed or silent). Returns name → device id."""
    inv = world.inventory(area_totals="local")
    parsed = parse_inventory(inv, source="world", base_dir=Path("."), timezone=TIMEZONE)
    b = world.truth.boundaries
    days = {
        (datetime.fromtimestamp(int(b[0]), UTC) + timedelta(days=d)).date()
        for d in range(-1, world.spec.days + 2)
    }
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, timezone=TIMEZONE)
        ids = store_inventory(conn, parsed, actor="bench")
        ensure_partitions(conn, days)
        nominals = stored_nominals(conn)  # as `gridread run` screens: each device's nominal
    asyncio.run(_write(url, _readings(world, ids, drop or {}), nominals))
    return ids


def _readings(world: World, ids: dict, drop: dict[str, tuple[int, int]]) -> list[Reading]:
    g, t = world.grid, world.truth
    when = [datetime.fromtimestamp(int(x), UTC) for x in t.boundaries]
    out: list[Reading] = []
    for i, name in enumerate(g.meters):  # one per meter: its rows are built as lists
        dev = ids[name]
        keep = np.ones(len(when), dtype=bool)
        if name in drop:
            keep[slice(*drop[name])] = False
        reg = t.register[i].tolist()
        out += [Reading(dev, "1.8.0", when[k], reg[k]) for k in np.flatnonzero(keep)]
        v = t.voltage[i].tolist()
        curves = [("32.7.0", v)]
        if g.phase[i] == 3:  # as WorldMeter.voltages: a fixed small unbalance on B and C
            curves += [("52.7.0", [round(x - 0.4, 1) for x in v])]
            curves += [("72.7.0", [round(x + 0.3, 1) for x in v])]
        for quantity, values in curves:
            out += [Reading(dev, quantity, when[k], values[k]) for k in range(len(values))]
    return out


async def _write(url: str, readings: list[Reading], nominals: dict[int, float]) -> None:
    screen = shipped_rules().for_devices(nominals, DEFAULT_NOMINAL_VOLTAGE)
    writer = ReadingWriter(
        url, batch_size=50_000, max_delay=0.05, max_queued=400_000, screen=screen
    )
    task = asyncio.create_task(writer.run())
    try:
        for i in range(0, len(readings), 10_000):
            await writer.add_many(readings[i : i + 10_000])
        await writer.flush()
    finally:
        await writer.close()
        await task


def inventory_loss(world: World) -> dict[str, dict[str, np.ndarray]]:
    """Per level (area, feeder): name → the loss per interval (T,) an analysis using the
    inventory must find: the measured loss plus the inventory faults' signatures."""
    g, t = world.grid, world.truth
    out = {
        "area": {a: t.area_balance()["loss"][j] for j, a in enumerate(g.areas)},
        "feeder": {f: t.feeder_balance()["loss"][j] for j, f in enumerate(g.feeders)},
    }
    out["area"] = {a: v.copy() for a, v in out["area"].items() if not np.isnan(v).all()}
    out["feeder"] = {f: v.copy() for f, v in out["feeder"].items()}
    for record in t.fault_records():
        if record["kind"] not in INVENTORY_FAULTS:
            continue
        for sig in record["signature"]:
            if sig["group"] in out[sig["level"]]:
                out[sig["level"]][sig["group"]] += sig["delta_loss"]
    return out
