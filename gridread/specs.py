"""The config file's inventory tables as validated models: ``[[device]]``, ``[[bus]]`` with its
``[[bus.meter]]``, ``[[voltage_monitor]]``, ``[[concentrator]]`` and ``[[quantity]]``. The file
format, loading and storing are `gridread.inventory`'s."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collectors.dlt645.codec import BAUD_BITS
from gridread.settings import known_timezone
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.quantities import Quantity, QuantityKind

NAME = r"^[A-Za-z0-9._-]+$"
_EARLIEST_ZONE = timezone(timedelta(hours=14))  # where a day begins first


class Commissioned(BaseModel):
    """``commissioned = 2024-03-01``: when the device went into service (optional)."""

    commissioned: date | None = None

    @field_validator("commissioned")
    @classmethod
    def _not_future(cls, v: date | None) -> date | None:
        # a date that has begun nowhere on Earth yet is a typo, not a plan
        if v is not None and datetime.combine(v, time(), _EARLIEST_ZONE) > datetime.now(UTC):
            raise ValueError(f"{v} is in the future")
        return v

    def since(self, tz: str) -> dict[str, str]:
        """The ``commissioned`` attribute: the date's midnight in `tz`, ISO 8601 with offset
        (what the MQTT worker's plausible window reads)."""
        if self.commissioned is None:
            return {}
        return {
            "commissioned": datetime.combine(self.commissioned, time(), ZoneInfo(tz)).isoformat()
        }


class Nominal(BaseModel):
    """``nominal_voltage = 57.7``: the phase-to-neutral nominal voltage the readings are
    screened against (optional; default: the site's setting)."""

    nominal_voltage: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    def nominal(self, inherited: float | None = None) -> dict[str, float]:
        """The ``nominal_voltage`` attribute: its own, else the bus's/concentrator's, if any."""
        v = self.nominal_voltage if self.nominal_voltage is not None else inherited
        return {} if v is None else {"nominal_voltage": v}


class QuantitySpec(BaseModel):
    """``[[quantity]]``: a quantity the site adds to the built-in list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(\*[A-Za-z0-9]{1,8})?$")
    name: str = Field(min_length=1, max_length=200)
    unit: str = Field(max_length=16)
    kind: Literal["register", "instantaneous"] = "instantaneous"

    def quantity(self) -> Quantity:
        return Quantity(self.code, self.name, self.unit, QuantityKind(self.kind))


class DeviceSpec(Commissioned, Nominal):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    kind: Literal["meter", "concentrator", "voltage_monitor"] = "meter"
    protocol: Literal["modbus_tcp"]
    host: str = Field(min_length=1, max_length=253, pattern=r"^\S+$")
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    register_map: str
    poll_interval: float = Field(default=60.0, gt=0)

    def row(self, tz: str = DEFAULT_TIMEZONE) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "protocol": self.protocol,
            "endpoint": f"{self.host}:{self.port}",
            "unit_id": self.unit_id,
            "register_map": self.register_map,
            "poll_interval": self.poll_interval,
            "attributes": {**self.since(tz), **self.nominal()},
        }


class BusMeterSpec(Commissioned, Nominal):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    address: str = Field(pattern=r"^[0-9]{12}$")


class BusSpec(Nominal):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    protocol: Literal["dlt645"] = "dlt645"
    port: str = Field(min_length=1)
    baud: int = 2400
    parity: Literal["E", "N", "O"] = "E"
    timezone: str | None = None  # None: the site's (resolved by Inventory)
    instant_interval: float = Field(default=300.0, gt=0)
    clock_bound: float = Field(default=60.0, gt=0)
    reread_days: int = Field(default=7, ge=1, le=62)
    meter: list[BusMeterSpec] = Field(default_factory=list)

    @field_validator("baud")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in BAUD_BITS:
            raise ValueError(f"expected one of {', '.join(map(str, BAUD_BITS))}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return v if v is None else known_timezone(v)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "name": m.name,
                "kind": "meter",
                "protocol": self.protocol,
                "endpoint": self.port,
                "unit_id": None,
                "register_map": None,
                "poll_interval": self.instant_interval,
                "attributes": {
                    "bus": self.name,
                    "address": m.address,
                    **m.since(self.timezone or DEFAULT_TIMEZONE),
                    **m.nominal(self.nominal_voltage),
                },
            }
            for m in self.meter
        ]


class VoltageMonitorSpec(Commissioned, Nominal):
    """``[[voltage_monitor]]``: a Modbus RTU voltage monitor on a serial line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    port: str = Field(min_length=1)
    baud: int = Field(default=9600, gt=0)
    parity: Literal["E", "N", "O"] = "N"
    unit_id: int = Field(default=1, ge=1, le=247)
    poll_interval: float = Field(default=600.0, gt=0, le=3600)  # ≤ the hour the monitor keeps
    # where it measures: its loss-of-voltage records interrupt that area's or feeder's
    # customers (the reliability job reads these from the device's attributes)
    area: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME)
    feeder: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME)

    @model_validator(mode="after")
    def _one_place(self) -> VoltageMonitorSpec:
        if self.area is not None and self.feeder is not None:
            raise ValueError("a voltage monitor measures an area or a feeder, not both")
        return self

    def place(self) -> dict[str, str]:
        return {k: v for k, v in (("area", self.area), ("feeder", self.feeder)) if v is not None}

    def row(self, tz: str = DEFAULT_TIMEZONE) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "voltage_monitor",
            "protocol": "modbus_rtu",
            "endpoint": self.port,
            "unit_id": self.unit_id,
            "register_map": None,
            "poll_interval": self.poll_interval,
            "attributes": {**self.since(tz), **self.nominal(), **self.place()},
        }


class ConcentratorSpec(Commissioned, Nominal):
    """``[[concentrator]]``: a data concentrator (集中器) uploading its area's meters by MQTT."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    area: str = Field(min_length=1, max_length=64)
    meters: list[str] = Field(default_factory=list)  # meter names; MQTT topics use them
    # `commissioned` is the concentrator's own: it may upload what its meters kept from before
    timezone: str | None = None  # None: the site's (resolved by Inventory)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return v if v is None else known_timezone(v)

    def rows(self) -> list[dict[str, Any]]:
        base = {
            "protocol": "mqtt",
            "endpoint": "mqtt",
            "unit_id": None,
            "register_map": None,
            "poll_interval": 86400.0,
        }
        zone = self.timezone or DEFAULT_TIMEZONE
        return [
            {
                **base,
                "name": self.name,
                "kind": "concentrator",
                "attributes": {
                    "area": self.area,
                    "timezone": zone,
                    **self.since(zone),
                    **self.nominal(),
                },
            },
            *(
                {
                    **base,
                    "name": m,
                    "kind": "meter",
                    # its local days (frozen values, re-read windows) are the concentrator's
                    "attributes": {
                        "concentrator": self.name,
                        "area": self.area,
                        "timezone": zone,
                        **self.nominal(),
                    },
                }
                for m in self.meters
            ),
        ]
