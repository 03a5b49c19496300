"""Power quality core on a day of data: gridread's numpy functions (analytics/power_quality.py)
on generated voltages, each timed alone (best of `--repeat`) against numpy's floor for the
same arrays: one pass of the two limit comparisons and a row sum (qualification), the plain
deviation formula (unbalance), a plain reshape-mean (10-min means).

* meters: M meters × 3 phases × 96 15-min voltages (1 % missing): `qualification` per row and
  `combine` into areas of 100 meters; `unbalance` of the three phases, by negative sequence
  (angles known) and by max deviation;
* monitors: K monitors × 1440 one-minute voltages: `qualification`, `ten_minute_means`,
  `weekly_compliance` of the day's means, `composite_rate` over classes A–D.

With ``--db N``: the job itself (`run_power_quality`) on one local day of N three-phase meters
(areas of 100; 15-min voltages and currents) and N/50 monitors (one-minute voltages) stored
in PostgreSQL (embedded unless GRIDREAD_BENCH_DATABASE_URL), against the time to COPY the same
readings out of the database (the loading the job cannot avoid).

    python bench/power_quality.py [--meters 100000] [--monitors 2000] [--repeat 3] [--db 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics import power_quality as pq


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--monitors", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", type=int, default=0, help="meters for the job through PostgreSQL")
    a = ap.parse_args(argv)
    if a.db:
        return job_bench(a.db)
    rng = np.random.default_rng(1)
    M, K = a.meters, a.monitors

    v3 = rng.normal(225.0, 8.0, (M, 96, 3))
    v3[rng.random(v3.shape) < 0.01] = np.nan
    rows = v3.transpose(0, 2, 1).reshape(3 * M, 96)
    ones = np.ones(3 * M)
    day = np.zeros(96, dtype=np.int64)
    area = np.repeat(np.arange(M // 100 + 1), 300)[: 3 * M]
    angles = np.broadcast_to(np.array([0.0, -120.0, 120.0]), v3.shape)
    q = pq.qualification(rows, 220 * ones, 7 * ones, -10 * ones, day, 1, 900)

    vm = rng.normal(222.0, 9.0, (K, 1440))
    mones = np.ones(K)
    minute = np.zeros(1440, dtype=np.int64)
    qm = pq.qualification(vm, 220 * mones, 7 * mones, -10 * mones, minute, 1, 60)
    means = pq.ten_minute_means(vm, 60)
    cls = rng.integers(0, 4, K)

    def floor_q(x):
        return ((x > 235.4) | (x < 198.0)).sum(axis=1)

    def floor_u(x):
        return np.abs(x - x.mean(axis=-1, keepdims=True)).max(axis=-1)

    results = [
        (f"qualification {3 * M:,} meter phases × 96", lambda: pq.qualification(
            rows, 220 * ones, 7 * ones, -10 * ones, day, 1, 900), lambda: floor_q(rows)),
        (f"combine into {M // 100:,} areas", lambda: pq.combine(q, area, M // 100 + 1), None),
        (f"unbalance, negative sequence, {M:,} × 96", lambda: pq.unbalance(v3, angles),
         lambda: floor_u(v3)),
        (f"unbalance, max deviation, {M:,} × 96", lambda: pq.unbalance(v3), lambda: floor_u(v3)),
        (f"qualification {K:,} monitors × 1440", lambda: pq.qualification(
            vm, 220 * mones, 7 * mones, -10 * mones, minute, 1, 60), lambda: floor_q(vm)),
        ("ten-minute means", lambda: pq.ten_minute_means(vm, 60),
         lambda: vm.reshape(K, 144, 10).mean(axis=2)),
        ("weekly compliance (one day's means)", lambda: pq.weekly_compliance(
            means, np.zeros(144, dtype=np.int64), 1, (198 * mones, 242 * mones),
            (187 * mones, 242 * mones)), None),
        ("composite rate", lambda: pq.composite_rate(qm, cls, np.array([0.5, 1, 1, 1]) / 2),
         None),
    ]  # fmt: skip
    print(f"{'':<48} {'gridread':>10} {'floor':>10} {'ratio':>7}")
    for name, fn, floor in results:
        t = best(fn, a.repeat)
        if floor is None:
            print(f"{name:<48} {t * 1000:8.1f}ms")
            continue
        f = best(floor, a.repeat)
        print(f"{name:<48} {t * 1000:8.1f}ms {f * 1000:8.1f}ms {t / f:6.1f}×")
    return 0


def job_bench(n: int) -> int:
    from datetime import UTC, datetime, timedelta

    import psycopg

    from analytics.power_quality_job import PQPolicy, run_power_quality
    from analytics.store import AnalyticsStore
    from bench._common import bench_database
    from ingest.schema import ensure_partitions, migrate

    day = datetime(2026, 11, 9, 16, tzinfo=UTC)  # 2026-11-10 local
    rng = np.random.default_rng(2)
    k = max(n // 50, 1)
    with bench_database() as url, psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, timezone="Asia/Shanghai")
        ensure_partitions(conn, {day.date(), (day + timedelta(days=1)).date()})
        conn.execute("INSERT INTO substations (name, voltage_kv) VALUES ('s', 35)")
        conn.execute("INSERT INTO feeders (name, substation_id) VALUES ('f', 1)")
        conn.execute(
            "INSERT INTO areas (name, feeder_id, transformer_kva)"
            " SELECT 'a' || g, 1, 400 FROM generate_series(1, %s) g",
            (n // 100 + 1,),
        )
        conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
            " SELECT 'm' || g, 'meter', 'mqtt', 'mqtt', 900 FROM generate_series(1, %s) g",
            (n,),
        )
        conn.execute(
            "INSERT INTO metering_points (device_id, role, area_id, valid_from)"
            " SELECT id, 'customer', 1 + (id - 1) / 100, '-infinity' FROM devices"
        )
        conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
            " SELECT 'vm' || g, 'voltage_monitor', 'modbus_rtu', 'pty', 600"
            " FROM generate_series(1, %s) g",
            (k,),
        )
        t0 = int(day.timestamp())
        with (
            conn.cursor() as cur,
            cur.copy("COPY readings (device_id, quantity, ts, value) FROM STDIN") as copy,
        ):
            for q, mean in (("32.7.0", 225), ("52.7.0", 226), ("72.7.0", 224),
                            ("31.7.0", 10), ("51.7.0", 11), ("71.7.0", 9)):  # fmt: skip
                vals = rng.normal(mean, 5, (n, 96)).round(1)
                for i in range(n):
                    for j in range(96):
                        copy.write_row((i + 1, q, datetime.fromtimestamp(t0 + 900 * j, UTC),
                                        vals[i, j]))  # fmt: skip
            vm = rng.normal(222, 8, (k, 1440)).round(1)
            for i in range(k):
                for j in range(1440):
                    when = datetime.fromtimestamp(t0 + 60 * j, UTC)
                    copy.write_row((n + i + 1, "32.7.0", when, vm[i, j]))
        conn.execute("VACUUM ANALYZE readings")
        store = AnalyticsStore(conn)
        ids = np.arange(1, n + 1)
        t = time.perf_counter()
        for q in ("32.7.0", "52.7.0", "72.7.0", "31.7.0", "51.7.0", "71.7.0"):
            store.readings(ids, t0, t0 + 86399, q)
        store.readings(np.arange(n + 1, n + k + 1), t0, t0 + 86399, "32.7.0")
        load = time.perf_counter() - t
        t = time.perf_counter()
        summary = run_power_quality(
            store, PQPolicy(timezone="Asia/Shanghai"), day + timedelta(days=1, hours=1)
        )
        job = time.perf_counter() - t
    print(f"job, {n:,} meters + {k:,} monitors, one day: {job:.2f} s ({summary.rows:,} rows)")
    print(f"COPY of the same readings out:              {load:.2f} s  → ratio {job / load:.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
