"""A small stored world for the API tests: a Modbus meter with readings, a DL/T 645 bus with
read statistics, a concentrator whose meter has a daily frozen value, and some events."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import psycopg

from ingest.schema import ensure_partitions

DAY = date(2026, 11, 25)
T0 = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


def seed(url: str) -> dict[str, int]:
    """Store the world; return device name → id."""
    devices = [
        ("meter-01", "meter", "modbus_tcp", "127.0.0.1:502", 1, "three_phase_meter", {}),
        ("bus1-m01", "meter", "dlt645", "/dev/ttyUSB0", None, None, {"bus": "bus1"}),
        ("bus1-m02", "meter", "dlt645", "/dev/ttyUSB0", None, None, {"bus": "bus1"}),
        ("jzq-1", "concentrator", "mqtt", "mqtt", None, None, {"area": "a1"}),
        ("jzq1-m01", "meter", "mqtt", "mqtt", None, None, {"concentrator": "jzq-1", "area": "a1"}),
    ]
    ids: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        ensure_partitions(conn, {DAY, DAY + timedelta(days=1)})
        for name, kind, protocol, endpoint, unit, regmap, attrs in devices:
            (ids[name],) = conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, unit_id, register_map,"
                " poll_interval, attributes) VALUES (%s, %s, %s, %s, %s, %s, 60, %s) RETURNING id",
                (name, kind, protocol, endpoint, unit, regmap, json.dumps(attrs)),
            ).fetchone()
        for i in range(8):
            ts = T0 + timedelta(minutes=15 * i)
            conn.execute(
                "INSERT INTO readings (device_id, quantity, ts, value, quality)"
                " VALUES (%s, '1.8.0', %s, %s, 0), (%s, '32.7.0', %s, %s, 0)",
                (ids["meter-01"], ts, 100 + i, ids["meter-01"], ts, 230.0 + i / 10),
            )
        # the concentrator's meter has its frozen value of DAY (frozen at the next midnight)
        conn.execute(
            "INSERT INTO readings (device_id, quantity, ts, value, quality)"
            " VALUES (%s, '1.8.0*d', %s, 1234.5, 0)",
            (ids["jzq1-m01"], datetime(2026, 11, 25, 16, 0, tzinfo=UTC)),
        )
        conn.execute(
            "INSERT INTO events (device_id, ts, kind, detail) VALUES"
            " (%s, %s, 'power_down', '{}'), (%s, %s, 'cover_opened', '{\"count\": 2}')",
            (ids["meter-01"], T0 + timedelta(hours=1), ids["bus1-m01"], T0 + timedelta(hours=2)),
        )
        conn.execute(
            "INSERT INTO read_stats (day, bus, device_id, attempts, successes, last_success,"
            " last_error, last_error_at) VALUES"
            " (%s, 'bus1', %s, 2, 2, %s, NULL, NULL), (%s, 'bus1', %s, 3, 0, NULL, 'timeout', %s)",
            (DAY, ids["bus1-m01"], T0, DAY, ids["bus1-m02"], T0),
        )
    return ids
