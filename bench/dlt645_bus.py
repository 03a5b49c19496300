"""DL/T 645 bus throughput: exchanges per second on one simulated RS-485 bus vs. the line's
theoretical maximum for the same frames.

The simulator (a pty) emulates wire time: 11 bits per byte (8E1) for the request and the
reply, no meter turnaround. The theoretical maximum is 1 / (request bytes + reply bytes) ×
byte time + the inter-frame gap the bus keeps; the measured rate includes everything
gridread does per exchange (framing, timing, parsing, decoding the value).

    python bench/dlt645_bus.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

# the project root first, as for the other benchmarks
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.dlt645 import codec
from collectors.dlt645.dataids import lookup
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import SerialTransport
from simulators.dlt645_bus import DLT645BusSimulator, make_meters


async def measure(baud: int, di: int, seconds: float) -> tuple[float, float]:
    meters = make_meters(4)
    sim = DLT645BusSimulator(meters, baud=baud, turnaround=0.0)
    await sim.start()
    timing = BusTiming(baud=baud)
    bus = Dlt645Bus(SerialTransport(sim.port, baud=baud), timing)
    try:
        request = codec.read_request(meters[0].address, di).to_bytes(preamble=timing.preamble)
        reply = codec.reply(
            codec.read_request(meters[0].address, di), codec.di_bytes(di) + bytes(lookup(di).size)
        ).to_bytes()
        theory = 1 / (timing.wire(len(request) + len(reply)) + timing.gap)
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            records = await bus.read(meters[n % 4].address, di)
            assert records and records[0]
            n += 1
        measured = n / (time.perf_counter() - started)
    finally:
        await bus.transport.close()
        await sim.stop()
    return measured, theory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    print("one bus, 4 meters polled round robin; simulator on a pty emulating the wire")
    for baud in (2400, 9600):
        for di, what in (
            (0x00010000, "one register (00010000)"),
            (0x0001FF00, "energy block (0001FF00)"),
        ):
            measured, theory = asyncio.run(measure(baud, di, args.seconds))
            print(
                f"{baud:>5} baud, {what:<24} {measured:6.2f} exchanges/s   line maximum"
                f" {theory:6.2f}/s   ratio {measured / theory:.2f}"
            )


if __name__ == "__main__":
    main()
