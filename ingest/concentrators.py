"""What the database says about each concentrator's meters: read success per day (from the
data that actually arrived, not from the concentrator's own report) and the gaps to re-read.

A concentrator's meters are the devices whose ``attributes`` name it (``concentrator``, and
``area`` for the transformer area). A meter counts as read for a local day when its daily
frozen register (``1.8.0*d``) for that day is stored. Local days are those of the
concentrator's own zone (``timezone`` in its meters' attributes, from the inventory), else the
site's.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

# Registers of a day are frozen at the local midnight that ends it, in the meter's zone.
READ_SQL = """
    SELECT d.attributes->>'concentrator', d.attributes->>'area', d.name,
           EXISTS (SELECT 1 FROM readings r WHERE r.device_id = d.id
                   AND r.quantity = '1.8.0*d'
                   AND r.ts = (%(day)s::date + 1)::timestamp
                              AT TIME ZONE COALESCE(d.attributes->>'timezone', %(site_tz)s)
                  ) AS read,
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


def read_params(day: date, site_tz: ZoneInfo) -> dict:
    """READ_SQL's parameters: the local day, and the zone of meters that name none."""
    return {"day": day, "site_tz": site_tz.key}


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
    rows = conn.execute(READ_SQL, read_params(day, tz)).fetchall()
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


# each concentrator with its own zone (None: the site's)
CONCENTRATORS_SQL = (
    "SELECT attributes->>'concentrator', min(attributes->>'timezone') FROM devices"
    " WHERE attributes ? 'concentrator' GROUP BY 1 ORDER BY 1"
)


def concentrators(conn: psycopg.Connection) -> list[tuple[str, str | None]]:
    return [(c, tz) for (c, tz) in conn.execute(CONCENTRATORS_SQL)]
