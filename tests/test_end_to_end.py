"""Simulator (real TCP socket) → Modbus collector → scheduler → writer → PostgreSQL → API."""

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from collectors import metrics as cmetrics
from collectors.modbus.registermap import load_register_map
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.inventory import DeviceSpec, Inventory, store_inventory
from gridread.runtime import build_collectors
from gridread.settings import Settings
from ingest.store import PgCollectorStore
from ingest.writer import ReadingWriter
from simulators.meter_model import MeterModel
from simulators.modbus_meter import Fault, ManualClock, ModbusMeterSimulator
from tests.api_auth import credentials

REGMAP = load_register_map("three_phase_meter")


def counter(metric, *labels) -> float:
    return metric.labels(*labels)._value.get()


async def start_rig(url, units, *, clock=None, timeout=1.0, retries=0, slow_delay=2.0):
    rng = random.Random(2007)
    sim = ModbusMeterSimulator(
        REGMAP,
        {u: MeterModel.random(rng) for u in units},
        clock=clock or ManualClock(datetime.now(UTC).timestamp()),
        slow_delay=slow_delay,
    )
    await sim.start()
    specs = [
        DeviceSpec(
            name=f"meter-{u:02d}",
            protocol="modbus_tcp",
            host="127.0.0.1",
            port=sim.port,
            unit_id=u,
            register_map="three_phase_meter",
            poll_interval=0.3,
        )
        for u in units
    ]
    inventory = Inventory(specs, {"three_phase_meter": REGMAP})
    with psycopg.connect(url) as conn:
        ids = store_inventory(conn, inventory, actor="test")
    # no voltage monitors here: the store's pool is never opened
    store = PgCollectorStore(AsyncConnectionPool(url, open=False))
    collectors = build_collectors(inventory, ids, Settings(poll_timeout=timeout), store)
    writer = ReadingWriter(url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    scheduler = PollScheduler(writer, PollPolicy(timeout=timeout, retries=retries))
    for collector, interval in collectors:
        scheduler.add(collector, interval)
    return sim, writer, writer_task, scheduler, ids


async def stop_rig(sim, writer, writer_task, scheduler):
    for c in scheduler.collectors:
        await c.close()
    await writer.close()
    await writer_task
    await sim.stop()


async def test_stored_readings_equal_what_the_simulator_served(migrated_url):
    units = [1, 2, 3, 4, 5]
    clock = ManualClock(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
    sim, writer, writer_task, scheduler, ids = await start_rig(migrated_url, units, clock=clock)
    truth: list[dict[int, dict[str, float]]] = []
    for _cycle in range(4):
        clock.advance(900)  # a 15-minute interval passes in the simulated world
        for collector in scheduler.collectors:
            assert await scheduler.poll(collector)
        truth.append({u: sim.truth(u) for u in units})
    await writer.flush()
    await stop_rig(sim, writer, writer_task, scheduler)

    resolution = REGMAP.resolution
    with psycopg.connect(migrated_url) as conn:
        for u in units:
            device_id = ids[f"meter-{u:02d}"]
            for quantity, step in resolution.items():
                values = [
                    v
                    for (v,) in conn.execute(
                        "SELECT value FROM readings"
                        " WHERE device_id = %s AND quantity = %s ORDER BY ts",
                        (device_id, quantity),
                    )
                ]
                expected = [cycle[u][quantity] for cycle in truth]
                assert len(values) == len(expected), (u, quantity)
                for got, want in zip(values, expected, strict=True):
                    # the register map rounds to its scale; nothing else may differ
                    assert abs(got - want) <= step / 2 + 1e-9, (u, quantity, got, want)
            energy = [cycle[u]["1.8.0"] for cycle in truth]
            assert energy == sorted(energy) and energy[-1] > energy[0]  # registers only grow

    # …and the API serves exactly what was stored.
    with TestClient(
        create_app(migrated_url), headers=credentials(migrated_url, "viewer")
    ) as client:
        now = datetime.now(UTC)
        r = client.get(
            "/devices/meter-03/readings",
            params={
                "quantity": "1.8.0",
                "start": (now - timedelta(hours=1)).isoformat(),
                "end": (now + timedelta(minutes=1)).isoformat(),
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["unit"] == "kWh" and body["count"] == 4
        api_values = [p["value"] for p in body["data"]]
        assert api_values == pytest.approx([c[3]["1.8.0"] for c in truth], abs=0.005 + 1e-9)

        latest = client.get("/devices/meter-03/latest").json()["data"]
        by_q = {x["quantity"]: x["value"] for x in latest}
        assert set(by_q) == set(resolution)
        assert by_q["32.7.0"] == pytest.approx(truth[-1][3]["32.7.0"], abs=0.05 + 1e-9)

        devices = client.get("/devices").json()
        assert devices["count"] == 5 and devices["data"][0]["endpoint"] == f"127.0.0.1:{sim.port}"


async def test_failing_devices_are_counted_and_the_others_keep_arriving(migrated_url, caplog):
    caplog.set_level("WARNING", logger="collectors.scheduler")
    units = [1, 2, 3, 4, 5]
    sim, writer, writer_task, scheduler, ids = await start_rig(
        migrated_url,
        units,
        clock=lambda: datetime.now(UTC).timestamp(),
        timeout=0.4,
        slow_delay=1.5,
    )
    sim.set_fault(2, Fault.NO_REPLY)
    sim.set_fault(3, Fault.EXCEPTION)
    sim.set_fault(4, Fault.SLOW)
    before = {
        kind: counter(cmetrics.POLL_ERRORS, "modbus_tcp", kind)
        for kind in ("timeout", "exception_response")
    }
    failed_before = counter(cmetrics.POLLS, "modbus_tcp", "failed")
    run = asyncio.create_task(scheduler.run())
    await asyncio.sleep(3.0)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await writer.flush()
    await stop_rig(sim, writer, writer_task, scheduler)

    with psycopg.connect(migrated_url) as conn:
        rows = dict(
            conn.execute("SELECT device_id, count(*) FROM readings GROUP BY device_id").fetchall()
        )
    good = rows.get(ids["meter-01"], 0) + rows.get(ids["meter-05"], 0)
    assert good >= 2 * 11 * 5  # ≥ 5 polls each of 11 quantities in 3 s at a 0.3 s interval
    assert all(ids[f"meter-{u:02d}"] not in rows for u in (2, 3, 4))

    assert counter(cmetrics.POLL_ERRORS, "modbus_tcp", "timeout") - before["timeout"] >= 2
    assert (
        counter(cmetrics.POLL_ERRORS, "modbus_tcp", "exception_response")
        - before["exception_response"]
        >= 2
    )
    assert counter(cmetrics.POLLS, "modbus_tcp", "failed") - failed_before >= 3
    log = caplog.text
    assert "meter-02 failed (timeout)" in log
    assert "meter-03 failed (exception_response)" in log and "server device failure" in log
    assert "meter-04 failed (timeout)" in log
    assert "meter-01 failed" not in log and "meter-05 failed" not in log

    # a device that recovers is polled again and says so
    caplog.clear()
    caplog.set_level("INFO", logger="collectors.scheduler")
    sim2, writer2, task2, scheduler2, _ids2 = await start_rig(
        migrated_url, [6], clock=lambda: datetime.now(UTC).timestamp(), timeout=0.3
    )
    sim2.set_fault(6, Fault.NO_REPLY)
    collector = scheduler2.collectors[0]
    assert not await scheduler2.poll(collector)
    sim2.set_fault(6, Fault.NONE)
    assert await scheduler2.poll(collector)
    assert "meter-06 recovered after 1 failed poll" in caplog.text
    await writer2.flush()
    await stop_rig(sim2, writer2, task2, scheduler2)


def test_api_errors_are_clear(migrated_url, storage):
    with TestClient(
        create_app(migrated_url), headers=credentials(migrated_url, "viewer")
    ) as client:
        assert client.get("/health").json() == {
            "status": "ok",
            "database": "ok",
            "storage_mode": storage.value,
            "services": [],  # create_app alone: no supervised services
        }
        r = client.get("/devices/nope/latest")
        assert r.status_code == 404 and "no device named 'nope'" in r.json()["detail"]
        r = client.get("/devices/nope/readings", params={"quantity": "9.9.9"})
        # a 422 in the declared HTTPValidationError shape (a list of errors)
        assert r.status_code == 422 and "unknown quantity '9.9.9'" in r.json()["detail"][0]["msg"]
        q = client.get("/quantities").json()
        assert {
            "obis": "1.8.0",
            "name": "active energy import, total",
            "unit": "kWh",
            "kind": "register",
        } in q
        metrics_text = client.get("/metrics").text
        for name in (
            "gridread_polls_total",
            "gridread_ingest_rows_written_total",
            "gridread_ingest_queue_rows",
            "gridread_ingest_batch_write_seconds_bucket",
            "gridread_poll_errors_total",
        ):
            assert name in metrics_text


def test_health_reports_an_unreachable_database():
    with TestClient(create_app("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")) as client:
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
