"""Read statistics: which meters were read on which day, and the read success rate
(抄表成功率 = meters read successfully / meters due, per bus and local day)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg


@dataclass(frozen=True)
class ReadOutcome:
    day: date
    bus: str
    device_id: int
    ok: bool
    at: datetime
    error: str | None = None


RECORD_SQL = (
    "INSERT INTO read_stats AS s (day, bus, device_id, attempts, successes, last_success,"
    "   last_error, last_error_at)"
    " VALUES (%(day)s, %(bus)s, %(device_id)s, 1, %(ok)s::int,"
    "   CASE WHEN %(ok)s THEN %(at)s END, %(error)s,"
    "   CASE WHEN %(ok)s THEN NULL ELSE %(at)s END)"
    " ON CONFLICT (day, bus, device_id) DO UPDATE SET"
    "   attempts = s.attempts + 1,"
    "   successes = s.successes + EXCLUDED.successes,"
    "   last_success = COALESCE(EXCLUDED.last_success, s.last_success),"
    "   last_error = COALESCE(EXCLUDED.last_error, s.last_error),"
    "   last_error_at = COALESCE(EXCLUDED.last_error_at, s.last_error_at)"
)


def outcome_rows(outcomes: Sequence[ReadOutcome]) -> list[dict]:
    return [
        {
            "day": o.day,
            "bus": o.bus,
            "device_id": o.device_id,
            "ok": o.ok,
            "at": o.at,
            "error": o.error,
        }
        for o in outcomes
    ]


def record_outcomes(conn: psycopg.Connection, outcomes: Sequence[ReadOutcome]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(RECORD_SQL, outcome_rows(outcomes))


SUCCESS_RATES_SQL = """
    SELECT d.attributes->>'bus' AS bus,
           count(*) AS due,
           count(*) FILTER (WHERE s.successes > 0) AS read,
           count(*) FILTER (WHERE s.attempts > 0 AND s.successes = 0) AS failed
    FROM devices d
    LEFT JOIN read_stats s
           ON s.device_id = d.id AND s.day = %(day)s AND s.bus = d.attributes->>'bus'
    WHERE d.protocol = 'dlt645' AND (%(bus)s::text IS NULL OR d.attributes->>'bus' = %(bus)s)
    GROUP BY 1 ORDER BY 1
"""

METER_STATS_SQL = """
    SELECT d.name, d.attributes->>'address' AS address, COALESCE(s.attempts, 0) AS attempts,
           COALESCE(s.successes, 0) AS successes, s.last_success, s.last_error, s.last_error_at
    FROM devices d
    LEFT JOIN read_stats s ON s.device_id = d.id AND s.day = %(day)s AND s.bus = %(bus)s
    WHERE d.protocol = 'dlt645' AND d.attributes->>'bus' = %(bus)s
    ORDER BY d.name
"""


def rates(rows: list[tuple], day: date) -> list[dict]:
    """Rows of SUCCESS_RATES_SQL as dicts with the rate (None for a bus with no meters)."""
    return [
        {
            "bus": bus,
            "day": day,
            "due": due,
            "read": read,
            "failed": failed,
            "rate": (read / due) if due else None,
        }
        for bus, due, read, failed in rows
    ]


def success_rates(conn: psycopg.Connection, day: date, bus: str | None = None) -> list[dict]:
    """Per bus: meters due (every DL/T 645 meter of the bus in the inventory), read, failed,
    and the rate."""
    return rates(conn.execute(SUCCESS_RATES_SQL, {"day": day, "bus": bus}).fetchall(), day)
