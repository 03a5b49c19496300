"""Schema migrations and partition maintenance.

One entry point, `migrate(conn, storage=..., timezone=...)`, brings any database to the current
schema and decides once, for the life of that database, how the readings table is partitioned:

* ``timescaledb`` when the extension is installed and preloaded on the server: a hypertable on
  ``ts`` with 1-day chunks, compression segmented by device and quantity, a compression policy;
* ``native`` otherwise: declarative range partitioning by UTC day, partitions created ahead by
  `ensure_partitions` (called at start, by the maintenance task, and by the writer when a
  batch holds a day that has no partition yet).

The setting ``storage`` (`Storage`) picks: ``auto`` the best the server offers (installed but
not preloaded: a warning, native), ``timescaledb`` or an error, ``native`` (never creates the
extension). The choice is stored in ``gridread_meta`` and logged; a later `migrate` that asks
for the other mode is refused. Both branches expose the same table.
`timezone` (the site's) is the zone of the daily rollups' local days, recorded by the first
`migrate` (see `ingest.rollups`). Migrations are numbered, applied once each under an advisory
lock, so running `migrate` twice, or from two processes at once, is harmless.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql

from ingest.compression import ensure_compression_policy
from ingest.exceptions import SchemaError
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.rollups import ensure_rollups
from ingest.schema_analytics import ANALYTICS_MIGRATION
from ingest.schema_anomalies import ANOMALIES_MIGRATION
from ingest.schema_control import CONTROL_MIGRATION
from ingest.schema_inventory_geo import INVENTORY_GEO_MIGRATION
from ingest.schema_multiplier import MULTIPLIER_MIGRATION
from ingest.schema_pq import PQ_MIGRATION
from ingest.schema_reliability import RELIABILITY_MIGRATION
from ingest.schema_security import SECURITY_MIGRATION
from ingest.schema_topology import TOPOLOGY_MIGRATION
from ingest.schema_vee import VEE_MIGRATION

log = logging.getLogger(__name__)

_LOCK_KEY = 0x67726964  # "grid": serialises concurrent migrators
PARTITION_DAYS_BACK = 2
PARTITION_DAYS_AHEAD = 7


class StorageMode(StrEnum):
    TIMESCALEDB = "timescaledb"
    NATIVE = "native"


class Storage(StrEnum):
    """The ``storage`` setting: what `migrate` may choose for a new database."""

    AUTO = "auto"
    TIMESCALEDB = "timescaledb"
    NATIVE = "native"


_BASE = """
CREATE TABLE IF NOT EXISTS gridread_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""

# (version, name, sql). Readings are created by `_create_readings`, which depends on the mode.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "inventory, events, dead letters, audit log",
        """
        CREATE TABLE devices (
            id            serial PRIMARY KEY,
            name          text NOT NULL UNIQUE,
            kind          text NOT NULL,
            protocol      text NOT NULL,
            endpoint      text NOT NULL,
            unit_id       integer,
            register_map  text,
            poll_interval double precision NOT NULL,
            attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE events (
            device_id integer NOT NULL REFERENCES devices (id),
            ts        timestamptz NOT NULL,
            kind      text NOT NULL,
            detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
            PRIMARY KEY (device_id, ts, kind)
        );
        CREATE TABLE dead_letters (
            id          bigserial PRIMARY KEY,
            received_at timestamptz NOT NULL DEFAULT now(),
            source      text NOT NULL,
            reason      text NOT NULL,
            payload     jsonb NOT NULL,  -- what was being stored, as far as JSON can hold it
            raw         bytea            -- the bytes as received, where there were any
        );
        CREATE TABLE audit_log (
            id        bigserial PRIMARY KEY,
            at        timestamptz NOT NULL DEFAULT now(),
            actor     text NOT NULL,
            action    text NOT NULL,
            entity    text NOT NULL,
            entity_id text NOT NULL,
            before    jsonb,
            after     jsonb
        );
        """,
    ),
    (
        2,
        "read statistics (抄表成功率)",
        """
        CREATE TABLE read_stats (
            day           date NOT NULL,      -- the bus's local day
            bus           text NOT NULL,
            device_id     integer NOT NULL REFERENCES devices (id),
            attempts      integer NOT NULL DEFAULT 0,
            successes     integer NOT NULL DEFAULT 0,
            last_success  timestamptz,
            last_error    text,
            last_error_at timestamptz,
            PRIMARY KEY (day, bus, device_id)
        );
        """,
    ),
    (
        3,
        "voltage monitors' own daily statistics (电压监测仪)",
        """
        CREATE TABLE voltage_daily_stats (
            device_id        integer NOT NULL REFERENCES devices (id),
            day              date NOT NULL,     -- the monitor's local day
            monitoring_class text NOT NULL,     -- A B C D
            nominal_v        double precision NOT NULL,
            upper_v          double precision NOT NULL,
            lower_v          double precision NOT NULL,
            monitored_min    integer NOT NULL,
            over_min         integer NOT NULL,
            under_min        integer NOT NULL,
            max_v            double precision NOT NULL,
            max_at           timestamptz NOT NULL,
            min_v            double precision NOT NULL,
            min_at           timestamptz NOT NULL,
            read_at          timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, day)
        );
        """,
    ),
    (
        4,
        "dead letters keep a capped prefix of the raw bytes and their original size",
        """
        ALTER TABLE dead_letters ADD COLUMN raw_size integer;  -- bytes received; raw may be cut
        UPDATE dead_letters SET raw_size = octet_length(raw) WHERE raw IS NOT NULL;
        """,
    ),
    TOPOLOGY_MIGRATION,  # 7 (5 and 6 are the rollups': ingest.rollups)
    ANALYTICS_MIGRATION,  # 8
    MULTIPLIER_MIGRATION,  # 9 (ingest/schema_multiplier.py)
    PQ_MIGRATION,  # 10 (ingest/schema_pq.py)
    RELIABILITY_MIGRATION,  # 11 (ingest/schema_reliability.py)
    ANOMALIES_MIGRATION,  # 12 (ingest/schema_anomalies.py)
    VEE_MIGRATION,  # 13 (ingest/schema_vee.py)
    SECURITY_MIGRATION,  # 14 (ingest/schema_security.py)
    CONTROL_MIGRATION,  # 15 (ingest/schema_control.py)
    INVENTORY_GEO_MIGRATION,  # 16 (ingest/schema_inventory_geo.py)
]

_READINGS_COLUMNS = """
    device_id integer NOT NULL,
    quantity  text NOT NULL,
    ts        timestamptz NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, quantity, ts)
"""


def migrate(
    conn: psycopg.Connection,
    storage: Storage | str = Storage.AUTO,
    timezone: str = DEFAULT_TIMEZONE,
) -> StorageMode:
    """Bring the database to the current schema; return the storage mode in use."""
    storage = Storage(storage)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SchemaError(f"unknown time zone {timezone!r} for the daily rollups") from exc
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_BASE)
            mode = _storage_mode(conn, storage)
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            if 0 not in done:
                _create_readings(conn, mode)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (0, %s)",
                    (f"readings ({mode})",),
                )
            for version, name, ddl in MIGRATIONS:
                if version not in done:
                    log.info("applying migration %d: %s", version, name)
                    conn.execute(ddl)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
            ensure_rollups(conn, mode, timezone)  # migrations 5, 6 (ingest/rollups.py)
        if mode is StorageMode.NATIVE:
            ensure_partitions(conn)
        ensure_compression_policy(conn)
    except psycopg.Error as exc:
        raise SchemaError(f"migration failed: {exc.diag.sqlstate or ''} {exc}".strip()) from exc
    log.info("storage: readings are %s", _describe(mode))
    return mode


def storage_mode(conn: psycopg.Connection) -> StorageMode:
    row = conn.execute("SELECT value FROM gridread_meta WHERE key = 'storage_mode'").fetchone()
    if row is None:
        raise SchemaError("database has not been migrated (run `gridread migrate`)")
    return StorageMode(row[0])


def _storage_mode(conn: psycopg.Connection, storage: Storage) -> StorageMode:
    """The stored mode (refused if `storage` asks for the other), or — first time only — the
    one `storage` chooses on this server."""
    row = conn.execute("SELECT value FROM gridread_meta WHERE key = 'storage_mode'").fetchone()
    if row is not None:
        stored = StorageMode(row[0])
        if storage is not Storage.AUTO and storage.value != stored.value:
            raise SchemaError(
                f'storage = "{storage}", but this database was created with {stored} storage;'
                " the mode cannot change (use a new database, or the setting it was made with)"
            )
        return stored
    mode = _choose(timescaledb_state(conn), storage)
    conn.execute(
        "INSERT INTO gridread_meta (key, value) VALUES ('storage_mode', %s)", (mode.value,)
    )
    return mode


class TimescaleState(StrEnum):
    """What the server offers: the extension's files, and its library loaded at start."""

    MISSING = "not installed"
    NOT_PRELOADED = "installed but not preloaded"
    READY = "preloaded"


def timescaledb_state(conn: psycopg.Connection) -> TimescaleState:
    available, preloaded = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " 'timescaledb' = ANY (string_to_array("
        "   replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
    ).fetchone()
    if not available:
        return TimescaleState.MISSING
    return TimescaleState.READY if preloaded else TimescaleState.NOT_PRELOADED


def _choose(state: TimescaleState, storage: Storage) -> StorageMode:
    if storage is Storage.NATIVE:
        return StorageMode.NATIVE
    if state is TimescaleState.READY:
        return StorageMode.TIMESCALEDB
    fix = (
        "add timescaledb to shared_preload_libraries and restart the server"
        if state is TimescaleState.NOT_PRELOADED
        else "install the extension on the server (see README)"
    )
    if storage is Storage.TIMESCALEDB:
        raise SchemaError(f'storage = "timescaledb", but TimescaleDB is {state} here: {fix}')
    if state is TimescaleState.NOT_PRELOADED:
        log.warning("TimescaleDB is %s: using native partitions (to use it: %s)", state, fix)
    return StorageMode.NATIVE


def _create_readings(conn: psycopg.Connection, mode: StorageMode) -> None:
    if mode is StorageMode.TIMESCALEDB:
        # Timescale's documented API (2.13+): by_range dimension builder, columnstore settings.
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(f"CREATE TABLE readings ({_READINGS_COLUMNS})")
        conn.execute("SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'))")
        conn.execute(
            "ALTER TABLE readings SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'device_id, quantity',"
            " timescaledb.compress_orderby = 'ts')"
        )
        # the compression policy itself: ingest/compression.py (its age is a setting)
    else:
        conn.execute(f"CREATE TABLE readings ({_READINGS_COLUMNS}) PARTITION BY RANGE (ts)")


def is_missing_partition(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL's "no partition of relation … found for row": SQLSTATE
    23514 (check_violation) naming no constraint, unlike a CHECK constraint's violation.
    Told apart without the message text, which is translated under lc_messages."""
    diag = getattr(exc, "diag", None)
    return (
        getattr(exc, "sqlstate", None) == "23514"
        and diag is not None
        and diag.constraint_name is None
    )


def partition_name(day: date) -> str:
    return f"readings_p{day:%Y%m%d}"


def ensure_partitions(
    conn: psycopg.Connection,
    days: set[date] | None = None,
    *,
    today: date | None = None,
) -> list[str]:
    """Create the daily partitions that are missing; return the names created.

    With no `days`, covers PARTITION_DAYS_BACK days before today to PARTITION_DAYS_AHEAD after.
    A no-op under TimescaleDB, which creates chunks itself.
    """
    if storage_mode(conn) is not StorageMode.NATIVE:
        return []
    if days is None:
        today = today or datetime.now(UTC).date()
        days = {
            today + timedelta(days=d) for d in range(-PARTITION_DAYS_BACK, PARTITION_DAYS_AHEAD + 1)
        }
    existing = {
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass"
        )
    }
    created = []
    for day in sorted(days):
        name = partition_name(day)
        if name in existing:
            continue
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        with conn.transaction():
            # serialise creators: IF NOT EXISTS alone races (42P07) between sessions
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings"
                    " FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(name),
                    sql.Literal(start),
                    sql.Literal(start + timedelta(days=1)),
                )
            )
        created.append(name)
    if created:
        log.info("created readings partitions: %s", ", ".join(created))
    return created


def _describe(mode: StorageMode) -> str:
    if mode is StorageMode.TIMESCALEDB:
        return "a TimescaleDB hypertable (1-day chunks, compressed by a policy)"
    return "natively range-partitioned by UTC day"
