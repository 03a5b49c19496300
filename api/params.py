"""Parameters checked at the boundary, so that a request the database or the calendar cannot
take is a 422 in FastAPI's declared shape, not a 500 further in.

- Names and kinds: PostgreSQL text cannot hold NUL, so a name with one is refused here.
- Instants: a default window reaching before year 1, or start ≥ end, is the caller's error.
- Dates and instants are ISO 8601 as the schema says: pydantic alone would take "0" as
  1970-01-01 (a Unix time), which the schema does not allow.
- Local days: the frozen instant of a day is the next midnight, which must exist.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator

from api.schemas import ErrorPublic

TEXT = r"^[^\x00]+$"  # any text PostgreSQL can store

DeviceName = Annotated[str, Path(pattern=TEXT, description="the device's name")]
BusName = Annotated[str, Path(pattern=TEXT, description="the DL/T 645 bus's name")]
Kind = Annotated[
    str | None, Query(pattern=TEXT, description="meter, concentrator or voltage_monitor")
]

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(v: Any) -> Any:
    if isinstance(v, str) and not _ISO_DATE.fullmatch(v):
        raise ValueError("expected a date as YYYY-MM-DD")
    return v


def _iso_instant(v: Any) -> Any:
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return v
        raise ValueError("expected an ISO 8601 date-time, not a number")
    return v


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
IsoInstant = Annotated[datetime, BeforeValidator(_iso_instant)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such device or bus"}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorPublic, "description": "The database is unavailable"}
}


def invalid(field: str, value: Any, msg: str, *, where: str = "query") -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors (HTTPValidationError)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (where, field), "msg": msg, "input": value}]
    )


def window(
    start: datetime | None, end: datetime | None, *, default_span: timedelta
) -> tuple[datetime, datetime]:
    """[start, end) in UTC-aware instants; end defaults to now, start to end − default_span."""
    end_ = aware(end) if end else datetime.now(UTC)
    if start is None:
        try:
            return end_ - default_span, end_
        except OverflowError:
            raise invalid(
                "end", str(end), f"too early for the default window of {default_span}"
            ) from None
    start_ = aware(start)
    if start_ >= end_:
        raise invalid("start", str(start), "start must be before end")
    return start_, end_


def aware(ts: datetime) -> datetime:
    """A timestamp without a zone is taken as UTC, as everything gridread stores is."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def frozen_day(day: date) -> date:
    """A local day whose frozen instant (the midnight that ends it) exists."""
    if day >= date.max:
        raise invalid("day", day.isoformat(), f"must be before {date.max.isoformat()}")
    return day
