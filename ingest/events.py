"""Device events (power down/up, cover opened, clock drift, relay operated …), stored once.

The primary key (device_id, ts, kind) makes a re-read event record a no-op. The SQL is shared
by these synchronous helpers and the collectors' async store (ingest/store.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import psycopg

from ingest.model import Event

INSERT_SQL = (
    "INSERT INTO events (device_id, ts, kind, detail) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
COUNT_SQL = "SELECT count(*) FROM events WHERE device_id = %s AND kind = %s"


def event_row(e: Event) -> tuple:
    return (e.device_id, e.ts, e.kind, json.dumps(e.detail, default=str))


def store_events(conn: psycopg.Connection, events: Sequence[Event]) -> int:
    """Insert events that are not stored yet; return how many were new."""
    if not events:
        return 0
    new = 0
    with conn.transaction(), conn.cursor() as cur:
        for e in events:
            cur.execute(INSERT_SQL, event_row(e))
            new += cur.rowcount
    return new


def count_events(conn: psycopg.Connection, device_id: int, kind: str) -> int:
    return conn.execute(COUNT_SQL, (device_id, kind)).fetchone()[0]
