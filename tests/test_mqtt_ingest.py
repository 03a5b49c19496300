"""MQTT ingestion against a real Mosquitto and real worker processes (`gridread mqtt-ingest`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg

from gridread.broker import INGEST

QUANTITIES = [
    "1.8.0",
    "2.8.0",
    "32.7.0",
    "52.7.0",
    "72.7.0",
    "31.7.0",
    "51.7.0",
    "71.7.0",
    "1.7.0",
    "13.7.0",
]
BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=12)


class Worker:
    """One `gridread mqtt-ingest` process; its stderr is collected for assertions."""

    def __init__(self, url, broker, client_id, group):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")}
        env |= {
            "GRIDREAD_DATABASE_URL": url,
            "GRIDREAD_MQTT_GROUP": group,
            "GRIDREAD_WRITER_MAX_DELAY": "0.1",
            "GRIDREAD_MQTT_USERNAME": INGEST,
            "GRIDREAD_MQTT_PASSWORD": broker.passwords[INGEST],
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridread.cli",
                "mqtt-ingest",
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--client-id",
                client_id,
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if "MQTT subscribed" in line:  # logged on the SUBACK
                self.subscribed.set()

    def wait_subscribed(self, timeout=20):
        assert self.subscribed.wait(timeout), "".join(self.lines)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)  # a clean stop commits and acknowledges what was taken
        self.reader.join(10)  # stderr read to its end
        return "".join(self.lines)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


def publisher(broker) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv5,
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
    )
    client.max_queued_messages_set(0)
    broker.auth("test-publisher").apply(client)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def publish_all(client, messages, *, per_second: float | None = None):
    infos = []
    started = time.monotonic()
    for i, (topic, payload) in enumerate(messages):
        infos.append(client.publish(topic, payload, qos=1))
        if per_second and i % 50 == 49:  # a steady stream rather than one burst
            time.sleep(max(0.0, started + (i + 1) / per_second - time.monotonic()))
    for info in infos:
        info.wait_for_publish(30)


def make_devices(url, n):
    with psycopg.connect(url) as conn:
        for i in range(n):
            conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
                " VALUES (%s, 'meter', 'mqtt', 'mqtt', 900)",
                (f"mq-{i:03d}",),
            )
    return [f"mq-{i:03d}" for i in range(n)]


def good_messages(devices, per_device):
    out = []
    for k in range(per_device):
        ts = (BASE + timedelta(minutes=k)).isoformat().replace("+00:00", "Z")
        for d in devices:
            values = {q: round(100 + k + i * 0.5, 3) for i, q in enumerate(QUANTITIES)}
            out.append(
                (f"gridread/v1/{d}/readings", json.dumps({"ts": ts, "values": values}).encode())
            )
    return out


def count(url, sql="SELECT count(*) FROM readings"):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def wait_count(url, expected, timeout=90, sql="SELECT count(*) FROM readings"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count(url, sql)
        if n >= expected:
            return n
        time.sleep(0.2)
    return count(url, sql)


def test_two_workers_on_a_shared_subscription_store_each_reading_once(migrated_url, mqtt_broker):
    devices = make_devices(migrated_url, 20)
    group = f"g{uuid.uuid4().hex[:8]}"
    workers = [Worker(migrated_url, mqtt_broker, f"w{i}-{group}", group) for i in (1, 2)]
    for w in workers:
        w.wait_subscribed()
    messages = good_messages(devices, 50)  # 1000 messages, 10 000 readings
    client = publisher(mqtt_broker)
    publish_all(client, messages)
    assert wait_count(migrated_url, 10 * len(messages)) == 10 * len(messages)
    logs = [w.stop() for w in workers]
    client.loop_stop()
    assert count(migrated_url) == 10 * len(messages)
    assert count(
        migrated_url, "SELECT count(DISTINCT (device_id, quantity, ts)) FROM readings"
    ) == 10 * len(messages)
    handled = [
        int(log.split(": ", 2)[-1].split(" messages")[0].split()[-1])
        for log in (next(ln for ln in log.splitlines() if "messages;" in ln) for log in logs)
    ]
    assert sum(handled) == len(messages) and min(handled) > 0, handled  # both took a share
    assert count(migrated_url, "SELECT count(*) FROM dead_letters") == 0


def test_a_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(migrated_url, mqtt_broker):
    devices = make_devices(migrated_url, 20)
    group = f"g{uuid.uuid4().hex[:8]}"
    w1 = Worker(migrated_url, mqtt_broker, f"w1-{group}", group)
    w2 = Worker(migrated_url, mqtt_broker, f"w2-{group}", group)
    w1.wait_subscribed()
    w2.wait_subscribed()
    messages = good_messages(devices, 150)  # 3000 messages, 30 000 readings
    total = 10 * len(messages)
    client = publisher(mqtt_broker)
    sender = threading.Thread(
        target=publish_all, args=(client, messages), kwargs={"per_second": 1000}
    )
    sender.start()
    wait_count(migrated_url, total // 4)
    w1.kill()  # SIGKILL: no clean shutdown, unacknowledged messages stay with its session
    killed_at = count(migrated_url)
    assert killed_at < total
    sender.join(60)
    w1 = Worker(migrated_url, mqtt_broker, f"w1-{group}", group)  # same client id: same session
    w1.wait_subscribed()
    assert wait_count(migrated_url, total) == total
    w1.stop()
    w2.stop()
    client.loop_stop()
    assert count(migrated_url) == total
    assert count(migrated_url, "SELECT count(*) FROM dead_letters") == 0


BAD = [
    ("gridread/v1/mq-000/readings", b"{not json", "not JSON"),
    ("gridread/v1/mq-000/readings", b"\xff\x00\x01", "not JSON"),
    (
        "gridread/v1/nobody/readings",
        b'{"ts": 1795688100, "values": {"1.8.0": 1}}',
        "unknown device 'nobody'",
    ),
    (
        "gridread/v1/mq-000/readings",
        b'{"ts": 1795688100, "values": {"9.9.9": 1}}',
        "unknown quantity '9.9.9'",
    ),
    ("gridread/v1/mq-000/readings", b'{"ts": 4102444800, "values": {"1.8.0": 1}}', "in the future"),
    ("gridread/v1/mq-000/senml", b'[{"n": "1.8.0", "v": 1}]', "no time"),
    ("gridread/v1/mq-000/csv", b"1.8.0,1", "unknown payload format"),
    ("gridread/v1/mq-000/readings", b'{"values": {"1.8.0": 1}}', "'values' needs a 'ts'"),
]


def test_malformed_payloads_go_to_dead_letters_and_good_ones_are_stored(migrated_url, mqtt_broker):
    devices = make_devices(migrated_url, 5)
    group = f"g{uuid.uuid4().hex[:8]}"
    worker = Worker(migrated_url, mqtt_broker, f"w-{group}", group)
    worker.wait_subscribed()
    good = good_messages(devices, 60)  # 300 messages
    bad = [(t, p) for _ in range(40) for t, p, _ in BAD]  # 320 messages
    mixed = [m for pair in zip(good, bad[: len(good)], strict=True) for m in pair] + bad[
        len(good) :
    ]
    client = publisher(mqtt_broker)
    publish_all(client, mixed)
    assert wait_count(migrated_url, 10 * len(good)) == 10 * len(good)
    assert wait_count(migrated_url, len(bad), sql="SELECT count(*) FROM dead_letters") == len(bad)
    worker.stop()
    client.loop_stop()
    with psycopg.connect(migrated_url) as conn:
        letters = conn.execute("SELECT payload->>'topic', raw, reason FROM dead_letters").fetchall()
    assert len(letters) == len(bad)
    by_raw: dict[bytes, list[str]] = {}
    for topic, raw, reason in letters:
        by_raw.setdefault(bytes(raw), []).append(reason)
        assert topic.startswith("gridread/v1/")
    for _topic, payload, why in BAD:
        reasons = by_raw[payload]
        assert len(reasons) == 40 and all(why in r for r in reasons), (payload, reasons[:1])
    assert count(migrated_url) == 10 * len(good)
