"""The daily diagnostics job against a real PostgreSQL: 14 days of 15-min registers and
voltages of two synthetic areas with known faults, stored as readings.

a-01: six customers, c3 reads 3 % fast (class 1: flagged), the others exact (class 2);
      supply = Σ true consumption + 0.2 kWh fixed loss + 1e-4·S² per interval.
      m-x is placed in a-01 by the inventory but sits on a-02's transformer: its voltage
      follows a-02's, and its consumption is in a-02's supply.
a-02: three customers and m-x.
Registers are quantized to 0.01 kWh like a real register.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.diagnostics import DiagnosticsPolicy, accuracy_pct, bus_voltage, run_diagnostics
from analytics.jobs import AREA_TOTAL, CUSTOMER
from analytics.store import NONE, AnalyticsStore, Grid, Topology
from api.app import create_app
from ingest.schema import ensure_partitions
from tests.api_auth import credentials
from tests.lineloss_fixture import DAY, Q, device, grid, place
from tests.test_lineloss_job import POLICY

DAYS = 14
T = DAYS * 96
NOW = DAY + timedelta(days=DAYS, hours=1)  # the 14 local days from DAY are complete


def _loads(rng, n):
    t = np.arange(T)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    base = rng.uniform(2, 8, (n, 1))
    return base * (1 + 0.5 * np.sin(2 * np.pi * t / 96 + phase)) * rng.lognormal(0, 0.3, (n, T))


def _copy(conn, device_id, quantity, values, start):
    ts = [start + k * Q for k in range(len(values))]
    with (
        conn.cursor() as cur,
        cur.copy("COPY readings (device_id, quantity, ts, value) FROM STDIN") as copy,
    ):
        for when, v in zip(ts, values, strict=True):
            copy.write_row((device_id, quantity, when, float(v)))


@pytest.fixture
def conn(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as c:
        ensure_partitions(c, {(DAY + timedelta(days=d)).date() for d in range(-1, DAYS + 2)})
        yield c


def test_meter_errors_and_misassigned_meters_are_found(conn):
    rng = np.random.default_rng(7)
    ids = grid(conn)
    (a2,) = conn.execute(
        "INSERT INTO areas (name, feeder_id, transformer_kva) VALUES ('a-02', %s, 400)"
        " RETURNING id",
        (ids["f-01"],),
    ).fetchone()
    true1, true2, true_x = _loads(rng, 6), _loads(rng, 3), _loads(rng, 1)
    measured1 = true1.copy()
    measured1[2] *= 1.03  # c3 reads 3 % fast

    def supply(true):
        s = true.sum(axis=0)
        return s + 0.2 + 1e-4 * s**2

    s1, s2 = supply(true1), supply(np.vstack([true2, true_x]))
    # each transformer's LV voltage sags with its own load; plus independent noise per meter
    v1 = 235 - 0.05 * s1 + rng.normal(0, 0.3, T).cumsum() * 0.1
    v2 = 235 - 0.05 * s2 + rng.normal(0, 0.3, T).cumsum() * 0.1

    def meter(name, area, role, energy, volts, accuracy="2"):
        dev = device(conn, name)
        place(conn, dev, role, area=area, valid_from=DAY)
        conn.execute(
            "INSERT INTO meter_assets (device_id, accuracy_class) VALUES (%s, %s)",
            (dev, accuracy),
        )
        regs = np.round(1000 + np.concatenate([[0], np.cumsum(energy)]), 2)
        _copy(conn, dev, "1.8.0", regs, DAY)
        _copy(conn, dev, "32.7.0", volts + rng.normal(0, 0.2, T), DAY)
        return dev

    meter("a-01-total", ids["a-01"], "area_total", s1, v1, "0.5S")
    for i in range(6):
        meter(f"c{i + 1}", ids["a-01"], "customer", measured1[i], v1, "1" if i == 2 else "2")
    meter("a-02-total", a2, "area_total", s2, v2, "0.5S")
    for i in range(3):
        meter(f"b{i + 1}", a2, "customer", true2[i], v2)
    meter("m-x", ids["a-01"], "customer", true_x[0], v2)  # the inventory says a-01

    store = AnalyticsStore(conn)
    policy = DiagnosticsPolicy(lineloss=POLICY, days=DAYS)
    assert run_diagnostics(store, policy, NOW) > 0
    assert run_diagnostics(store, policy, NOW) == 0  # once per local day

    errors = {
        name: (err, flagged)
        for name, err, flagged in conn.execute(
            "SELECT d.name, e.error_pct, e.flagged FROM meter_errors e"
            " JOIN devices d ON d.id = e.device_id WHERE e.area IN ('a-01', 'a-02')"
        )
    }
    assert errors["c3"][0] == pytest.approx(3.0, abs=0.5)
    assert errors["c3"][1] is True
    for name in ("c1", "c2", "c4", "c5", "c6"):
        err, flagged = errors[name]
        assert err is not None and abs(err) < 0.5 and not flagged, (name, err)
    # a-02's supply holds m-x's consumption, which none of its inventory members measures:
    # its balance cannot be explained, so nothing is claimed about b1…b3
    assert [errors[f"b{i}"] for i in (1, 2, 3)] == [(None, False)] * 3

    flags = {
        name: (assigned, best, flagged)
        for name, assigned, best, flagged in conn.execute(
            "SELECT d.name, f.assigned_area, f.best_area, f.flagged FROM mapping_flags f"
            " JOIN devices d ON d.id = f.device_id"
        )
    }
    assert flags["m-x"] == ("a-01", "a-02", True)
    assert not any(flagged for name, (_, _, flagged) in flags.items() if name != "m-x")
    assert len(flags) == 10  # every customer of a public area checked

    with TestClient(
        create_app(conn.info.dsn, timezone="Asia/Shanghai"),
        headers=credentials(conn.info.dsn, "viewer"),
    ) as client:
        r = client.get("/analytics/mapping-flags")
        assert r.status_code == 200, r.text
        assert [(f["meter"], f["assigned_area"], f["best_area"]) for f in r.json()] == [
            ("m-x", "a-01", "a-02")
        ]
        assert r.json()[0]["best_corr"] > r.json()[0]["own_corr"] + 0.1
        r = client.get("/analytics/meter-errors", params={"flagged": True})
        assert [(e["meter"], e["area"]) for e in r.json()] == [("c3", "a-01")]
        assert r.json()[0]["ci_low"] > 1  # beyond its class 1 with confidence
        r = client.get("/analytics/meter-errors", params={"area": "a-02"})
        assert {e["meter"] for e in r.json()} == {"b1", "b2", "b3"}


def test_accuracy_classes_from_the_ledger():
    assert list(accuracy_pct(["0.5S", "2", "B", None, "weird", "0.2s"], 2.0)) == [
        0.5, 2.0, 1.0, 2.0, 2.0, 0.2,
    ]  # fmt: skip


def test_bus_voltage_is_each_public_area_totals_curve():
    # 3 intervals; area 0 public, area 1 dedicated (专变: no bus of a public area)
    # row 0: area 0's total, 230 / missing / 231
    # row 1: area 0's new total from interval 2 (a replacement: both placed), 233 there
    # row 2: a customer of area 0 (its voltage is no bus voltage)
    # row 3: area 1's total
    # → area 0's bus: 230, NaN (nothing reported), (231 + 233) / 2 = 232
    n, none = 4, NONE
    role = np.array([[AREA_TOTAL] * 3, [none, none, AREA_TOTAL], [CUSTOMER] * 3,
                     [AREA_TOTAL] * 3], dtype=np.int8)  # fmt: skip
    area = np.array([[0, 0, 0], [none, none, 0], [0, 0, 0], [1, 1, 1]], dtype=np.int32)
    topo = Topology(
        grid=Grid(0, 900, 3), device_ids=np.arange(n), device_names=list("abcd"), role=role,
        area=area, feeder=np.full((n, 3), none, dtype=np.int32),
        multiplier=np.ones((n, 3)), expected=role != none, area_names=["a-01", "d-01"],
        area_feeder=np.zeros(2, dtype=int), area_public=np.array([True, False]),
        area_kv=np.full(2, 0.4), feeder_names=["f-01"], feeder_kv=np.array([10.0]),
    )  # fmt: skip
    volts = np.array([[230.0, np.nan, 231.0], [np.nan, np.nan, 233.0],
                      [225.0, 226.0, 227.0], [240.0, 240.0, 240.0]])  # fmt: skip
    bus = bus_voltage(topo, ["a-01"], volts)
    np.testing.assert_array_equal(bus, [[230.0, np.nan, 232.0]])
