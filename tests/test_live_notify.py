"""The live feed's source: the writer and the collector store announce what they stored with
pg_notify in the storing transaction (a real PostgreSQL listener receives them)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg

from ingest.live import CHANNEL, MAX_PAYLOAD, event_payloads, reading_payloads
from ingest.model import Event, Reading
from ingest.writer import ReadingWriter

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def listener(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def received(conn: psycopg.Connection, key: str, want: int, deadline: float = 10.0) -> list:
    """The items under `key` of the notifications that arrive until `want` are in (or the
    deadline passes), then whatever else is already there."""
    items: list = []
    end = time.monotonic() + deadline
    while len(items) < want and time.monotonic() < end:
        for note in conn.notifies(timeout=0.2, stop_after=1):
            assert len(note.payload.encode()) <= MAX_PAYLOAD
            items += json.loads(note.payload).get(key, [])
    for note in conn.notifies(timeout=0.3):
        items += json.loads(note.payload).get(key, [])
    return items


def readings(n: int, start=T0, value: float = 1.5) -> list[Reading]:
    return [
        Reading(1 + k % 7, "1.8.0", start + timedelta(minutes=k), value + k, 0) for k in range(n)
    ]


def as_items(rs: list[Reading]) -> list[list]:
    return sorted([r.device_id, r.quantity, r.ts.timestamp(), r.value, r.quality] for r in rs)


async def test_written_readings_are_announced_once_in_chunks(migrated_url):
    rows = readings(1000)
    with listener(migrated_url) as conn:
        await ReadingWriter(migrated_url).write_batch(rows)
        got = received(conn, "r", len(rows))
    # 1000 rows of ~50 bytes each need several ≤ 7900-byte payloads (checked in received)
    assert sorted(got) == as_items(rows)


async def test_a_replay_announces_only_the_new_rows(migrated_url):
    first = readings(10)
    writer = ReadingWriter(migrated_url)
    await writer.write_batch(first)
    later = readings(5, start=T0 + timedelta(days=1))
    with listener(migrated_url) as conn:
        # stored rows again (the ON CONFLICT path) with 5 new ones: only those are announced
        result = await writer.write_batch(first + later)
        got = received(conn, "r", 5)
    assert (result.written, result.duplicates) == (5, 10)
    assert sorted(got) == as_items(later)


async def test_notify_off_announces_nothing(migrated_url):
    with listener(migrated_url) as conn:
        result = await ReadingWriter(migrated_url, notify=False).write_batch(readings(10))
        got = received(conn, "r", 1, deadline=1.0)
    assert result.written == 10 and got == []


async def test_a_failed_batch_announces_nothing(migrated_url):
    """A reading refused for good (a device id beyond int4) is dead-lettered, not announced."""
    bad = Reading(2**40, "1.8.0", T0, 1.0, 0)
    with listener(migrated_url) as conn:
        result = await ReadingWriter(migrated_url).write_batch([bad])
        got = received(conn, "r", 1, deadline=1.0)
    assert (result.written, result.dead) == (0, 1) and got == []


async def test_new_events_are_announced_and_known_ones_not(migrated_url, collector_store):
    with psycopg.connect(migrated_url) as c:
        (dev,) = c.execute(
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
            " VALUES ('m1', 'meter', 'dlt645', '/dev/null', 60) RETURNING id"
        ).fetchone()
    e1 = Event(dev, T0, "power_down", {"end": (T0 + timedelta(minutes=5)).isoformat()})
    e2 = Event(dev, T0, "cover_open", {"count": 3})
    await collector_store.add_events([e1])
    with listener(migrated_url) as conn:
        assert await collector_store.add_events([e1, e2]) == 1  # e1 is stored already
        got = received(conn, "e", 1)
    assert got == [[dev, T0.timestamp(), "cover_open", {"count": 3}]]


def test_payloads_stay_under_the_limit_and_keep_everything():
    ts = datetime(2026, 11, 26, tzinfo=UTC)
    rows = [(k, "1.8.0*suffix-long", ts, 1e300 / (k + 1), 32767) for k in range(500)]
    rows.append((1, "32.7.0", ts, float("nan"), 0))  # not JSON: announced as null
    payloads = reading_payloads(rows)
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    items = [i for p in payloads for i in json.loads(p)["r"]]
    assert len(items) == 501 and items[-1] == [1, "32.7.0", ts.timestamp(), None, 0]
    # an event whose detail cannot fit one payload keeps its place, detail truncated
    huge = event_payloads([(1, ts, "status", {"failing": ["x" * 100] * 100})])
    assert [json.loads(p)["e"] for p in huge] == [
        [[1, ts.timestamp(), "status", {"truncated": True}]]
    ]


def test_opened_inspection_cases_are_announced_refreshed_ones_not(migrated_url):
    """The anomalies job's site (tests/test_anomalies_job.py): c1 stopped, c2 reverse wiring
    → two cases opened, announced once; the job's rerun refreshes them, announcing nothing."""
    from analytics.anomaly_job import JOB, run_anomalies
    from analytics.store import AnalyticsStore
    from tests.test_anomalies_job import NOW, POLICY, site

    with psycopg.connect(migrated_url, autocommit=True) as conn, listener(migrated_url) as ear:
        dev = site(conn)
        assert run_anomalies(AnalyticsStore(conn), POLICY, NOW) == 2
        got = received(ear, "c", 2)
        ids = dict(conn.execute("SELECT kind, id FROM anomaly_cases").fetchall())
        conn.execute("DELETE FROM analytics_watermarks WHERE job = %s", (JOB,))
        assert run_anomalies(AnalyticsStore(conn), POLICY, NOW) == 2
        again = received(ear, "c", 1, deadline=1.0)
    assert sorted((c[0], c[1], c[2], c[3]) for c in got) == sorted(
        [
            (ids["stopped"], dev["c1"], "stopped", "a-01"),
            (ids["reverse_wiring"], dev["c2"], "reverse_wiring", "a-01"),
        ]
    )
    assert again == []
