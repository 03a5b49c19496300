"""The reliability job on a real database: events → interruptions and indices, by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from analytics.reliability_job import ReliabilityPolicy, run_reliability
from analytics.reliability_store import add_notice
from ingest.events import store_events
from ingest.model import Event
from tests.lineloss_fixture import device, grid, place

TZ = "Asia/Shanghai"
POLICY = ReliabilityPolicy(timezone=TZ)
NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)  # 2026-12-05 12:00 local


def local(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """2026-11-<day> hh:mm:ss Asia/Shanghai (UTC+8) as UTC."""
    return datetime(2026, 11, day, hh - 8, mm, ss, tzinfo=UTC)


def other_device(conn, name: str, kind: str, attributes: dict) -> int:
    return conn.execute(
        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
        " VALUES (%s, %s, 'mqtt', 'mqtt', 600, %s) RETURNING id",
        (name, kind, Jsonb(attributes)),
    ).fetchone()[0]


def down(dev: int, start: datetime, end: datetime | None, kind: str = "power_down") -> Event:
    return Event(dev, start, kind, {"end": end.isoformat() if end else None})


@pytest.fixture
def site(migrated_url: str):
    """f-01 → a-01 (public: total meter, customers c1..c4) and d-01 (dedicated: its total
    meter is its one customer): 5 customers. A concentrator in a-01, a monitor on f-01."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        g = grid(conn)
        ids = {}
        for name in ("c1", "c2", "c3", "c4"):
            ids[name] = device(conn, name)
            place(conn, ids[name], "customer", area=g["a-01"])
        ids["a-total"] = device(conn, "a-total")
        place(conn, ids["a-total"], "area_total", area=g["a-01"])
        ids["d-total"] = device(conn, "d-total")
        place(conn, ids["d-total"], "area_total", area=g["d-01"])
        ids["jzq"] = other_device(conn, "jzq", "concentrator", {"area": "a-01"})
        ids["vm"] = other_device(conn, "vm", "voltage_monitor", {"feeder": "f-01"})
        ids["stray"] = device(conn, "stray")  # placed nowhere
        store_events(
            conn,
            [
                # 11-10 10:00–11:00: the concentrator reports a-01 out (4 customers × 60 min);
                # c1's own power-down 20 s later has no power-up: closed by the report
                down(ids["jzq"], local(10, 10), local(10, 11), "outage"),
                down(ids["c1"], local(10, 10, 0, 20), None),
                # 11-12 08:00–08:02: d-01's customer, momentary (2 min < 5)
                down(ids["d-total"], local(12, 8), local(12, 8, 2)),
                # 11-15 09:00: c2 down, power-up never recorded: open
                down(ids["c2"], local(15, 9), None),
                # 11-20 08:00–10:00: the monitor sees f-01 dead (5 customers × 120 min), planned
                down(ids["vm"], local(20, 8), local(20, 10), "voltage_loss"),
                down(ids["stray"], local(21, 8), local(21, 9)),
            ],
        )
        conn.execute(
            'INSERT INTO outage_notices (scope, name, kind, start, "end")'
            " VALUES ('feeder', 'f-01', 'planned', %s, %s)",
            (local(20, 8), local(20, 12)),
        )
        yield conn, ids


def indices(conn, level: str, name: str, period: str, start: datetime) -> dict:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT * FROM reliability_indices WHERE level = %s AND name = %s AND period = %s"
        " AND start = %s",
        (level, name, period, start),
    ).fetchone()


NOV = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 local


def test_job_interruptions_and_indices_by_hand(site):
    conn, _ = site
    s = run_reliability(conn, POLICY, NOW)
    assert s.years == [2026] and s.unplaced == 1 and s.refused == 0
    rows = conn.execute(
        'SELECT area, start, "end", customers, open, customer_minutes, kind, momentary'
        " FROM interruptions ORDER BY start, area"
    ).fetchall()
    assert rows == [
        ("a-01", local(10, 10), local(10, 11), 4, 0, 240.0, "unplanned", False),
        ("d-01", local(12, 8), local(12, 8, 2), 1, 0, 2.0, "unplanned", True),
        ("a-01", local(15, 9), None, 1, 1, 0.0, "unplanned", False),
        ("a-01", local(20, 8), local(20, 10), 4, 0, 480.0, "planned", False),
        ("d-01", local(20, 8), local(20, 10), 1, 0, 120.0, "planned", False),
    ]
    # system, November (720 h), N = 5: sustained 4 + 5 = 9; minutes 240 + 600 = 840
    sysm = indices(conn, "system", "system", "month", NOV)
    assert (sysm["customers"], sysm["sustained"], sysm["momentary"], sysm["open"]) == (5, 9, 1, 1)
    assert sysm["hours"] == 720
    assert sysm["saifi"] == pytest.approx(9 / 5)
    assert sysm["saidi"] == pytest.approx(840 / 5)
    assert sysm["caidi"] == pytest.approx(840 / 9)
    assert sysm["maifi"] == pytest.approx(1 / 5)
    assert sysm["asai"] == pytest.approx(1 - 840 / (5 * 720 * 60))
    assert sysm["rs1"] == pytest.approx(100 * (1 - 840 / (5 * 720 * 60)))
    # RS-3 leaves out the planned 600 customer minutes
    assert sysm["rs3"] == pytest.approx(100 * (1 - 240 / (5 * 720 * 60)))
    # a-01 (N 4): 240 + 480 minutes → SAIDI 180; d-01 (N 1): 120, one momentary
    a = indices(conn, "area", "a-01", "month", NOV)
    assert (a["sustained"], a["open"], a["saidi"]) == (8, 1, pytest.approx(180.0))
    d = indices(conn, "area", "d-01", "month", NOV)
    assert (d["sustained"], d["momentary"], d["saidi"]) == (1, 1, pytest.approx(120.0))
    # the system's SAIDI is customer-weighted, not 180 + 120
    f = indices(conn, "feeder", "f-01", "month", NOV)
    assert f["saidi"] == pytest.approx(168.0)
    # the year so far: 2026-01-01 00:00 local up to now
    year = indices(conn, "system", "system", "year", datetime(2025, 12, 31, 16, tzinfo=UTC))
    hours = (NOW - datetime(2025, 12, 31, 16, tzinfo=UTC)).total_seconds() / 3600
    assert year["hours"] == pytest.approx(hours)
    assert year["saidi"] == pytest.approx(168.0)
    assert year["asai"] == pytest.approx(1 - 840 / (5 * hours * 60))
    # a month without interruptions: SAIFI 0, CAIDI undefined
    oct_ = indices(conn, "system", "system", "month", datetime(2026, 9, 30, 16, tzinfo=UTC))
    assert oct_["saifi"] == 0 and oct_["caidi"] is None


def test_job_is_incremental_and_takes_late_events(site):
    conn, ids = site
    assert run_reliability(conn, POLICY, NOW).years == [2026]
    again = run_reliability(conn, POLICY, NOW)
    assert again.years == [] and again.rows == 0
    # a late-read power-down record of c3, 11-25 10:00–10:30
    store_events(conn, [down(ids["c3"], local(25, 10), local(25, 10, 30))])
    late = run_reliability(conn, POLICY, NOW)
    assert late.years == [2026] and "new or changed events" in late.reasons
    sysm = indices(conn, "system", "system", "month", NOV)
    assert (sysm["sustained"], sysm["customer_minutes"]) == (10, pytest.approx(870.0))
    n = conn.execute("SELECT count(*) FROM interruptions").fetchone()[0]
    assert n == 6  # replaced, not added twice


def test_notice_of_a_removed_area_is_reported_not_used(site):
    conn, _ = site
    conn.execute(
        'INSERT INTO outage_notices (scope, name, kind, start, "end")'
        " VALUES ('area', 'gone', 'limited', %s, %s)",
        (local(10, 9), local(10, 12)),
    )
    s = run_reliability(conn, POLICY, NOW)
    assert any("area gone" in r for r in s.reasons)
    kind = conn.execute("SELECT kind FROM interruptions WHERE start = %s", (local(10, 10),))
    assert kind.fetchone() == ("unplanned",)


def test_add_notice_refuses_bad_input(site):
    conn, _ = site
    with pytest.raises(ValueError, match="no area named 'nowhere'"):
        add_notice(conn, "area", "nowhere", "planned", local(1, 9), local(1, 10))
    with pytest.raises(ValueError, match="not after start"):
        add_notice(conn, "feeder", "f-01", "planned", local(1, 10), local(1, 9))
    with pytest.raises(ValueError, match="kind 'maybe' not known"):
        add_notice(conn, "area", "a-01", "maybe", local(1, 9), local(1, 10))


def test_records_not_usable_are_counted_not_used(site):
    conn, ids = site
    store_events(
        conn,
        [
            down(ids["c3"], local(22, 10), local(22, 9)),  # ends before it starts
            down(ids["c4"], local(23, 10), local(23, 11), "outage"),  # a group kind, a meter
        ],
    )
    s = run_reliability(conn, POLICY, NOW)
    assert (s.unplaced, s.refused) == (1 + 1, 1)  # the stray device's and c4's; c3's
    got = conn.execute("SELECT count(*) FROM interruptions WHERE start >= %s", (local(22, 8),))
    assert got.fetchone() == (0,)


def test_momentary_threshold_and_rs3_kinds_are_settings(site):
    conn, _ = site
    # threshold 60 s: d-01's 2-minute interruption is sustained; RS-3 leaving out only the
    # limited kind counts the planned 600 minutes: 240 + 600 + 2 = 842
    policy = ReliabilityPolicy(timezone=TZ, threshold_s=60, rs3_excludes=("limited",))
    run_reliability(conn, policy, NOW)
    sysm = indices(conn, "system", "system", "month", NOV)
    assert (sysm["sustained"], sysm["momentary"]) == (10, 0)
    assert sysm["customer_minutes"] == pytest.approx(842.0)
    assert sysm["minutes_rs3"] == pytest.approx(842.0)
    assert sysm["rs3"] == pytest.approx(sysm["rs1"])
