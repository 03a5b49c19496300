"""Response models (``XPublic`` / ``XsPublic``) of the HTTP API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel


class DevicePublic(BaseModel):
    id: int
    name: str
    kind: str
    protocol: str
    endpoint: str
    unit_id: int | None
    register_map: str | None
    poll_interval: float


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class ReadingPublic(BaseModel):
    ts: datetime
    value: float
    quality: int


class InstantBucketPublic(BaseModel):
    """A bucket of an instantaneous quantity (voltage, current, power …)."""

    bucket: datetime  # start of the UTC bucket
    min: float
    avg: float
    max: float
    count: int  # readings in the bucket


class RegisterBucketPublic(BaseModel):
    """A bucket of a register (energy): its first and last reading and their difference.
    Consumption between two bucket ends is the difference of their `last` values."""

    bucket: datetime  # start of the UTC bucket
    first: float
    first_ts: datetime
    last: float
    last_ts: datetime
    delta: float  # last − first within the bucket
    count: int


class ReadingsPublic(BaseModel):
    device: str
    quantity: str
    unit: str
    kind: str  # register | instantaneous: which shape `data` has unless resolution is raw
    resolution: str  # raw | 15min | 1h | 1d
    data: list[ReadingPublic] | list[InstantBucketPublic] | list[RegisterBucketPublic]
    count: int


class LatestValue(BaseModel):
    quantity: str
    name: str
    unit: str
    ts: datetime
    value: float
    quality: int


class LatestPublic(BaseModel):
    device: str
    data: list[LatestValue]


class QuantityPublic(BaseModel):
    obis: str
    name: str
    unit: str
    kind: str


class ServiceHealth(BaseModel):
    name: str
    state: str  # running | restarting | finished | failed | stopped
    restarts: int = 0
    last_error: str | None = None
    degraded: bool = False  # failing, or failed less than service_stable_after ago


class Health(BaseModel):
    status: str  # ok | degraded
    database: str
    storage_mode: str | None = None
    services: list[ServiceHealth] = []


class BusReadStats(BaseModel):
    bus: str
    day: date
    due: int
    read: int
    failed: int
    rate: float | None


class MeterReadStats(BaseModel):
    name: str
    address: str | None
    attempts: int
    successes: int
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class EventPublic(BaseModel):
    ts: datetime
    kind: str
    detail: dict[str, Any]


class EventsPublic(BaseModel):
    device: str
    data: list[EventPublic]
    count: int


class ErrorPublic(BaseModel):
    """The body of a 404 or 503: what was not found or is unavailable."""

    detail: str


class FailingMeter(BaseModel):
    meter: str
    last_read: datetime | None  # the newest frozen value stored, if any


class ConcentratorReadStats(BaseModel):
    concentrator: str
    area: str | None
    day: date
    due: int
    read: int
    rate: float | None
    failing: list[FailingMeter]


class AreaReadStats(BaseModel):
    area: str | None
    day: date
    concentrators: list[str]
    due: int
    read: int
    rate: float | None
    failing: list[FailingMeter]
