"""Power quality against the simulated world's ground truth: voltage events of known duration
(simulators/world/power_quality.py) on the world's meter voltages, stored through gridread's
ReadingWriter with the world's inventory (bench/world_db.py), two one-minute voltage monitors
beside meters; the job's rates must be exactly 1 − (event time) / (monitored time).

The world (seed 3, 2 local days from 2026-11-02 00:00 Asia/Shanghai): f01 with public areas
f01-a01, f01-a02 and the dedicated f01-d01. Its LV voltages lie within 216–239 V and its head
within 58.0–59.8 V (asserted below): with the site nominal 400/√3 = 230.94 V the 220 V row
(+7/−10 %: 207.8 … 247.1 V) and the 380 V row (±7 %: 214.8 … 247.1 V), and the head's
10 kV/√3/100 = 57.74 V ±7 %, nothing is outside the limits but the events:
  sag   f01-a01, day 1 10:00, 120 min, × 0.85 (≤ 203 V: under)   meters: 8 of 96 intervals
  swell f01-a02, day 2 20:00,  45 min, × 1.18 (≥ 255 V: over)    meters: 3 of 96 intervals
  swell f01-a02, day 1 03:07,  17 min, × 1.18, monitors only (shorter than a meter's 15 min)
Monitors: vm-b (class B) beside f01-a01-total, 30 minutes of day 1 (15:00–15:30) not stored;
vm-d (class D) beside f01-a02's first customer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.power_quality_job import PQPolicy, run_power_quality
from analytics.store import AnalyticsStore
from bench.world_db import TIMEZONE, store_world
from simulators.world import WorldSpec, build_world
from simulators.world.power_quality import VoltageEvent, apply_events, monitor_minutes

START = datetime(2026, 11, 1, 16, tzinfo=UTC)  # 2026-11-02 00:00 local
LOCAL = timedelta(hours=8)
NOMINAL = 400 / np.sqrt(3)
POLICY = PQPolicy(timezone=TIMEZONE, site_nominal_v=NOMINAL)
DAY1, DAY2 = START, START + timedelta(days=1)


def at(day: datetime, hh: int, mm: int) -> datetime:
    return day + timedelta(hours=hh, minutes=mm)


METER_EVENTS = [
    VoltageEvent("f01-a01", at(DAY1, 10, 0), 120, 0.85),
    VoltageEvent("f01-a02", at(DAY2, 20, 0), 45, 1.18),
]
MONITOR_ONLY = [VoltageEvent("f01-a02", at(DAY1, 3, 7), 17, 1.18)]


def monitor(conn, name: str, cls: str, ts: np.ndarray, v: np.ndarray, own: dict) -> None:
    dev = conn.execute(
        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
        " VALUES (%s, 'voltage_monitor', 'modbus_rtu', 'pty', 600, %s) RETURNING id",
        (name, psycopg.types.json.Jsonb({"nominal_voltage": NOMINAL})),
    ).fetchone()[0]
    with (
        conn.cursor() as cur,
        cur.copy("COPY readings (device_id, quantity, ts, value) FROM STDIN") as copy,
    ):
        for t, x in zip(ts.tolist(), v.tolist(), strict=True):
            copy.write_row((dev, "32.7.0", datetime.fromtimestamp(t, UTC), x))
    for day, (over, under) in own.items():
        conn.execute(
            "INSERT INTO voltage_daily_stats (device_id, day, monitoring_class, nominal_v,"
            " upper_v, lower_v, monitored_min, over_min, under_min, max_v, max_at, min_v,"
            " min_at) VALUES (%s, %s, %s, %s, %s, %s, 1440, %s, %s, 0, now(), 0, now())",
            (dev, day, cls, NOMINAL, round(NOMINAL * 1.07, 2), round(NOMINAL * 0.9, 2),
             over, under),
        )  # fmt: skip


def rates(conn, kind: str) -> dict[tuple[str, str, date], tuple]:
    rows = conn.execute(
        "SELECT name, phase, start, rate, monitored_s, missing_s, over_s, under_s"
        " FROM pq_voltage WHERE kind = %s AND period = 'day'",
        (kind,),
    ).fetchall()
    return {(n, p, (s + LOCAL).date()): rest for n, p, s, *rest in rows}


def test_rates_equal_the_events_known_durations(migrated_url):
    world = build_world(
        WorldSpec(seed=3, start=START, days=2, feeders=1, areas_per_feeder=2, meters_per_area=8)
    )
    g = world.grid
    lv, v = g.role != "feeder_head", world.truth.voltage
    assert 207.8 < v[lv].min() - 1 and v[lv].max() + 1 < 247.1  # the background is inside
    assert 57.74 * 0.93 < v[~lv].min() and v[~lv].max() < 57.74 * 1.07
    base = apply_events(world, METER_EVENTS)
    events = METER_EVENTS + MONITOR_ONLY
    ts_b, v_b = monitor_minutes(world, "f01-a01-total", events, base)
    keep = ~((ts_b >= at(DAY1, 15, 0).timestamp()) & (ts_b < at(DAY1, 15, 30).timestamp()))
    customer = next(m for m, a in zip(g.meters, g.meter_area, strict=True)
                    if g.areas[a] == "f01-a02" and m.endswith("c001"))  # fmt: skip
    ts_d, v_d = monitor_minutes(world, customer, events, base)
    store_world(migrated_url, world)
    d1, d2 = date(2026, 11, 2), date(2026, 11, 3)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        monitor(conn, "vm-b", "B", ts_b[keep], v_b[keep], {d1: (0, 120), d2: (0, 0)})
        monitor(conn, "vm-d", "D", ts_d, v_d, {d1: (17, 0), d2: (45, 0)})
        summary = run_power_quality(AnalyticsStore(conn), POLICY, DAY2 + timedelta(days=1, hours=1))
        assert summary.days == [d1, d2]
        meters, areas, mons = rates(conn, "meter"), rates(conn, "area"), rates(conn, "monitor")
        composite = rates(conn, "composite")
        flags = conn.execute("SELECT name, day, flagged, reasons FROM pq_monitor_flags").fetchall()

    # meters: every phase row of every meter; out-of-limit intervals = the events' exactly
    area_of = {
        m: g.areas[a] if a >= 0 else None for m, a in zip(g.meters, g.meter_area, strict=True)
    }
    expected_out = {("f01-a01", d1): 8, ("f01-a02", d2): 3}
    assert len({(n, p) for n, p, _ in meters}) == sum(3 if ph == 3 else 1 for ph in g.phase)
    for (name, _phase, day), (rate, monitored, missing, over, under) in meters.items():
        out = expected_out.get((area_of[name], day), 0)
        assert (monitored, missing) == (96 * 900, 0), name
        assert rate == pytest.approx((1 - out / 96) * 100, abs=1e-9), (name, day)
        assert (over, under) == ((out * 900, 0) if day == d2 else (0, out * 900)), name
    for (name, _, day), (rate, *_rest) in areas.items():
        out = expected_out.get((name, day), 0)
        assert rate == pytest.approx((1 - out / 96) * 100, abs=1e-9), (name, day)
    assert {n for n, _, _ in areas} == {"f01-a01", "f01-a02", "f01-d01"}

    # monitors: minutes; vm-b's 30 missing minutes are out of its denominator
    b1 = (1 - 120 / 1410) * 100
    assert tuple(mons[("vm-b", "-", d1)][:3]) == (pytest.approx(b1, abs=1e-9), 1410 * 60, 30 * 60)
    assert mons[("vm-b", "-", d2)][0] == 100
    d_1, d_2 = (1 - 17 / 1440) * 100, (1 - 45 / 1440) * 100
    assert mons[("vm-d", "-", d1)][0] == pytest.approx(d_1, abs=1e-9)
    assert mons[("vm-d", "-", d2)][0] == pytest.approx(d_2, abs=1e-9)
    # composite: classes B and D only, equal weights (1/6 each) → their mean
    assert composite[("all", "-", d1)][0] == pytest.approx((b1 + d_1) / 2, abs=1e-9)
    # the monitors' own statistics agree; vm-b counted the 30 minutes it lacks here
    assert sorted(flags) == [
        ("vm-b", d1, False, ["monitored"]),
        ("vm-b", d2, False, []),
        ("vm-d", d1, False, []),
        ("vm-d", d2, False, []),
    ]
