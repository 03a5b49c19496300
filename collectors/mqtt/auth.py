"""How a gridread MQTT client proves who it is: username/password, and TLS when the broker's
listener asks for it (the broker's CA file, or the system's trust store)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class MqttAuth:
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's trust store

    def apply(self, client: mqtt.Client) -> None:
        """Set the credentials and TLS on a client before it connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls or self.ca_file is not None:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            client.tls_set_context(context)

    def __repr__(self) -> str:  # never print the password
        return f"MqttAuth(username={self.username!r}, tls={self.tls}, ca_file={self.ca_file})"
