"""Hostile MQTT input against a real Mosquitto, a real PostgreSQL and an in-process worker:
whatever one message holds, it is dead-lettered or stored, and the worker goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, date, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg

from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from gridread.broker import INGEST
from ingest.store import PgCollectorStore
from ingest.writer import ReadingWriter
from tests.conftest import readings_days

T = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def rows(url, sql, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


async def wait_for(url, sql, expected, timeout=30.0):
    """Wait until `sql` (a count) reaches `expected`; return the last count."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        (n,) = rows(url, sql)[0]
        if n >= expected or asyncio.get_running_loop().time() > deadline:
            return n
        await asyncio.sleep(0.05)


def add_device(url, name="h-1", attributes="{}"):
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
            " VALUES (%s, 'meter', 'mqtt', 'mqtt', 900, %s)",
            (name, attributes),
        )


@contextlib.asynccontextmanager
async def running_worker(url, broker, **options):
    store = await PgCollectorStore.open(url)
    writer = ReadingWriter(url, max_delay=0.05)
    writer_task = asyncio.create_task(writer.run())
    group = f"g{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        group=group,
        client_id=f"w-{group}",
        auth=broker.auth(INGEST),
        **options,
    )
    worker = MqttIngestWorker(settings, writer, store)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 20)
        yield worker, task
    finally:
        if not task.done():  # a wedged worker would never drain: bounded
            await asyncio.wait_for(worker.drain(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()
        await writer_task
        await store.close()


def publish(broker, messages: list[tuple[str, bytes]]) -> list[mqtt.MQTTMessageInfo]:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv5,
        client_id=f"pub-{uuid.uuid4().hex[:8]}",
    )
    broker.auth("test-publisher").apply(client)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
        return infos
    finally:
        client.disconnect()
        client.loop_stop()


def good(device="h-1", value=1.0, ts=T) -> tuple[str, bytes]:
    doc = {"ts": iso(ts), "values": {"1.8.0": value}}
    return f"gridread/v1/{device}/readings", json.dumps(doc).encode()


async def test_subscribed_is_set_on_suback_and_a_message_right_after_is_received(
    migrated_url, mqtt_broker
):
    add_device(migrated_url)
    async with running_worker(migrated_url, mqtt_broker) as (worker, task):
        assert worker.subscribed.is_set()
        # a shared subscription's group gets only what is published after its SUBACK
        await asyncio.to_thread(publish, mqtt_broker, [good()])
        assert await wait_for(migrated_url, "SELECT count(*) FROM readings", 1) == 1
        assert not task.done()


READINGS = "gridread/v1/h-1/readings"
# each of these killed the worker: only PayloadError was caught around parsing
CRASHING = [
    (READINGS, b"[" * 10_000 + b"]" * 10_000),  # RecursionError in json.loads
    (READINGS, b'{"ts": 1, "values": {"1.8.0": ' + b"9" * 5000 + b"}}"),  # int digits limit
    (READINGS, b'{"ts": "0001-01-01T00:00:00+01:00", "values": {"1.8.0": 1}}'),  # Overflow
    (READINGS, b'{"ts": 1795688100, "values": {"\\ud800": "x"}}'),  # lone surrogate key
    (READINGS, b'{"readings": [["1.8.0", "0001-01-01T00:00:00+01:00", 1.5]]}'),
    ("gridread/v1/h-1/senml", b'[{"n": "\\ud800", "bt": 1e300, "v": 1}]'),
]
# these wedged it: text and jsonb refuse NUL (and jsonb a lone surrogate), and the insert
# was retried forever with the message unacknowledged
WEDGING = [
    (READINGS, b'{"ts": 1795688100, "values": {"\\u0000": "x"}}'),
    ("gridread/v1/h-1/status", b'{"ts": 1795688100, "failing": ["m-1", "\\u0000"]}'),
    ("gridread/v1/h-1/status", b'{"ts": 1795688100, "failing": ["\\ud800"]}'),
]


async def dead_letters_and_go_on(url, broker, hostile):
    add_device(url)
    async with running_worker(url, broker) as (_worker, task):
        await asyncio.to_thread(publish, broker, [*hostile, good()])
        assert await wait_for(url, "SELECT count(*) FROM readings", 1) == 1
        letters = "SELECT count(*) FROM dead_letters"
        assert await wait_for(url, letters, len(hostile)) == len(hostile)
        assert not task.done()
    stored = rows(url, "SELECT source, reason, raw, payload FROM dead_letters ORDER BY id")
    assert [bytes(raw) for _, _, raw, _ in stored] == [p for _, p in hostile]
    for source, reason, _raw, payload in stored:
        assert source == "mqtt" and reason and "\x00" not in reason
        assert payload["topic"].startswith("gridread/v1/h-1/")
    assert rows(url, "SELECT count(*) FROM events") == [(0,)]


async def test_whatever_parsing_raises_dead_letters_the_message_and_the_worker_goes_on(
    migrated_url, mqtt_broker
):
    await dead_letters_and_go_on(migrated_url, mqtt_broker, CRASHING)


async def test_nul_and_surrogates_the_database_refuses_do_not_wedge_the_worker(
    migrated_url, mqtt_broker
):
    await dead_letters_and_go_on(migrated_url, mqtt_broker, WEDGING)


async def test_bad_values_reject_only_their_reading(migrated_url, mqtt_broker):
    add_device(migrated_url)
    t1, t2 = iso(T), iso(T + timedelta(minutes=1))
    values = (
        b'{"ts": "%s", "values": {"1.8.0": 5.5, "32.7.0": NaN, "52.7.0": Infinity,' % (t1.encode())
        + b' "72.7.0": 1e400, "31.7.0": "9.5", "51.7.0": true, "71.7.0": null, "1.7.0": 0.25}}'
    )
    triples = (
        b'{"readings": [["1.8.0", "%s", 6.5], ["2.8.0", "yesterday", 1],'
        b' ["2.8.0", "%s", 7.5], ["13.7.0", 1795688100]]}' % (t2.encode(), t2.encode())
    )
    senml = b'[{"bt": 1795688100, "n": "1.8.0", "v": 8.5}, {"n": "2.8.0", "v": "9"}]'
    async with running_worker(migrated_url, mqtt_broker) as (_worker, task):
        await asyncio.to_thread(
            publish,
            mqtt_broker,
            [(READINGS, values), (READINGS, triples), ("gridread/v1/h-1/senml", senml)],
        )
        assert await wait_for(migrated_url, "SELECT count(*) FROM dead_letters", 3) == 3
        assert await wait_for(migrated_url, "SELECT count(*) FROM readings", 5) == 5
        assert not task.done()
    got = rows(migrated_url, "SELECT quantity, value FROM readings ORDER BY value")
    assert got == [("1.7.0", 0.25), ("1.8.0", 5.5), ("1.8.0", 6.5), ("2.8.0", 7.5), ("1.8.0", 8.5)]
    reasons = [r for (r,) in rows(migrated_url, "SELECT reason FROM dead_letters ORDER BY id")]
    for quantity in ("32.7.0", "52.7.0", "72.7.0", "31.7.0", "51.7.0", "71.7.0"):
        assert quantity in reasons[0]
    assert "yesterday" in reasons[1] and "readings[3]" in reasons[1]
    assert "record 1" in reasons[2]


async def test_readings_outside_the_plausible_window_are_dead_lettered(migrated_url, mqtt_broker):
    add_device(migrated_url)
    add_device(migrated_url, "h-new", '{"commissioned": "2026-06-01"}')
    before = readings_days(migrated_url)
    old = [["1.8.0", 86400 * d + 3600, 1.0] for d in range(1, 31)]  # a month of 1970
    messages = [
        (READINGS, json.dumps({"readings": [*old, ["1.8.0", iso(T), 2.0]]}).encode()),
        # before the global floor (settings: 2020-01-01)
        good(value=3.0, ts=datetime(2019, 12, 31, 23, tzinfo=UTC)),
        # after the floor but before this device's commissioning; fine for the other one
        good("h-new", value=4.0, ts=datetime(2026, 5, 31, tzinfo=UTC)),
        good(value=5.0, ts=datetime(2026, 5, 31, tzinfo=UTC)),
        good(value=6.0, ts=datetime.now(UTC) + timedelta(hours=2)),  # beyond max_future
        # a status gets the same window
        ("gridread/v1/h-1/status", b'{"ts": "2030-01-01T00:00:00Z", "meters_due": 1}'),
        ("gridread/v1/h-1/status", b'{"ts": 86400, "meters_due": 1}'),
        ("gridread/v1/h-1/status", json.dumps({"ts": iso(T), "meters_due": 1}).encode()),
    ]
    async with running_worker(
        migrated_url, mqtt_broker, not_before=date(2020, 1, 1), max_future_s=3600
    ) as (_worker, task):
        await asyncio.to_thread(publish, mqtt_broker, messages)
        assert await wait_for(migrated_url, "SELECT count(*) FROM events", 1) == 1
        assert await wait_for(migrated_url, "SELECT count(*) FROM dead_letters", 6) == 6
        assert not task.done()
    assert rows(migrated_url, "SELECT value FROM readings ORDER BY 1") == [(2.0,), (5.0,)]
    reasons = [r for (r,) in rows(migrated_url, "SELECT reason FROM dead_letters ORDER BY id")]
    assert all("outside the plausible window" in r for r in reasons), reasons
    assert "not before 2020-01-01" in reasons[0] and "not before 2026-06-01" in reasons[2]
    # a partition or chunk only for the days stored (none for 1970): 2026-05-31, and today's
    # where TimescaleDB makes chunks as rows arrive (native partitions exist ahead)
    stored_days = {
        ts.astimezone(UTC).date() for (ts,) in rows(migrated_url, "SELECT ts FROM readings")
    }
    assert date(2026, 5, 31) in stored_days
    assert readings_days(migrated_url) - before == stored_days - before


async def test_dead_letters_keep_a_capped_prefix_and_the_original_size(migrated_url, mqtt_broker):
    add_device(migrated_url)
    big = b"{" + b"x" * 200_000
    async with running_worker(migrated_url, mqtt_broker, dead_letter_raw_max=1024) as (_, task):
        await asyncio.to_thread(publish, mqtt_broker, [(READINGS, big)])
        assert await wait_for(migrated_url, "SELECT count(*) FROM dead_letters", 1) == 1
        assert not task.done()
    [(raw, size, reason)] = rows(migrated_url, "SELECT raw, raw_size, reason FROM dead_letters")
    assert bytes(raw) == big[:1024] and size == len(big) and "not JSON" in reason


async def test_the_broker_drops_a_message_over_its_size_limit(migrated_url, mqtt_broker):
    add_device(migrated_url)
    # MQTT 3.1.1: Mosquitto 2.0.11 answers an MQTT 5 publisher's oversized QoS 1 message with
    # PUBACK reason 0x95, which paho takes as a protocol error (it reconnects and resends)
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv311,
        client_id=f"pub-{uuid.uuid4().hex[:8]}",
    )
    async with running_worker(migrated_url, mqtt_broker) as (_, task):
        mqtt_broker.auth("test-publisher").apply(client)
        client.connect(mqtt_broker.host, mqtt_broker.port)
        client.loop_start()
        try:
            over = client.publish(READINGS, b" " * ((1 << 20) + 1), qos=1)
            ok = client.publish(*good(), qos=1)
            for info in (over, ok):
                await asyncio.to_thread(info.wait_for_publish, 30)
        finally:
            client.disconnect()
            client.loop_stop()
        # one worker handles messages in order: when the second is stored, the first
        # would have been dead-lettered had the broker passed it on
        assert await wait_for(migrated_url, "SELECT count(*) FROM readings", 1) == 1
        assert not task.done()
    assert rows(migrated_url, "SELECT count(*) FROM dead_letters") == [(0,)]
