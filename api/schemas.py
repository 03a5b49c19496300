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


# ---- the grid's topology (issue 9) -----------------------------------------------------


class SubstationPublic(BaseModel):
    name: str
    voltage_kv: float
    feeders: int


class FeederPublic(BaseModel):
    name: str
    substation: str
    voltage_kv: float
    head_meter: str | None  # the feeder_head point in force now
    areas: int


class AreaPublic(BaseModel):
    name: str
    feeder: str
    kind: str  # public (公变) | dedicated (专变)
    transformer_kva: float
    total_meter: str | None  # the area_total point in force now


class MeteringPointPublic(BaseModel):
    """A meter placed in the grid for [valid_from, valid_to) (None: −infinity; open)."""

    meter: str
    role: str  # feeder_head | area_total | customer
    area: str | None
    feeder: str  # the area's feeder for area points
    phase: str
    ct_ratio: float
    pt_ratio: float
    multiplier: float  # 倍率 = ct_ratio × pt_ratio
    customer_class: str | None
    tariff: str | None
    location: str | None
    valid_from: datetime | None
    valid_to: datetime | None


class AreaMembersPublic(BaseModel):
    area: str
    at: datetime
    data: list[MeteringPointPublic]
    count: int


class MeterHistoryPublic(BaseModel):
    meter: str
    data: list[MeteringPointPublic]  # oldest first
    count: int


class VerificationDuePublic(BaseModel):
    meter: str
    model: str | None
    accuracy_class: str | None
    last_verified: date | None
    next_verification: date
    overdue: bool  # next_verification before today (the site's local day)
    rotation_plan: str | None
