"""What is missing: the 15-minute curve points and daily frozen values a meter should have
delivered but that are not in the readings table (the input of 补抄, re-reading)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

MISSING_SQL = (
    "SELECT e.ts FROM unnest(%s::timestamptz[]) AS e(ts)"
    " WHERE NOT EXISTS (SELECT 1 FROM readings r"
    "   WHERE r.device_id = %s AND r.quantity = %s AND r.ts = e.ts)"
    " ORDER BY e.ts"
)


def missing_instants(
    conn: psycopg.Connection,
    device_id: int,
    quantity: str,
    expected: list[datetime],
) -> list[datetime]:
    """The instants of `expected` with no reading of `quantity` (exact timestamps)."""
    if not expected:
        return []
    rows = conn.execute(MISSING_SQL, (expected, device_id, quantity)).fetchall()
    return [ts for (ts,) in rows]


def grid(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """start, start+step, … < end (start is taken as already on the grid)."""
    out, t = [], start
    while t < end:
        out.append(t)
        t += step
    return out
