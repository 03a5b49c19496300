"""A simulated data concentrator (集中器) of one transformer area, talking MQTT 5.

It reads its meters (ground truth from `MeterModel`), uploads each meter's day — the daily
frozen register and the 96-point 15-minute curve, plus the curves of the quantities the
model's `curve_values(t)` offers (e.g. voltage 32.7.0) — as one compact-JSON message per meter
on ``gridread/v1/<meter>/readings``, and its own status on ``gridread/v1/<conc>/status`` (with
the area's outages it recorded, `outages`).
Meters in `failing` are "not read" by the upload. A re-read request on
``gridread/ctl/v1/<conc>/reread`` (MQTT 5, with a response topic and correlation data) is answered
from the concentrator's memory: the data go out on the meters' topics with the RE_READ flag,
then a reply on the response topic carries the same correlation data.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.meter_model import MeterModel

RE_READ = 8  # ingest.model.Quality.RE_READ (simulators do not import the running system)
STEP = timedelta(minutes=15)


@dataclass
class SimConcentrator:
    name: str
    meters: dict[str, MeterModel]
    host: str = "127.0.0.1"
    port: int = 1883
    failing: set[str] = field(default_factory=set)
    requests: list[dict] = field(default_factory=list)
    # the area's losses of supply it recorded (start, end): each status reports them (a
    # re-reported one is stored once)
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)
    # its broker account, and the CA to trust on a TLS listener (None: plaintext)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sim-{self.name}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_queued_messages_set(0)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        if self.ca_file is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=self.ca_file))
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._refused: list[str] = []
        self.client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        self.client.subscribe(f"gridread/ctl/v1/{self.name}/reread", qos=1)
        if not self._subscribed.wait(10):
            raise RuntimeError("concentrator simulator could not subscribe")
        if self._refused:  # e.g. the broker's ACL: not this account's requests
            raise RuntimeError(f"{self.name}: subscription refused: {', '.join(self._refused)}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._refused = [str(r) for r in reason_codes if r.is_failure]
        self._subscribed.set()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- uploads ---------------------------------------------------------------------------

    def day_payload(self, meter: str, day_start: datetime, quality: int = 0) -> dict:
        """The frozen register at the end of the day and the day's 96 curve points."""
        model = self.meters[meter]
        points = [day_start + STEP * k for k in range(96)]
        end = day_start + timedelta(days=1)
        digits = getattr(model, "register_decimals", 2)  # a model may keep finer registers
        readings = [
            ["1.8.0", _iso(t), round(model.energy_kwh(t.timestamp()), digits)] for t in points
        ]
        curves = getattr(model, "curve_values", None)  # a model that offers more 15-min curves
        if curves is not None:
            readings += [[q, _iso(t), v] for t in points for q, v in curves(t.timestamp()).items()]
        readings.append(["1.8.0*d", _iso(end), round(model.energy_kwh(end.timestamp()), digits)])
        return {"readings": readings, "quality": quality}

    def upload_day(self, day_start: datetime) -> int:
        """Publish every read meter's day, then the status; returns messages published."""
        infos = []
        for meter in self.meters:
            if meter in self.failing:
                continue
            payload = json.dumps(self.day_payload(meter, day_start)).encode()
            infos.append(self.client.publish(f"gridread/v1/{meter}/readings", payload, qos=1))
        status = {
            "ts": _iso(datetime.now(UTC).replace(microsecond=0)),
            "online": True,
            "meters_due": len(self.meters),
            "meters_read": len(self.meters) - len(self.failing),
            "failing": sorted(self.failing),
        }
        if self.outages:
            status["outages"] = [{"start": _iso(a), "end": _iso(b)} for a, b in self.outages]
        infos.append(
            self.client.publish(
                f"gridread/v1/{self.name}/status", json.dumps(status).encode(), qos=1
            )
        )
        for info in infos:
            info.wait_for_publish(30)
        return len(infos)

    # -- re-read requests --------------------------------------------------------------------

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        try:
            request = json.loads(message.payload)
            start = datetime.fromisoformat(request["from"])
            end = datetime.fromisoformat(request["to"])
            meters = [m for m in request["meters"] if m in self.meters]
        except (ValueError, KeyError, TypeError) as exc:
            self._reply(response_topic, correlation, {"status": "error", "reason": str(exc)})
            return
        self.requests.append(request)
        sent = 0
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < end:
            for meter in meters:
                payload = self.day_payload(meter, day, quality=RE_READ)
                client.publish(f"gridread/v1/{meter}/readings", json.dumps(payload).encode(), qos=1)
                sent += 1
            day += timedelta(days=1)
        self.failing -= set(meters)  # they answered this time
        self._reply(
            response_topic, correlation, {"status": "done", "meters": len(meters), "messages": sent}
        )

    def _reply(self, topic: str | None, correlation: bytes | None, body: dict) -> None:
        if not topic:
            return
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        self.client.publish(topic, json.dumps(body).encode(), qos=1, properties=props)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
