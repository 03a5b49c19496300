"""A small synchronous MQTT 5 client for the broker-security tests: what the broker answered
(CONNACK, SUBACK, PUBACK reason codes) and what it delivered, each waited for with a deadline."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt

from collectors.mqtt.auth import MqttAuth

NOT_AUTHORIZED = 135  # MQTT 5 reason code, in CONNACK and PUBACK


class Probe:
    def __init__(self, auth: MqttAuth | None = None, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            protocol=mqtt.MQTTv5,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
        )
        if auth is not None:
            auth.apply(self.client)
        self.connack: int | None = None
        self.closed = threading.Event()
        self.answered = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self._got = threading.Condition()
        self._acks: dict[int, int] = {}
        self._subacks: dict[int, list[int]] = {}
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: (self.closed.set(), self.answered.set())
        c.on_publish = self._on_ack(self._acks)
        c.on_subscribe = self._on_suback
        c.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.connack = reason.value
        self.answered.set()

    def _on_ack(self, table):
        def on_publish(client, userdata, mid, reason, properties) -> None:
            with self._got:
                table[mid] = reason.value
                self._got.notify_all()

        return on_publish

    def _on_suback(self, client, userdata, mid, reasons, properties) -> None:
        with self._got:
            self._subacks[mid] = [r.value for r in reasons]
            self._got.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._got:
            self.messages.append((message.topic, bytes(message.payload)))
            self._got.notify_all()

    def connect(self, host: str, port: int, timeout: float = 10) -> int | None:
        """CONNACK's reason code (0: accepted); None when the broker closed the connection
        without one."""
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        assert self.answered.wait(timeout), "no CONNACK and no close"
        return self.connack

    def subscribe(self, topic: str) -> list[int]:
        _, mid = self.client.subscribe(topic, qos=1)
        return self._wait(lambda: self._subacks.get(mid))

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """PUBACK's reason code (0: accepted; 135: not authorised)."""
        info = self.client.publish(topic, payload, qos=1)
        return self._wait(lambda: self._acks.get(info.mid))

    def wait_message(self, topic: str, timeout: float = 10) -> bool:
        return self._wait(lambda: any(t == topic for t, _ in self.messages), timeout) or False

    def _wait(self, ready, timeout: float = 10):
        deadline = time.monotonic() + timeout
        with self._got:
            while (value := ready()) is None or value is False:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the broker did not answer")
                self._got.wait(left)
            return value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
