"""Ingest throughput: gridread's writer vs. a raw psycopg binary COPY of the same rows.

Both write the same readings into the same (partitioned, primary-keyed) readings table, in
batches of the same size, one commit per batch, on one connection. The rows arrive as
collectors produce them: poll cycle after poll cycle, every device in each.

    python bench/ingest.py [--devices 1000] [--intervals 100] [--repeat 3]

The writer is measured with its live-feed notifications on (the default) and off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

# the project root first: `python bench/ingest.py` puts bench/ first, where ingest.py would
# shadow the ingest package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_database
from ingest.model import Reading
from ingest.schema import migrate
from ingest.writer import ReadingWriter

QUANTITIES = [
    "1.8.0",
    "2.8.0",
    "32.7.0",
    "52.7.0",
    "72.7.0",
    "31.7.0",
    "51.7.0",
    "71.7.0",
    "1.7.0",
    "13.7.0",
]
COPY = "COPY readings (device_id, quantity, ts, value, quality) FROM STDIN (FORMAT BINARY)"
TYPES = ["int4", "text", "timestamptz", "float8", "int2"]


def make_readings(devices: int, intervals: int) -> list[Reading]:
    rng = random.Random(1)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)
    out = []
    for k in range(intervals):
        ts = start + timedelta(minutes=15 * k)
        for d in range(1, devices + 1):
            for q in QUANTITIES:
                out.append(Reading(d, q, ts, rng.uniform(0, 1000)))
    return out


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
        conn.execute("CHECKPOINT")


def raw_copy(url: str, rows: list[tuple], batch: int) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            with conn.cursor() as cur, cur.copy(COPY) as copy:
                copy.set_types(TYPES)
                for row in rows[i : i + batch]:
                    copy.write_row(row)
            conn.commit()
        return len(rows) / (time.perf_counter() - started)


async def through_writer(
    url: str, readings: list[Reading], batch: int, notify: bool = True
) -> float:
    writer = ReadingWriter(
        url, batch_size=batch, max_delay=0.05, max_queued=batch * 4, notify=notify
    )
    task = asyncio.create_task(writer.run())
    started = time.perf_counter()
    for i in range(0, len(readings), 1000):  # collectors hand over poll-sized chunks
        await writer.add_many(readings[i : i + 1000])
    await writer.flush()
    elapsed = time.perf_counter() - started
    await writer.close()
    await task
    assert writer.totals.written == len(readings), writer.totals
    return len(readings) / elapsed


async def replay(url: str, readings: list[Reading], batch: int) -> float:
    """Everything already stored: the ON CONFLICT path, for reference."""
    writer = ReadingWriter(url, batch_size=batch)
    started = time.perf_counter()
    for i in range(0, len(readings), batch):
        await writer.write_batch(readings[i : i + batch])
    assert writer.totals.duplicates == len(readings)
    return len(readings) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--intervals", type=int, default=100)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    readings = make_readings(args.devices, args.intervals)
    rows = [r.row for r in readings]
    # the best case for raw COPY: the whole data set in primary-key order (device-major)
    sorted_rows = sorted(rows)
    # what sorting each batch (what the writer does) buys raw COPY
    batch_sorted = [
        r for i in range(0, len(rows), args.batch) for r in sorted(rows[i : i + args.batch])
    ]
    print(
        f"{len(rows):,} readings ({args.devices} devices × {len(QUANTITIES)} quantities × "
        f"{args.intervals} intervals), batches of {args.batch:,}"
    )
    with bench_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        raw, raw_sorted, raw_batch_sorted, ours, quiet = [], [], [], [], []
        for _ in range(args.repeat):  # interleaved, so drift hits all alike
            truncate(url)
            raw.append(raw_copy(url, rows, args.batch))
            truncate(url)
            raw_batch_sorted.append(raw_copy(url, batch_sorted, args.batch))
            truncate(url)
            raw_sorted.append(raw_copy(url, sorted_rows, args.batch))
            truncate(url)
            ours.append(asyncio.run(through_writer(url, readings, args.batch)))
            truncate(url)
            quiet.append(asyncio.run(through_writer(url, readings, args.batch, notify=False)))
        dup = asyncio.run(replay(url, readings, args.batch))
    m_raw, m_sorted, m_bsorted, m_ours, m_quiet = (
        statistics.median(x) for x in (raw, raw_sorted, raw_batch_sorted, ours, quiet)
    )
    line = "{:<44}{:>12,.0f} rows/s   {}"
    print(line.format("raw binary COPY, arrival order", m_raw, "(baseline)"))
    print(
        line.format("gridread writer (queue → sort → COPY)", m_ours, f"ratio {m_ours / m_raw:.2f}")
    )
    print(
        line.format(
            "gridread writer, live feed off (notify=False)",
            m_quiet,
            f"ratio {m_quiet / m_raw:.2f} (on ÷ off: {m_ours / m_quiet:.2f})",
        )
    )
    print(
        line.format(
            "raw binary COPY, each batch sorted", m_bsorted, f"ratio {m_bsorted / m_raw:.2f}"
        )
    )
    print(
        line.format(
            "raw binary COPY, whole set sorted by key",
            m_sorted,
            f"ratio {m_sorted / m_raw:.2f} (writer ÷ this: {m_ours / m_sorted:.2f})",
        )
    )
    print(line.format("replay of stored rows (ON CONFLICT path)", dup, f"ratio {dup / m_raw:.2f}"))


if __name__ == "__main__":
    main()
