"""Rows as the writer COPYs them, ``(device_id, quantity, ts, value, quality)``: the screen
for values binary COPY would store wrongly instead of refusing, and a row's JSON form for its
dead letter."""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter, itemgetter

from ingest.deadletters import sanitise

Row = tuple[int, str, datetime, float, int]

_INT4 = 2**31
_INT2 = 2**15
as_row = attrgetter("device_id", "quantity", "ts", "value", "quality")  # Reading → Row
_DEVICE, _TS, _QUALITY = itemgetter(0), itemgetter(2), itemgetter(4)
_KEY = itemgetter(0, 1, 2)  # the primary key; sorting by it alone keeps arrival order
_TZINFO = attrgetter("tzinfo")


def screen_rows(rows: list[Row]) -> tuple[list[Row], list[tuple[Row, str]]]:
    """Sort rows into primary-key order and split off those that binary COPY would corrupt
    rather than reject: psycopg's binary int2/int4 dumpers wrap out-of-range integers
    silently (70000 → 4464), and a naive timestamp would be stored at the wrong instant.

    The fast path checks whole columns with C-level iteration; only a batch that fails it
    (or cannot be sorted) is checked row by row."""
    try:
        rows.sort(key=_KEY)
        if not rows or (
            -_INT4 <= min(map(_DEVICE, rows))
            and max(map(_DEVICE, rows)) < _INT4
            and 0 <= min(map(_QUALITY, rows))
            and max(map(_QUALITY, rows)) < _INT2
            and None not in map(_TZINFO, map(_TS, rows))
        ):
            return rows, []
    except (TypeError, AttributeError, ValueError):
        pass
    good: list[Row] = []
    bad: list[tuple[Row, str]] = []
    for row in rows:
        problem = _problem(row)
        if problem:
            bad.append((row, problem))
        else:
            good.append(row)
    try:
        good.sort(key=_KEY)
    except TypeError:  # e.g. a float device id: COPY rejects it and bisection isolates it
        pass
    return good, bad


def _problem(row: Row) -> str | None:
    try:
        device_id, quantity, ts, value, quality = row
    except (TypeError, ValueError):
        return "InvalidReading: not a (device_id, quantity, ts, value, quality) row"
    if not isinstance(device_id, int) or not -_INT4 <= device_id < _INT4:
        return f"InvalidReading: device_id {device_id!r} is not a 32-bit integer"
    if not isinstance(quality, int) or not 0 <= quality < _INT2:
        return f"InvalidReading: quality {quality!r} is not a flag set in 0..32767"
    if not isinstance(ts, datetime) or ts.utcoffset() is None:
        return f"InvalidReading: ts {ts!r} is not a timezone-aware datetime"
    if not isinstance(quantity, str) or not isinstance(value, int | float):
        return f"InvalidReading: quantity {quantity!r} / value {value!r} of the wrong type"
    return None


def row_payload(row: Row) -> dict[str, object]:
    """The row as JSON that PostgreSQL's jsonb accepts whatever the row holds."""
    device_id, quantity, ts, value, quality = row

    def safe(x: object) -> object:
        if isinstance(x, bool) or x is None:
            return x
        if isinstance(x, int):
            return x
        text = x.isoformat() if isinstance(x, datetime) else x if isinstance(x, str) else repr(x)
        # jsonb cannot hold NUL or a lone surrogate: shown as their escapes
        return sanitise(text).replace("\\x00", "\\u0000")

    return {
        "device_id": safe(device_id),
        "quantity": safe(quantity),
        "ts": safe(ts),
        "value": safe(value),
        "quality": safe(quality),
    }
