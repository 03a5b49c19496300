"""Modbus polling throughput: gridread's collector vs. a bare pymodbus read loop.

Both read the same register blocks (the bundled three-phase meter map: two coalesced
requests, 14 registers) from the same simulator, which runs in its own process so it does
not share a core's time with the side being measured. gridread's side goes through the
scheduler (timeout, metrics), decodes every field and hands Readings to a sink; the bare
side only issues the reads. Each device has its own connection on both sides.

    python bench/modbus_poll.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# the project root first: `python bench/ingest.py` puts bench/ first, where ingest.py would
# shadow the ingest package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.registermap import load_register_map
from collectors.scheduler import PollPolicy, PollScheduler

REGMAP = load_register_map("three_phase_meter")
BLOCKS = REGMAP.plan()
REGISTERS_PER_POLL = sum(b.count for b in BLOCKS)


class CountingSink:
    def __init__(self) -> None:
        self.readings = 0

    async def add_many(self, readings) -> None:
        self.readings += len(readings)

    async def flush(self) -> None:
        pass


async def bare(port: int, units: list[int], seconds: float) -> float:
    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0) for _ in units]
    for c in clients:
        await c.connect()
    polls = 0
    deadline = time.perf_counter() + seconds

    async def loop(client, unit):
        nonlocal polls
        while time.perf_counter() < deadline:
            for b in BLOCKS:
                rr = await client.read_holding_registers(b.address, count=b.count, device_id=unit)
                assert not rr.isError()
            polls += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(c, u) for c, u in zip(clients, units, strict=True)))
    elapsed = time.perf_counter() - started
    for c in clients:
        c.close()
    return polls * REGISTERS_PER_POLL / elapsed


async def gridread(port: int, units: list[int], seconds: float) -> float:
    sink = CountingSink()
    scheduler = PollScheduler(sink, PollPolicy(timeout=2, retries=0))
    collectors = [
        ModbusTcpCollector(
            device_id=u,
            device_name=f"m{u}",
            host="127.0.0.1",
            port=port,
            unit_id=u,
            register_map=REGMAP,
            timeout=2,
        )
        for u in units
    ]
    polls = 0
    deadline = time.perf_counter() + seconds

    async def loop(collector):
        nonlocal polls
        while time.perf_counter() < deadline:
            assert await scheduler.poll(collector)
            polls += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in collectors))
    elapsed = time.perf_counter() - started
    for c in collectors:
        await c.close()
    assert sink.readings == polls * len(REGMAP.fields)
    return polls * REGISTERS_PER_POLL / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("simulator did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "gridread.cli", "simulate", "--meters", "50", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        print(
            f"{len(BLOCKS)} requests, {REGISTERS_PER_POLL} registers per poll;"
            " simulator in its own process"
        )
        for n in (1, 50):
            units = list(range(1, n + 1))
            b_runs, g_runs = [], []
            for _ in range(args.repeat):  # interleaved
                b_runs.append(asyncio.run(bare(port, units, args.seconds)))
                g_runs.append(asyncio.run(gridread(port, units, args.seconds)))
            b, g = statistics.median(b_runs), statistics.median(g_runs)
            print(
                f"{n:>3} device(s): bare pymodbus {b:>9,.0f} registers/s   "
                f"gridread collector {g:>9,.0f} registers/s   ratio {g / b:.2f}"
            )
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    main()
