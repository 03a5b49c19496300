"""The reads endpoints' queries (raw readings, 15-min intervals, VEE-validated reads), each a
keyset page: rows in (device_id, quantity, ts) order, the next page starting strictly after
the last row's key, so a walk sees every row once (rows stored meanwhile behind the cursor
are not seen; ahead of it they are). The key is the primary key's (readings) or the current
rows' unique index's (validated_reads), so a page costs an index range scan, not an
offset's skip.

A cursor is opaque to clients: base64url of the kind, quantity and the last row's key; one
given to another kind or quantity is refused (`CursorError`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ingest.rollups import ceil_to


class ReadKind(StrEnum):
    RAW = "raw"
    INTERVAL = "interval"
    VALIDATED = "validated"


class CursorError(ValueError):
    pass


@dataclass(frozen=True)
class Key:
    device_id: int
    ts: datetime


FIRST = Key(-1, datetime.fromisoformat("0001-01-01T00:00:00+00:00"))
STEP = timedelta(minutes=15)
_ORIGIN = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def encode_cursor(kind: ReadKind, quantity: str, key: Key) -> str:
    raw = json.dumps([kind.value, quantity, key.device_id, key.ts.isoformat()])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: ReadKind, quantity: str) -> Key:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        k, q, device_id, ts = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = Key(int(device_id), datetime.fromisoformat(ts))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise CursorError("not a cursor this API gave") from exc
    if (k, q) != (kind.value, quantity):
        raise CursorError(f"a cursor of {k} reads of {q}, not of {kind.value} reads of {quantity}")
    if key.ts.tzinfo is None:
        raise CursorError("not a cursor this API gave")
    return key


_FILTER = "(%(dev)s::integer IS NULL OR {t}.device_id = %(dev)s)"

RAW = f"""
SELECT d.name AS device, r.quantity, r.ts, r.value, r.quality, r.device_id
  FROM readings r JOIN devices d ON d.id = r.device_id
 WHERE r.quantity = %(q)s AND r.ts >= %(start)s AND r.ts < %(end)s AND {_FILTER.format(t="r")}
   AND (r.device_id, r.quantity, r.ts) > (%(after_dev)s, %(q)s, %(after_ts)s)
 ORDER BY r.device_id, r.quantity, r.ts
 LIMIT %(limit)s
"""

# 15-min buckets (UTC-aligned from the epoch) starting in [start, end), as ingest.rollups':
# they hold exactly the rows in [ceil(start), ceil(end)); after a cursor's bucket b, the
# next bucket's rows start at b + 15 min. The LIMIT inside, on the index's order, lets the
# planner sort each device's rows alone (an incremental sort) and stop at the page's end:
# measured on 300 meters × 3 days, a page read 1,056 rows instead of the 43,391 after the
# cursor.
INTERVAL = f"""
SELECT d.name AS device, b.quantity, b.bucket, b.count, b.min, b.avg, b.max, b.first,
       b.last, b.last - b.first AS delta, b.first_ts, b.last_ts, b.device_id
  FROM (
    SELECT r.device_id, r.quantity, date_bin(%(step)s, r.ts, %(origin)s) AS bucket,
           count(*) AS count, min(r.value) AS min, avg(r.value) AS avg, max(r.value) AS max,
           (array_agg(r.value ORDER BY r.ts))[1] AS first,
           (array_agg(r.value ORDER BY r.ts DESC))[1] AS last,
           min(r.ts) AS first_ts, max(r.ts) AS last_ts
      FROM readings r
     WHERE r.quantity = %(q)s AND r.ts >= %(start)s AND r.ts < %(end)s
       AND {_FILTER.format(t="r")}
       AND (r.device_id, r.quantity, r.ts) >= (%(after_dev)s, %(q)s, %(after_ts)s)
     GROUP BY r.device_id, r.quantity, bucket
     ORDER BY r.device_id, r.quantity, bucket
     LIMIT %(limit)s
  ) b JOIN devices d ON d.id = b.device_id
 ORDER BY b.device_id, b.bucket
"""

VALIDATED = f"""
SELECT d.name AS device, v.quantity, v.ts, v.value, v.method, v.rules, v.valid, v.version,
       v.edited_by, v.reason, v.device_id
  FROM validated_reads v JOIN devices d ON d.id = v.device_id
 WHERE v.current AND v.quantity = %(q)s AND v.ts >= %(start)s AND v.ts < %(end)s
   AND {_FILTER.format(t="v")}
   AND (v.device_id, v.quantity, v.ts) > (%(after_dev)s, %(q)s, %(after_ts)s)
 ORDER BY v.device_id, v.quantity, v.ts
 LIMIT %(limit)s
"""

SQL = {ReadKind.RAW: RAW, ReadKind.INTERVAL: INTERVAL, ReadKind.VALIDATED: VALIDATED}
TS = {ReadKind.RAW: "ts", ReadKind.INTERVAL: "bucket", ReadKind.VALIDATED: "ts"}


def params(
    kind: ReadKind,
    quantity: str,
    start: datetime,
    end: datetime,
    device_id: int | None,
    after: Key,
    limit: int | None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "q": quantity,
        "start": start,
        "end": end,
        "dev": device_id,
        "after_dev": after.device_id,
        "after_ts": after.ts,
        "limit": limit,
    }
    if kind is ReadKind.INTERVAL:
        p["start"], p["end"] = ceil_to(start, STEP), ceil_to(end, STEP)
        p["step"], p["origin"] = STEP, _ORIGIN
        if after is not FIRST:
            p["after_ts"] = after.ts + STEP
    return p


def key_of(kind: ReadKind, row: dict[str, Any]) -> Key:
    return Key(row["device_id"], row[TS[kind]])
