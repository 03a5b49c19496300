"""MQTT topic scheme and payload formats, sans-IO: (topic, bytes) in, readings out.

Topics (one device per topic, so broker ACLs can be per device):

    gridread/v1/<device>/readings   compact JSON
    gridread/v1/<device>/senml      SenML JSON (RFC 8428)
    gridread/v1/<device>/status     a concentrator's own status (stored as a "status" event):
                                    {"ts": …, "online": true, "meters_due": 120,
                                     "meters_read": 117, "failing": ["m-0007", …],
                                     "outages": [{"start": …, "end": …}, …]}
                                    "outages" (optional): the area's losses of supply the
                                    concentrator recorded, each ended (it reports once the
                                    power is back); each is stored as an "outage" event of
                                    the concentrator (ts = start, detail.end), once

Compact JSON — one instant with several values, and/or (quantity, time, value) triples:

    {"ts": "2026-11-26T10:15:00Z", "values": {"1.8.0": 1234.56, "32.7.0": 231.2}}
    {"readings": [["1.8.0", "2026-11-26T10:15:00Z", 1234.56], ["1.8.0", 1764152100, 1234.9]]}

    times are RFC 3339 with a zone, or Unix seconds; an optional "quality" (int) applies to all.

SenML — names are the OBIS code, optionally prefixed by a base name ending in "/":

    [{"bn": "meter-001/", "bt": 1764152100, "n": "1.8.0", "u": "kWh", "v": 1234.56},
     {"n": "32.7.0", "u": "V", "v": 231.2, "t": 60}]

    t is relative to bt (seconds); a record without bt/t is "now" for SenML but is refused
    here: a reading gridread stores must say when it was measured.

`parse()` raises `PayloadError` for what cannot be read at all (not JSON, nested too deep,
not the expected shape, a topic that is not ours). Each reading is judged on its own: one
that is readable but wrong (unknown quantity, unit mismatch, a value that is not a finite
number, an unreadable time, a time outside the plausible window) comes back in `rejected`
with the reason, next to the good ones.

The plausible window (`Limits`): not before a global floor or the device's commissioning
time, whichever is later, and not more than `max_future` ahead of now. Status messages get
the same window for their own "ts", and their outages' start and end (which must be after
the start); a status with a bad outage is refused whole, with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from collectors.exceptions import CollectorError
from ingest.quantities import registry

TOPIC_PREFIX = "gridread/v1/"
SUBSCRIPTION = "gridread/v1/+/+"
FORMATS = ("readings", "senml", "status")
SHOWN = 60  # characters of a device's own text quoted in a reason


@dataclass(frozen=True)
class Limits:
    not_before: datetime = datetime(2000, 1, 1, tzinfo=UTC)  # no meter data is older
    max_future: timedelta = timedelta(minutes=10)  # clock skew tolerated on a device
    max_payload: int = 1 << 20  # bytes; the broker's message_size_limit should match
    commissioned: Mapping[str, datetime] = field(default_factory=dict)  # per device floor

    def floor(self, device: str) -> datetime:
        return max(self.not_before, self.commissioned.get(device, self.not_before))


DEFAULT_LIMITS = Limits()
_fromiso = datetime.fromisoformat  # accepts a trailing Z since Python 3.11
_isfinite = math.isfinite


class PayloadError(CollectorError):
    """A message (or, inside `parse`, one reading) that cannot be read."""


@dataclass
class Parsed:
    device: str
    readings: list[tuple[str, datetime, float]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    quality: int = 0
    status: dict | None = None  # a status message: its fields, "ts" as a datetime


def show(value: object) -> str:
    """A device's value quoted for a reason: repr escapes NUL and lone surrogates."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}…"


def topic_device(topic: str) -> tuple[str, str]:
    """(device, format) named by a topic."""
    if not topic.startswith(TOPIC_PREFIX):
        raise PayloadError(f"topic {show(topic)} is not under {TOPIC_PREFIX}")
    parts = topic[len(TOPIC_PREFIX) :].split("/")
    if len(parts) != 2 or not parts[0]:
        raise PayloadError(f"topic {show(topic)}: expected {TOPIC_PREFIX}<device>/<format>")
    device, fmt = parts
    if fmt not in FORMATS:
        raise PayloadError(f"unknown payload format {show(fmt)} (readings, senml or status)")
    return device, fmt


def parse(
    topic: str, payload: bytes, *, now: datetime | None = None, limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    device, fmt = topic_device(topic)
    if len(payload) > limits.max_payload:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {limits.max_payload}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("not JSON that can be read: nested too deep") from None
    except ValueError as exc:  # e.g. an integer beyond sys.get_int_max_str_digits()
        raise PayloadError(f"not JSON that can be read: {exc}") from None
    out = Parsed(device)
    floor = limits.floor(device)
    limit = (now or datetime.now(UTC)) + limits.max_future
    if fmt == "status":
        _status(doc, out)
        ts = out.status["ts"]
        if not floor <= ts <= limit:
            raise PayloadError(f"status ts {ts.isoformat()}: {_outside(floor, limits)}")
        for i, (start, end) in enumerate(out.status.get("outages", [])):
            if not (floor <= start <= limit and floor <= end <= limit):
                raise PayloadError(f"status outages[{i}]: {_outside(floor, limits)}")
        return out
    if fmt == "readings":
        _compact(doc, out)
    else:
        _senml(doc, out)
    reg = registry()
    good = []
    for quantity, ts, value in out.readings:
        if quantity not in reg:
            out.rejected.append(f"unknown quantity {show(quantity)}")
        elif not floor <= ts <= limit:
            out.rejected.append(f"{quantity} at {ts.isoformat()}: {_outside(floor, limits)}")
        else:
            good.append((quantity, ts, value))
    out.readings = good
    return out


def _outside(floor: datetime, limits: Limits) -> str:
    return (
        f"outside the plausible window (not before {floor.isoformat()},"
        f" not more than {limits.max_future} in the future)"
    )


def _time(value: object, where: str) -> datetime:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: time {value!r} is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 < value < 1e11:
            raise PayloadError(f"{where}: {show(value)} is not a Unix time in seconds")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if ts.tzinfo is None:
                raise PayloadError(f"{where}: {show(value)} has no time zone")
            return ts.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: year 1 shifted to UTC
            raise PayloadError(f"{where}: {show(value)} is not an RFC 3339 time") from None
    raise PayloadError(f"{where}: time {show(value)} is not a string or a number")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where}: value {show(value)} is not a finite number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise PayloadError(f"{where}: value {show(value)} is not a finite number")
    return number


def _compact(doc: object, out: Parsed) -> None:
    if not isinstance(doc, dict):
        raise PayloadError("compact payload must be a JSON object")
    unknown = set(doc) - {"ts", "values", "readings", "quality"}
    if unknown:
        raise PayloadError(f"unknown key(s) {', '.join(sorted(map(show, unknown)))}")
    if "values" not in doc and "readings" not in doc:
        raise PayloadError("neither 'values' nor 'readings'")
    quality = doc.get("quality", 0)
    if not isinstance(quality, int) or isinstance(quality, bool) or not 0 <= quality < 2**15:
        raise PayloadError(f"quality {show(quality)} is not a flag set 0..32767")
    out.quality = quality
    reject = out.rejected.append
    if "values" in doc:
        values = doc["values"]
        if not isinstance(values, dict):
            raise PayloadError("'values' must be an object of quantity: value")
        if "ts" not in doc:
            raise PayloadError("'values' needs a 'ts'")
        try:
            ts: datetime | None = _time(doc["ts"], "ts")
        except PayloadError as exc:
            ts, why = None, str(exc)
        for q, v in values.items():
            try:
                if ts is None:
                    raise PayloadError(f"values[{show(q)}]: {why}")
                out.readings.append((q, ts, _number(v, f"values[{show(q)}]")))
            except PayloadError as exc:
                reject(str(exc))
    if "readings" in doc:
        rows = doc["readings"]
        if not isinstance(rows, list):
            raise PayloadError("'readings' must be an array")
        append = out.readings.append
        for i, row in enumerate(rows):
            # fast path for the common shape ["1.8.0", "2026-…Z", 12.5]; anything else takes
            # the validating path, which says what is wrong
            try:
                q, t, v = row
                ts = _fromiso(t)
                if ts.tzinfo is UTC and type(q) is str and type(v) is float and _isfinite(v):
                    append((q, ts, v))
                    continue
            except (TypeError, ValueError):
                pass
            where = f"readings[{i}]"
            try:
                if not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str):
                    raise PayloadError(f"{where}: expected [quantity, time, value]")
                append((row[0], _time(row[1], where), _number(row[2], where)))
            except PayloadError as exc:
                reject(str(exc))


def _senml(doc: object, out: Parsed) -> None:
    if not isinstance(doc, list) or not doc:
        raise PayloadError("SenML payload must be a non-empty JSON array")
    bn, bt, bu = "", None, None
    reg = registry()
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise PayloadError(f"record {i}: not an object")
        bn = rec.get("bn", bn)
        bt = rec.get("bt", bt)
        bu = rec.get("bu", bu)
        if "v" not in rec:
            if any(k in rec for k in ("vs", "vb", "vd", "s")):
                raise PayloadError(f"record {i}: only numeric values ('v') are readings")
            continue  # a base-fields-only record
        name = f"{bn}{rec.get('n', '')}"
        device_part, _, quantity = name.rpartition("/")
        if device_part and device_part != out.device:
            raise PayloadError(f"record {i}: name {show(name)} is not for device {out.device!r}")
        try:
            if bt is None and "t" not in rec:
                raise PayloadError(f"record {i}: no time (bt or t)")
            t = rec.get("t", 0)
            base = 0.0 if bt is None else _number(bt, f"record {i} bt")
            ts = _time(base + _number(t, f"record {i} t"), f"record {i}")
            value = _number(rec["v"], f"record {i}")
        except PayloadError as exc:
            out.rejected.append(str(exc))
            continue
        unit = rec.get("u", bu)
        if unit is not None and quantity in reg and unit != reg[quantity].unit:
            out.rejected.append(f"{quantity}: unit {show(unit)}, expected {reg[quantity].unit!r}")
            continue
        out.readings.append((quantity, ts, value))


STATUS_KEYS = {
    "ts": object,
    "online": bool,
    "meters_due": int,
    "meters_read": int,
    "failing": list,
    "outages": list,
}
MAX_OUTAGES = 1000  # in one status: a concentrator keeps far fewer records


def _status(doc: object, out: Parsed) -> None:
    if not isinstance(doc, dict) or "ts" not in doc:
        raise PayloadError("status must be a JSON object with a 'ts'")
    for key, value in doc.items():
        kind = STATUS_KEYS.get(key)
        if kind is None:
            raise PayloadError(f"status: unknown key {show(key)}")
        if kind is not object and not isinstance(value, kind):
            raise PayloadError(f"status: {key} = {show(value)} is not {kind.__name__}")
    if not all(isinstance(m, str) for m in doc.get("failing", [])):
        raise PayloadError("status: failing must be a list of meter names")
    out.status = {**doc, "ts": _time(doc["ts"], "ts")}
    if "outages" in doc:
        out.status["outages"] = _outages(doc["outages"])


def _outages(rows: list) -> list[tuple[datetime, datetime]]:
    """[(start, end)] of a status's "outages": each {"start": time, "end": time}, ended."""
    if len(rows) > MAX_OUTAGES:
        raise PayloadError(f"status: {len(rows)} outages, more than {MAX_OUTAGES}")
    out = []
    for i, row in enumerate(rows):
        where = f"status outages[{i}]"
        if not isinstance(row, dict) or set(row) != {"start", "end"}:
            raise PayloadError(f'{where}: expected {{"start": time, "end": time}}')
        start, end = _time(row["start"], f"{where} start"), _time(row["end"], f"{where} end")
        if not end > start:
            raise PayloadError(f"{where}: end {end.isoformat()} not after start")
        out.append((start, end))
    return out
