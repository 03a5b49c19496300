"""Where reliability's outage records come from, over the real parts: a voltage monitor's
loss-of-voltage records (Modbus RTU on ptys) placed by its inventory `area`/`feeder`, a
concentrator's outage report in its MQTT status (real Mosquitto, the ingest worker), and
outage notices entered through `POST /reliability/notices`."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.reliability_job import ReliabilityPolicy, run_reliability
from api.app import create_app
from collectors.exceptions import ConfigError
from collectors.modbus.voltage_monitor import VoltageMonitorCollector
from collectors.mqtt.payloads import PayloadError, parse
from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from gridread.inventory import Inventory, VoltageMonitorSpec, parse_inventory, store_inventory
from ingest.writer import ReadingWriter
from simulators.concentrator import SimConcentrator
from simulators.meter_model import MeterModel
from simulators.modbus_meter import ManualClock
from simulators.nullmodem import NullModem
from simulators.voltage_monitor import VoltageModel, VoltageMonitorSimulator
from tests.api_auth import credentials
from tests.lineloss_fixture import device, grid, place

TZ = "Asia/Shanghai"
POLICY = ReliabilityPolicy(timezone=TZ)
NOV = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 local
NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def local(day: int, hh: int, mm: int = 0) -> datetime:
    """2026-11-<day> hh:mm Asia/Shanghai (UTC+8) as UTC."""
    return datetime(2026, 11, day, hh - 8, mm, tzinfo=UTC)


def customers(conn) -> dict[str, int]:
    """f-01 → a-01 (customers c1..c4) and d-01 (dedicated: d-total is its customer)."""
    g = grid(conn)
    ids = {}
    for name in ("c1", "c2", "c3", "c4"):
        ids[name] = device(conn, name)
        place(conn, ids[name], "customer", area=g["a-01"])
    ids["d-total"] = device(conn, "d-total")
    place(conn, ids["d-total"], "area_total", area=g["d-01"])
    return ids


def month(conn, level: str, name: str) -> tuple:
    return conn.execute(
        "SELECT customers, sustained, customer_minutes, saidi FROM reliability_indices"
        " WHERE level = %s AND name = %s AND period = 'month' AND start = %s",
        (level, name, NOV),
    ).fetchone()


def test_a_monitors_area_or_feeder_is_in_its_attributes(tmp_path):
    inv = parse_inventory(
        {
            "voltage_monitor": [
                {"name": "vm-a", "port": "/dev/x", "area": "a-01"},
                {"name": "vm-f", "port": "/dev/y", "feeder": "f-01"},
            ]
        },
        source="t",
        base_dir=tmp_path,
    )
    attrs = {r["name"]: r["attributes"] for r in inv.rows()}
    assert (attrs["vm-a"]["area"], attrs["vm-f"]["feeder"]) == ("a-01", "f-01")
    assert "feeder" not in attrs["vm-a"] and "area" not in attrs["vm-f"]
    both = {"name": "vm", "port": "/dev/x", "area": "a-01", "feeder": "f-01"}
    with pytest.raises(ConfigError, match="an area or a feeder, not both"):
        parse_inventory({"voltage_monitor": [both]}, source="t", base_dir=tmp_path)
    topo = {
        "substation": [{"name": "s1", "voltage_kv": 35}],
        "feeder": [{"name": "f-01", "substation": "s1"}],
        "voltage_monitor": [{"name": "vm", "port": "/dev/x", "feeder": "f-02"}],
    }
    with pytest.raises(ConfigError, match="voltage_monitor vm: unknown feeder 'f-02'"):
        parse_inventory(topo, source="t", base_dir=tmp_path)


async def test_monitor_loss_of_voltage_counts_for_its_feeder(migrated_url, collector_store):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        customers(conn)
    line = NullModem()
    await line.start()
    spec = VoltageMonitorSpec(name="vm-1", port=line.b, unit_id=3, feeder="f-01")
    with psycopg.connect(migrated_url) as conn:
        ids = store_inventory(conn, Inventory([], {}, monitors=[spec]), actor="test")
    clock = ManualClock(local(20, 12).timestamp())
    sim = VoltageMonitorSimulator(line.a, VoltageModel(), unit=3, clock=clock)
    # 11-20 08:00–09:30 ended; 11:50 lost and not back at the first poll (12:00)
    sim.losses = [(local(20, 8).timestamp(), local(20, 9, 30).timestamp())]
    sim.losses.append((local(20, 11, 50).timestamp(), local(20, 12, 20).timestamp()))
    await sim.start()
    writer = ReadingWriter(migrated_url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    collector = VoltageMonitorCollector(
        device_id=ids["vm-1"], device_name="vm-1", port=line.b, unit_id=3, store=collector_store
    )
    try:
        await collector.gather(writer)
        sql = "SELECT ts, detail->>'end' FROM events WHERE kind = 'voltage_loss' ORDER BY ts"
        with psycopg.connect(migrated_url) as conn:
            first = conn.execute(sql).fetchall()
        assert [(ts, end) for ts, end in first] == [(local(20, 8), local(20, 9, 30).isoformat())]
        clock.advance(3600)  # 13:00: the second is back; the first is read again
        await collector.gather(writer)
        await writer.flush()
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            both = conn.execute(sql).fetchall()
            assert [ts for ts, _ in both] == [local(20, 8), local(20, 11, 50)]
            run_reliability(conn, POLICY, NOW)
            # the feeder's 5 customers × (90 + 30) min = 600 customer minutes, 10 sustained
            assert month(conn, "feeder", "f-01") == (5, 10, 600.0, pytest.approx(600 / 5))
    finally:
        await collector.close()
        await writer.close()
        await writer_task
        await sim.stop()
        await line.stop()


async def wait_count(url: str, sql: str, n: int, timeout: float = 30.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with psycopg.connect(url) as conn:
            got = conn.execute(sql).fetchone()[0]
        if got >= n or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_concentrator_outage_report_is_an_outage_event(
    migrated_url, mqtt_broker, collector_store
):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        customers(conn)
        conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
            " VALUES ('a01-jzq', 'concentrator', 'mqtt', 'mqtt', 86400, '{\"area\": \"a-01\"}')"
        )
    sim = SimConcentrator(
        "a01-jzq", {"c1": MeterModel()}, host=mqtt_broker.host, port=mqtt_broker.port
    )
    sim.outages = [(local(10, 10), local(10, 10, 45))]
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
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 15)
        await asyncio.to_thread(sim.start)
        day = datetime(2026, 11, 9, 16, tzinfo=UTC)
        await asyncio.to_thread(sim.upload_day, day)
        await wait_count(migrated_url, "SELECT count(*) FROM events WHERE kind = 'status'", 1)
        # reported again with the next day's status: stored once
        sim.outages.append((local(11, 9), local(11, 9, 3)))
        await asyncio.to_thread(sim.upload_day, day + timedelta(days=1))
        await wait_count(migrated_url, "SELECT count(*) FROM events WHERE kind = 'outage'", 2)
        # a bad report (end before start) is refused whole, with the reason
        outage = {"start": local(12, 9).isoformat(), "end": local(12, 8).isoformat()}
        bad = json.dumps({"ts": datetime.now(UTC).isoformat(), "outages": [outage]})
        sim.client.publish("gridread/v1/a01-jzq/status", bad, qos=1).wait_for_publish(10)
        await wait_count(migrated_url, "SELECT count(*) FROM dead_letters", 1)
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            events = conn.execute(
                "SELECT ts, detail->>'end' FROM events WHERE kind = 'outage' ORDER BY ts"
            ).fetchall()
            assert events == [
                (local(10, 10), local(10, 10, 45).isoformat()),
                (local(11, 9), local(11, 9, 3).isoformat()),
            ]
            [(reason,)] = conn.execute("SELECT reason FROM dead_letters").fetchall()
            assert "outages[0]: end" in reason and "not after start" in reason
            statuses = conn.execute("SELECT detail FROM events WHERE kind = 'status'").fetchall()
            # (the two statuses may share their second: one row)
            assert statuses and all("outages" not in d for (d,) in statuses)
            run_reliability(conn, POLICY, NOW)
            # a-01's 4 customers × 45 min (sustained) and × 3 min (momentary, < 5 min)
            got = conn.execute(
                "SELECT customers, sustained, momentary, customer_minutes FROM"
                " reliability_indices WHERE level = 'area' AND name = 'a-01'"
                " AND period = 'month' AND start = %s",
                (NOV,),
            ).fetchone()
            assert got == (4, 4, 4, 4 * 45.0)
    finally:
        await asyncio.to_thread(sim.stop)
        await worker.drain()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await writer.close()
        await writer_task


def test_notices_posted_make_an_interruption_planned(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        ids = customers(conn)
        conn.execute(
            "INSERT INTO events (device_id, ts, kind, detail) VALUES (%s, %s, 'power_down', %s)",
            (ids["c1"], local(20, 8, 10), f'{{"end": "{local(20, 9).isoformat()}"}}'),
        )
    notice = {
        "scope": "area",
        "name": "a-01",
        "kind": "planned",
        "start": "2026-11-20T08:00:00+08:00",
        "end": "2026-11-20T12:00:00+08:00",
        "reason": "transformer maintenance",
    }
    with TestClient(
        create_app(migrated_url, timezone=TZ), headers=credentials(migrated_url, "load_operator")
    ) as client:
        viewer = credentials(migrated_url, "viewer")
        r = client.post("/reliability/notices", json=notice, headers=viewer)
        assert r.status_code == 403, r.text
        r = client.post("/reliability/notices", json=notice)
        assert r.status_code == 201, r.text
        got = r.json()
        assert datetime.fromisoformat(got["start"]) == local(20, 8)
        assert datetime.fromisoformat(got["end"]) == local(20, 12)
        for bad, field in (
            ({"name": "a-99"}, "name"),
            ({"end": "2026-11-20T07:00:00+08:00"}, "end"),
            ({"kind": "unannounced"}, "kind"),
            ({"scope": "town"}, "scope"),
            ({"start": "yesterday"}, "start"),
        ):
            r = client.post("/reliability/notices", json={**notice, **bad})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"][0]["loc"][-1] == field, r.text
        listed = client.get(
            "/reliability/notices",
            params={"start": "2026-11-20T00:00:00+08:00", "end": "2026-11-21T00:00:00+08:00"},
        ).json()
        assert [(n["name"], n["reason"]) for n in listed["data"]] == [
            ("a-01", "transformer maintenance")
        ]
        me = client.get("/auth/me").json()["actor"]
    with psycopg.connect(migrated_url) as conn:
        audit = conn.execute(
            "SELECT actor, action, after->>'name' FROM audit_log WHERE entity = 'outage_notice'"
        ).fetchall()
    assert audit == [(me, "create", "a-01")]  # the refused attempts left nothing
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        run_reliability(conn, POLICY, NOW)
        [(kind, minutes)] = conn.execute(
            "SELECT kind, customer_minutes FROM interruptions"
        ).fetchall()
    assert (kind, minutes) == ("planned", 50.0)  # c1 08:10–09:00 inside the notice


@pytest.mark.parametrize(
    ("outages", "why"),
    [
        ("no", "status: outages = 'no' is not list"),
        ([{"start": "2026-11-10T02:00:00Z"}], 'outages[0]: expected {"start": time, "end": time}'),
        ([{"start": "2026-11-10T02:00:00Z", "end": "later"}], "outages[0] end: 'later' is not"),
        ([{"start": "1999-11-10T02:00:00Z", "end": "2026-11-10T03:00:00Z"}], "outside"),
    ],
)
def test_a_status_with_a_bad_outage_is_refused_with_its_reason(outages, why):
    body = json.dumps({"ts": "2026-11-11T00:00:00Z", "outages": outages}).encode()
    with pytest.raises(PayloadError) as err:
        parse("gridread/v1/jzq/status", body, now=datetime(2026, 11, 11, tzinfo=UTC))
    assert why in str(err.value)
    # 1794276000 = 2026-11-10T02:00:00Z (Unix seconds); 04:00+01:00 = 03:00Z
    good = [{"start": 1794276000, "end": "2026-11-10T04:00:00+01:00"}]
    body = json.dumps({"ts": "2026-11-11T00:00:00Z", "outages": good}).encode()
    parsed = parse("gridread/v1/jzq/status", body, now=datetime(2026, 11, 11, tzinfo=UTC))
    assert parsed.status["outages"] == [
        (datetime(2026, 11, 10, 2, tzinfo=UTC), datetime(2026, 11, 10, 3, tzinfo=UTC))
    ]
