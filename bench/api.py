"""API under load: the latest-values and one-day-of-readings endpoints vs. the database itself.

One run, on one seeded database (``--meters`` meters × one UTC day of 15-min readings of ten
quantities, COPYed in):

* the API (``api.app.create_app``, its default pool) is served by uvicorn in a process of its
  own; a second process loads it with ``--concurrency`` asyncio clients (httpx, keep-alive)
  for ``--duration`` seconds per endpoint, each request for a random meter, with a viewer's
  API key (``tests/api_auth.py``; issue 11's API asks for one);
* the same queries the endpoints issue (``api.crud``: the device by name, then the latest
  values, or the storage mode and the day's series) are issued from a separate process
  directly with psycopg: the same number of concurrent tasks over a pool of the API's size.

Printed per endpoint: requests/s, p50 and p99 latency of each side, and the ratio API ÷
database (requests/s: the share of the database's ceiling the API reaches; latency: how many
times slower). Then the HTTP floor: the same clients against a static page of the API
(``GET /docs``), the ceiling of uvicorn and the httpx load process alone on this machine.
Every response is checked (status 200, the expected rows); a wrong one fails the run.

    python bench/api.py [--meters 2000] [--concurrency 16] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_database
from bench.ingest import COPY, QUANTITIES, TYPES
from ingest.schema import ensure_partitions, migrate
from tests.api_auth import credentials as make_credentials

API_POOL = 4  # create_app's default pool_size: the database side gets the same
DAY_QUANTITY = "1.8.0"
WARMUP_S = 1.0


@dataclass(frozen=True)
class Figures:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def meter_name(i: int) -> str:
    return f"m{i:05d}"


def seed(url: str, meters: int, day_start: datetime) -> int:
    """`meters` meters, each with 96 15-min readings of every bench quantity on the UTC day
    from `day_start`, COPYed in primary-key order. Returns the number of readings."""
    rng = np.random.default_rng(7)
    with psycopg.connect(url) as conn:
        migrate(conn)
        ensure_partitions(conn, {day_start.date()})
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
                " VALUES (%s, 'meter', 'mqtt', 'mqtt', 900)",
                [(meter_name(i),) for i in range(meters)],
            )
        ids = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id")]
        stamps = [day_start + timedelta(minutes=15 * k) for k in range(96)]
        n = 0
        with conn.cursor() as cur, cur.copy(COPY) as copy:
            copy.set_types(TYPES)
            for device in ids:
                for q in sorted(QUANTITIES):
                    values = rng.uniform(0, 1000, 96)
                    if q in ("1.8.0", "2.8.0"):  # registers climb
                        values = np.cumsum(values) / 100
                    for ts, v in zip(stamps, values.tolist(), strict=True):
                        copy.write_row((device, q, ts, v, 0))
                    n += 96
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return n


def credentials(url: str, base: str) -> dict[str, str]:
    """A viewer's API key, as Grafana or a billing system holds one (issue 11: the API asks
    for one); checked against GET /auth/me."""
    import httpx

    headers = make_credentials(url, "viewer", "bench-api")
    r = httpx.get(f"{base}/auth/me", headers=headers, timeout=5)
    if r.status_code != 200:
        raise SystemExit(f"the bench's API key was refused: {r.status_code} {r.text[:200]}")
    return headers


def serve(url: str, port: int) -> None:
    """The API process (uvicorn, one worker, the API's default pool)."""
    import uvicorn

    from api.app import create_app

    uvicorn.run(
        create_app(url, pool_size=API_POOL), host="127.0.0.1", port=port, log_level="warning"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, deadline_s: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API process exited ({proc.returncode})")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the API at {base} was not healthy within {deadline_s} s")


async def _drive(request, meters: int, concurrency: int, duration: float) -> Figures:
    """`concurrency` tasks calling `request(meter_name)` back to back: a warm-up, then
    `duration` seconds measured."""
    latencies: list[float] = []
    measuring = False

    async def worker(seed: int, until: float) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < until:
            name = meter_name(rng.randrange(meters))
            t0 = time.perf_counter()
            await request(name)
            if measuring:
                latencies.append(time.perf_counter() - t0)

    warm_until = time.perf_counter() + WARMUP_S
    await asyncio.gather(*(worker(i, warm_until) for i in range(concurrency)))
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*(worker(1000 + i, started + duration) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return Figures(len(ms), elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))


async def _load_api(
    base: str, headers: dict, endpoint: str, day: str, meters: int, conc: int, dur: float
) -> Figures:
    import httpx

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        end = (datetime.fromisoformat(day) + timedelta(days=1)).isoformat()

        async def request(name: str) -> None:
            if endpoint == "floor":  # a static page: no database, no JSON
                r = await client.get("/docs")
                if r.status_code != 200:
                    raise SystemExit(f"{r.request.url}: {r.status_code}")
                return
            if endpoint == "latest":
                r = await client.get(f"/devices/{name}/latest")
                want = len(QUANTITIES)
            else:
                params = {"quantity": DAY_QUANTITY, "start": day, "end": end}
                r = await client.get(f"/devices/{name}/readings", params=params)
                want = 96
            if r.status_code != 200 or len(r.json()["data"]) != want:
                raise SystemExit(f"{r.request.url}: {r.status_code} {r.text[:200]}")

        return await _drive(request, meters, conc, dur)


async def _load_db(
    url: str, endpoint: str, day: str, meters: int, conc: int, dur: float
) -> Figures:
    from psycopg_pool import AsyncConnectionPool

    from api import crud
    from ingest.quantities import registry
    from ingest.rollups import Resolution

    quantities = sorted(registry())
    start = datetime.fromisoformat(day)
    async with AsyncConnectionPool(url, min_size=API_POOL, max_size=API_POOL) as pool:

        async def request(name: str) -> None:
            async with pool.connection() as conn:
                device = await crud.get_device(conn=conn, name=name)
                if endpoint == "latest":
                    rows = await crud.latest(
                        conn=conn, device_id=device["id"], quantities=quantities
                    )
                    want = len(QUANTITIES)
                else:
                    rows = await crud.series(
                        conn=conn,
                        device_id=device["id"],
                        quantity=DAY_QUANTITY,
                        start=start,
                        end=start + timedelta(days=1),
                        resolution=Resolution.RAW,
                        limit=10_000,
                    )
                    want = 96
            if len(rows) != want:
                raise SystemExit(f"{name}: {len(rows)} rows, expected {want}")

        return await _drive(request, meters, conc, dur)


def _load(side: str, target: str, headers: dict, *args) -> Figures:
    """Runs in the load process."""
    if side == "api":
        return asyncio.run(_load_api(target, headers, *args))
    return asyncio.run(_load_db(target, *args))


def load_from_another_process(side: str, target: str, headers: dict, *args) -> Figures:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_load, (side, target, headers, *args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint and side")
    p.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)  # the API process
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=1
    )
    day = day_start.isoformat()
    with bench_database() as url:
        t0 = time.perf_counter()
        n = seed(url, args.meters, day_start)
        print(
            f"seeded {args.meters} meters × 96 intervals × {len(QUANTITIES)} quantities"
            f" = {n:,} readings in {time.perf_counter() - t0:.1f} s"
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, "--port", str(port)],
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_healthy(base, server)
            headers = credentials(url, base)
            print(
                f"{args.concurrency} concurrent clients, {args.duration:g} s per endpoint and"
                f" side; API: uvicorn (1 process) with a pool of {API_POOL}; database: psycopg"
                f" pool of {API_POOL}; every API request with a viewer's API key"
            )
            print(f"{'endpoint':<10} {'side':<10} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
            common = (day, args.meters, args.concurrency, args.duration)
            for endpoint in ("latest", "day"):
                api = load_from_another_process("api", base, headers, endpoint, *common)
                db = load_from_another_process("db", url, {}, endpoint, *common)
                for side, f in (("API", api), ("database", db)):
                    print(
                        f"{endpoint:<10} {side:<10} {f.rps:>9.0f} {f.p50_ms:>9.2f} {f.p99_ms:>9.2f}"
                    )
                print(
                    f"{endpoint:<10} {'API ÷ db':<10} {api.rps / db.rps:>9.2f}"
                    f" {api.p50_ms / db.p50_ms:>9.2f} {api.p99_ms / db.p99_ms:>9.2f}"
                )
            floor = load_from_another_process("api", base, headers, "floor", *common)
            print(
                f"{'HTTP floor':<10} {'API':<10} {floor.rps:>9.0f} {floor.p50_ms:>9.2f}"
                f" {floor.p99_ms:>9.2f}   (GET /docs: uvicorn and httpx, no database)"
            )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
