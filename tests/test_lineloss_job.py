"""The line-loss job against a real PostgreSQL: topology rows inserted with plain SQL,
registers inserted as readings, results read back from the lineloss table and checked
against arithmetic written out here.

The world (site zone Asia/Shanghai; the day 2026-11-10 local starts at DAY):
  f-01 (10 kV) head meter, multiplier 20 × 100 = 2000
  ├─ a-01 public area: total meter ×80; customers c1, c2 (×1)
  └─ d-01 dedicated area: its meter ×50
Registers at DAY + k·15 min (secondary kWh) and interval energies (primary):
  a-01-total 1000, 1000.5, 1001.125, 1001.625, 1002  → ×80: 40, 50, 40, 30
  c1          500,  520,    545,     565,     580   →      20, 25, 20, 15
  c2          300,  316,    333,     351,     367   →      16, 17, 18, 16
  area a-01: sales 36, 42, 38, 31; loss 4, 8, 2, −1; rate 10 % (= the band: normal),
             16 % (high), 5 % (normal), −3.33 % (negative)
  d-01        200, 200.5, 201, 201.5, 202           → ×50: 25, 25, 25, 25
  f-01 head   10, 10.035, 10.075, 10.11, 10.14      → ×2000: 70, 80, 70, 60
  feeder f-01: sales = 40+25, 50+25, 40+25, 30+25 = 65, 75, 65, 55; loss 5 each
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from analytics.diagnostics import DiagnosticsPolicy, run_diagnostics
from analytics.jobs import LineLossPolicy, run_lineloss
from analytics.store import AnalyticsStore
from tests.lineloss_fixture import DAY, Q, device, grid, place, registers

POLICY = LineLossPolicy(timezone="Asia/Shanghai", settle_s=1800)
NOW = DAY + 4 * Q + timedelta(seconds=1800)  # intervals 0…3 are settled
TOTAL = [1000, 1000.5, 1001.125, 1001.625, 1002]
C1 = [500, 520, 545, 565, 580]
C2 = [300, 316, 333, 351, 367]


@pytest.fixture
def conn(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def world(conn, *, c2: list | None = C2, c1_points=None) -> dict[str, int]:
    ids = grid(conn)
    dev = {n: device(conn, n) for n in ("f-01-head", "a-01-total", "c1", "c2", "d-01-total")}
    place(conn, dev["f-01-head"], "feeder_head", feeder=ids["f-01"], ct=20, pt=100, valid_from=DAY)
    place(conn, dev["a-01-total"], "area_total", area=ids["a-01"], ct=80, valid_from=DAY)
    place(conn, dev["d-01-total"], "area_total", area=ids["d-01"], ct=50, valid_from=DAY)
    place(conn, dev["c1"], "customer", area=ids["a-01"], valid_from=DAY)
    if c2 is not None:
        place(conn, dev["c2"], "customer", area=ids["a-01"], valid_from=DAY)
        registers(conn, dev["c2"], c2)
    registers(conn, dev["a-01-total"], TOTAL)
    registers(conn, dev["c1"], C1)
    registers(conn, dev["d-01-total"], [200, 200.5, 201, 201.5, 202])
    registers(conn, dev["f-01-head"], [10, 10.035, 10.075, 10.11, 10.14])
    return {**ids, **dev}


def rows(conn, level="area", name="a-01", period="15min"):
    return conn.execute(
        "SELECT start, supply, sales, loss, rate, coverage, status, computed_at FROM lineloss"
        " WHERE level = %s AND name = %s AND period = %s ORDER BY start",
        (level, name, period),
    ).fetchall()


def run(conn, now=NOW):
    return run_lineloss(AnalyticsStore(conn), POLICY, now)


def test_hand_computed_area_feeder_voltage_day(conn):
    world(conn)
    summary = run(conn)
    assert summary.computed_from == DAY and summary.computed_until == DAY + 4 * Q
    got = rows(conn)
    assert [r[0] for r in got] == [DAY + k * Q for k in range(4)]
    assert [r[1] for r in got] == [40, 50, 40, 30]
    assert [r[2] for r in got] == [36, 42, 38, 31]
    assert [r[3] for r in got] == [4, 8, 2, -1]
    assert [r[4] for r in got] == pytest.approx([10, 16, 5, -100 / 30])
    assert [r[5] for r in got] == [1, 1, 1, 1]
    assert [r[6] for r in got] == ["normal", "high", "normal", "negative"]

    feeder = rows(conn, "feeder", "f-01")
    assert [r[1] for r in feeder] == pytest.approx([70, 80, 70, 60])
    assert [r[2] for r in feeder] == [65, 75, 65, 55]
    assert [r[3] for r in feeder] == pytest.approx([5, 5, 5, 5])
    assert [r[4] for r in feeder] == pytest.approx([500 / 70, 6.25, 500 / 70, 500 / 60])
    # 分压: 10 kV is the feeder alone; 0.4 kV the public area alone (d-01 is dedicated)
    level = rows(conn, "voltage", "10 kV")
    assert [x for r in level for x in r[1:5]] == [x for r in feeder for x in r[1:5]]
    assert [r[3] for r in rows(conn, "voltage", "0.4 kV")] == [4, 8, 2, -1]
    # the local day so far: supply 160, sales 147, loss 13, rate 8.125 %
    [day] = rows(conn, period="day")
    assert day[:7] == (DAY, 160, 147, 13, 8.125, 1, "normal")
    [month] = rows(conn, period="month")
    assert month[1:4] == (160, 147, 13)
    assert rows(conn, "area", "d-01") == []  # 专变: no area line loss, only in its feeder


def test_missing_meter_is_not_computable_with_its_coverage(conn):
    world(conn, c2=[300, 316, None, 351, 367])  # c2's register at DAY + 2Q never came
    run(conn)
    got = rows(conn)
    # intervals 1 and 2 lack c2: (supply 1 + members 1 present) / (1 + 2 expected) = 2/3
    assert [r[5] for r in got] == pytest.approx([1, 2 / 3, 2 / 3, 1])
    assert [r[6] for r in got] == ["normal", "not_computable", "not_computable", "negative"]
    assert got[1][1:5] == (50, 25, None, None)  # supply and what sales are present; no rate
    assert got[2][1:5] == (40, 20, None, None)
    # the day: (4 supply + 6 member intervals present) / (4 + 8 expected)
    [day] = rows(conn, period="day")
    assert day[5] == pytest.approx(10 / 12)
    assert (day[3], day[4], day[6]) == (None, None, "not_computable")


def test_late_data_recomputes_the_incomplete_intervals_only(conn):
    ids = world(conn, c2=[300, 316, None, 351, 367])
    run(conn)
    before = rows(conn)
    # the re-read (补抄) arrives, and one more interval is read for everyone
    registers(conn, ids["c2"], [333], start=DAY + 2 * Q)
    for name, value in [("a-01-total", 1002.25), ("c1", 590), ("c2", 377)]:
        registers(conn, ids[name], [value], start=DAY + 5 * Q)
    summary = run(conn, NOW + Q)
    assert summary.computed_from == DAY + Q
    assert "incomplete intervals in the re-read window" in summary.reasons
    got = rows(conn)
    assert [r[6] for r in got] == ["normal", "high", "normal", "negative", "normal"]
    assert [r[3] for r in got] == [4, 8, 2, -1, 0.25 * 80 - 10 - 10]
    assert got[0][7] == before[0][7]  # complete: not recomputed
    assert got[1][7] > before[1][7]


def test_multiplier_change_applies_from_its_interval_and_recomputes(conn):
    ids = world(conn)
    run(conn)
    before = rows(conn)
    # c1 gets a CT of 2 from DAY + 2Q (a new metering-point row; the old one closed)
    conn.execute(
        "UPDATE metering_points SET valid_to = %s WHERE device_id = %s", (DAY + 2 * Q, ids["c1"])
    )
    place(conn, ids["c1"], "customer", area=ids["a-01"], ct=2, valid_from=DAY + 2 * Q)
    summary = run(conn)
    assert summary.computed_from == DAY  # the closed row's valid_from: DAY
    got = rows(conn)
    # c1: 20, 25, 20×2, 15×2 → sales 36, 42, 58, 46; loss 4, 8, −18, −16
    assert [r[2] for r in got] == [36, 42, 58, 46]
    assert [r[3] for r in got] == [4, 8, -18, -16]
    assert [r[6] for r in got] == ["normal", "high", "negative", "negative"]
    assert got[3][7] > before[3][7]


def test_replacement_mid_interval_gives_the_exact_energy(conn):
    ids = world(conn, c2=None)
    at = DAY + Q + timedelta(minutes=5)
    new = device(conn, "c2r")
    place(conn, ids["c2"], "customer", area=ids["a-01"], valid_from=DAY, valid_to=at)
    place(conn, new, "customer", area=ids["a-01"], valid_from=at)
    # c2 removed showing 320 (4 kWh after DAY + Q); c2r fitted showing 0
    conn.execute(
        "INSERT INTO meter_replacements (old_device_id, new_device_id, at, old_final, new_first)"
        " VALUES (%s, %s, %s, 320, 0)",
        (ids["c2"], new, at),
    )
    registers(conn, ids["c2"], [300, 316])
    registers(conn, new, [13, 31, 47], start=DAY + 2 * Q)
    run(conn)
    got = rows(conn)
    # interval 1: c2 (320 − 316) + c2r (13 − 0) = 17, as before the replacement
    assert [r[2] for r in got] == [36, 42, 38, 31]
    assert [r[5] for r in got] == [1, 1, 1, 1]
    assert [r[6] for r in got] == ["normal", "high", "normal", "negative"]


def test_a_grid_without_topology_gives_no_results_and_no_error(conn):
    registers(conn, device(conn, "m1"), [1, 2, 3])  # read, but placed nowhere
    store = AnalyticsStore(conn)
    assert run(conn).rows == 0
    assert run_diagnostics(store, DiagnosticsPolicy(lineloss=POLICY), NOW) == 0
    assert conn.execute("SELECT count(*) FROM lineloss").fetchone() == (0,)


def test_readings_that_come_after_a_run_with_none_all_count(conn):
    ids = grid(conn)
    total = device(conn, "a-01-total")
    place(conn, total, "area_total", area=ids["a-01"], valid_from=DAY)
    assert run(conn).reasons == ["no readings of placed meters yet"]
    registers(conn, total, [0, 10, 20])  # uploaded late by a concentrator, say
    assert run(conn).computed_from == DAY
    assert [r[1] for r in rows(conn)[:2]] == [10, 10]


def test_edits_that_change_no_result_recompute_nothing(conn):
    ids = world(conn)
    run(conn)
    conn.execute("UPDATE areas SET transformer_kva = 500 WHERE id = %s", (ids["a-01"],))
    device(conn, "spare", commissioned=DAY)  # in the inventory, placed nowhere
    summary = run(conn)
    assert (summary.computed_from, summary.rows, summary.reasons) == (None, 0, [])
    # commissioning a placed meter later changes from when it is expected: recomputed
    conn.execute(
        "UPDATE devices SET attributes = jsonb_build_object('commissioned', %s::text)"
        " WHERE id = %s",
        ((DAY + 2 * Q).isoformat(), ids["c2"]),
    )
    summary = run(conn)
    assert summary.computed_from == DAY + 2 * Q


def test_the_month_is_summed_from_the_stored_days_and_the_new_ones(conn):
    ids = grid(conn)
    steps = 2 * 96  # two local days, every boundary read
    for name, ct, per_interval, role in [
        ("a-01-total", 80, 0.5, "area_total"),  # 0.5 × 80 = 40 kWh per interval
        ("c1", 1, 20, "customer"),
        ("c2", 1, 16, "customer"),
    ]:
        dev = device(conn, name)
        place(conn, dev, role, area=ids["a-01"], ct=ct, valid_from=DAY)
        registers(conn, dev, [100 + per_interval * k for k in range(steps + 1)])
    settle = timedelta(seconds=POLICY.settle_s)
    run(conn, DAY + timedelta(days=1) + settle)  # the first day, complete
    summary = run(conn, DAY + timedelta(days=2) + settle)
    assert summary.computed_from == DAY + timedelta(days=1)  # only the second day loaded
    [month] = conn.execute(
        "SELECT supply, sales, loss, rate, coverage, status, present, expected,"
        " supply_present, supply_expected FROM lineloss"
        " WHERE level = 'area' AND period = 'month' AND name = 'a-01'"
    ).fetchall()
    # 192 intervals: supply 192 × 40 = 7680, sales 192 × 36 = 6912, loss 768, rate 10 %;
    # meter-intervals present of expected: supply 192 + members 2 × 192 = 576; supply 192
    assert month == (7680, 6912, 768, 10, 1, "normal", 576, 576, 192, 192)
    days = rows(conn, period="day")
    assert [(d[0], d[1], d[3]) for d in days] == [
        (DAY, 3840, 384),
        (DAY + timedelta(days=1), 3840, 384),
    ]
