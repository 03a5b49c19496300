"""The reliability job on a year of outage events for 100,000 customers, vs. loading those
events from the database in the same run.

A world of 20 feeders × 50 areas × 100 customers (simulators/world), a year of outages
(simulators/world/outages.py: about 28,000 outages, 1.1 million power-down and outage
records) stored as events with the topology and the outage notices (untimed, by COPY).

* baseline: the events the job reads for the year (binary COPY into arrays, as the job's
  loader does: `analytics.reliability_store.load_events`);
* job: `run_reliability` recomputing the year (load, merge per customer, classify,
  interruptions per area, indices per area / feeder / system × month / year, writes), the
  watermark removed before each repeat; and an incremental run with nothing new.
The year's system SAIDI and SAIFI are checked against the world's ground truth.

    python bench/reliability.py [--feeders 20] [--areas 50] [--customers 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.reliability_job import JOB, ReliabilityPolicy, run_reliability
from analytics.reliability_store import add_notice, load_events
from bench._common import bench_database
from ingest.schema import migrate
from simulators.world import WorldSpec, build_world
from simulators.world.outages import OutageSpec, simulate_outages

TZ = "Asia/Shanghai"
START = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 local
NOW = START + timedelta(days=365)  # 2027-01-01 00:00 local: the year complete


def store(conn: psycopg.Connection, world, truth) -> dict[str, int]:
    """Topology, devices, events and notices by COPY / plain SQL (no per-row audit)."""
    g = world.grid
    conn.execute("INSERT INTO substations (name, voltage_kv) VALUES ('sub-01', 35)")
    with conn.cursor() as cur:
        with cur.copy("COPY feeders (name, substation_id) FROM STDIN") as cp:
            for f in g.feeders:
                cp.write_row((f, 1))
        with cur.copy("COPY areas (name, feeder_id, kind, transformer_kva) FROM STDIN") as cp:
            for j, a in enumerate(g.areas):
                kind = "dedicated" if g.area_dedicated[j] else "public"
                cp.write_row((a, int(g.area_feeder[j]) + 1, kind, 400))
        devices = [*g.meters, *(f"{a}-jzq" for a in g.areas)]
        with cur.copy(
            "COPY devices (name, kind, protocol, endpoint, poll_interval, attributes) FROM STDIN"
        ) as cp:
            for m in g.meters:
                cp.write_row((m, "meter", "mqtt", "mqtt", 900, Jsonb({})))
            for a in g.areas:
                cp.write_row(
                    (f"{a}-jzq", "concentrator", "mqtt", "mqtt", 86400, Jsonb({"area": a}))
                )
        ids = dict(conn.execute("SELECT name, id FROM devices").fetchall())
        with cur.copy(
            "COPY metering_points (device_id, role, area_id, feeder_id, valid_from) FROM STDIN"
        ) as cp:
            for i, m in enumerate(g.meters):
                head = g.role[i] == "feeder_head"
                cp.write_row(
                    (
                        ids[m],
                        str(g.role[i]),
                        None if head else int(g.meter_area[i]) + 1,
                        int(g.meter_feeder[i]) + 1 if head else None,
                        "-infinity",
                    )
                )
        with cur.copy("COPY events (device_id, ts, kind, detail) FROM STDIN") as cp:
            for r in truth.records:
                end = None if r.end is None else datetime.fromtimestamp(r.end, UTC).isoformat()
                cp.write_row(
                    (
                        ids[r.device],
                        datetime.fromtimestamp(r.start, UTC),
                        r.kind,
                        Jsonb({"end": end}),
                    )
                )
    for n in truth.notices:
        add_notice(conn, n.scope, n.name, n.kind, n.start, n.end)
    conn.execute("ANALYZE")
    assert len(ids) == len(devices)
    return ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeders", type=int, default=20)
    ap.add_argument("--areas", type=int, default=50)
    ap.add_argument("--customers", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    world = build_world(
        WorldSpec(
            start=START,
            days=1,
            feeders=args.feeders,
            areas_per_feeder=args.areas,
            meters_per_area=args.customers,
            dedicated_per_feeder=0,
        )
    )
    truth = simulate_outages(world, OutageSpec(days=365))
    n_cust = len(truth.customers)
    policy = ReliabilityPolicy(timezone=TZ)
    cust_kinds, group_kinds = list(policy.customer_events), list(policy.group_events)
    lo, hi = int(START.timestamp()), int(NOW.timestamp())
    print(
        f"{n_cust:,} customers, {len(truth.outages):,} outages, {len(truth.records):,} events,"
        f" {len(truth.notices):,} notices"
    )
    with bench_database() as url, psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, timezone=TZ)
        t = time.perf_counter()
        store(conn, world, truth)
        print(f"stored in {time.perf_counter() - t:.1f} s (untimed)")
        base, job = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            dev, *_ = load_events(conn, cust_kinds, group_kinds, lo - policy.lookback_s, hi)
            base.append(time.perf_counter() - t)
            conn.execute("DELETE FROM analytics_watermarks WHERE job = %s", (JOB,))
            t = time.perf_counter()
            summary = run_reliability(conn, policy, NOW)
            job.append(time.perf_counter() - t)
        t = time.perf_counter()
        idle = run_reliability(conn, policy, NOW)
        t_idle = time.perf_counter() - t
        assert dev.size == len(truth.records) and 2026 in summary.years and not idle.years
        row = conn.execute(
            "SELECT saidi, saifi, open FROM reliability_indices WHERE level = 'system'"
            " AND period = 'year'"
        ).fetchone()
    want = truth.indices("system", lo, hi, policy.threshold_s)["system"]
    b, j = statistics.median(base), statistics.median(job)
    print(f"load the year's events (baseline): {b:.2f} s  ({dev.size / b:,.0f} events/s)")
    print(
        f"reliability job, the year:         {j:.2f} s  ({summary.interruptions:,} interruptions,"
        f" {summary.rows:,} index rows)"
    )
    print(f"ratio job / load: {j / b:.2f}")
    print(f"incremental run, nothing new:      {t_idle:.2f} s")
    print(
        f"system SAIDI {row[0]:.3f} min (truth {want['saidi']:.3f}), SAIFI {row[1]:.4f}"
        f" (truth {want['saifi']:.4f}), open {row[2]}"
    )


if __name__ == "__main__":
    main()
