"""Rollups (ingest.rollups) and retention (ingest.rollups_retention) against a real server, in
the storage mode it offers: continuous aggregates on TimescaleDB, plain SQL natively. The
figures are worked out by hand from a day of 15-min data, on UTC days unless a test names the
site zone (daily buckets are its local days)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gridread import runtime
from gridread.settings import Settings
from ingest.rollups import (
    CAGGS,
    LOCAL_DAY_MIGRATION,
    ensure_rollups,
    load_series,
    refresh_rollup,
    rollup_timezone,
)
from ingest.rollups_retention import apply_retention
from ingest.schema import StorageMode, ensure_partitions, migrate, storage_mode
from tests.api_auth import credentials

T0 = datetime(2026, 11, 25, tzinfo=UTC)
DAY = T0.date()
N = 96  # one day of 15-min readings


def voltage(i: int) -> float:
    """Hour h: 220+h, 222+h, 224+h, 226+h → hourly min 220+h, avg 223+h, max 226+h."""
    return 220.0 + i // 4 + (i % 4) * 2


def register(i: int) -> float:
    """0.5 kWh per 15 min from 1000: hourly first 1000+2h, last 1001.5+2h, delta 1.5."""
    return 1000.0 + 0.5 * i


@pytest.fixture
def zone() -> str:
    """The site zone the database is migrated with (a test parametrizes another)."""
    return "UTC"


@pytest.fixture
def migrated_url(db_url: str, storage: StorageMode, zone: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, storage=storage, timezone=zone)
    return db_url


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(migrated_url, autocommit=True) as c:
        ensure_partitions(c, {DAY + timedelta(days=d) for d in range(-1, 3)})
        for name in ("m1", "m2"):
            c.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
                " VALUES (%s, 'meter', 'modbus_tcp', 'x', 60)",
                (name,),
            )
        rows = []
        for i in range(N):
            ts = T0 + timedelta(minutes=15 * i)
            rows += [(1, "32.7.0", ts, voltage(i)), (1, "1.8.0", ts, register(i))]
            rows.append((2, "32.7.0", ts, 100.0))  # another meter, never mixed in
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (device_id, quantity, ts, value) VALUES (%s, %s, %s, %s)",
                rows,
            )
        yield c


def refresh(conn: psycopg.Connection) -> None:
    """Materialise the continuous aggregates (TimescaleDB), as their policies would."""
    if storage_mode(conn) is StorageMode.TIMESCALEDB:
        for view, *_ in CAGGS.values():
            refresh_rollup(conn, view)


@pytest.mark.parametrize("materialised", [False, True], ids=["realtime", "refreshed"])
def test_hourly_and_daily_rollups_equal_the_hand_figures(conn, materialised):
    if materialised:
        refresh(conn)
    end = T0 + timedelta(days=1)
    hours = load_series(conn, [1], "32.7.0", T0, end, "1h")
    assert [(r["bucket"], r["min"], r["avg"], r["max"], r["count"]) for r in hours] == [
        (T0 + timedelta(hours=h), 220.0 + h, 223.0 + h, 226.0 + h, 4) for h in range(24)
    ]
    (day,) = load_series(conn, [1], "32.7.0", T0, end, "1d")
    assert (day["bucket"], day["min"], day["avg"], day["max"], day["count"]) == (
        T0,
        220.0,
        234.5,  # (223 + 246) / 2: the mean of the hourly means, all hours equally full
        249.0,
        96,
    )
    regs = load_series(conn, [1], "1.8.0", T0, end, "1h")
    assert [(r["first"], r["last"], r["delta"]) for r in regs] == [
        (1000.0 + 2 * h, 1001.5 + 2 * h, 1.5) for h in range(24)
    ]
    assert [r["last_ts"] for r in regs] == [T0 + timedelta(hours=h, minutes=45) for h in range(24)]
    # between bucket ends the increase is exact: 4 readings × 0.5 kWh an hour
    assert {b["last"] - a["last"] for a, b in pairwise(regs)} == {2.0}
    (rday,) = load_series(conn, [1], "1.8.0", T0, end, "1d")
    assert (rday["first"], rday["last"], rday["delta"]) == (1000.0, 1047.5, 47.5)


def test_buckets_starting_in_the_window_and_devices_apart(conn):
    refresh(conn)
    rows = load_series(
        conn, [1, 2], "32.7.0", T0 + timedelta(minutes=30), T0 + timedelta(hours=3), "1h"
    )
    # the bucket at 00:00 starts before the window: left out, whole, in both modes
    assert [(r["device_id"], r["bucket"], r["avg"]) for r in rows] == [
        (1, T0 + timedelta(hours=1), 224.0),
        (1, T0 + timedelta(hours=2), 225.0),
        (2, T0 + timedelta(hours=1), 100.0),
        (2, T0 + timedelta(hours=2), 100.0),
    ]
    quarter = load_series(conn, [1], "32.7.0", T0, T0 + timedelta(hours=1), "15min")
    assert [(r["min"], r["max"], r["count"]) for r in quarter] == [
        (v, v, 1) for v in (220.0, 222.0, 224.0, 226.0)
    ]
    raw = load_series(conn, [1], "1.8.0", T0, T0 + timedelta(minutes=30), "raw")
    assert [(r["ts"], r["value"]) for r in raw] == [
        (T0, 1000.0),
        (T0 + timedelta(minutes=15), 1000.5),
    ]


def test_data_after_the_last_refresh_appears_in_the_hourly_rollup(conn):
    refresh(conn)
    late = T0 + timedelta(days=1, hours=5)
    conn.execute(
        "INSERT INTO readings (device_id, quantity, ts, value) VALUES (1, '32.7.0', %s, 231),"
        " (1, '32.7.0', %s, 235)",
        (late, late + timedelta(minutes=15)),
    )
    if storage_mode(conn) is StorageMode.TIMESCALEDB:
        # not materialised: what follows comes from real-time aggregation
        (table,) = conn.execute(
            "SELECT format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = 'readings_1h'"
        ).fetchone()
        assert conn.execute(
            f"SELECT count(*) FROM {table} WHERE bucket = %s", (late,)
        ).fetchone() == (0,)
    rows = load_series(conn, [1], "32.7.0", late, late + timedelta(hours=1), "1h")
    assert [(r["min"], r["avg"], r["max"], r["count"]) for r in rows] == [(231.0, 233.0, 235.0, 2)]


def test_migration_creates_the_rollups_of_its_mode_once(conn):
    mode = storage_mode(conn)
    assert conn.execute("SELECT version FROM schema_migrations WHERE version = 5").fetchone()
    migrate(conn)  # again: a no-op
    with conn.transaction():
        ensure_rollups(conn, mode, "UTC")
    views = conn.execute(
        "SELECT relname FROM pg_class WHERE relname IN ('readings_1h', 'readings_1d') ORDER BY 1"
    ).fetchall()
    if mode is StorageMode.TIMESCALEDB:
        assert views == [("readings_1d",), ("readings_1h",)]
        caggs = conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " ORDER BY 1"
        ).fetchall()
        assert caggs == [("readings_1d", False), ("readings_1h", False)]  # real-time on
        policies = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY 1"
        ).fetchall()
        assert len(policies) == 2
        for (job,) in policies:  # what the scheduler runs, run here in the foreground
            conn.execute("CALL run_job(%s)", (job,))
        for view, *_ in CAGGS.values():  # materialised: the same buckets, no longer real-time
            (table,) = conn.execute(
                "SELECT format('%%I.%%I', materialization_hypertable_schema,"
                " materialization_hypertable_name)"
                " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
                (view,),
            ).fetchone()
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
    else:
        assert views == []  # native rollups are queries over the partitions


SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize("zone", ["Asia/Shanghai"])
@pytest.mark.parametrize("materialised", [False, True], ids=["realtime", "refreshed"])
def test_daily_buckets_are_local_days_of_the_site_zone(conn, materialised):
    if materialised:
        refresh(conn)
    # T0's readings 00:00–15:45 UTC are on Shanghai's 25 Nov (UTC+8), 16:00–23:45 on 26 Nov
    day25 = datetime(2026, 11, 25, tzinfo=SHANGHAI)
    day26 = day25 + timedelta(days=1)
    assert (day25, day26) == (T0 - timedelta(hours=8), T0 + timedelta(hours=16))
    days = load_series(conn, [1], "32.7.0", day25, day26 + timedelta(days=1), "1d")
    assert [(r["bucket"], r["min"], r["avg"], r["max"], r["count"]) for r in days] == [
        (day25, 220.0, 230.5, 241.0, 64),  # hours 0–15: hourly means 223…238
        (day26, 236.0, 242.5, 249.0, 32),  # hours 16–23: hourly means 239…246
    ]
    regs = load_series(conn, [1], "1.8.0", day25, day26 + timedelta(days=1), "1d")
    assert [
        (r["bucket"], r["first"], r["last"], r["delta"], r["first_ts"], r["last_ts"]) for r in regs
    ] == [
        (day25, 1000.0, 1031.5, 31.5, T0, T0 + timedelta(hours=15, minutes=45)),
        (
            day26,
            1032.0,
            1047.5,
            15.5,
            T0 + timedelta(hours=16),
            T0 + timedelta(hours=23, minutes=45),
        ),
    ]
    # the UTC day's window holds one local day's start: 26 Nov's, whole
    (only,) = load_series(conn, [1], "1.8.0", T0, T0 + timedelta(days=1), "1d")
    assert (only["bucket"], only["count"], only["delta"]) == (day26, 32, 15.5)
    # hours stay UTC-aligned, which in a whole-hour zone are the local hours
    hours = load_series(conn, [1], "32.7.0", day25, day26, "1h")
    assert [r["bucket"] for r in hours] == [T0 + timedelta(hours=h) for h in range(16)]


@pytest.mark.parametrize("zone", ["Europe/Berlin"])
def test_daily_buckets_follow_a_dst_change(conn):
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 3, 28, tzinfo=berlin).astimezone(UTC)  # UTC: exact arithmetic
    midnights = [first, datetime(2026, 3, 29, tzinfo=berlin), datetime(2026, 3, 30, tzinfo=berlin)]
    end = datetime(2026, 3, 31, tzinfo=berlin).astimezone(UTC)
    ensure_partitions(conn, {DAY.replace(month=3, day=d) for d in range(27, 32)})
    n = int((end - first) / timedelta(minutes=15))  # 96 + 92 + 96: 29 Mar has 23 hours
    assert n == 284
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, quantity, ts, value) VALUES (1, '1.8.0', %s, %s)",
            [(first + timedelta(minutes=15 * i), 0.25 * i) for i in range(n)],
        )
    refresh(conn)
    days = load_series(conn, [1], "1.8.0", first, end, "1d")
    assert [(r["bucket"], r["count"], r["first"], r["last"]) for r in days] == [
        (midnights[0], 96, 0.0, 23.75),
        (midnights[1], 92, 24.0, 46.75),
        (midnights[2], 96, 47.0, 70.75),
    ]
    assert [r["bucket"] for r in days] == [
        datetime(2026, 3, 27, 23, tzinfo=UTC),
        datetime(2026, 3, 28, 23, tzinfo=UTC),
        datetime(2026, 3, 29, 22, tzinfo=UTC),  # summer time: local midnight an hour earlier
    ]


@pytest.mark.parametrize("zone", ["Asia/Shanghai"])
def test_migration_6_moves_utc_daily_rollups_onto_local_days(conn, caplog):
    """A database migrated before local days (5 done, 6 not, no zone recorded): on
    TimescaleDB its daily aggregate had UTC buckets and is rebuilt; natively there is only the
    zone to record."""
    mode = storage_mode(conn)
    conn.execute("DELETE FROM schema_migrations WHERE version = %s", (LOCAL_DAY_MIGRATION,))
    conn.execute("DELETE FROM gridread_meta WHERE key = 'rollup_timezone'")
    if mode is StorageMode.TIMESCALEDB:  # migration 5's daily aggregate, as it was made
        conn.execute("DROP MATERIALIZED VIEW readings_1d")
        conn.execute(
            "CREATE MATERIALIZED VIEW readings_1d WITH (timescaledb.continuous,"
            " timescaledb.materialized_only = false) AS"
            " SELECT device_id, quantity, time_bucket('1 day', ts) AS bucket,"
            " min(value) AS min, avg(value) AS avg, max(value) AS max, count(*) AS count,"
            " first(value, ts) AS first, last(value, ts) AS last,"
            " min(ts) AS first_ts, max(ts) AS last_ts"
            " FROM readings GROUP BY device_id, quantity, bucket WITH NO DATA"
        )
        conn.execute(
            "SELECT add_continuous_aggregate_policy('readings_1d', start_offset => NULL,"
            " end_offset => '1 day', schedule_interval => '1 hour')"
        )
        (utc,) = load_series(conn, [1], "1.8.0", T0, T0 + timedelta(days=1), "1d")
        assert (utc["bucket"], utc["count"]) == (T0, 96)  # the defect: a UTC day
    migrate(conn, storage=mode, timezone="Asia/Shanghai")
    assert rollup_timezone(conn) == "Asia/Shanghai"
    assert conn.execute(
        "SELECT 1 FROM schema_migrations WHERE version = %s", (LOCAL_DAY_MIGRATION,)
    ).fetchone()
    refresh(conn)
    days = load_series(conn, [1], "1.8.0", T0 - timedelta(hours=8), T0 + timedelta(days=1), "1d")
    assert [(r["bucket"], r["count"]) for r in days] == [
        (T0 - timedelta(hours=8), 64),
        (T0 + timedelta(hours=16), 32),
    ]
    if mode is StorageMode.TIMESCALEDB:  # one refresh policy each, the rebuilt one included
        assert conn.execute(
            "SELECT hypertable_name IS NOT NULL, count(*) FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate' GROUP BY 1"
        ).fetchall() == [(True, 2)]
    # a later different zone: the recorded one is kept, with a warning, in both modes
    with caplog.at_level(logging.WARNING, logger="ingest.rollups"):
        migrate(conn, storage=mode, timezone="Europe/Berlin")
    assert rollup_timezone(conn) == "Asia/Shanghai"
    assert "daily rollups are on local days of 'Asia/Shanghai'" in caplog.text
    again = load_series(conn, [1], "1.8.0", T0 - timedelta(hours=8), T0 + timedelta(days=1), "1d")
    assert again == days


def _count(conn, quantity: str, before: datetime | None = None) -> int:
    return conn.execute(
        "SELECT count(*) FROM readings"
        " WHERE quantity = %s AND (%s::timestamptz IS NULL OR ts < %s)",
        (quantity, before, before),
    ).fetchone()[0]


def test_retention_deletes_old_instantaneous_rows_and_keeps_registers(conn):
    mode = storage_mode(conn)
    refresh(conn)
    if mode is StorageMode.TIMESCALEDB:  # the old day compressed, as its policy would
        for (chunk,) in conn.execute("SELECT show_chunks('readings')").fetchall():
            try:
                conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)", (chunk,))
            except psycopg.errors.DuplicateObject:
                pass  # its compression policy's job got there first
    now = T0 + timedelta(days=1, hours=12)  # T0's day is 1.5 days old
    result = apply_retention(conn, instant_days=1, register_days=0, now=now)
    cutoff = now - timedelta(days=1)
    assert _count(conn, "32.7.0", cutoff) == 0
    assert result.deleted["instantaneous"] == 2 * (N - 48)  # two meters, 00:00–11:45 kept
    assert _count(conn, "32.7.0") == 2 * 48
    assert _count(conn, "1.8.0") == N  # registers: kept for ever (0 days)
    assert result.dropped == []
    # the rollups go with their raw rows, in both modes
    hours = load_series(conn, [1], "32.7.0", T0, T0 + timedelta(days=1), "1h")
    assert [r["bucket"] for r in hours] == [T0 + timedelta(hours=h) for h in range(12, 24)]
    assert len(load_series(conn, [1], "1.8.0", T0, T0 + timedelta(days=1), "1h")) == 24
    # a later run deletes only what expired since
    again = apply_retention(conn, instant_days=1, register_days=0, now=now + timedelta(hours=3))
    assert again.deleted["instantaneous"] == 2 * 12
    assert _count(conn, "1.8.0") == N


@pytest.mark.parametrize("zone", ["Asia/Shanghai"])
def test_retention_refreshes_the_local_days_it_deleted_from(conn):
    refresh(conn)
    day25 = T0 - timedelta(hours=8)  # Shanghai's 25 Nov: starts before T0's UTC day
    now = T0 + timedelta(days=1, hours=12)
    apply_retention(conn, instant_days=1, register_days=0, now=now)  # rows before 12:00Z
    apply_retention(conn, instant_days=1, register_days=0, now=now + timedelta(hours=3))
    days = load_series(conn, [1], "32.7.0", day25, day25 + timedelta(days=2), "1d")
    assert [(r["bucket"], r["min"], r["avg"], r["max"], r["count"]) for r in days] == [
        (day25, 235.0, 238.0, 241.0, 4),  # 15:00–15:45Z left of its 64 rows
        (day25 + timedelta(days=1), 236.0, 242.5, 249.0, 32),
    ]


def test_retention_drops_whole_days_when_every_kind_has_expired(conn):
    mode = storage_mode(conn)
    conn.execute(
        "INSERT INTO readings (device_id, quantity, ts, value) VALUES (1, '1.8.0', %s, 2000)",
        (T0 + timedelta(days=2, hours=1),),
    )
    refresh(conn)
    now = T0 + timedelta(days=2, hours=12)
    result = apply_retention(conn, instant_days=1, register_days=1, now=now)
    if mode is StorageMode.TIMESCALEDB:
        assert len(result.dropped) == 1  # T0's chunk (the day before has none)
    else:
        assert result.dropped == [
            f"readings_p{DAY - timedelta(days=1):%Y%m%d}",
            f"readings_p{DAY:%Y%m%d}",
        ]
    assert _count(conn, "32.7.0") == 0
    assert _count(conn, "1.8.0") == 1  # the newer register reading stays
    # the rollups of a dropped day go with it, in both modes
    assert load_series(conn, [1], "1.8.0", T0, T0 + timedelta(days=1), "1h") == []


async def test_the_maintenance_service_applies_the_retention_settings(conn, migrated_url):
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=1, hours=1)  # in a partition the migration created
    conn.execute(
        "INSERT INTO readings (device_id, quantity, ts, value) VALUES"
        " (1, '32.7.0', %s, 230), (1, '1.8.0', %s, 5), (1, '32.7.0', %s, 231)",
        (old, old, now - timedelta(hours=1)),
    )
    settings = Settings(retention_instant_days=1, retention_register_days=0)
    task = asyncio.create_task(runtime._maintenance(migrated_url, settings))
    try:
        async with asyncio.timeout(20):
            while _count(conn, "32.7.0", now - timedelta(days=1)):
                await asyncio.sleep(0.05)  # polling for the delete, not a guessed wait
    finally:
        task.cancel()
    assert _count(conn, "32.7.0", now) == 1
    assert _count(conn, "1.8.0", now) == N + 1


@pytest.fixture
def api(conn, migrated_url) -> Iterator[TestClient]:
    with TestClient(
        create_app(migrated_url),
        headers=credentials(migrated_url, "viewer"),
        raise_server_exceptions=False,
    ) as c:
        yield c


def test_api_serves_rollups_by_resolution(api):
    day = {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat()}
    r = api.get("/devices/m1/readings", params={"quantity": "32.7.0", "resolution": "1h", **day})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["kind"], body["resolution"], body["count"]) == ("instantaneous", "1h", 24)
    assert body["data"][3] == {
        "bucket": "2026-11-25T03:00:00Z",
        "min": 223.0,
        "avg": 226.0,
        "max": 229.0,
        "count": 4,
    }
    r = api.get("/devices/m1/readings", params={"quantity": "1.8.0", "resolution": "1d", **day})
    (bucket,) = r.json()["data"]
    assert (bucket["first"], bucket["last"], bucket["delta"], bucket["count"]) == (
        1000.0,
        1047.5,
        47.5,
        96,
    )
    r = api.get("/devices/m1/readings", params={"quantity": "1.8.0", "resolution": "15min", **day})
    assert r.json()["count"] == N and r.json()["data"][1]["delta"] == 0.0
    r = api.get("/devices/m1/readings", params={"quantity": "1.8.0", **day})
    assert r.json()["resolution"] == "raw" and r.json()["data"][1]["value"] == 1000.5
    r = api.get("/devices/m1/readings", params={"quantity": "1.8.0", "resolution": "5min"})
    assert r.status_code == 422


@pytest.mark.parametrize("zone", ["Asia/Shanghai"])
def test_api_serves_daily_buckets_on_local_days(api):
    window = {"start": "2026-11-25T00:00:00+08:00", "end": "2026-11-27T00:00:00+08:00"}
    r = api.get("/devices/m1/readings", params={"quantity": "1.8.0", "resolution": "1d", **window})
    assert r.status_code == 200, r.text
    assert [(b["bucket"], b["delta"], b["count"]) for b in r.json()["data"]] == [
        ("2026-11-24T16:00:00Z", 31.5, 64),
        ("2026-11-25T16:00:00Z", 15.5, 32),
    ]


def test_the_site_timezone_setting_reaches_the_migration(db_url, storage):
    url = runtime.database_url(
        Settings(database_url=db_url, storage=storage.value, timezone="Asia/Kolkata")
    )
    with psycopg.connect(url) as c:
        assert rollup_timezone(c) == "Asia/Kolkata"
