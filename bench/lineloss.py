"""Line loss per area and interval: gridread's numpy core vs. numpy's floor vs. SQL GROUP BY.

The same generated data in one run: A areas × M customer meters × T intervals of interval
energy (primary kWh) plus one supply series per area, processed in chunks of areas (the full
10,000 × 100 × 96 float64 array is 768 MB).

* gridread: ``analytics.lineloss.group_loss`` per chunk (members sorted by area, a fixed
  mapping: the ``np.add.reduceat`` path), full result with coverage and status;
* floor: one plain ``ndarray.sum()`` over the same chunk (the least any per-area sum costs);
* SQL: the rows loaded once (untimed) into ``members(area, t, energy)`` and
  ``supply(area, t, energy)``; timed: the GROUP BY producing supply, sales, loss, rate and
  coverage per (area, t), aggregated in the server (no transfer of a million result rows, so
  the SQL gets its best case); its Σ loss checked against gridread's.
* for reference: a mapping given per interval in which 1 % of the meters change area at noon
  (those go through ``bincount``, the rest the fixed path), on the first chunk, scaled.

``--missing`` drops that share of meter-intervals (NaN in numpy, absent rows in SQL).

    python bench/lineloss.py [--areas 10000] [--meters 100] [--intervals 96] [--chunk 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.lineloss import group_loss
from bench._common import bench_database

QUERY = """
SELECT count(*), sum(loss), sum(rate), sum(coverage) FROM (
  SELECT s.area, s.t, s.energy AS supply, m.sales, s.energy - m.sales AS loss,
         (s.energy - m.sales) / s.energy * 100 AS rate,
         (m.n + 1)::float8 / (%(meters)s + 1) AS coverage
  FROM supply s
  JOIN (SELECT area, t, sum(energy) AS sales, count(*) AS n
        FROM members GROUP BY area, t) m USING (area, t)
) q
"""


def chunk_data(
    first_area: int, areas: int, meters: int, t: int, missing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supply (areas, t), members (areas·meters, t) sorted by area, group_of (areas·meters,)."""
    rng = np.random.default_rng(first_area)
    members = rng.gamma(2.0, 0.25, (areas * meters, t))
    group_of = np.repeat(np.arange(areas), meters)
    total = members.reshape(areas, meters, t).sum(axis=1)
    supply = total * rng.uniform(1.02, 1.08, (areas, 1))
    if missing:
        members[rng.random(members.shape) < missing] = np.nan
    return supply, members, group_of


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def binary_copy(table: str, area: np.ndarray, t: np.ndarray, energy: np.ndarray) -> bytes:
    """PostgreSQL binary COPY of (int4, int2, float8) rows, built by numpy."""
    row = np.dtype(
        [
            ("n", ">i2"),
            ("la", ">i4"),
            ("area", ">i4"),
            ("lt", ">i4"),
            ("t", ">i2"),
            ("le", ">i4"),
            ("e", ">f8"),
        ]
    )
    out = np.empty(area.size, dtype=row)
    out["n"], out["la"], out["lt"], out["le"] = 3, 4, 2, 8
    out["area"], out["t"], out["e"] = area, t, energy
    return out.tobytes()


def load_sql(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    conn.execute("CREATE UNLOGGED TABLE members (area int4, t int2, energy float8)")
    conn.execute("CREATE UNLOGGED TABLE supply (area int4, t int2, energy float8)")
    header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    for first in range(0, args.areas, args.chunk):
        n_areas = min(args.chunk, args.areas - first)
        supply, members, group_of = chunk_data(
            first, n_areas, args.meters, args.intervals, args.missing
        )
        tt = np.broadcast_to(np.arange(args.intervals), members.shape)
        ok = ~np.isnan(members)
        area = np.broadcast_to((group_of + first)[:, None], members.shape)
        for table, a, t, e in (
            ("members", area[ok], tt[ok], members[ok]),
            (
                "supply",
                np.repeat(np.arange(first, first + n_areas), args.intervals),
                np.tile(np.arange(args.intervals), n_areas),
                supply.ravel(),
            ),
        ):
            with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(header + binary_copy(table, a, t, e) + b"\xff\xff")
        conn.commit()
    conn.execute("ANALYZE members")
    conn.execute("ANALYZE supply")
    conn.commit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--areas", type=int, default=10_000)
    p.add_argument("--meters", type=int, default=100)
    p.add_argument("--intervals", type=int, default=96)
    p.add_argument("--chunk", type=int, default=1000, help="areas per chunk")
    p.add_argument("--missing", type=float, default=0.0, help="share of meter-intervals")
    p.add_argument("--no-sql", action="store_true")
    args = p.parse_args()
    n_cells = args.areas * args.meters * args.intervals
    print(
        f"{args.areas:,} areas × {args.meters} meters × {args.intervals} intervals"
        f" = {n_cells:,} meter-intervals ({n_cells * 8 / 1e6:,.0f} MB float64), chunks of"
        f" {args.chunk} areas, {args.missing:.1%} missing"
    )
    t_core = t_floor = 0.0
    loss_sum = 0.0
    t_general = 0.0
    for first in range(0, args.areas, args.chunk):
        n_areas = min(args.chunk, args.areas - first)
        supply, members, group_of = chunk_data(
            first, n_areas, args.meters, args.intervals, args.missing
        )
        expected = np.ones(members.shape, dtype=bool)
        t_floor += best_of(lambda: members.sum())  # noqa: B023 — timed right here

        def core():
            return group_loss(supply, members, group_of, expected, min_coverage=0.0)  # noqa: B023

        t_core += best_of(core)
        loss_sum += float(np.nansum(core().loss))
        if first == 0:  # the general path once, on a mapping given per interval
            moving = np.broadcast_to(group_of[:, None], members.shape).copy()
            movers = np.arange(0, moving.shape[0], 100)  # 1 % of meters change area at noon
            moving[movers, args.intervals // 2 :] = (moving[movers, :1] + 1) % n_areas
            t_general = best_of(
                lambda: group_loss(supply, members, moving, expected, min_coverage=0.0),  # noqa: B023
                repeat=1,
            ) * (args.areas / n_areas)
    line = "{:<54}{:>12}   {}"
    print(line.format("numpy floor: one plain sum", f"{t_floor * 1000:.0f} ms", "(baseline)"))
    print(
        line.format(
            "gridread group_loss (fixed mapping, sorted)",
            f"{t_core * 1000:.0f} ms",
            f"ratio {t_core / t_floor:.2f} × floor (target ≤ 3)",
        )
    )
    print(
        line.format(
            "gridread group_loss (1 % of meters moving mid-day)",
            f"{t_general * 1000:.0f} ms",
            f"ratio {t_general / t_floor:.2f} × floor (first chunk, scaled)",
        )
    )
    if args.no_sql:
        return
    with bench_database() as url, psycopg.connect(url) as conn:
        started = time.perf_counter()
        load_sql(conn, args)
        loaded = time.perf_counter() - started
        conn.execute("SET work_mem = '256MB'")
        params = {"meters": args.meters}
        row = conn.execute(QUERY, params).fetchone()  # warm-up, and the check below
        times = []
        for _ in range(2):
            started = time.perf_counter()
            conn.execute(QUERY, params).fetchone()
            times.append(time.perf_counter() - started)
        t_sql = statistics.median(times)
    assert row[0] == args.areas * args.intervals, row
    assert abs(row[1] - loss_sum) <= 1e-9 * abs(loss_sum) * 10, (row[1], loss_sum)
    print(f"  (SQL rows loaded untimed in {loaded:.0f} s; Σ loss agrees: {row[1]:.6g} kWh)")
    print(
        line.format(
            "PostgreSQL GROUP BY (server-side, no transfer)",
            f"{t_sql * 1000:.0f} ms",
            f"ratio {t_sql / t_core:.1f} × gridread (target ≥ 20)",
        )
    )


if __name__ == "__main__":
    main()
