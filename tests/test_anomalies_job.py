"""The abnormal-readings job against a real PostgreSQL: topology and readings inserted with
plain SQL, the worklist read back from anomaly_cases.

Site (Asia/Shanghai): f-01 → a-01 (public) with its total meter and customers c1, c2, c3;
four local days from DAY, 15-min registers (1.8.0), phase-A voltages (32.7.0) at 230 V.
- c1 advances 0.25 kWh per interval, then stops from day 2 (register flat, voltage on):
  stopped (weight 8 in the rules file) → a 'stopped' case since day 2 00:00 local;
- c2's import register stands still from day 1 while its export register (2.8.0) gains
  0.25 per interval: reverse energy (weight 9) → a 'reverse_wiring' case; its import is flat
  from day 1 too, but the stopped rule leaves intervals with export alone;
- c3 advances normally and has one cover_open event: weight 1.5 < min_score 2 → no case.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import psycopg
import pytest

from analytics.anomaly_job import JOB, AnomalyPolicy, run_anomalies
from analytics.jobs import LineLossPolicy
from analytics.store import AnalyticsStore
from ingest.schema import ensure_partitions
from tests.lineloss_fixture import DAY, Q, device, grid, place

DAYS = 4
T = DAYS * 96
LP = LineLossPolicy(timezone="Asia/Shanghai", settle_s=1800)
POLICY = AnomalyPolicy.from_file(LP, days=DAYS)
NOW = DAY + timedelta(days=DAYS, seconds=1800)


@pytest.fixture
def conn(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def put(conn, device_id: int, quantity: str, values: np.ndarray) -> None:
    rows = [(device_id, quantity, DAY + k * Q, float(v)) for k, v in enumerate(values)]
    ensure_partitions(conn, {r[2].date() for r in rows})
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, quantity, ts, value) VALUES (%s, %s, %s, %s)", rows
        )


def site(conn) -> dict[str, int]:
    ids = grid(conn)
    dev = {n: device(conn, n) for n in ("a-01-total", "c1", "c2", "c3")}
    place(conn, dev["a-01-total"], "area_total", area=ids["a-01"], valid_from=DAY)
    for c in ("c1", "c2", "c3"):
        place(conn, dev[c], "customer", area=ids["a-01"], valid_from=DAY)
    k = np.arange(T + 1)
    c1 = 100 + 0.25 * np.minimum(k, 2 * 96)  # stops at day 2
    c2 = 200 + 0.25 * np.minimum(k, 96)  # import frozen from day 1 …
    c2_export = 0.25 * np.maximum(k - 96, 0)  # … export rising instead
    c3 = 300 + 0.3 * k
    total = 1000 + (0.25 + 0.25 + 0.3) * 1.05 * k  # what all three really draw, plus 5 %
    for name, reg in (("a-01-total", total), ("c1", c1), ("c2", c2), ("c3", c3)):
        put(conn, dev[name], "1.8.0", reg)
        put(conn, dev[name], "32.7.0", np.full(T + 1, 230.0))
    put(conn, dev["c2"], "2.8.0", c2_export)
    conn.execute(
        "INSERT INTO events (device_id, ts, kind) VALUES (%s, %s, 'cover_open')",
        (dev["c3"], DAY + timedelta(days=1, hours=3)),
    )
    return dev


def cases(conn):
    return conn.execute(
        "SELECT d.name, c.kind, c.status, c.since, c.rank, c.score, c.evidence"
        " FROM anomaly_cases c JOIN devices d ON d.id = c.device_id ORDER BY d.name, c.kind"
    ).fetchall()


def test_job_opens_ranked_cases_with_evidence_and_refreshes_them(conn):
    site(conn)
    store = AnalyticsStore(conn)
    assert run_anomalies(store, POLICY, NOW) == 2
    got = cases(conn)
    assert [(r[0], r[1], r[2]) for r in got] == [
        ("c1", "stopped", "open"),
        ("c2", "reverse_wiring", "open"),
    ]
    c1, c2 = got
    assert c1[3] == DAY + timedelta(days=2)  # the first interval with no advance
    assert c2[3] == DAY + timedelta(days=1)
    # ranked within a-01 by score: reverse (9 + …) above stopped (8 + …)
    assert c2[4] == 1 and c1[4] == 2 and c2[5] > c1[5]
    assert c1[6]["stopped"]["intervals"] == 2 * 96 and c1[6]["stopped"]["severity"] == "high"
    assert c2[6]["reverse_energy"]["value"] == pytest.approx(0.25)
    assert "stopped" not in c2[6]  # export rising: not a stopped meter
    history = conn.execute("SELECT to_status, from_status FROM anomaly_case_history").fetchall()
    assert history == [("open", None), ("open", None)]
    # the same day again: nothing to do; the next day: the live cases are refreshed, not doubled
    assert run_anomalies(store, POLICY, NOW) == 0
    wm = conn.execute("SELECT done_until FROM analytics_watermarks WHERE job = %s", (JOB,))
    assert wm.fetchone()[0] == DAY + timedelta(days=DAYS)
    conn.execute("DELETE FROM analytics_watermarks WHERE job = %s", (JOB,))
    assert run_anomalies(store, POLICY, NOW) == 2
    assert len(cases(conn)) == 2


def test_a_false_positive_is_not_reopened_for_the_same_finding(conn):
    site(conn)
    store = AnalyticsStore(conn)
    run_anomalies(store, POLICY, NOW)
    conn.execute("UPDATE anomaly_cases SET status = 'false_positive' WHERE kind = 'stopped'")
    conn.execute("DELETE FROM analytics_watermarks WHERE job = %s", (JOB,))
    assert run_anomalies(store, POLICY, NOW) == 1  # only the reverse-wiring case, refreshed
    assert [(r[0], r[2]) for r in cases(conn)] == [("c1", "false_positive"), ("c2", "open")]


def test_no_topology_no_cases(conn):
    assert run_anomalies(AnalyticsStore(conn), POLICY, NOW) == 0
    assert cases(conn) == []
