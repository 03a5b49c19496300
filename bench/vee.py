"""VEE of one day of 15-min data for 100,000 meters vs. loading that day from PostgreSQL,
in the same run (the issue's target: VEE adds at most the load time again).

Set-up (untimed): generated registers (one local day, 97 boundaries a meter, 0.01 kWh
digits), the daily frozen total and TOU registers at both midnights, stored as readings.
Faults punched in: ``--missing`` of the profile reads absent, ``--long`` of the meters with
a gap of 24 intervals (6 h: the profile path), ``--suspect`` of the reads replaced by
−4e23 and flagged SUSPECT; a 28-day validated history is generated as arrays (the
same-day-type profile's input; its load is not part of the figure).

Timed, each ``--repeat`` times (median):
* load: ``analytics.vee_store.load_block`` — binary COPY out of the day's profile, frozen and
  TOU reads of all meters and their alignment to (n, 97) / (n, 2) arrays;
* VEE: ``day_type_profile`` + ``run_vee_block`` (validation, estimation, sum-check, TOU) on
  those arrays, in chunks of ``--chunk`` meters (bounded memory).

    python bench/vee.py [--meters 100000] [--chunk 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics import pgbinary
from analytics.vee_estimate import day_type_profile
from analytics.vee_pipeline import run_vee_block
from analytics.vee_store import QUANTITIES, load_block
from bench._common import bench_database
from ingest.model import Quality
from ingest.schema import ensure_partitions, migrate

DAY = int(datetime(2026, 11, 9, 16, tzinfo=UTC).timestamp())  # 2026-11-10 00:00 +08:00
STEP, PER_DAY = 900, 96


def generate(n: int, rng: np.random.Generator, missing: float, long: float, suspect: float):
    """Registers (n, 97) as read (NaN: absent), their quality, frozen (n, 2), TOU (n, 4, 2)."""
    load = rng.gamma(2.0, 0.25, size=(n, PER_DAY))  # kWh per 15 min
    start = rng.uniform(1000, 90000, size=n)
    true = np.round(np.concatenate([start[:, None], start[:, None] + load.cumsum(1)], 1), 2)
    reg = true.copy()
    reg[rng.random(reg.shape) < missing] = np.nan
    gap = rng.random(n) < long
    at = rng.integers(1, PER_DAY - 24, size=n)
    cols = at[:, None] + np.arange(24)
    reg[np.nonzero(gap)[0][:, None], cols[gap]] = np.nan
    quality = np.zeros(reg.shape, dtype=np.int16)
    bad = (rng.random(reg.shape) < suspect) & np.isfinite(reg)
    reg[bad] = -4e23
    quality[bad] = int(Quality.SUSPECT)
    frozen = true[:, [0, PER_DAY]]
    share = rng.dirichlet([1, 1, 1, 1], size=n)
    tou = np.round(share[:, :, None] * frozen[:, None, :], 2)
    tou[:, 3, :] = np.round(frozen - tou[:, :3, :].sum(1), 2)
    return reg, quality, frozen, tou, load


def store(url: str, reg, quality, frozen, tou) -> int:
    """The readings (untimed set-up): binary COPY into a staging table, then into readings."""
    n = reg.shape[0]
    ids = np.arange(1, n + 1, dtype=np.int32)
    ts = DAY + np.arange(PER_DAY + 1, dtype=np.int64) * STEP
    m, k = np.nonzero(np.isfinite(reg))
    cols = [ids[m], np.zeros(m.size, np.int16), ts[k], reg[m, k], quality[m, k]]
    fts = np.array([DAY, DAY + 86400], dtype=np.int64)
    for q, values in enumerate([frozen, *np.moveaxis(tou, 1, 0)], 1):
        mm, dd = np.nonzero(np.isfinite(values))
        part = [ids[mm], np.full(mm.size, q, np.int16), fts[dd], values[mm, dd]]
        cols = [
            np.concatenate([a, b]) for a, b in zip(cols, [*part, np.zeros(mm.size)], strict=True)
        ]
    types = ["int4", "int2", "int8", "float8", "int2"]
    data = pgbinary.encode(
        [(c.astype(pgbinary._KINDS[t][1:]), t) for c, t in zip(cols, types, strict=True)]
    )
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        ensure_partitions(conn, {datetime.fromtimestamp(DAY + d, UTC).date() for d in (0, 86400)})
        conn.execute(
            "CREATE UNLOGGED TABLE stage (device_id int4, q int2, ts int8, value float8,"
            " quality int2)"
        )
        with conn.cursor() as cur, cur.copy("COPY stage FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        conn.execute(
            "INSERT INTO readings (device_id, quantity, ts, value, quality)"
            " SELECT device_id, (%s::text[])[q + 1], to_timestamp(ts), value, quality"
            " FROM stage ORDER BY 1, 2, 3",
            (QUANTITIES,),
        )
        conn.execute("DROP TABLE stage")
        conn.execute("VACUUM ANALYZE readings")
    return len(cols[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--missing", type=float, default=0.01)
    ap.add_argument("--long", type=float, default=0.01)
    ap.add_argument("--suspect", type=float, default=0.0005)
    args = ap.parse_args()
    rng = np.random.default_rng(10)
    reg, quality, frozen, tou, load = generate(
        args.meters, rng, args.missing, args.long, args.suspect
    )
    # 28 days of history (4 weekends): the true load with noise, as the job would load it
    hist = load[:, None, :] * rng.uniform(0.8, 1.2, size=(args.meters, 28, 1))
    kinds = np.array([d % 7 in (5, 6) for d in range(28)], dtype=np.int8)
    with bench_database() as url:
        t0 = time.perf_counter()
        rows = store(url, reg, quality, frozen, tou)
        print(f"stored {rows:,} readings of {args.meters:,} meters in"
              f" {time.perf_counter() - t0:.1f} s (set-up, untimed)")  # fmt: skip
        ids = np.arange(1, args.meters + 1)
        loads, vees = [], []
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                block = load_block(conn, ids, DAY, 1)
                loads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                valid = estimated = 0
                for lo in range(0, args.meters, args.chunk):
                    s = slice(lo, lo + args.chunk)
                    profile = day_type_profile(hist[s], kinds, np.array([0], dtype=np.int8))
                    r = run_vee_block(
                        block.registers[s],
                        block.quality[s],
                        np.full(r_len(s, args.meters), 10_000.0),
                        block.frozen[s],
                        block.frozen_quality[s],
                        per_day=PER_DAY,
                        tou=block.tou[s],
                        profile=profile,
                        modulus=np.full(r_len(s, args.meters), 1_000_000.0),
                    )
                    valid += int(r.valid.sum())
                    estimated += int((r.method == 1).sum())
                vees.append(time.perf_counter() - t0)
    intervals = args.meters * PER_DAY
    load_s, vee_s = statistics.median(loads), statistics.median(vees)
    print(f"intervals {intervals:,}: validated {valid:,} ({valid / intervals:.2%}),"
          f" estimated {estimated:,}")  # fmt: skip
    print(f"load (COPY out + align): {load_s:.2f} s   VEE: {vee_s:.2f} s   "
          f"VEE / load = {vee_s / load_s:.2f} (target ≤ 1)")  # fmt: skip


def r_len(s: slice, n: int) -> int:
    return len(range(*s.indices(n)))


if __name__ == "__main__":
    main()
