"""The VEE job and the validated_reads table against a real PostgreSQL.

Two local days (Asia/Shanghai) from DAY, 96 intervals each; meter m1's register is
100 + k at boundary k (1 kWh every interval), frozen 100, 196, 292, TOU registers a quarter
of the total each. Punched in: boundaries 10, 11, 12 missing (a gap of 3 ≤ 4: linear,
each estimate 1 kWh); boundary 50 read as −4e23 and flagged SUSPECT at ingest (replaced
linearly by 150). Meter m2: the same profile, but its frozen register at the end of day 1
says 300 (the profile says 292: 8 kWh off → day 1 fails the sum-check).
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from analytics.vee import Rule
from analytics.vee_job import JOB, VeeJobPolicy, run_vee
from analytics.vee_store import EditError, edit_read
from ingest.schema import ensure_partitions
from tests.lineloss_fixture import DAY, Q, device

POLICY = VeeJobPolicy(timezone="Asia/Shanghai", settle_s=1800, meter_chunk=1)  # 2 chunks
NOW = DAY + timedelta(days=2, seconds=1800)
D = timedelta(days=1)


@pytest.fixture
def conn(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def put(conn, dev: int, quantity: str, ts, value: float, quality: int = 0) -> None:
    ensure_partitions(conn, {ts.date()})
    conn.execute(
        "INSERT INTO readings (device_id, quantity, ts, value, quality)"
        " VALUES (%s, %s, %s, %s, %s)",
        (dev, quantity, ts, value, quality),
    )


def meter(conn, name: str, frozen: list[float]) -> int:
    dev = device(conn, name)
    rows = [(dev, "1.8.0", DAY + k * Q, 100.0 + k, 0) for k in range(193) if k not in (10, 11, 12)]
    rows = [(d, q, t, -4e23, 4) if t == DAY + 50 * Q else (d, q, t, v, f) for d, q, t, v, f in rows]
    for d, f in enumerate(frozen):
        rows.append((dev, "1.8.0*d", DAY + d * D, f, 0))
        for k in range(1, 5):
            rows.append((dev, f"1.8.{k}*d", DAY + d * D, f / 4, 0))
    ensure_partitions(conn, {r[2].date() for r in rows})
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, quantity, ts, value, quality)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    return dev


def current(conn, dev: int, quantity: str = "1.8.0") -> dict:
    rows = conn.execute(
        "SELECT ts, value, method, rules, valid, version FROM validated_reads"
        " WHERE device_id = %s AND quantity = %s AND current ORDER BY ts",
        (dev, quantity),
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_job_validates_estimates_and_versions(conn):
    m1 = meter(conn, "m1", [100, 196, 292])
    m2 = meter(conn, "m2", [100, 196, 300])
    summary = run_vee(conn, POLICY, NOW)
    assert [str(d) for d in summary.days] == ["2026-11-10", "2026-11-11"]
    # (192 intervals + 3 × 5 frozen registers) × 2 meters
    assert summary.rows == (192 + 15) * 2

    v1 = current(conn, m1)
    assert len(v1) == 192 and all(v[0] == pytest.approx(1.0) for v in v1.values())
    assert all(v[3] for v in v1.values())  # all validated
    gap = [v1[DAY + k * Q] for k in (9, 10, 11, 12)]  # intervals touching boundaries 10…12
    assert all(g[1] == "estimated" and g[2] == Rule.GAP | Rule.LINEAR for g in gap)
    assert v1[DAY + 49 * Q][1:3] == ("estimated", Rule.SUSPECT | Rule.LINEAR)
    assert v1[DAY + 8 * Q][1:3] == ("actual", 0)
    f1 = current(conn, m1, "1.8.0*d")
    assert [v[0] for v in f1.values()] == [100, 196, 292] and all(v[3] for v in f1.values())
    assert [v[0] for v in current(conn, m1, "1.8.3*d").values()] == [25, 49, 73]

    v2 = current(conn, m2)
    day1 = [v2[DAY + D + k * Q] for k in range(96)]
    assert all(not v[3] and v[2] & Rule.SUM_CHECK for v in day1)  # |300 − 196 − 96| = 8
    assert all(v2[DAY + k * Q][3] for k in range(96))  # day 0 passes
    assert [v[3] for v in current(conn, m2, "1.8.0*d").values()] == [True, True, False]

    # again: nothing changed, nothing written
    assert run_vee(conn, POLICY, NOW).rows == 0
    (done,) = conn.execute(
        "SELECT done_until FROM analytics_watermarks WHERE job = %s", (JOB,)
    ).fetchone()
    assert done == DAY + 2 * D

    # a late re-read of m1's boundary 11 = 111.5: boundary 10 = 109 + (111.5 − 109)/2 =
    # 110.25, boundary 12 = 111.5 + (113 − 111.5)/2 = 112.25 → intervals 9…12: 1.25, 1.25,
    # 0.75, 0.75; new versions (2) for those four intervals, version 1 kept
    put(conn, m1, "1.8.0", DAY + 11 * Q, 111.5, 8)
    assert run_vee(conn, POLICY, NOW).rows == 4
    v1 = current(conn, m1)
    assert [v1[DAY + k * Q][0] for k in (9, 10, 11, 12)] == pytest.approx([1.25, 1.25, 0.75, 0.75])
    assert v1[DAY + 9 * Q][4] == 2
    old = conn.execute(
        "SELECT value, current FROM validated_reads WHERE device_id = %s AND quantity = '1.8.0'"
        " AND ts = %s AND version = 1",
        (m1, DAY + 9 * Q),
    ).fetchone()
    assert old == (pytest.approx(1.0), False)


def test_edit_is_versioned_audited_and_kept_by_the_job(conn):
    m2 = meter(conn, "m2", [100, 196, 300])
    run_vee(conn, POLICY, NOW)
    ts = DAY + D  # m2's frozen register at the end of day 0 is fine; edit the one at day 2
    with pytest.raises(EditError, match="reason"):
        edit_read(conn, device_id=m2, quantity="1.8.0*d", ts=ts + D, value=292, actor="li",
                  reason=" ")  # fmt: skip
    with pytest.raises(EditError, match="no validated read"):
        edit_read(conn, device_id=m2, quantity="1.8.0*d", ts=ts + 5 * D, value=1, actor="li",
                  reason="x")  # fmt: skip
    with pytest.raises(EditError, match="finite"):
        edit_read(conn, device_id=m2, quantity="1.8.0*d", ts=ts + D, value=float("nan"),
                  actor="li", reason="x")  # fmt: skip
    out = edit_read(conn, device_id=m2, quantity="1.8.0*d", ts=ts + D, value=292, actor="li",
                    reason="meter display photographed on site")  # fmt: skip
    assert out["version"] == 2
    f = current(conn, m2, "1.8.0*d")
    assert f[ts + D][:2] == (292, "edited") and f[ts + D][3]
    who = conn.execute(
        "SELECT edited_by, reason FROM validated_reads WHERE device_id = %s AND current"
        " AND quantity = '1.8.0*d' AND ts = %s",
        (m2, ts + D),
    ).fetchone()
    assert who == ("li", "meter display photographed on site")
    audit = conn.execute(
        "SELECT actor, action, entity, before->>'value', after->>'value' FROM audit_log"
        " WHERE entity = 'validated_read'"
    ).fetchall()
    assert audit == [("li", "edit", "validated_read", "300.0", "292.0")]
    # the job leaves the edit alone, and checks the day against it: 292 − 196 = 96 = Σ the
    # day's intervals, so they pass the sum-check now (new versions, valid)
    v2 = current(conn, m2)
    assert not any(v2[ts + k * Q][3] for k in range(96))
    run_vee(conn, POLICY, NOW)
    assert current(conn, m2, "1.8.0*d")[ts + D][:2] == (292, "edited")
    v2 = current(conn, m2)
    assert all(v2[ts + k * Q][3] and v2[ts + k * Q][4] == 2 for k in range(96))
