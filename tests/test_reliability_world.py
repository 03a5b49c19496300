"""World outages → the records devices make → events → the job → indices equal to the
world's ground truth (simulators/world/outages.py computes it from the outages directly)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from analytics.reliability_job import ReliabilityPolicy, run_reliability
from analytics.reliability_store import add_notice
from gridread.inventory import parse_inventory, store_inventory
from ingest.events import store_events
from ingest.model import Event
from simulators.world import WorldSpec, build_world
from simulators.world.outages import OutageSpec, OutageTruth, simulate_outages

TZ = "Asia/Shanghai"
START = datetime(2026, 10, 31, 16, tzinfo=UTC)  # local midnight of 1 November
POLICY = ReliabilityPolicy(timezone=TZ)
NOW = START + timedelta(days=400)


def store(conn, jitter: int) -> OutageTruth:
    world = build_world(
        WorldSpec(seed=3, start=START, days=1, feeders=2, areas_per_feeder=3, meters_per_area=25)
    )
    truth = simulate_outages(world, OutageSpec(seed=4, days=365, clock_jitter_s=jitter))
    inv = parse_inventory(
        world.inventory(area_totals="local"), source="world", base_dir=Path("."), timezone=TZ
    )
    ids = store_inventory(conn, inv, actor="test")
    store_events(
        conn,
        [
            Event(
                ids[r.device],
                datetime.fromtimestamp(r.start, UTC),
                r.kind,
                {"end": None if r.end is None else datetime.fromtimestamp(r.end, UTC).isoformat()},
            )
            for r in truth.records
        ],
    )
    for n in truth.notices:
        add_notice(conn, n.scope, n.name, n.kind, n.start, n.end)
    return truth


def rows(conn) -> list[dict]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM reliability_indices ORDER BY level, name, start").fetchall()


def check(conn, truth: OutageTruth, minutes_per_interruption: float) -> int:
    """Every stored index row against the truth over the same group and period."""
    checked = 0
    for row in rows(conn):
        lo = int(row["start"].timestamp())
        hi = lo + round(row["hours"] * 3600)
        want = truth.indices(row["level"], lo, hi, POLICY.threshold_s)[row["name"]]
        assert (row["customers"], row["sustained"], row["momentary"], row["open"]) == (
            want["N"],
            want["sustained"],
            want["momentary"],
            0,
        ), row
        # float sums in another order: 1e-9 relative; clocks: the slack per interruption
        slack = minutes_per_interruption * row["sustained"] + 1e-9 * max(want["cmi"], 1)
        assert row["customer_minutes"] == pytest.approx(want["cmi"], abs=slack)
        assert row["minutes_rs3"] == pytest.approx(want["cmi3"], abs=slack)
        n = want["N"]
        assert row["saifi"] == pytest.approx(want["saifi"])
        assert row["maifi"] == pytest.approx(want["maifi"])
        assert row["saidi"] == pytest.approx(want["saidi"], abs=slack / n + 1e-9)
        assert row["asai"] == pytest.approx(
            want["asai"], abs=1e-9 + slack / (n * 60 * row["hours"])
        )
        assert row["rs3"] == pytest.approx(
            want["rs3"], abs=1e-7 + 100 * slack / (n * 60 * row["hours"])
        )
        checked += 1
    return checked


def test_indices_equal_the_ground_truth(migrated_url: str):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        truth = store(conn, jitter=0)
        summary = run_reliability(conn, POLICY, NOW)
        assert summary.years == [2026, 2027]
        assert summary.unplaced == 0 and summary.refused == 0 and summary.open == 0
        kinds = {o.kind for o in truth.outages}
        assert kinds == {"unplanned", "planned", "limited"}
        assert any(r.end is None for r in truth.records)  # lost power-ups, closed by others
        # every customer interruption of the truth, once
        total = conn.execute("SELECT sum(customers) FROM interruptions").fetchone()[0]
        assert total == sum(len(a) for a in truth.affected)
        # 11 groups (8 areas, 2 feeders, the system) × 2 years of (12 months + the year)
        assert check(conn, truth, minutes_per_interruption=0.0) == 11 * 26


def test_indices_with_meter_clocks_off_by_seconds(migrated_url: str):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        truth = store(conn, jitter=10)
        run_reliability(conn, POLICY, NOW)
        # counts exact; each customer's minutes off by at most its clock's 2 × 10 s
        assert check(conn, truth, minutes_per_interruption=20 / 60) == 11 * 26
