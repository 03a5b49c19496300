"""Compressed chunks (TimescaleDB) hold the same readings as the raw rows, and late data into
them through the writer is stored once; the compression policy follows the setting.

Each test runs in the storage mode of the test server: on TimescaleDB the chunks are compressed
on demand (`compress_chunk`) and checked to be; natively the same assertions hold on the plain
daily partitions, which have nothing to compress."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from gridread import runtime
from gridread.settings import Settings
from ingest.compression import COMPRESS_AFTER_DAYS, ensure_compression_policy
from ingest.model import Reading
from ingest.schema import StorageMode, migrate, storage_mode
from ingest.writer import ReadingWriter

# three whole UTC days, three weeks back: past any compression age, one chunk per day
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=21)
QUANTITIES = ("1.8.0", "32.7.0")
ALL = "SELECT device_id, quantity, ts, value, quality FROM readings ORDER BY 1, 2, 3"


def readings(devices=range(1, 6), days=3, value=0.0) -> list[Reading]:
    return [
        Reading(d, q, T0 + timedelta(minutes=15 * k), value + d * 1000 + k + i / 10, 0)
        for k in range(days * 96)
        for d in devices
        for i, q in enumerate(QUANTITIES)
    ]


def rows(batch: list[Reading]) -> list[tuple]:
    return sorted((r.device_id, r.quantity, r.ts, r.value, r.quality) for r in batch)


def stored(url: str, sql: str = ALL, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def compress_all(url: str) -> int:
    """Compress every chunk of readings (TimescaleDB); return how many chunks are compressed
    afterwards. Natively: check the table is the plain partitioned one and return 0."""
    with psycopg.connect(url, autocommit=True) as conn:
        if storage_mode(conn) is StorageMode.NATIVE:
            kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'")
            assert kind.fetchone() == ("p",)
            return 0
        for (chunk,) in conn.execute("SELECT show_chunks('readings')").fetchall():
            try:
                conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)", (chunk,))
            except psycopg.errors.DuplicateObject:
                pass  # the compression policy's job compressed it meanwhile: the data is old
        states = conn.execute(
            "SELECT is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'readings'"
        ).fetchall()
        assert states and all(s for (s,) in states)
        return len(states)


def expected_chunks(url: str, days: int = 3) -> int:
    with psycopg.connect(url) as conn:
        return days if storage_mode(conn) is StorageMode.TIMESCALEDB else 0


async def test_reads_over_compressed_chunks_equal_the_raw_data(migrated_url):
    batch = readings()
    await ReadingWriter(migrated_url).write_batch(batch)
    before = stored(migrated_url)
    assert before == rows(batch)

    assert compress_all(migrated_url) == expected_chunks(migrated_url)
    assert stored(migrated_url) == before
    # a filtered read (one device, one quantity, a window across a chunk boundary) and an
    # hourly rollup, as the API and the analytics ask them
    window = (3, "32.7.0", T0 + timedelta(hours=20), T0 + timedelta(hours=30))
    sql = (
        "SELECT ts, value FROM readings WHERE device_id = %s AND quantity = %s"
        " AND ts >= %s AND ts < %s ORDER BY ts"
    )
    assert stored(migrated_url, sql, window) == [
        (ts, v) for d, q, ts, v, _ in before if (d, q) == window[:2] and window[2] <= ts < window[3]
    ]
    hourly = (
        "SELECT device_id, date_trunc('hour', ts) AS h, min(value), max(value), count(*)"
        " FROM readings WHERE quantity = '1.8.0' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert len(stored(migrated_url, hourly)) == 5 * 3 * 24
    assert all(n == 4 and hi - lo == 3 for *_, lo, hi, n in stored(migrated_url, hourly))


async def test_a_replayed_batch_into_compressed_chunks_is_stored_once(migrated_url):
    batch = readings()
    writer = ReadingWriter(migrated_url)
    await writer.write_batch(batch)
    assert compress_all(migrated_url) == expected_chunks(migrated_url)

    again = await writer.write_batch(batch)
    assert (again.written, again.duplicates, again.dead) == (0, len(batch), 0)
    assert stored(migrated_url) == rows(batch)
    count = "SELECT count(*), count(DISTINCT (device_id, quantity, ts)) FROM readings"
    assert stored(migrated_url, count) == [(len(batch), len(batch))]


async def test_a_late_reread_into_compressed_chunks_adds_only_what_was_missing(migrated_url):
    """补抄: the head end re-reads a day it has mostly stored. Stored values win over the
    re-read's (first stored wins, nothing overwritten); the gaps and a new meter are filled."""
    full = readings()
    gap_start, gap_end = T0 + timedelta(days=1, hours=6), T0 + timedelta(days=1, hours=9)
    first = [r for r in full if not (r.device_id == 2 and gap_start <= r.ts < gap_end)]
    writer = ReadingWriter(migrated_url)
    await writer.write_batch(first)
    assert compress_all(migrated_url) == expected_chunks(migrated_url)

    day2 = [r for r in readings(days=2, value=0.5) if r.ts >= T0 + timedelta(days=1)]
    new_meter = readings(devices=[9], days=2)[-96:]  # device 9's second day, never stored
    result = await writer.write_batch(day2 + new_meter)
    missing = len(full) - len(first)
    assert missing == 3 * 4 * len(QUANTITIES)
    assert (result.written, result.dead) == (missing + len(new_meter), 0)
    assert result.duplicates == len(day2) - missing

    gap_rows = {(r.device_id, r.quantity, r.ts) for r in full} - {
        (r.device_id, r.quantity, r.ts) for r in first
    }
    reread = {(r.device_id, r.quantity, r.ts): r.value for r in day2}
    want = rows(first) + [(*k, reread[k], 0) for k in gap_rows] + rows(new_meter)
    assert stored(migrated_url) == sorted(want)


async def test_a_new_value_for_a_compressed_key_never_overwrites(migrated_url):
    batch = readings(devices=[1], days=1)
    writer = ReadingWriter(migrated_url)
    await writer.write_batch(batch)
    assert compress_all(migrated_url) == expected_chunks(migrated_url, days=1)

    changed = Reading(1, "1.8.0", T0 + timedelta(hours=5), -1.0, 3)
    result = await writer.write_batch([changed])
    assert (result.written, result.duplicates) == (0, 1)
    assert stored(migrated_url) == rows(batch)


def policy(url: str) -> list[tuple]:
    """(job id, compress_after) of the readings' compression jobs; TimescaleDB only."""
    return stored(
        url,
        "SELECT job_id, (config->>'compress_after')::interval FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_compression' AND hypertable_name = 'readings'",
    )


def test_the_compression_policy_follows_the_setting(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        mode = storage_mode(conn)
        job = ensure_compression_policy(conn, 14)
        if mode is StorageMode.NATIVE:
            assert job is None
            ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
            assert ext.fetchone() is None
            return
        assert policy(migrated_url) == [(job, timedelta(days=14))]
        assert ensure_compression_policy(conn, 14) == job  # unchanged: the same job
        migrate(conn)  # a restart's migration keeps the configured age
        assert policy(migrated_url) == [(job, timedelta(days=14))]
        job3 = ensure_compression_policy(conn, 3)
        assert policy(migrated_url) == [(job3, timedelta(days=3))]


def test_migrate_creates_a_missing_policy_with_the_default_age(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        if storage_mode(conn) is StorageMode.NATIVE:
            assert ensure_compression_policy(conn) is None
            return
        assert [age for _, age in policy(migrated_url)] == [timedelta(days=COMPRESS_AFTER_DAYS)]
        conn.execute("CALL remove_columnstore_policy('readings')")  # removed by hand
        assert policy(migrated_url) == []
        migrate(conn)
        assert [age for _, age in policy(migrated_url)] == [timedelta(days=COMPRESS_AFTER_DAYS)]


def test_the_setting_reaches_the_database(db_url, monkeypatch):
    monkeypatch.delenv("GRIDREAD_COMPRESS_AFTER_DAYS", raising=False)
    monkeypatch.setenv("GRIDREAD_DATABASE_URL", db_url)
    assert Settings().compress_after_days == COMPRESS_AFTER_DAYS
    monkeypatch.setenv("GRIDREAD_COMPRESS_AFTER_DAYS", "30")
    settings = Settings()
    assert runtime.database_url(settings) == db_url
    with psycopg.connect(db_url) as conn:
        timescale = storage_mode(conn) is StorageMode.TIMESCALEDB
    if timescale:
        assert [age for _, age in policy(db_url)] == [timedelta(days=30)]
    else:
        assert stored(db_url, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'") == []
    monkeypatch.setenv("GRIDREAD_COMPRESS_AFTER_DAYS", "0")
    with pytest.raises(ValidationError):
        Settings()
