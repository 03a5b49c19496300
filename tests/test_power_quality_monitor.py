"""A simulated voltage monitor over a real Modbus RTU line (two ptys), polled hourly for a
local day by gridread's collector through the ReadingWriter; the job's rate of that day
against the monitor's own statistics (read the next day) and against the monitor's model.

The model (simulators/voltage_monitor.py, 220 V class D, +7/−10 %) swings ±6 V a day and
crosses the limits twice (≈ 238 V around 03:00 UTC, ≈ 196 V around 11:00 UTC). Polled every
hour, gridread's rate is the monitor's own exactly; with two polls skipped, 10:00–11:59 local
(02:00–03:59 UTC, the high excursion), gridread has 1320 of the 1440 minutes while the monitor
counted all of them, and the day is flagged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from analytics.power_quality_job import PQPolicy, run_power_quality
from analytics.store import AnalyticsStore
from collectors.modbus.voltage_monitor import VoltageMonitorCollector
from ingest.writer import ReadingWriter
from simulators.modbus_meter import ManualClock
from simulators.nullmodem import NullModem
from simulators.voltage_monitor import VoltageModel, VoltageMonitorSimulator

D0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 2026-11-25 00:00 Asia/Shanghai


@pytest.mark.parametrize("skipped", [(), (10, 11)], ids=["all-polls", "two-hours-missed"])
async def test_rate_against_the_monitors_own_statistics(migrated_url, collector_store, skipped):
    with psycopg.connect(migrated_url) as conn:
        (device_id,) = conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, unit_id, poll_interval)"
            " VALUES ('vm-1', 'voltage_monitor', 'modbus_rtu', 'pty', 3, 3600) RETURNING id"
        ).fetchone()
    line = NullModem()
    await line.start()
    # each poll returns the 60 minutes up to the newest whole one: 00:59:20 gives 00:00–00:59
    clock = ManualClock((D0 + timedelta(minutes=59, seconds=20)).timestamp())
    model = VoltageModel(nominal=220.0, monitoring_class="D")
    sim = VoltageMonitorSimulator(line.a, model, unit=3, clock=clock)
    await sim.start()
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    collector = VoltageMonitorCollector(
        device_id=device_id, device_name="vm-1", port=line.b, unit_id=3, store=collector_store
    )
    try:
        for hour in range(25):  # the 25th poll, after midnight, reads the day's statistics
            if hour not in skipped:
                assert await collector.gather(writer) == 60
            clock.advance(3600)
        await writer.flush()
    finally:
        await collector.close()
        await writer.close()
        await writer_task
        await sim.stop()
        await line.stop()

    day0 = D0.timestamp()
    values = [model.voltage(day0 + 60 * k) for k in range(1440)]
    out = [v > 235.4 or v < 198.0 for v in values]
    kept = [k for k in range(1440) if k // 60 not in skipped]
    truth_rate = (1 - sum(out[k] for k in kept) / len(kept)) * 100
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        run_power_quality(
            AnalyticsStore(conn),
            PQPolicy(timezone="Asia/Shanghai"),
            D0 + timedelta(days=1, hours=1),
        )
        rate, monitored, missing, cls = conn.execute(
            "SELECT rate, monitored_s, missing_s, monitoring_class FROM pq_voltage"
            " WHERE kind = 'monitor' AND period = 'day' AND start = %s",
            (D0,),
        ).fetchone()
        flag = conn.execute(
            "SELECT own_rate, own_monitored_min, diff_pp, reasons, flagged FROM pq_monitor_flags"
            " WHERE day = %s",
            (date(2026, 11, 25),),
        ).fetchone()
    n = 1440 - 60 * len(skipped)
    assert (monitored, missing, cls) == (n * 60, (1440 - n) * 60, "D")
    assert rate == pytest.approx(truth_rate, abs=1e-9)  # the model's minutes, less the gap
    own = (1 - sum(out) / 1440) * 100
    assert flag[:2] == (pytest.approx(own, abs=1e-9), 1440)
    assert flag[2] == pytest.approx(truth_rate - own, abs=1e-9)
    if not skipped:
        assert (flag[2], flag[3], flag[4]) == (0, [], False)
        return
    assert sum(out[600:720]) > 10  # the hours held the high excursion
    # the missed hours hid their over-voltage minutes: gridread's rate is higher by more
    # than 0.5 pp, and the reasons say the monitored minutes differ too
    assert flag[2] > 0.5 and flag[3:] == (["rate", "monitored"], True)
