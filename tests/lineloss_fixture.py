"""Plain-SQL helpers for the line-loss tests: topology rows (migration 7) and registers stored
as readings, so the tests need nothing but the tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from ingest.schema import ensure_partitions

DAY = datetime(2026, 11, 9, 16, 0, tzinfo=UTC)  # 2026-11-10 00:00 Asia/Shanghai
Q = timedelta(minutes=15)


def device(conn: psycopg.Connection, name: str, commissioned: datetime | None = None) -> int:
    attrs = {"commissioned": commissioned.isoformat()} if commissioned else {}
    return conn.execute(
        "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
        " VALUES (%s, 'meter', 'dlt645', 'bus', 900, %s) RETURNING id",
        (name, psycopg.types.json.Jsonb(attrs)),
    ).fetchone()[0]


def grid(conn: psycopg.Connection) -> dict[str, int]:
    """sub-01 → f-01 (10 kV) → a-01 (public, 400 kVA) and d-01 (dedicated, 630 kVA)."""
    sub = conn.execute(
        "INSERT INTO substations (name, voltage_kv) VALUES ('sub-01', 35) RETURNING id"
    ).fetchone()[0]
    f = conn.execute(
        "INSERT INTO feeders (name, substation_id) VALUES ('f-01', %s) RETURNING id", (sub,)
    ).fetchone()[0]
    a = conn.execute(
        "INSERT INTO areas (name, feeder_id, transformer_kva) VALUES ('a-01', %s, 400)"
        " RETURNING id",
        (f,),
    ).fetchone()[0]
    d = conn.execute(
        "INSERT INTO areas (name, feeder_id, kind, transformer_kva)"
        " VALUES ('d-01', %s, 'dedicated', 630) RETURNING id",
        (f,),
    ).fetchone()[0]
    return {"f-01": f, "a-01": a, "d-01": d}


def place(
    conn: psycopg.Connection,
    device_id: int,
    role: str,
    *,
    area: int | None = None,
    feeder: int | None = None,
    ct: float = 1,
    pt: float = 1,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> int:
    return conn.execute(
        "INSERT INTO metering_points"
        " (device_id, role, area_id, feeder_id, ct_ratio, pt_ratio, valid_from, valid_to)"
        " VALUES (%s, %s, %s, %s, %s, %s, COALESCE(%s, '-infinity'::timestamptz), %s)"
        " RETURNING id",
        (device_id, role, area, feeder, ct, pt, valid_from, valid_to),
    ).fetchone()[0]


def registers(
    conn: psycopg.Connection, device_id: int, values: list[float | None], start: datetime = DAY
) -> None:
    """Register readings at start + k·15 min (None: no reading at that boundary)."""
    rows = [
        (device_id, "1.8.0", start + k * Q, v, 0) for k, v in enumerate(values) if v is not None
    ]
    ensure_partitions(conn, {r[2].date() for r in rows})
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, quantity, ts, value, quality)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )
