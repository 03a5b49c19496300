"""Streaming reads: `GET /reads/raw?format=ndjson` over a window of ~1M readings, served by
uvicorn in its own process. Reports rows/s against the same query read with psycopg in this
process (the database's ceiling, same run), and the server's resident memory sampled while
it streams a window ten times smaller and the whole one: constant memory means the two peaks
are about the same.

    .venv/bin/python bench/reads_stream.py [--meters 200] [--days 52]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.credentials import create_api_key, create_user
from bench._common import bench_database
from ingest.schema import ensure_partitions, migrate

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def seed(url: str, meters: int, days: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        ensure_partitions(conn, {(T0 + timedelta(days=d)).date() for d in range(days + 1)})
        conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
            " SELECT 'm' || lpad(i::text, 4, '0'), 'meter', 'mqtt', 'mqtt', 900"
            " FROM generate_series(1, %s) i",
            (meters,),
        )
        conn.execute(
            "INSERT INTO readings SELECT d.id, '1.8.0', %s + make_interval(mins => 15 * k),"
            " k * 0.25, 0 FROM devices d, generate_series(0, %s - 1) k ORDER BY d.id, k",
            (T0, days * 96),
        )
        conn.execute("VACUUM ANALYZE readings")
        create_user(conn, "bench", ["viewer"], created_by="bench")
        _, key = create_api_key(conn, "bench", label="bench", actor="bench")
    return key


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stream(base: str, key: str, end: datetime, pid: int) -> tuple[int, float, float]:
    """Rows, seconds, peak server RSS (MB) while streaming [T0, end)."""
    params = {"quantity": "1.8.0", "start": T0.isoformat(), "end": end.isoformat()}
    peak, rows = rss_mb(pid), 0
    t = time.perf_counter()
    with httpx.stream(
        "GET",
        f"{base}/reads/raw",
        params={**params, "format": "ndjson"},
        headers={"X-API-Key": key},
        timeout=600,
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line:
                rows += 1
                if rows % 50_000 == 0:
                    peak = max(peak, rss_mb(pid))
    return rows, time.perf_counter() - t, max(peak, rss_mb(pid))


def direct(url: str, end: datetime) -> tuple[int, float]:
    t = time.perf_counter()
    rows = 0
    with psycopg.connect(url) as conn, conn.cursor(name="b") as cur:
        cur.itersize = 2000
        cur.execute(
            "SELECT d.name, r.quantity, r.ts, r.value, r.quality FROM readings r"
            " JOIN devices d ON d.id = r.device_id WHERE r.quantity = '1.8.0'"
            " AND r.ts >= %s AND r.ts < %s ORDER BY r.device_id, r.quantity, r.ts",
            (T0, end),
        )
        for _ in cur:
            rows += 1
    return rows, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meters", type=int, default=200)
    ap.add_argument("--days", type=int, default=52)
    args = ap.parse_args()
    with bench_database() as url:
        key = seed(url, args.meters, args.days)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code = (
            "import uvicorn; from api.app import create_app;"
            f" uvicorn.run(create_app({url!r}), host='127.0.0.1', port={port}, log_level='warning')"
        )
        server = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            whole = T0 + timedelta(days=args.days)
            tenth = T0 + timedelta(days=max(1, args.days // 10))
            idle = rss_mb(server.pid)
            small, t_small, peak_small = stream(base, key, tenth, server.pid)
            big, t_big, peak_big = stream(base, key, whole, server.pid)
            rows, t_direct = direct(url, whole)
            assert rows == big, (rows, big)
            print(f"server RSS idle {idle:.0f} MB")
            print(
                f"stream {small:,} rows: {small / t_small:,.0f} rows/s,"
                f" peak RSS {peak_small:.0f} MB"
            )
            print(f"stream {big:,} rows: {big / t_big:,.0f} rows/s, peak RSS {peak_big:.0f} MB")
            print(f"psycopg server-side cursor, same rows: {rows / t_direct:,.0f} rows/s")
            print(f"API / direct: {(big / t_big) / (rows / t_direct):.2f}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
