"""A simulated concentrator over a real Mosquitto: uploads, read success per concentrator,
and automatic re-read requests (MQTT 5 request/response) that fill the gaps."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.mqtt.rereads import ConcentratorRereader
from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from ingest.concentrators import concentrator_read_rates
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.model import Quality
from ingest.writer import ReadingWriter
from simulators.concentrator import SimConcentrator
from simulators.meter_model import MeterModel
from tests.api_auth import credentials

TZ = ZoneInfo(DEFAULT_TIMEZONE)


def rows(url, sql, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


async def wait_rows(url, sql, expected, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        (n,) = rows(url, sql)[0]
        if n >= expected:
            return n
        await asyncio.sleep(0.1)
    return rows(url, sql)[0][0]


async def test_gaps_are_requested_again_and_filled(migrated_url, mqtt_broker, collector_store):
    rng = random.Random(7)
    meters = {f"a12-m{i:03d}": MeterModel.random(rng) for i in range(60)}
    with psycopg.connect(migrated_url) as conn:
        conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
            " VALUES ('a12-jzq', 'concentrator', 'mqtt', 'mqtt', 86400, '{\"area\": \"a12\"}')"
        )
        for name in meters:
            conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
                " VALUES (%s, 'meter', 'mqtt', 'mqtt', 86400,"
                ' \'{"concentrator": "a12-jzq", "area": "a12"}\')',
                (name,),
            )
    sim = SimConcentrator("a12-jzq", meters, host=mqtt_broker.host, port=mqtt_broker.port)
    failing = set(sorted(meters)[:6])
    sim.failing = set(failing)
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    group = f"g{uuid.uuid4().hex[:8]}"
    worker = MqttIngestWorker(
        MqttSettings(
            host=mqtt_broker.host, port=mqtt_broker.port, group=group, client_id=f"w-{group}"
        ),
        writer,
        collector_store,
    )
    worker_task = asyncio.create_task(worker.run())
    rereader = ConcentratorRereader(
        host=mqtt_broker.host, port=mqtt_broker.port, store=collector_store, days=1, timeout=20
    )
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 15)
        today = datetime(2026, 11, 26, tzinfo=TZ)
        yesterday = today - timedelta(days=1)
        await asyncio.to_thread(sim.start)
        await asyncio.to_thread(sim.upload_day, yesterday)
        read = len(meters) - len(failing)
        await wait_rows(migrated_url, "SELECT count(*) FROM readings", read * 97)
        await wait_rows(migrated_url, "SELECT count(*) FROM events WHERE kind = 'status'", 1)

        with psycopg.connect(migrated_url) as conn:
            [before] = concentrator_read_rates(conn, yesterday.date(), TZ)
        assert (before["due"], before["read"]) == (60, 54) and before["rate"] == 0.9
        assert sorted(f["meter"] for f in before["failing"]) == sorted(failing)
        [(status,)] = rows(migrated_url, "SELECT detail FROM events WHERE kind = 'status'")
        assert status["meters_read"] == 54 and sorted(status["failing"]) == sorted(failing)

        # the re-read pass finds the six meters, asks the concentrator, which re-sends
        await rereader.start()
        results = await rereader.run_once(now=today + timedelta(hours=9))
        assert results["a12-jzq"]["status"] == "done" and results["a12-jzq"]["meters"] == 6
        assert sorted(sim.requests[0]["meters"]) == sorted(failing)
        await wait_rows(migrated_url, "SELECT count(*) FROM readings", len(meters) * 97)
        await writer.flush()

        with psycopg.connect(migrated_url) as conn:
            [after] = concentrator_read_rates(conn, yesterday.date(), TZ)
        assert after["read"] == 60 and after["rate"] == 1.0 and after["failing"] == []
        flagged = rows(
            migrated_url,
            "SELECT d.name, bool_and(r.quality & %s <> 0), count(*) FROM readings r"
            " JOIN devices d ON d.id = r.device_id GROUP BY 1 HAVING bool_or(r.quality & %s <> 0)",
            int(Quality.RE_READ),
            int(Quality.RE_READ),
        )
        assert sorted(name for name, _, _ in flagged) == sorted(failing)
        assert all(all_flagged and n == 97 for _, all_flagged, n in flagged)
        # the values are the meters' own: a restored curve point equals the model
        name = sorted(failing)[0]
        t = yesterday + timedelta(hours=5)
        [(value,)] = rows(
            migrated_url,
            "SELECT value FROM readings r JOIN devices d ON d.id = r.device_id"
            " WHERE d.name = %s AND r.quantity = '1.8.0' AND r.ts = %s",
            name,
            t,
        )
        assert value == pytest.approx(round(meters[name].energy_kwh(t.timestamp()), 2))
        # the request/response traffic is not mistaken for uploads
        assert rows(migrated_url, "SELECT count(*) FROM dead_letters") == [(0,)]
        # nothing missing any more: the next pass asks for nothing
        assert await rereader.run_once(now=today + timedelta(hours=10)) == {}

        with TestClient(
            create_app(migrated_url), headers=credentials(migrated_url, "viewer")
        ) as client:
            [area] = client.get(
                "/concentrators/read-stats/by-area", params={"day": "2026-11-25"}
            ).json()
            assert (area["area"], area["concentrators"], area["rate"]) == ("a12", ["a12-jzq"], 1.0)
            [api] = client.get("/concentrators/read-stats", params={"day": "2026-11-25"}).json()
            assert (api["concentrator"], api["area"], api["due"], api["read"]) == (
                "a12-jzq",
                "a12",
                60,
                60,
            )
    finally:
        await rereader.stop()
        await asyncio.to_thread(sim.stop)
        await worker.drain()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await writer.close()
        await writer_task


def test_status_payloads_are_validated():
    from collectors.mqtt.payloads import PayloadError, parse

    ok = parse(
        "gridread/v1/c1/status",
        json.dumps({"ts": "2026-11-26T01:00:00Z", "meters_due": 3}).encode(),
    )
    assert ok.status["meters_due"] == 3 and ok.status["ts"].year == 2026
    with pytest.raises(PayloadError, match="meters_due = 'x' is not int"):
        parse("gridread/v1/c1/status", b'{"ts": 1795688100, "meters_due": "x"}')
