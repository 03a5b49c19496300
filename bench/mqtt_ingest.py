"""MQTT ingest throughput: broker → gridread's workers → PostgreSQL, against two baselines
measured in the same run:

* batch payloads (a concentrator's 96-point curve per message): readings/s stored by 1 and 2
  workers vs. raw binary COPY of the same readings (target ≥ 0.5);
* one reading per message: messages/s stored by 1 and 2 workers vs. a subscriber that only
  counts the messages from the same broker (the transport ceiling; target ≥ 0.5).

Each run publishes its messages while the consumers are away (their persistent sessions
queue them in the broker), then times the consumers draining the queue: the publisher's speed
does not enter the figure. Workers are real `gridread mqtt-ingest` processes; their start-up
time (process start to "MQTT connected", measured with an empty queue) is taken off.

    python bench/mqtt_ingest.py [--messages 30000] [--curves 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # as for the other benchmarks

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench._common import bench_database  # noqa: E402
from gridread.broker import INGEST, Broker, start_broker  # noqa: E402
from gridread.broker_accounts import Account  # noqa: E402
from ingest.schema import ensure_partitions, migrate  # noqa: E402

DEVICES = 50
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)


PUBLISHER = Account("bench-publisher", "bench", write=("gridread/v1/#",))  # all devices' topics
BROKER: Broker | None = None  # started by main(): its accounts' passwords


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProc:
    def __init__(self, url: str, port: int, client_id: str, group: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")}
        env |= {
            "GRIDREAD_DATABASE_URL": url,
            "GRIDREAD_MQTT_GROUP": group,
            "GRIDREAD_WRITER_MAX_DELAY": "0.2",
            "GRIDREAD_LOG_LEVEL": "INFO",  # the "MQTT connected" line
            "GRIDREAD_MQTT_USERNAME": INGEST,
            "GRIDREAD_MQTT_PASSWORD": BROKER.passwords[INGEST] if BROKER else "",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridread.cli",
                "mqtt-ingest",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--client-id",
                client_id,
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started = time.perf_counter()
        self.connected_at = 0.0
        self.connected = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            if "MQTT connected" in line and not self.connected.is_set():
                self.connected_at = time.perf_counter()
                self.connected.set()

    @property
    def startup(self) -> float:
        return self.connected_at - self.started

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def client(
    port: int, client_id: str | None = None, account: str = PUBLISHER.name, **kw
) -> mqtt.Client:
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv5,
        client_id=client_id or f"bench-{uuid.uuid4().hex[:8]}",
        **kw,
    )
    c.max_queued_messages_set(0)
    if BROKER is not None:
        BROKER.auth(account).apply(c)
    return c


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = client(port)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def count_only(port: int, group: str, n: int, prepare: bool) -> float:
    """A subscriber that only counts (QoS 1, paho acks automatically): the ceiling."""
    got = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(c, u, m):
        nonlocal got
        if not first:
            first.append(time.perf_counter())
        got += 1
        if got >= n:
            done.set()

    c = client(port, client_id=f"counter-{group}", account=INGEST)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (
        cl.subscribe(f"$share/{group}/gridread/v1/+/+", qos=1),
        connected.set(),
    )
    started = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    connected.wait(10)
    if prepare:
        time.sleep(0.5)
        c.disconnect()
        c.loop_stop()
        return 0.0
    done.wait(300)
    elapsed = time.perf_counter() - started
    c.disconnect()
    c.loop_stop()
    return got / elapsed


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def through_workers(url: str, port: int, n_workers: int, messages, expected: int) -> float:
    """Readings/s stored by n workers draining `messages` queued for them in the broker."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
    group = f"w{uuid.uuid4().hex[:6]}"
    ids = [f"{group}-{i}" for i in range(n_workers)]
    # 1. sessions subscribe, then go away (SIGKILL keeps the subscription in the session)
    workers = [WorkerProc(url, port, cid, group) for cid in ids]
    for w in workers:
        if not w.connected.wait(60):
            raise SystemExit("a worker did not connect")
    startup = max(w.startup for w in workers)  # process start to connected, with no messages
    time.sleep(0.5)
    for w in workers:
        w.kill()
    # 2. the messages queue in the broker
    publish(port, messages)
    # 3. the workers come back and drain. The queued messages arrive right after the
    #    CONNACK, before a log line could say so: the clock starts at the process start and
    #    the start-up time measured in step 1 is taken off.
    started = time.perf_counter()
    workers = [WorkerProc(url, port, cid, group) for cid in ids]
    # a cheap index probe for the last message's readings first, then the full count: the
    # counting must not load the server it measures
    last_topic, last_payload = messages[-1]
    probe = _probe(url, last_topic, last_payload)
    while not probe():
        time.sleep(0.02)
        if time.perf_counter() - started > 600:
            raise SystemExit("workers did not finish")
    while stored(url) < expected:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started - startup
    for w in workers:
        w.stop()
    return expected / elapsed


def _probe(url: str, topic: str, payload: bytes):
    """A function telling whether the readings of one message are stored."""
    device = topic.split("/")[2]
    doc = json.loads(payload)
    if "readings" in doc:
        quantity, ts = doc["readings"][-1][0], doc["readings"][-1][1]
    else:
        quantity, ts = next(iter(doc["values"])), datetime.fromtimestamp(doc["ts"], UTC)
    sql = (
        "SELECT EXISTS (SELECT 1 FROM readings r JOIN devices d ON d.id = r.device_id"
        " WHERE d.name = %s AND r.quantity = %s AND r.ts = %s)"
    )

    def check() -> bool:
        with psycopg.connect(url) as conn:
            return conn.execute(sql, (device, quantity, ts)).fetchone()[0]

    return check


def raw_copy(url: str, rows: list[tuple]) -> float:
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE readings")
        conn.commit()
        started = time.perf_counter()
        for i in range(0, len(rows), 20_000):
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY readings (device_id, quantity, ts, value, quality)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["int4", "text", "timestamptz", "float8", "int2"])
                for row in rows[i : i + 20_000]:
                    copy.write_row(row)
            conn.commit()
        return len(rows) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=60_000, help="single-reading messages per run")
    p.add_argument("--curves", type=int, default=5_000, help="96-point curve messages per run")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gridread-bench-mqtt-"))
    port = free_port()
    global BROKER
    broker = BROKER = start_broker(work, port, extra=(PUBLISHER,))
    try:
        with bench_database() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
                for i in range(DEVICES):
                    conn.execute(
                        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
                        " VALUES (%s, 'meter', 'mqtt', 'mqtt', 900)",
                        (f"b{i:03d}",),
                    )
                ids = dict(conn.execute("SELECT name, id FROM devices").fetchall())
            # batch payloads: a 96-point 15-minute curve of one register per message
            curves, rows = [], []
            for k in range(args.curves):
                dev = f"b{k % DEVICES:03d}"
                day = START - timedelta(days=k // DEVICES)
                points = [
                    ["1.8.0", (day + timedelta(minutes=15 * j)).isoformat(), 1000.0 + j]
                    for j in range(96)
                ]
                curves.append(
                    (f"gridread/v1/{dev}/readings", json.dumps({"readings": points}).encode())
                )
                rows += [
                    (ids[dev], "1.8.0", day + timedelta(minutes=15 * j), 1000.0 + j, 0)
                    for j in range(96)
                ]
            singles = [
                (
                    f"gridread/v1/b{k % DEVICES:03d}/readings",
                    json.dumps(
                        {
                            "ts": int((START + timedelta(seconds=k // DEVICES)).timestamp()),
                            "values": {"32.7.0": 230.0},
                        }
                    ).encode(),
                )
                for k in range(args.messages)
            ]
            print(
                f"broker: mosquitto with deploy/mosquitto.conf (accounts, ACL); {DEVICES} devices"
            )
            with psycopg.connect(url, autocommit=True) as conn:  # days for raw COPY too
                ensure_partitions(conn, {r[2].date() for r in rows})
            copy_rate = raw_copy(url, rows)
            for n in (1, 2):
                rate = through_workers(url, port, n, curves, len(rows))
                print(
                    f"96-point curves, {n} worker(s): {rate:>9,.0f} readings/s   raw COPY"
                    f" {copy_rate:>9,.0f}/s   ratio {rate / copy_rate:.2f}"
                )
            group = f"c{uuid.uuid4().hex[:6]}"
            count_only(port, group, len(singles), prepare=True)
            publish(port, singles)
            ceiling = count_only(port, group, len(singles), prepare=False)
            for n in (1, 2):
                rate = through_workers(url, port, n, singles, len(singles))
                print(
                    f"1 reading/message, {n} worker(s): {rate:>9,.0f} messages/s   count-only"
                    f" subscriber {ceiling:>9,.0f}/s   ratio {rate / ceiling:.2f}"
                )
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
