"""An MQTT ingest worker: a persistent MQTT 5 session on a shared subscription, messages
acknowledged only once what they carry is committed.

    broker ──(QoS 1, $share/<group>/gridread/v1/+/+)──► paho thread ──► asyncio queue
        ──► parse / validate ──► writer (COPY) ──► commit ──► PUBACK

* Persistent session: clean start off and a session expiry, under a stable client id, so a
  worker that dies and comes back gets the messages it had not acknowledged.
* Exactly-once storage = at-least-once delivery + idempotent writes: a redelivered message
  writes nothing twice (the writer's ON CONFLICT path).
* Bounded memory: MQTT 5 Receive Maximum caps the unacknowledged messages the broker sends.
* Nothing vanishes: a payload that cannot be read (whatever parsing raises), or names an
  unknown device, goes to ``dead_letters`` with its topic, raw bytes (capped) and reason,
  and is acknowledged after that commit; readable but wrong readings (unknown quantity,
  bad value, time outside the plausible window) likewise, while the message's good readings
  are stored.
* Nothing wedges: only temporary database errors (by SQLSTATE class) are retried; a status
  the database refuses is dead-lettered, and a dead letter it refuses is stored again with
  nothing but a sanitised reason and the raw bytes (the store's `add_dead_letters`).
* No connections of its own: the device list, statuses and dead letters go through the
  injected `CollectorStore`, readings through the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge

from collectors.mqtt.auth import MqttAuth
from collectors.mqtt.payloads import SUBSCRIPTION, Limits, PayloadError, parse, topic_device
from ingest.deadletters import DEFAULT_RAW_MAX, DeadLetter, sanitise
from ingest.model import Event, Reading
from ingest.retry import Backoff
from ingest.store import CollectorStore
from ingest.writer import ReadingWriter, is_temporary

log = logging.getLogger(__name__)

MESSAGES = Counter("gridread_mqtt_messages", "MQTT messages handled", ["result"])
UNACKED = Gauge("gridread_mqtt_unacked_messages", "Messages received and not yet acknowledged")
DEVICE_REFRESH_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    group: str = "gridread"  # shared-subscription group: workers of one group split the stream
    client_id: str = "gridread-ingest-1"  # stable per worker: it names the persistent session
    session_expiry: int = 3600  # seconds the broker keeps the session of a worker that is away
    max_unacked: int = 1000  # MQTT 5 Receive Maximum
    not_before: date = date(2000, 1, 1)  # readings dated earlier are implausible
    max_future_s: float = 600.0  # clock skew tolerated on a device's timestamps
    max_payload: int = 1 << 20  # bytes; deploy/mosquitto.conf's message_size_limit matches
    dead_letter_raw_max: int = DEFAULT_RAW_MAX  # raw bytes kept per dead letter
    auth: MqttAuth = field(default_factory=MqttAuth)  # the ingest account (it may only subscribe)

    def limits(self) -> Limits:
        return Limits(
            not_before=datetime.combine(self.not_before, datetime.min.time(), UTC),
            max_future=timedelta(seconds=self.max_future_s),
            max_payload=self.max_payload,
        )


class MqttIngestWorker:
    def __init__(
        self, settings: MqttSettings, writer: ReadingWriter, store: CollectorStore
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.store = store
        self._queue: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._pending: deque[tuple[int, int]] = deque()  # (writer ticket, mid), in order
        self._pending_added = asyncio.Event()
        self._devices: dict[str, int] = {}
        self._limits = settings.limits()  # with the devices' commissioning times, once loaded
        self._devices_at = 0.0
        self._connected = threading.Event()
        # set on a successful SUBACK: only from then on does the shared group get messages
        self.subscribed = asyncio.Event()
        self.handled = 0  # messages taken from the broker (for the exit summary)
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        settings.auth.apply(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)

    # -- paho's thread -------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error(
                "MQTT connect refused: %s (the broker's ingest account: mqtt_username,"
                " mqtt_password)",
                reason_code,
            )
            return
        log.info(
            "MQTT connected to %s:%d (session present: %s)",
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )
        topic = f"$share/{self.settings.group}/{SUBSCRIPTION}"
        client.subscribe(topic, options=SubscribeOptions(qos=1))
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("MQTT subscription refused: %s", ", ".join(map(str, reason_codes)))
            return
        log.info("MQTT subscribed to %s", SUBSCRIPTION)
        self._from_thread(self.subscribed.set)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._from_thread(self.subscribed.clear)
        if self._stopping:
            log.info("MQTT disconnected")
        else:
            log.warning("MQTT disconnected: %s (paho reconnects)", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self._from_thread(self._queue.put_nowait, message)

    def _from_thread(self, fn, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():  # paho may call back after the stop
            loop.call_soon_threadsafe(fn, *args)

    # -- asyncio side --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, consume and acknowledge until cancelled."""
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry
        props.ReceiveMaximum = self.settings.max_unacked
        self.client.connect_async(
            self.settings.host, self.settings.port, clean_start=False, properties=props
        )
        self.client.loop_start()
        acker = asyncio.create_task(self._ack_when_stored(), name="mqtt-acker")
        try:
            while True:
                message = await self._queue.get()
                await self._handle(message)
        finally:
            self._stopping = True
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker
            self.client.disconnect()
            self.client.loop_stop()

    async def drain(self) -> None:
        """Stop taking messages; store and acknowledge those taken (for a clean stop)."""
        self.client.unsubscribe(f"$share/{self.settings.group}/{SUBSCRIPTION}")
        while not self._queue.empty():
            await self._handle(self._queue.get_nowait())
        await self.writer.flush()
        while self._pending:
            self._ack(self._pending.popleft()[1])

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    async def _handle(self, message: mqtt.MQTTMessage) -> None:
        self.handled += 1
        topic, raw = message.topic, bytes(message.payload)
        try:
            device, _ = topic_device(topic)
        except PayloadError as exc:
            await self._park(message, raw, str(exc))
            return
        device_id = await self._device_id(device)
        if device_id is None:
            await self._park(message, raw, f"unknown device {device!r}")
            return
        try:
            parsed = parse(topic, raw, limits=self._limits)
        except PayloadError as exc:
            await self._park(message, raw, str(exc))
            return
        except Exception as exc:  # whatever a hostile payload provokes: park it, go on
            log.exception("parsing a message from %s failed unexpectedly", sanitise(topic))
            await self._park(message, raw, f"unreadable: {type(exc).__name__}: {exc}")
            return
        if parsed.status is not None:
            status = parsed.status
            skip = ("ts", "outages")
            events = [
                Event(device_id, status["ts"], "status", {k: v for k, v in status.items()
                                                          if k not in skip}),
                *(Event(device_id, s, "outage", {"end": e.isoformat()})
                  for s, e in status.get("outages", [])),
            ]  # fmt: skip
            try:
                await self._retrying(lambda: self.store.add_events(events), "storing a status")
            except Exception as exc:  # permanent: the database refuses this status
                await self._park(message, raw, f"status refused: {type(exc).__name__}: {exc}")
                return
            MESSAGES.labels("status").inc()
            self._ack(message.mid)
            return
        if parsed.rejected:
            await self._dead_letter(topic, raw, _reasons(parsed.rejected))
        readings = [Reading(device_id, q, ts, v, parsed.quality) for q, ts, v in parsed.readings]
        if not readings:
            MESSAGES.labels("dead_letter").inc()
            self._ack(message.mid)
            return
        ticket = await self.writer.add_many(readings)
        self._pending.append((ticket, message.mid))
        UNACKED.set(len(self._pending))
        self._pending_added.set()
        MESSAGES.labels("partial" if parsed.rejected else "ok").inc()

    async def _park(self, message: mqtt.MQTTMessage, raw: bytes, reason: str) -> None:
        """Dead-letter a whole message, then acknowledge it."""
        await self._dead_letter(message.topic, raw, reason)
        MESSAGES.labels("dead_letter").inc()
        self._ack(message.mid)

    async def _ack_when_stored(self) -> None:
        while True:
            if not self._pending:
                self._pending_added.clear()
                await self._pending_added.wait()
                continue
            done = await self.writer.wait_stored(self._pending[0][0])
            while self._pending and self._pending[0][0] <= done:
                self._ack(self._pending.popleft()[1])
            UNACKED.set(len(self._pending))

    def _ack(self, mid: int) -> None:
        self.client.ack(mid, 1)

    async def _device_id(self, name: str) -> int | None:
        """Device name → id from the inventory, refreshed on a miss (at most every 5 s)."""
        if name not in self._devices and time.monotonic() - self._devices_at > DEVICE_REFRESH_S:
            known = await self._retrying(self.store.devices, "loading the inventory")
            self._devices = {n: d.id for n, d in known.items()}
            self._limits = replace(
                self.settings.limits(),
                commissioned={n: d.commissioned for n, d in known.items() if d.commissioned},
            )
            self._devices_at = time.monotonic()
        return self._devices.get(name)

    async def _dead_letter(self, topic: str, raw: bytes, reason: str) -> None:
        """Park the message; returns after the commit, so the caller may acknowledge."""
        log.warning("dead letter from %s: %s", sanitise(topic), sanitise(reason, 500))
        letter = DeadLetter("mqtt", reason, {"topic": topic}, raw)
        cap = self.settings.dead_letter_raw_max
        await self._retrying(
            lambda: self.store.add_dead_letters([letter], raw_max=cap), "storing a dead letter"
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Await a store call until it succeeds or fails permanently (raised): the message
        it is for stays unacknowledged meanwhile, so the broker keeps it."""
        for delay in Backoff(initial=0.5, maximum=30).delays():
            try:
                return await call()
            except Exception as exc:
                if not is_temporary(exc):
                    raise
                log.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)


def _reasons(rejected: list[str], shown: int = 20) -> str:
    """The rejections of one message, the first `shown` in full."""
    more = len(rejected) - shown
    return "; ".join(rejected[:shown]) + (f"; and {more} more" if more > 0 else "")
