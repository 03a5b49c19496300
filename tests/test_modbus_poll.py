"""Modbus polls over real TCP to the simulator: request size limits, refused blocks, the
per-request timeout, and a map whose function the device does not serve."""

import asyncio
import random
import time
from datetime import UTC, datetime

import psycopg
import pytest

from collectors.exceptions import DeviceRejected
from collectors.modbus import collector as modbus_collector
from collectors.modbus.collector import ModbusTcpCollector
from collectors.modbus.registermap import load_register_map, parse_register_map
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.inventory import DeviceSpec, Inventory, store_inventory
from gridread.runtime import build_collectors
from gridread.settings import Settings
from ingest.writer import ReadingWriter
from simulators.meter_model import MeterModel
from simulators.modbus_meter import Fault, ManualClock, ModbusMeterSimulator

NOW = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


def spread_map(*, max_registers: int = 125, function: str = "holding"):
    """Voltages at 0–1 (one small block) and energy at 200–287: an 88-register block."""
    return parse_register_map(
        {
            "function": function,
            "max_gap": 90,
            "max_registers": max_registers,
            "field": [
                {"quantity": "32.7.0", "address": 0, "type": "uint16", "scale": 0.1},
                {"quantity": "52.7.0", "address": 1, "type": "uint16", "scale": 0.1},
                {"quantity": "1.8.0", "address": 200, "type": "uint32", "scale": 0.01},
                {"quantity": "2.8.0", "address": 286, "type": "uint32", "scale": 0.01},
            ],
        },
        source="spread.toml",
        name="spread",
    )


async def start_sim(regmap, **options) -> ModbusMeterSimulator:
    sim = ModbusMeterSimulator(
        regmap, {1: MeterModel.random(random.Random(7))}, clock=ManualClock(NOW), **options
    )
    await sim.start()
    return sim


def collector_for(sim, regmap, *, timeout=1.0, device_id=1) -> ModbusTcpCollector:
    return ModbusTcpCollector(
        device_id=device_id,
        device_name="m1",
        host="127.0.0.1",
        port=sim.port,
        unit_id=1,
        register_map=regmap,
        timeout=timeout,
    )


async def poll_into_db(url, regmap, sim) -> tuple[bool, dict[str, float]]:
    spec = DeviceSpec(
        name="m1", protocol="modbus_tcp", host="127.0.0.1", port=sim.port, register_map="x"
    )
    with psycopg.connect(url) as conn:
        ids = store_inventory(conn, Inventory([spec], {"x": regmap}), actor="test")
    writer = ReadingWriter(url, max_delay=0.05)
    task = asyncio.create_task(writer.run())
    collector = collector_for(sim, regmap, device_id=ids["m1"])
    try:
        ok = await PollScheduler(writer, PollPolicy(timeout=3.0, retries=0)).poll(collector)
        await writer.flush()
    finally:
        await collector.close()
        await writer.close()
        await task
    with psycopg.connect(url) as conn:
        rows = dict(conn.execute("SELECT quantity, value FROM readings").fetchall())
    return ok, rows


async def test_a_device_limited_to_80_registers_is_read_in_smaller_requests(migrated_url):
    regmap = spread_map()
    sim = await start_sim(regmap, max_registers=80)
    try:
        collector = collector_for(sim, regmap)
        assert await collector.gather(_Discard()) == 2  # the 88-register block is refused…
        await collector.close()
        limited = spread_map(max_registers=80)
        assert max(b.count for b in limited.plan()) <= 80
        ok, rows = await poll_into_db(migrated_url, limited, sim)  # …and split when told
    finally:
        await sim.stop()
    assert ok
    truth = sim.truth(1)
    assert set(rows) == {"32.7.0", "52.7.0", "1.8.0", "2.8.0"}
    assert rows["1.8.0"] == pytest.approx(truth["1.8.0"], abs=0.005 + 1e-9)


async def test_one_refused_block_keeps_what_the_good_blocks_read(migrated_url, caplog):
    caplog.set_level("WARNING")
    regmap = spread_map()
    sim = await start_sim(regmap, max_registers=80)
    refused = modbus_collector.BLOCKS_REFUSED.labels("exception_response")
    before = refused._value.get()
    try:
        ok, rows = await poll_into_db(migrated_url, regmap, sim)
    finally:
        await sim.stop()
    assert ok  # the poll counts as read: what could be read is stored
    assert set(rows) == {"32.7.0", "52.7.0"}
    assert rows["32.7.0"] == pytest.approx(sim.truth(1)["32.7.0"], abs=0.05 + 1e-9)
    assert refused._value.get() - before == 1
    assert "m1: block of 88 registers from 200 refused" in caplog.text
    assert "illegal data value" in caplog.text


async def test_the_request_timeout_is_its_own_setting(migrated_url, collector_store):
    """A slow device behind a long poll timeout: each request still gives up after
    `modbus_request_timeout`, not after poll_timeout ÷ blocks."""
    regmap = load_register_map("three_phase_meter")
    sim = await start_sim(regmap, slow_delay=0.8)
    sim.set_fault(1, Fault.SLOW)
    spec = DeviceSpec(
        name="slow-1",
        protocol="modbus_tcp",
        host="127.0.0.1",
        port=sim.port,
        unit_id=1,
        register_map="three_phase_meter",
    )
    inventory = Inventory([spec], {"three_phase_meter": regmap})
    with psycopg.connect(migrated_url) as conn:
        ids = store_inventory(conn, inventory, actor="test")
    settings = Settings(poll_timeout=10.0, modbus_request_timeout=0.2)
    [(collector, _interval)] = build_collectors(inventory, ids, settings, collector_store)
    scheduler = PollScheduler(_Discard(), PollPolicy(timeout=settings.poll_timeout, retries=0))
    try:
        started = time.monotonic()
        assert not await scheduler.poll(collector)
        elapsed = time.monotonic() - started
    finally:
        await collector.close()
        await sim.stop()
    assert elapsed < 0.7, elapsed  # one request's timeout, not 10 s ÷ 2 blocks


@pytest.mark.parametrize(("served", "asked"), [("holding", "input"), ("input", "holding")])
async def test_a_map_with_the_wrong_function_is_refused(served, asked):
    """A device serving holding registers answers function 04 with exception 1, as a real
    meter does (and an input-register device function 03), so a wrong map is noticed."""
    sim = await start_sim(spread_map(function=served))
    try:
        collector = collector_for(sim, spread_map(function=asked))
        with pytest.raises(DeviceRejected) as err:
            await collector.gather(_Discard())
        await collector.close()
        ok = collector_for(sim, spread_map(function=served, max_registers=80))
        assert await ok.gather(_Discard()) == 4
        await ok.close()
    finally:
        await sim.stop()
    assert err.value.code == 1 and "illegal function" in str(err.value)


class _Discard:
    """A sink that keeps nothing (these tests look at the device side)."""

    async def add_many(self, readings) -> None:
        pass

    async def flush(self) -> None:
        pass
