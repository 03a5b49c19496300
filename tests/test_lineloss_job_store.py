"""The analytics store against a real PostgreSQL: topology in force per interval from the
migration-7 tables, registers by binary COPY, results upserted (NaN stored as NULL)."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from analytics import pgbinary
from analytics.lineloss import LossResult
from analytics.store import ROLES, AnalyticsStore, Grid
from tests.lineloss_fixture import DAY, Q, device, grid, place, registers

START = int(DAY.timestamp())


@pytest.fixture
def conn(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def test_binary_copy_round_trip_without_a_row_loop():
    cols = [
        (np.array([1, -2, 70000], dtype=np.int32), "int4"),
        (np.array([0, 1, 1 << 40]), "int8"),
        (np.array([0.5, np.nan, -1e300]), "float8"),
    ]
    back = pgbinary.decode(pgbinary.encode(cols), ["int4", "int8", "float8"])
    for (want, _), got in zip(cols, back, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(pgbinary.CopyFormatError, match="signature"):
        pgbinary.decode(b"nonsense", ["int4"])


def test_topology_in_force_per_interval(conn):
    ids = grid(conn)
    total = device(conn, "a-01-total")
    c1 = device(conn, "c1", commissioned=DAY + 2 * Q)  # expected from interval 2 on
    c2 = device(conn, "c2")
    c2r = device(conn, "c2r")
    head = device(conn, "f-01-head")
    place(conn, total, "area_total", area=ids["a-01"], ct=80)
    # multiplier 1 → 5 from interval 3's start
    place(conn, c1, "customer", area=ids["a-01"], valid_to=DAY + 3 * Q)
    place(conn, c1, "customer", area=ids["a-01"], ct=5, valid_from=DAY + 3 * Q)
    # replaced at 10 minutes into interval 1: both are members of interval 1
    place(conn, c2, "customer", area=ids["a-01"], valid_to=DAY + Q + 600 * Q / Q.seconds)
    place(conn, c2r, "customer", area=ids["a-01"], valid_from=DAY + Q + 600 * Q / Q.seconds)
    place(conn, head, "feeder_head", feeder=ids["f-01"], ct=20, pt=100)
    conn.execute(
        "INSERT INTO meter_replacements (old_device_id, new_device_id, at, old_final, new_first)"
        " VALUES (%s, %s, %s, 12.5, 0)",
        (c2, c2r, DAY + Q + Q * 600 / Q.seconds),
    )
    topo = AnalyticsStore(conn).topology(Grid(START, 900, 4))
    rows = {name: i for i, name in enumerate(topo.device_names)}
    assert topo.area_names == ["a-01", "d-01"]
    assert topo.feeder_names == ["f-01"]
    np.testing.assert_array_equal(topo.multiplier[rows["a-01-total"]], [80] * 4)
    np.testing.assert_array_equal(topo.multiplier[rows["c1"]], [1, 1, 1, 5])
    np.testing.assert_array_equal(topo.expected[rows["c1"]], [False, False, True, True])
    np.testing.assert_array_equal(topo.expected[rows["c2"]], [True, True, False, False])
    np.testing.assert_array_equal(topo.expected[rows["c2r"]], [False, True, True, True])
    np.testing.assert_array_equal(topo.multiplier[rows["f-01-head"]], [2000] * 4)
    assert set(topo.role[rows["f-01-head"]]) == {ROLES.index("feeder_head")}
    assert set(topo.feeder[rows["f-01-head"]]) == {0}
    assert set(topo.area[rows["c2r"], 1:]) == {0}
    [rep] = topo.replacements
    assert (rep.old, rep.new, rep.at) == (rows["c2"], rows["c2r"], START + 900 + 600)
    assert (rep.old_final, rep.new_first) == (12.5, 0.0)


def test_registers_by_copy_aligned_and_pinned(conn):
    ids = grid(conn)
    old, new = device(conn, "old"), device(conn, "new")
    at = DAY + Q + Q / 3  # 5 minutes into interval 1
    place(conn, old, "customer", area=ids["a-01"], valid_to=at)
    place(conn, new, "customer", area=ids["a-01"], valid_from=at)
    conn.execute(
        "INSERT INTO meter_replacements (old_device_id, new_device_id, at, old_final, new_first)"
        " VALUES (%s, %s, %s, 101.0, 3.0)",
        (old, new, at),
    )
    registers(conn, old, [100.0, 100.5])  # removed at 101.0
    registers(conn, new, [None, None, 3.25, 3.5])  # fitted at 3.0
    store = AnalyticsStore(conn)
    topo = store.topology(Grid(START, 900, 3))
    regs = store.registers(topo, tolerance=0)
    rows = {name: i for i, name in enumerate(topo.device_names)}
    np.testing.assert_array_equal(regs[rows["old"]], [100.0, 100.5, 101.0, 101.0])
    np.testing.assert_array_equal(regs[rows["new"]], [3.0, 3.0, 3.25, 3.5])
    # interval 1: (101.0 − 100.5) from the old meter + (3.25 − 3.0) from the new = 0.75


def test_write_lineloss_upserts_and_stores_nan_as_null(conn):
    store = AnalyticsStore(conn)
    starts = np.array([START, START + 900])
    nan = np.nan
    args = dict(level="area", period="15min", names=["a-01", "a-02"], starts=starts)
    n = store.write_lineloss(
        **args,
        result=_result(
            supply=[[10.0, 10.0], [nan, 5.0]],
            sales=[[9.0, 9.5], [4.0, 4.0]],
            loss=[[1.0, 0.5], [nan, 1.0]],
            rate=[[10.0, 5.0], [nan, 20.0]],
            coverage=[[1.0, 1.0], [0.5, 1.0]],
            status=[[2, 2], [0, 3]],
            present=[[2, 2], [0, 2]],
            expected=[[2, 2], [2, 2]],
            supply_present=[[1, 1], [1, 1]],
            supply_expected=[[1, 1], [1, 1]],
        ),
    )
    assert n == 4
    store.write_lineloss(
        **{**args, "names": ["a-01"], "starts": starts[:1]},
        result=_result(
            supply=[[10.0]],
            sales=[[10.5]],
            loss=[[-0.5]],
            rate=[[-5.0]],
            coverage=[[1.0]],
            status=[[1]],
            present=[[2]],
            expected=[[2]],
            supply_present=[[1]],
            supply_expected=[[1]],
        ),
    )
    got = conn.execute(
        "SELECT name, start, supply, loss, rate, coverage, status FROM lineloss"
        " ORDER BY name, start"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in got] == [
        ("a-01", DAY, 10.0, -0.5, -5.0, 1.0, "negative"),
        ("a-01", DAY + Q, 10.0, 0.5, 5.0, 1.0, "normal"),
        ("a-02", DAY, None, None, None, 0.5, "not_computable"),
        ("a-02", DAY + Q, 5.0, 1.0, 20.0, 1.0, "high"),
    ]
    # the sums and counts read back as stored, for a month summed from its days
    sums = store.stored_sums(
        level="area", period="15min", names=["a-02", "a-01", "a-09"], starts=starts
    )
    np.testing.assert_array_equal(sums["supply"], [[nan, 5.0], [10.0, 10.0], [nan, nan]])
    np.testing.assert_array_equal(sums["sales"], [[4.0, 4.0], [10.5, 9.5], [0, 0]])
    np.testing.assert_array_equal(sums["present"], [[0, 2], [2, 2], [0, 0]])
    np.testing.assert_array_equal(sums["supply_expected"], [[1, 1], [1, 1], [0, 0]])


def _result(**arrays) -> LossResult:
    return LossResult(**{k: np.array(v) for k, v in arrays.items()})


def test_a_daily_frozen_register_stands_in_for_a_missing_curve_point(conn):
    """A concentrator uploads a day's curve once a day: the point at the midnight that ends
    the day comes with the next day's upload, but the day's frozen register (1.8.0*d, stored
    at that midnight) is the same register at the same instant, so the day's last interval
    need not wait."""
    ids = grid(conn)
    meter = device(conn, "m")
    place(conn, meter, "customer", area=ids["a-01"])
    registers(conn, meter, [10.0, 10.5, None, 12.0])  # boundary 2 missing from the curve
    conn.execute(  # the frozen register at boundary 2; one at boundary 3 must not override
        "INSERT INTO readings (device_id, quantity, ts, value, quality) VALUES"
        " (%s, '1.8.0*d', %s, 11.25, 0), (%s, '1.8.0*d', %s, 99.0, 0)",
        (meter, DAY + 2 * Q, meter, DAY + 3 * Q),
    )
    store = AnalyticsStore(conn)
    topo = store.topology(Grid(START, 900, 3))
    regs = store.registers(topo, tolerance=0)
    row = list(topo.device_names).index("m")
    # the curve wins where it has the point; the frozen register fills only the gap
    np.testing.assert_array_equal(regs[row], [10.0, 10.5, 11.25, 12.0])
