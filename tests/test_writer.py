"""The batch writer against a real PostgreSQL server: idempotence, bad rows, outages."""

import asyncio
import math
from datetime import UTC, datetime, timedelta

import psycopg

from ingest import metrics
from ingest.model import Quality, Reading
from ingest.retry import Backoff
from ingest.schema import StorageMode
from ingest.writer import ReadingWriter
from tests.conftest import readings_days

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def batch(n_devices=20, n_times=10, start=T0, value=1.5):
    return [
        Reading(d, q, start + timedelta(minutes=15 * k), value + d + k, 0)
        for k in range(n_times)
        for d in range(1, n_devices + 1)
        for q in ("1.8.0", "32.7.0")
    ]


def stored(
    url, sql="SELECT device_id, quantity, ts, value, quality FROM readings ORDER BY 1, 2, 3"
):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


async def test_written_rows_equal_the_batch(migrated_url):
    rows = batch()
    writer = ReadingWriter(migrated_url)
    result = await writer.write_batch(rows)
    assert (result.written, result.duplicates, result.dead) == (len(rows), 0, 0)
    assert stored(migrated_url) == sorted(r.row for r in rows)


async def test_replaying_a_batch_stores_each_reading_once(migrated_url):
    rows = batch()
    writer = ReadingWriter(migrated_url)
    await writer.write_batch(rows)
    again = await writer.write_batch(rows)
    assert (again.written, again.duplicates) == (0, len(rows))
    # a batch that half overlaps what is stored: only the new half is written
    overlapping = rows[len(rows) // 2 :] + batch(start=T0 + timedelta(days=1))
    third = await writer.write_batch(overlapping)
    assert third.written == len(rows) and third.duplicates == len(rows) - len(rows) // 2
    assert stored(
        migrated_url, "SELECT count(*), count(DISTINCT (device_id, quantity, ts)) FROM readings"
    ) == [(2 * len(rows), 2 * len(rows))]


async def test_duplicates_inside_one_batch_are_stored_once(migrated_url):
    rows = batch(n_devices=2, n_times=2)
    writer = ReadingWriter(migrated_url)
    result = await writer.write_batch(rows + rows)
    assert result.written == len(rows) and result.duplicates == len(rows)


async def test_queue_flush_and_close(migrated_url):
    writer = ReadingWriter(migrated_url, batch_size=100, max_delay=0.05)
    task = asyncio.create_task(writer.run())
    rows = batch(n_devices=50, n_times=8)  # 800 readings → 8 batches
    for i in range(0, len(rows), 37):
        await writer.add_many(rows[i : i + 37])
    await writer.flush()
    assert len(stored(migrated_url)) == len(rows)
    await writer.add(Reading(1, "1.8.0", T0 - timedelta(days=1), 9.0))
    await writer.close()
    await asyncio.wait_for(task, 10)
    assert len(stored(migrated_url)) == len(rows) + 1  # close wrote what was queued


async def test_a_day_without_partition_is_created_on_demand(migrated_url, storage):
    old = datetime(2024, 1, 15, 12, tzinfo=UTC)  # late data, far outside the created range
    writer = ReadingWriter(migrated_url)
    result = await writer.write_batch(batch(n_devices=3, n_times=2, start=old))
    assert result.written == 12
    where = stored(migrated_url, "SELECT DISTINCT tableoid::regclass::text FROM readings")
    if storage is StorageMode.NATIVE:
        assert where == [("readings_p20240115",)]
    else:  # one chunk, made by TimescaleDB for that day
        assert len(where) == 1 and readings_days(migrated_url) == {old.date()}


async def test_bad_rows_go_to_dead_letters_and_the_rest_lands(migrated_url):
    good = batch(n_devices=30, n_times=4)
    bad = [
        # binary COPY would silently wrap this to 4464: screened out before COPY
        Reading(7, "32.7.0", T0 + timedelta(days=2), 230.0, 70_000),
        # NUL is not valid in a PostgreSQL text value: rejected by the server, bisected out
        Reading(8, "1.8.\x00", T0, 1.0, 0),
    ]
    before = metrics.ROWS_DEAD.labels("CharacterNotInRepertoire")._value.get()
    writer = ReadingWriter(migrated_url)
    result = await writer.write_batch(good[:100] + bad + good[100:])
    assert (result.written, result.dead) == (len(good), 2)
    assert stored(migrated_url) == sorted(r.row for r in good)
    letters = stored(migrated_url, "SELECT source, reason, payload FROM dead_letters ORDER BY id")
    assert len(letters) == 2 and all(src == "writer" and reason for src, reason, _ in letters)
    payloads = sorted((p["device_id"], p["quantity"], p["quality"]) for _, _, p in letters)
    assert payloads == [(7, "32.7.0", 70_000), (8, "1.8.\\u0000", 0)]
    assert metrics.ROWS_DEAD.labels("CharacterNotInRepertoire")._value.get() == before + 1
    reasons = " ".join(r for _, r, _ in letters)
    assert "quality 70000" in reasons and "22021" in reasons


async def test_naive_timestamps_are_refused_not_shifted(migrated_url):
    naive = Reading(1, "1.8.0", datetime(2026, 1, 1, 8, 0), 5.0)
    result = await ReadingWriter(migrated_url).write_batch([naive])
    assert (result.written, result.dead) == (0, 1)
    assert stored(migrated_url) == []


async def test_nan_and_flags_round_trip(migrated_url):
    rows = [
        Reading(1, "13.7.0", T0, math.nan, Quality.SUSPECT),
        Reading(1, "1.8.0", T0, 12.5, Quality.RE_READ | Quality.CLOCK_SUSPECT),
    ]
    await ReadingWriter(migrated_url).write_batch(rows)
    got = {
        q: (v, f)
        for q, v, f in stored(migrated_url, "SELECT quantity, value, quality FROM readings")
    }
    assert math.isnan(got["13.7.0"][0]) and Quality(got["13.7.0"][1]) is Quality.SUSPECT
    assert got["1.8.0"] == (12.5, int(Quality.RE_READ | Quality.CLOCK_SUSPECT))


async def test_a_lost_connection_is_retried_and_nothing_is_lost(migrated_url):
    writer = ReadingWriter(migrated_url, backoff=Backoff(initial=0.05, maximum=0.2))
    await writer.write_batch(batch(n_devices=1, n_times=1))
    # the writer's connection is the only other client of this test database
    [(pid,)] = stored(
        migrated_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    retries = sum(
        s.value
        for m in metrics.WRITE_RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    rows = batch(start=T0 + timedelta(days=1))
    result = await writer.write_batch(rows)
    assert result.written == len(rows)
    after = sum(
        s.value
        for m in metrics.WRITE_RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert after == retries + 1
    assert len(stored(migrated_url)) == len(rows) + 2


async def test_a_duplicate_inside_one_batch_keeps_the_first_to_arrive(migrated_url):
    first = Reading(1, "1.8.0", T0, 20.0)
    later = Reading(1, "1.8.0", T0, 10.0)  # sorts first by value, arrived second
    replay = Reading(1, "1.8.0", T0, 20.0)  # the same reading again: a plain duplicate
    other = Reading(2, "1.8.0", T0, 5.0)
    writer = ReadingWriter(migrated_url)
    result = await writer.write_batch([first, other, later, replay])
    assert (result.written, result.duplicates, result.dead) == (2, 1, 1)
    assert stored(migrated_url, "SELECT device_id, value FROM readings ORDER BY 1") == [
        (1, 20.0),
        (2, 5.0),
    ]
    [(source, reason, payload)] = stored(
        migrated_url, "SELECT source, reason, payload FROM dead_letters"
    )
    assert source == "writer" and "arrived first" in reason and "20.0" in reason
    assert (payload["device_id"], payload["value"]) == (1, "10.0")


async def test_a_check_violation_that_mentions_no_partition_is_not_a_missing_partition(
    migrated_url,
):
    # Missing partitions are told by SQLSTATE 23514 without a constraint, not by the English
    # text "no partition" (translated messages, or a constraint named like this, fooled it).
    with psycopg.connect(migrated_url) as conn:
        conn.execute('ALTER TABLE readings ADD CONSTRAINT "no partition" CHECK (value < 1e9)')
    writer = ReadingWriter(migrated_url, backoff=Backoff(initial=0.05, maximum=0.2))
    rows = [Reading(1, "1.8.0", T0, 5.0), Reading(1, "2.8.0", T0, 2e9)]
    result = await asyncio.wait_for(writer.write_batch(rows), 30)
    assert (result.written, result.dead) == (1, 1)
    [(reason,)] = stored(migrated_url, "SELECT reason FROM dead_letters")
    assert "23514" in reason


async def test_a_row_that_cannot_be_encoded_is_dead_lettered_not_retried_forever(migrated_url):
    # a lone surrogate cannot be encoded as UTF-8, and jsonb refuses its \ud800 escape
    rows = [Reading(1, "1.8.0", T0, 1.0), Reading(1, "\ud800", T0, 2.0)]
    writer = ReadingWriter(migrated_url, backoff=Backoff(initial=0.05, maximum=0.2))
    result = await asyncio.wait_for(writer.write_batch(rows), 30)
    assert (result.written, result.dead) == (1, 1)
    [(payload,)] = stored(migrated_url, "SELECT payload FROM dead_letters")
    assert payload["quantity"] == "\\ud800"
