"""A voltage monitor on a Modbus RTU serial line (two ptys wired as a null modem)."""

import asyncio
import time
from datetime import UTC, datetime

import psycopg
import pytest

from collectors.modbus.voltage_monitor import VoltageMonitorCollector
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.inventory import Inventory, VoltageMonitorSpec, store_inventory
from gridread.runtime import build_collectors
from gridread.settings import Settings
from ingest.writer import ReadingWriter
from simulators.modbus_meter import ManualClock
from simulators.nullmodem import NullModem
from simulators.voltage_monitor import VoltageModel, VoltageMonitorSimulator


async def test_one_minute_series_and_the_monitors_own_statistics(migrated_url, collector_store):
    with psycopg.connect(migrated_url) as conn:
        (device_id,) = conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, unit_id, poll_interval)"
            " VALUES ('vm-1', 'voltage_monitor', 'modbus_rtu', 'pty', 3, 600) RETURNING id"
        ).fetchone()
    line = NullModem()
    await line.start()
    clock = ManualClock(datetime(2026, 11, 26, 6, 30, 20, tzinfo=UTC).timestamp())
    model = VoltageModel(nominal=220.0, monitoring_class="D")
    sim = VoltageMonitorSimulator(line.a, model, unit=3, clock=clock)
    await sim.start()
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    collector = VoltageMonitorCollector(
        device_id=device_id, device_name="vm-1", port=line.b, unit_id=3, store=collector_store
    )
    try:
        assert await collector.gather(writer) == 60
        clock.advance(1800)  # half an hour later the next poll overlaps the first by 30 minutes
        assert await collector.gather(writer) == 60
        await writer.flush()
        with psycopg.connect(migrated_url) as conn:
            series = conn.execute(
                "SELECT ts, value FROM readings WHERE device_id = %s AND quantity = '32.7.0'"
                " ORDER BY ts",
                (device_id,),
            ).fetchall()
            [stats] = conn.execute(
                "SELECT day, monitoring_class, nominal_v, upper_v, lower_v, monitored_min,"
                " over_min, under_min, max_v, max_at, min_v, min_at FROM voltage_daily_stats"
            ).fetchall()
        assert len(series) == 90  # two 60-minute windows, 30 minutes shared, each stored once
        for ts, value in series:
            assert ts.second == 0 and value == model.voltage(ts.timestamp())
        truth = model.daily_stats(sim.yesterday_start())
        day, cls, nominal, upper, lower, monitored, over, under, vmax, vmax_at, vmin, vmin_at = (
            stats
        )
        assert (str(day), cls, nominal, upper, lower) == ("2026-11-25", "D", 220.0, 235.4, 198.0)
        assert (monitored, over, under) == (truth["monitored"], truth["over"], truth["under"])
        assert over > 0 and under > 0  # the model's excursions cross both limits
        assert (vmax, vmax_at.timestamp()) == (truth["max"], truth["max_at"])
        assert (vmin, vmin_at.timestamp()) == (truth["min"], truth["min_at"])
        # 电压合格率 from the monitor's own figures, checked by hand against the 1440 values
        values = [model.voltage(sim.yesterday_start() + 60 * k) for k in range(1440)]
        by_hand = 1 - sum(1 for v in values if v > 235.4 or v < 198.0) / 1440
        assert 1 - (over + under) / monitored == pytest.approx(by_hand)
    finally:
        await collector.close()
        await writer.close()
        await writer_task
        await sim.stop()
        await line.stop()


async def test_the_request_timeout_is_the_modbus_setting(migrated_url, collector_store):
    """A monitor that does not answer (nothing on the line): its first request gives up after
    `modbus_request_timeout`, not after poll_timeout ÷ 3."""
    line = NullModem()
    await line.start()
    monitor = VoltageMonitorSpec(name="vm-silent", port=line.b, unit_id=3)
    inventory = Inventory([], {}, monitors=[monitor])
    with psycopg.connect(migrated_url) as conn:
        ids = store_inventory(conn, inventory, actor="test")
    settings = Settings(poll_timeout=9.0, modbus_request_timeout=0.2)
    [(collector, _interval)] = build_collectors(inventory, ids, settings, collector_store)
    scheduler = PollScheduler(ReadingWriter(migrated_url), PollPolicy(timeout=9.0, retries=0))
    try:
        started = time.monotonic()
        assert not await scheduler.poll(collector)
        elapsed = time.monotonic() - started
    finally:
        await collector.close()
        await line.stop()
    assert elapsed < 1.5, elapsed  # one request's 0.2 s, not 9 s ÷ 3
