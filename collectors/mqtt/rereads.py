"""Automatic re-read requests (补抄) to concentrators over MQTT 5 request/response.

For each concentrator, the meters with gaps in the last complete days are asked for again:
a request on ``gridread/ctl/v1/<concentrator>/reread`` (outside the
ingest topics, which the workers subscribe to) carries a response topic and correlation
data; the concentrator re-sends the data on the meters' topics (ingested like any upload,
flagged RE_READ) and answers on the response topic with the same correlation data. The
response topic, ``gridread/reply/v1/<concentrator>/<requester>``, lies under the
concentrator's own reply topics: the broker's ACL lets only it answer there, and only
gridread's control account publish on ``gridread/ctl/…``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter

from collectors.mqtt.auth import MqttAuth
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.store import CollectorStore

log = logging.getLogger(__name__)

REQUESTS = Counter("gridread_reread_requests", "Re-read requests sent to concentrators", ["result"])


class ConcentratorRereader:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        store: CollectorStore,
        timezone: str = DEFAULT_TIMEZONE,
        days: int = 7,
        timeout: float = 60.0,
        start_timeout: float = 15.0,
        auth: MqttAuth | None = None,
    ) -> None:
        self.store = store
        self.start_timeout = start_timeout
        self.tz = ZoneInfo(timezone)
        self.days = days
        self.timeout = timeout
        self.host, self.port = host, port
        self.requester = uuid.uuid4().hex[:12]
        self.response_topic = f"gridread/reply/v1/+/{self.requester}"  # subscribed
        self._waiting: dict[bytes, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"gridread-reread-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        (auth or MqttAuth()).apply(self.client)
        self.client.on_message = self._on_message

    async def start(self) -> None:
        """Connect and subscribe to the response topic. On failure or cancellation the
        client is stopped again; no SUBACK within `start_timeout` raises TimeoutError."""
        self._loop = asyncio.get_running_loop()
        subscribed = asyncio.Event()
        self.client.on_subscribe = lambda *a: self._loop.call_soon_threadsafe(subscribed.set)
        self.client.on_connect = lambda c, *a: c.subscribe(self.response_topic, qos=1)
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for returns normally when a cancel
            # arrives in the loop turn the SUBACK completes the wait, and the cancel is lost.
            async with asyncio.timeout(self.start_timeout):
                await subscribed.wait()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"no subscription confirmed by {self.host}:{self.port}"
                    f" within {self.start_timeout:g} s"
                ) from None
            raise

    async def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        future = self._waiting.get(correlation)
        if future is None or self._loop is None:
            return
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {"status": "error", "reason": "unreadable response"}
        self._loop.call_soon_threadsafe(lambda: future.done() or future.set_result(body))

    async def request(
        self, concentrator: str, meters: list[str], start: datetime, end: datetime
    ) -> dict:
        correlation = uuid.uuid4().bytes
        future = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = future
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"gridread/reply/v1/{concentrator}/{self.requester}"
        props.CorrelationData = correlation
        body = {"meters": meters, "from": start.isoformat(), "to": end.isoformat()}
        self.client.publish(
            f"gridread/ctl/v1/{concentrator}/reread",
            json.dumps(body).encode(),
            qos=1,
            properties=props,
        )
        try:
            async with asyncio.timeout(self.timeout):  # not wait_for: it may swallow a cancel
                reply = await future
            REQUESTS.labels(reply.get("status", "unknown")).inc()
            return reply
        except TimeoutError:
            REQUESTS.labels("timeout").inc()
            log.warning(
                "concentrator %s did not answer a re-read of %d meters", concentrator, len(meters)
            )
            return {"status": "timeout"}
        finally:
            self._waiting.pop(correlation, None)

    async def run_once(self, now: datetime | None = None) -> dict[str, dict]:
        """Ask every concentrator for its meters' gaps in the last complete days (its local
        days: its own zone, else the site's)."""
        now = now or datetime.now(self.tz)
        results = {}
        for concentrator, zone in await self.store.concentrators():
            local = now.astimezone(ZoneInfo(zone) if zone else self.tz)
            end = local.replace(hour=0, minute=0, second=0, microsecond=0)
            start = end - timedelta(days=self.days)
            meters = await self.store.meters_with_gaps(concentrator, start, end)
            if meters:
                log.info(
                    "re-read request to %s: %d meters, %s … %s",
                    concentrator,
                    len(meters),
                    start,
                    end,
                )
                results[concentrator] = await self.request(concentrator, meters, start, end)
        return results

    async def run(self, interval: float = 3600.0, first_delay: float = 300.0) -> None:
        """A pass every `interval`; the first after `first_delay`, so the concentrators' own
        uploads of the day come first."""
        await self.start()
        try:
            await asyncio.sleep(first_delay)
            while True:
                try:
                    await self.run_once()
                except psycopg.Error as exc:
                    log.warning("re-read pass failed: %s", exc)
                await asyncio.sleep(interval)
        finally:
            await self.stop()
