"""Migrations against a real PostgreSQL server."""

import threading
from datetime import UTC, date, datetime, timedelta

import psycopg

from ingest.rollups import LOCAL_DAY_MIGRATION, ROLLUP_MIGRATION
from ingest.schema import (
    MIGRATIONS,
    PARTITION_DAYS_AHEAD,
    PARTITION_DAYS_BACK,
    StorageMode,
    ensure_partitions,
    is_missing_partition,
    migrate,
    partition_name,
)


def _shape(conn):
    tables = conn.execute(
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') ORDER BY relname"
    ).fetchall()
    versions = conn.execute(
        "SELECT version, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return tables, versions


def _hypertables(conn) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        )
    ]


def test_migration_is_idempotent(db_url, storage, caplog):
    caplog.set_level("INFO", logger="ingest.schema")
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn, storage=storage) is storage
        first = _shape(conn)
        assert migrate(conn, storage=storage) is storage
        assert _shape(conn) == first  # nothing re-applied, nothing added
        names = {name for name, _ in first[0]}
        assert {"readings", "devices", "events", "dead_letters", "audit_log"} <= names
        if storage is StorageMode.NATIVE:
            assert ("readings", "p") in first[0]  # partitioned table
        else:
            assert ("readings", "r") in first[0] and _hypertables(conn) == ["readings"]
    said = {
        StorageMode.NATIVE: "natively range-partitioned by UTC day",
        StorageMode.TIMESCALEDB: "a TimescaleDB hypertable (1-day chunks",
    }
    assert f"storage: readings are {said[storage]}" in caplog.text


def test_concurrent_migrations_are_harmless(db_url, storage):
    errors = []

    def run():
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                migrate(conn, storage=storage)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(db_url) as conn:
        # each once: readings (0), MIGRATIONS, the rollups (5, 6: ingest.rollups.ensure_rollups)
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        assert sorted(versions) == sorted(
            {0, ROLLUP_MIGRATION, LOCAL_DAY_MIGRATION, *(v for v, *_ in MIGRATIONS)}
        )


def _children(conn) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass"
        )
    }


def test_partitions_are_created_ahead_and_route_rows(migrated_url, storage):
    today = datetime.now(UTC).date()
    ts = datetime(2020, 2, 29, 23, 59, 59, tzinfo=UTC)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        if storage is StorageMode.TIMESCALEDB:
            # Timescale makes its chunks as rows arrive: nothing ahead, nothing to ensure
            assert _children(conn) == set()
            assert ensure_partitions(conn) == []
            assert ensure_partitions(conn, {date(2020, 2, 29)}) == []
            conn.execute("INSERT INTO readings VALUES (1, '1.8.0', %s, 1.0, 0)", (ts,))
            (start, end) = conn.execute(
                "SELECT range_start, range_end FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'readings'"
            ).fetchone()
            assert (start, end - start) == (datetime(2020, 2, 29, tzinfo=UTC), timedelta(days=1))
            return
        expected = {
            partition_name(today + timedelta(days=d))
            for d in range(-PARTITION_DAYS_BACK, PARTITION_DAYS_AHEAD + 1)
        }
        assert expected <= _children(conn)
        assert ensure_partitions(conn) == []  # idempotent
        assert ensure_partitions(conn, {date(2020, 2, 29)}) == ["readings_p20200229"]
        conn.execute("INSERT INTO readings VALUES (1, '1.8.0', %s, 1.0, 0)", (ts,))
        (where,) = conn.execute("SELECT tableoid::regclass::text FROM readings").fetchone()
        assert where == "readings_p20200229"


def test_a_missing_partition_is_told_by_sqlstate_not_by_text(migrated_url, storage):
    missing = None
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        try:
            conn.execute("INSERT INTO readings VALUES (1, '1.8.0', '1990-01-01Z', 1.0, 0)")
        except psycopg.Error as exc:
            missing = exc
        conn.execute('ALTER TABLE readings ADD CONSTRAINT "no partition" CHECK (value < 1e9)')
        try:
            conn.execute("INSERT INTO readings VALUES (1, '1.8.0', now(), 2e9, 0)")
        except psycopg.Error as exc:
            check = exc
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert check.sqlstate == "23514" and not is_missing_partition(check)
    if storage is StorageMode.TIMESCALEDB:
        assert missing is None and stored == 1  # a chunk for any day, made on the spot
    else:
        assert missing.sqlstate == "23514" and is_missing_partition(missing) and stored == 0
