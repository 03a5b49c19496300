"""The power-quality job against a real PostgreSQL: monitors' minutes, meters' 15-min phase
voltages and currents inserted as readings, results read back from pq_voltage, pq_unbalance
and pq_monitor_flags and checked against the arithmetic written here.

The local day 2026-11-10 (Asia/Shanghai) starts at DAY (16:00 UTC the day before).
  vm-1 (class A, 220 V, +7/−10 %: 198.0 … 235.4 V): minutes 0–9 missing; 100–119 at 197 V
       (under), 600–629 at 236 V (over), the rest 220 V → monitored 1430 min, out 50
       → rate (1 − 50/1430) × 100 = 96.5035 %; its own statistics say 1440 monitored,
       30 over, 20 under → 96.5278 %: 0.024 pp apart (not flagged), minutes differ.
  vm-2 (class D): 60 minutes at 240 V → 95.8333 %; its own statistics say 0 out (100 %):
       4.17 pp apart → flagged.
  composite = (0.5 · 96.5035 + 1/6 · 95.8333) / (0.5 + 1/6) (B and C absent)
  c1 (single-phase, phase B, area a-01: 0.4 kV / √3 → the 220 V row): 96 intervals, 2
       missing, 4 at 240 V → (1 − 4/94) × 100 = 95.7447 %, 1800 s missing
  a-01-total (ABC, 400 V system → the 380 V row, ±7 %: 204.6 … 235.4): A, B 230 all day,
       C 230 in the first 4 intervals then 200 → A, B 100 %, C (1 − 92/96) × 100 = 4.1667 %;
       the first 4 intervals carry angles (U2/U1 120°, U3/U1 240°, lagging): balanced,
       |V2|/|V1| = 0 (the wrong sense would give V1 = 0: no value); the other 92 have none:
       max deviation 20/220 = 9.0909 %
  area a-01: (1 − (4 + 92) / (94 + 3 · 96)) × 100 = 74.8691 %
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import psycopg
import pytest

from analytics.power_quality_job import PQPolicy, run_power_quality
from analytics.store import AnalyticsStore
from ingest.schema import ensure_partitions
from tests.lineloss_fixture import DAY, Q, device, grid, place

POLICY = PQPolicy(timezone="Asia/Shanghai", settle_s=1800)
NOW = DAY + timedelta(days=1, minutes=30)  # the day has settled
M = timedelta(minutes=1)


@pytest.fixture
def conn(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def readings(conn, device_id: int, quantity: str, values, step: timedelta) -> None:
    rows = [(device_id, quantity, DAY + k * step, v) for k, v in enumerate(values) if v is not None]
    ensure_partitions(conn, {r[2].date() for r in rows})
    with (
        conn.cursor() as cur,
        cur.copy("COPY readings (device_id, quantity, ts, value) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def monitor(conn, name: str, cls: str, values, own_over: int, own_under: int) -> int:
    dev = conn.execute(
        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
        " VALUES (%s, 'voltage_monitor', 'modbus_rtu', 'pty', 600) RETURNING id",
        (name,),
    ).fetchone()[0]
    readings(conn, dev, "32.7.0", values, M)
    conn.execute(
        "INSERT INTO voltage_daily_stats (device_id, day, monitoring_class, nominal_v, upper_v,"
        " lower_v, monitored_min, over_min, under_min, max_v, max_at, min_v, min_at)"
        " VALUES (%s, %s, %s, 220, 235.4, 198, 1440, %s, %s, 240, %s, 197, %s)",
        (dev, date(2026, 11, 10), cls, own_over, own_under, DAY, DAY),
    )
    return dev


def seed(conn) -> None:
    vm1 = [None] * 10 + [220.0] * 1430
    vm1[100:120] = [197.0] * 20
    vm1[600:630] = [236.0] * 30
    monitor(conn, "vm-1", "A", vm1, 30, 20)
    monitor(conn, "vm-2", "D", [220.0] * 1380 + [240.0] * 60, 0, 0)
    ids = grid(conn)
    c1, total = device(conn, "c1"), device(conn, "a-01-total")
    place(conn, c1, "customer", area=ids["a-01"], valid_from=DAY)
    conn.execute("UPDATE metering_points SET phase = 'B' WHERE device_id = %s", (c1,))
    place(conn, total, "area_total", area=ids["a-01"], ct=80, valid_from=DAY)
    v = [225.0] * 96
    v[10:14] = [240.0] * 4
    v[50] = v[51] = None
    readings(conn, c1, "32.7.0", v, Q)
    readings(conn, total, "32.7.0", [230.0] * 96, Q)
    readings(conn, total, "52.7.0", [230.0] * 96, Q)
    readings(conn, total, "72.7.0", [230.0] * 4 + [200.0] * 92, Q)
    for quantity in ("31.7.0", "51.7.0", "71.7.0"):
        readings(conn, total, quantity, [10.0] * 96, Q)
    readings(conn, total, "81.7.1", [120.0] * 4, Q)
    readings(conn, total, "81.7.2", [240.0] * 4, Q)


def grid_ids(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT name, id FROM areas").fetchall())


def voltage(conn, kind: str, name: str, phase: str = "-", period: str = "day") -> dict:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM pq_voltage WHERE kind = %s AND name = %s AND phase = %s AND period = %s",
            (kind, name, phase, period),
        ).fetchone()


def test_day_rates_composite_unbalance_and_flags(conn):
    seed(conn)
    summary = run_power_quality(AnalyticsStore(conn), POLICY, NOW)
    assert summary.days == [date(2026, 11, 10)]

    vm1 = voltage(conn, "monitor", "vm-1")
    assert vm1["monitored_s"] == 1430 * 60 and vm1["missing_s"] == 600
    assert vm1["over_s"] == 30 * 60 and vm1["under_s"] == 20 * 60
    assert vm1["rate"] == pytest.approx((1 - 50 / 1430) * 100)
    assert vm1["monitoring_class"] == "A" and vm1["upper_pct"] == 7 and vm1["lower_pct"] == -10
    # 10-min means: window 0 incomplete; 10, 11 (minutes 100–119) at 197 V: outside ±10 %
    assert (vm1["tenmin_means"], vm1["tenmin_incomplete"], vm1["tenmin_within"]) == (143, 1, 141)
    vm2 = voltage(conn, "monitor", "vm-2")
    assert vm2["rate"] == pytest.approx((1 - 60 / 1440) * 100)

    a, d = (1 - 50 / 1430) * 100, (1 - 60 / 1440) * 100
    composite = voltage(conn, "composite", "all")
    assert composite["rate"] == pytest.approx((0.5 * a + d / 6) / (0.5 + 1 / 6))
    assert voltage(conn, "class", "B")["rate"] is None

    c1 = voltage(conn, "meter", "c1", "B")
    assert c1["rate"] == pytest.approx((1 - 4 / 94) * 100) and c1["missing_s"] == 1800
    assert voltage(conn, "meter", "a-01-total", "C")["rate"] == pytest.approx((1 - 92 / 96) * 100)
    assert voltage(conn, "meter", "a-01-total", "A")["lower_pct"] == -7  # the 380 V row
    area = voltage(conn, "area", "a-01")
    assert area["rate"] == pytest.approx((1 - 96 / (94 + 3 * 96)) * 100)

    u = conn.execute(
        "SELECT quantity, n_values, n_sequence, within_normal, beyond_short, max_pct"
        " FROM pq_unbalance WHERE name = 'a-01-total' AND period = 'day' ORDER BY quantity"
    ).fetchall()
    # currents 10, 10, 10 A: 0 %; no current angles stored → none by negative sequence
    assert u[0] == ("current", 96, 0, 96, 0, pytest.approx(0, abs=1e-9))
    # voltages: 4 values by sequence (0 %: within 2 %), 92 by deviation (9.0909 %: beyond
    # the 4 % short-term limit); the max is the deviation's
    assert u[1] == ("voltage", 96, 4, 4, 92, pytest.approx(20 / 220 * 100))

    flags = dict(
        (name, (flagged, reasons, diff))
        for name, flagged, reasons, diff in conn.execute(
            "SELECT name, flagged, reasons, diff_pp FROM pq_monitor_flags"
        ).fetchall()
    )
    assert flags["vm-1"][:2] == (False, ["monitored"])
    assert flags["vm-1"][2] == pytest.approx(a - (1 - 50 / 1440) * 100)
    assert flags["vm-2"][:2] == (True, ["rate"])


def test_weeks_and_months_sum_their_days_and_the_watermark_holds(conn):
    seed(conn)
    store = AnalyticsStore(conn)
    run_power_quality(store, POLICY, NOW)
    week = voltage(conn, "monitor", "vm-1", period="week")
    month = voltage(conn, "monitor", "vm-1", period="month")
    day = voltage(conn, "monitor", "vm-1")
    for row in (week, month):
        assert (row["monitored_s"], row["over_s"], row["rate"]) == (
            day["monitored_s"],
            day["over_s"],
            pytest.approx(day["rate"]),
        )
    assert week["compliant"] is True  # 141 of 143 = 98.6 % ≥ 95 %, none beyond −15 %
    assert week["start"] == DAY - timedelta(days=1)  # Monday 2026-11-09, local midnight
    assert month["start"].astimezone(DAY.tzinfo).isoformat() == "2026-10-31T16:00:00+00:00"
    u_week = conn.execute(
        "SELECT compliant FROM pq_unbalance WHERE name = 'a-01-total' AND period = 'week'"
        " AND quantity = 'voltage'"
    ).fetchone()[0]
    assert u_week is False
    # the next run: nothing new but the day missing time (re-read window): same rows
    again = run_power_quality(store, POLICY, NOW)
    assert again.days == [date(2026, 11, 10)]
    assert voltage(conn, "monitor", "vm-1")["rate"] == pytest.approx(day["rate"])
    # a day later: only the new day, and it has no readings → the placed meters miss it all
    later = run_power_quality(store, POLICY, NOW + timedelta(days=1))
    assert date(2026, 11, 11) in later.days
    nxt = conn.execute(
        "SELECT missing_s, rate FROM pq_voltage WHERE kind = 'meter' AND name = 'c1'"
        " AND period = 'day' AND start = %s",
        (DAY + timedelta(days=1),),
    ).fetchone()
    assert nxt == (96 * 900, None)
    assert np.isclose(voltage(conn, "meter", "c1", "B", "week")["missing_s"], 1800 + 96 * 900)


def test_nothing_to_do_without_voltages(conn):
    summary = run_power_quality(AnalyticsStore(conn), POLICY, NOW)
    assert (summary.days, summary.rows, summary.reasons) == ([], 0, ["no voltages yet"])
    assert conn.execute("SELECT count(*) FROM analytics_watermarks").fetchone()[0] == 0


def test_a_silent_monitor_is_missing_only_once_commissioned(conn):
    seed(conn)
    conn.execute(
        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
        " VALUES ('vm-3', 'voltage_monitor', 'modbus_rtu', 'pty', 600, %s)",
        (psycopg.types.json.Jsonb({"commissioned": (DAY - timedelta(days=9)).isoformat()}),),
    )
    c3 = device(conn, "c3", commissioned=DAY + timedelta(hours=12))
    place(conn, c3, "customer", area=grid_ids(conn)["a-01"], valid_from=DAY)
    conn.execute("UPDATE metering_points SET phase = 'A' WHERE device_id = %s", (c3,))
    run_power_quality(AnalyticsStore(conn), POLICY, NOW + timedelta(days=1))
    # c3: placed all day but commissioned at noon, never read: 48 intervals missing, not 96
    assert voltage(conn, "meter", "c3", "A")["missing_s"] == 48 * 900
    rows = conn.execute(
        "SELECT name, start, monitored_s, missing_s, rate FROM pq_voltage"
        " WHERE kind = 'monitor' AND period = 'day' ORDER BY start, name"
    ).fetchall()
    later = DAY + timedelta(days=1)
    # vm-1, vm-2: readings and statistics on day 1 only, no commissioning date: no row on
    # day 2; vm-3 (commissioned, never heard from): the whole of both days missing
    assert [(n, s) for n, s, *_ in rows] == [
        ("vm-1", DAY),
        ("vm-2", DAY),
        ("vm-3", DAY),
        ("vm-3", later),
    ]
    assert {tuple(r[2:]) for r in rows if r[0] == "vm-3"} == {(0, 86400, None)}
