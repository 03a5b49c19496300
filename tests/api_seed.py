"""A small stored world for the API tests: a Modbus meter with readings, a DL/T 645 bus with
read statistics, a concentrator whose meter has a daily frozen value, and some events; and a
grid (`seed_grid`) whose line-loss, meter-error and mapping results the real jobs computed."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from analytics.diagnostics import DiagnosticsPolicy, run_diagnostics
from analytics.jobs import LineLossPolicy, run_lineloss
from analytics.store import AnalyticsStore
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.schema import ensure_partitions

DAY = date(2026, 11, 25)
T0 = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


def seed(url: str) -> dict[str, int]:
    """Store the world; return device name → id."""
    devices = [
        ("meter-01", "meter", "modbus_tcp", "127.0.0.1:502", 1, "three_phase_meter", {}),
        ("bus1-m01", "meter", "dlt645", "/dev/ttyUSB0", None, None, {"bus": "bus1"}),
        ("bus1-m02", "meter", "dlt645", "/dev/ttyUSB0", None, None, {"bus": "bus1"}),
        ("jzq-1", "concentrator", "mqtt", "mqtt", None, None, {"area": "a1"}),
        ("jzq1-m01", "meter", "mqtt", "mqtt", None, None, {"concentrator": "jzq-1", "area": "a1"}),
    ]
    ids: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        ensure_partitions(conn, {DAY, DAY + timedelta(days=1)})
        for name, kind, protocol, endpoint, unit, regmap, attrs in devices:
            (ids[name],) = conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, unit_id, register_map,"
                " poll_interval, attributes) VALUES (%s, %s, %s, %s, %s, %s, 60, %s) RETURNING id",
                (name, kind, protocol, endpoint, unit, regmap, json.dumps(attrs)),
            ).fetchone()
        for i in range(8):
            ts = T0 + timedelta(minutes=15 * i)
            conn.execute(
                "INSERT INTO readings (device_id, quantity, ts, value, quality)"
                " VALUES (%s, '1.8.0', %s, %s, 0), (%s, '32.7.0', %s, %s, 0)",
                (ids["meter-01"], ts, 100 + i, ids["meter-01"], ts, 230.0 + i / 10),
            )
        # the concentrator's meter has its frozen value of DAY (frozen at the next midnight)
        conn.execute(
            "INSERT INTO readings (device_id, quantity, ts, value, quality)"
            " VALUES (%s, '1.8.0*d', %s, 1234.5, 0)",
            (ids["jzq1-m01"], datetime(2026, 11, 25, 16, 0, tzinfo=UTC)),
        )
        conn.execute(
            "INSERT INTO events (device_id, ts, kind, detail) VALUES"
            " (%s, %s, 'power_down', '{}'), (%s, %s, 'cover_opened', '{\"count\": 2}')",
            (ids["meter-01"], T0 + timedelta(hours=1), ids["bus1-m01"], T0 + timedelta(hours=2)),
        )
        conn.execute(
            "INSERT INTO read_stats (day, bus, device_id, attempts, successes, last_success,"
            " last_error, last_error_at) VALUES"
            " (%s, 'bus1', %s, 2, 2, %s, NULL, NULL), (%s, 'bus1', %s, 3, 0, NULL, 'timeout', %s)",
            (DAY, ids["bus1-m01"], T0, DAY, ids["bus1-m02"], T0),
        )
        conn.commit()
        ids |= seed_grid(conn)
    return ids


# The grid: the two local days (the API's default zone) before today, so that the API's
# defaults (yesterday, the last 24 h, the last 31 days) answer with its results.
GRID_T = 192
POLICY = LineLossPolicy(timezone=DEFAULT_TIMEZONE)
# name: (role, area, phase, ct, pt)
METERS = {
    "f1-head": ("feeder_head", None, "ABC", 2, 100),
    "a1-total": ("area_total", "a1", "ABC", 20, 1),
    "a1-c1": ("customer", "a1", "A", 1, 1),
    "a1-c2": ("customer", "a1", "B", 1, 1),
    "a1-c2r": ("customer", "a1", "B", 1, 1),  # replaces a1-c2 (换表) at REPLACED
    "a2-total": ("area_total", "a2", "ABC", 10, 1),
    "a2-c1": ("customer", "a2", "ABC", 5, 1),
    "a2-c2": ("customer", "a2", "C", 1, 1),  # on a2 in the ledger, its voltage follows a1's
    "d1-total": ("area_total", "d1", "ABC", 30, 1),  # a dedicated transformer (专变)
}
REPLACED = 120  # boundary index
GAP = range(50, 54)  # a2-c2 not read at these boundaries: a2 not computable around them


def seed_grid(conn: psycopg.Connection) -> dict[str, int]:
    """sub1 → f1 → a1 (public; 4 % loss, one interval negative), a2 (public; 15 % loss, a gap
    in a customer's readings), d1 (dedicated); an asset overdue for verification; a
    replacement; then the line-loss and diagnostics jobs as `gridread run` runs them."""
    rng = np.random.default_rng(9)
    tz = ZoneInfo(POLICY.timezone)
    start = datetime.combine(datetime.now(tz).date() - timedelta(days=2), time(), tz)
    boundaries = [start.astimezone(UTC) + timedelta(minutes=15 * k) for k in range(GRID_T + 1)]
    ensure_partitions(conn, {b.date() for b in boundaries})
    (sub,) = conn.execute(
        "INSERT INTO substations (name, voltage_kv) VALUES ('sub1', 35) RETURNING id"
    ).fetchone()
    (feeder,) = conn.execute(
        "INSERT INTO feeders (name, substation_id) VALUES ('f1', %s) RETURNING id", (sub,)
    ).fetchone()
    areas = {}
    for name, kind, kva in (("a1", "public", 200), ("a2", "public", 100), ("d1", "dedicated", 315)):
        (areas[name],) = conn.execute(
            "INSERT INTO areas (name, feeder_id, kind, transformer_kva) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (name, feeder, kind, kva),
        ).fetchone()
    ids = {}
    at = boundaries[REPLACED]
    for name, (role, area, phase, ct, pt) in METERS.items():
        (ids[name],) = conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
            " VALUES (%s, 'meter', 'dlt645', '/dev/ttyUSB1', 900, '{\"bus\": \"bus2\"}')"
            " RETURNING id",
            (name,),
        ).fetchone()
        conn.execute(
            "INSERT INTO metering_points (device_id, role, feeder_id, area_id, phase, ct_ratio,"
            " pt_ratio, customer_class, valid_from, valid_to)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                ids[name],
                role,
                feeder if area is None else None,
                areas.get(area),
                phase,
                ct,
                pt,
                "residential" if role == "customer" else None,
                at if name == "a1-c2r" else boundaries[0],
                at if name == "a1-c2" else None,
            ),
        )
    conn.execute(
        "INSERT INTO meter_assets (device_id, model, accuracy_class, installed, last_verified,"
        " next_verification, rotation_plan) VALUES"
        " (%s, 'DDZY71', '2', '2016-03-01', '2016-02-20', '2024-02-20', '2024'),"
        " (%s, 'DTZY71', '0.5S', '2024-03-01', '2024-02-20', '2032-02-20', '2032')",
        (ids["a1-c1"], ids["a2-c1"]),
    )
    # primary kWh per interval: customers, then the area supplies and the feeder head
    e = {m: rng.gamma(2.0, 0.3, GRID_T) for m in ("a1-c1", "a1-c2", "a2-c2")}
    e["a2-c1"] = rng.gamma(2.0, 1.5, GRID_T)
    e["d1-total"] = rng.gamma(4.0, 2.0, GRID_T)
    a1 = e["a1-c1"] + e["a1-c2"]
    e["a1-total"] = a1 * 1.04 + 0.01
    e["a1-total"][10] = a1[10] * 0.95  # a negative loss (负损), -5 %
    e["a2-total"] = (e["a2-c1"] + e["a2-c2"]) * 1.15 + 0.01
    e["f1-head"] = (e["a1-total"] + e["a2-total"] + e["d1-total"]) * 1.02
    registers = {}
    for name, energy in e.items():
        mult = METERS[name][3] * METERS[name][4]
        registers[name] = np.round(1000.0 + np.append(0, np.cumsum(energy / mult)), 2)
    c2 = registers.pop("a1-c2")
    registers["a1-c2"] = c2[: REPLACED + 1]  # its final register, then the new meter from 0
    registers["a1-c2r"] = np.append(np.full(REPLACED, np.nan), c2[REPLACED:] - c2[REPLACED])
    registers["a2-c2"][list(GAP)] = np.nan
    conn.execute(
        "INSERT INTO meter_replacements (old_device_id, new_device_id, at, old_final, new_first)"
        " VALUES (%s, %s, %s, %s, 0)",
        (ids["a1-c2"], ids["a1-c2r"], at, float(c2[REPLACED])),
    )
    rows = [
        (ids[name], "1.8.0", boundaries[k], float(v), 0)
        for name, regs in registers.items()
        for k, v in enumerate(regs)
        if not np.isnan(v)
    ]
    # voltages: each area's own slow walk; a2-c2's follows a1's (it is wired to a1)
    walk = {a: 230 + np.cumsum(rng.normal(0, 0.4, GRID_T)) for a in ("a1", "a2", "d1")}
    for name, (role, area, phase, _, _) in METERS.items():
        if role == "feeder_head":
            continue
        series = walk["a1" if name == "a2-c2" else area]
        volts = np.round(series + rng.normal(0, 0.05, GRID_T), 1)
        # a single-phase meter's only voltage is 32.7.0 whatever its phase (as concentrators
        # and DL/T 645 meters store it); the ledger's phase says which bus phase it sits on
        quantities = ("32.7.0", "52.7.0", "72.7.0") if phase == "ABC" else ("32.7.0",)
        rows += [
            (ids[name], q, boundaries[k], float(v), 0)
            for q in quantities
            for k, v in enumerate(volts)
        ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, quantity, ts, value, quality)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    conn.commit()
    store = AnalyticsStore(conn)
    now = boundaries[-1] + timedelta(seconds=POLICY.settle_s)
    run_lineloss(store, POLICY, now)
    run_diagnostics(store, DiagnosticsPolicy(lineloss=POLICY, days=2), now)
    conn.commit()
    return ids
