"""What the database says about each concentrator's meters: read success per day (from the
data that actually arrived, not from the concentrator's own report) and the gaps to re-read.

A concentrator's meters are the devices whose ``attributes`` name it (``concentrator``, and
``area`` for the transformer area). A meter counts as read for a local day when its daily
frozen register (``1.8.0*d``) for that day is stored.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg

READ_SQL = """
    SELECT d.attributes->>'concentrator', d.attributes->>'area', d.name,
           EXISTS (SELECT 1 FROM readings r WHERE r.device_id = d.id
                   AND r.quantity = '1.8.0*d' AND r.ts = %(frozen_at)s) AS read,
           (SELECT max(r.ts) FROM readings r WHERE r.device_id = d.id
                   AND r.quantity = '1.8.0*d') AS last_frozen
    FROM devices d
    WHERE d.attributes ? 'concentrator'
    ORDER BY 1, 3
"""

GAPS_SQL = """
    SELECT d.name,
           (SELECT count(*) FROM readings r WHERE r.device_id = d.id AND r.quantity = '1.8.0'
                   AND r.ts >= %(start)s AND r.ts < %(end)s) AS curve,
           (SELECT count(*) FROM readings r WHERE r.device_id = d.id AND r.quantity = '1.8.0*d'
                   AND r.ts > %(start)s AND r.ts <= %(end)s) AS frozen
    FROM devices d
    WHERE d.attributes->>'concentrator' = %(concentrator)s
    ORDER BY d.name
"""


def frozen_instant(day: date, tz: ZoneInfo) -> datetime:
    """Registers of `day` are frozen at the midnight that ends it."""
    return datetime.combine(day + timedelta(days=1), time(), tz)


def read_rates(rows: list[tuple], day: date) -> list[dict]:
    """Rows of READ_SQL → per concentrator: due, read, rate, and the failing meters with the
    last day they were read."""
    out: dict[str, dict] = {}
    for concentrator, area, meter, read, last_frozen in rows:
        entry = out.setdefault(
            concentrator,
            {
                "concentrator": concentrator,
                "area": area,
                "day": day,
                "due": 0,
                "read": 0,
                "failing": [],
            },
        )
        entry["due"] += 1
        if read:
            entry["read"] += 1
        else:
            entry["failing"].append({"meter": meter, "last_read": last_frozen})
    for entry in out.values():
        entry["rate"] = entry["read"] / entry["due"] if entry["due"] else None
    return list(out.values())


def by_area(rates: list[dict]) -> list[dict]:
    """Per transformer area: the concentrators' figures added up (an area may have several)."""
    areas: dict[str, dict] = {}
    for r in rates:
        a = areas.setdefault(
            r["area"],
            {
                "area": r["area"],
                "day": r["day"],
                "concentrators": [],
                "due": 0,
                "read": 0,
                "failing": [],
            },
        )
        a["concentrators"].append(r["concentrator"])
        a["due"] += r["due"]
        a["read"] += r["read"]
        a["failing"] += r["failing"]
    for a in areas.values():
        a["rate"] = a["read"] / a["due"] if a["due"] else None
    return list(areas.values())


def concentrator_read_rates(conn: psycopg.Connection, day: date, tz: ZoneInfo) -> list[dict]:
    rows = conn.execute(READ_SQL, {"frozen_at": frozen_instant(day, tz)}).fetchall()
    return read_rates(rows, day)


def meters_with_gaps(
    conn: psycopg.Connection, concentrator: str, start: datetime, end: datetime
) -> list[str]:
    """Meters of the concentrator missing curve points or frozen days in [start, end)."""
    rows = conn.execute(GAPS_SQL, {"concentrator": concentrator, "start": start, "end": end})
    return gap_meters(list(rows), start, end)


def gap_meters(rows: list[tuple], start: datetime, end: datetime) -> list[str]:
    """Rows of GAPS_SQL → the meters short of curve points or frozen days."""
    points = int((end - start) / timedelta(minutes=15))
    days = round((end - start) / timedelta(days=1))
    return [name for name, curve, frozen in rows if curve < points or frozen < days]


CONCENTRATORS_SQL = (
    "SELECT DISTINCT attributes->>'concentrator' FROM devices"
    " WHERE attributes ? 'concentrator' ORDER BY 1"
)


def concentrators(conn: psycopg.Connection) -> list[str]:
    return [c for (c,) in conn.execute(CONCENTRATORS_SQL)]
