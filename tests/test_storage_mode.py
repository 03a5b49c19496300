"""Which storage a database gets: the `storage` setting against what the server offers, and the
embedded server preloading TimescaleDB when the wheel holds it."""

import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collectors.exceptions import ConfigError
from gridread.database import (
    EMBEDDED_DB,
    embedded_server,
    start_embedded,
    stop_embedded,
    timescaledb_installed,
)
from gridread.settings import load_settings
from ingest.exceptions import SchemaError
from ingest.schema import StorageMode, TimescaleState, migrate, storage_mode, timescaledb_state
from tests.test_cli import one_error_line, run_cli


@pytest.fixture(scope="module")
def unpreloaded_admin_url(pg_admin_url, tmp_path_factory) -> Iterator[str]:
    """A server that does not preload TimescaleDB: the session's when it does not; else a
    second embedded server, started without the preload (the extension then is installed
    but not preloaded: the state a package install leaves)."""
    with psycopg.connect(pg_admin_url) as conn:
        ready = timescaledb_state(conn) is TimescaleState.READY
    if not ready:
        yield pg_admin_url
        return
    server = embedded_server(
        tmp_path_factory.mktemp("pg-plain") / "data", cleanup_mode="delete", timescaledb=False
    )
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
def unpreloaded_db(unpreloaded_admin_url) -> Iterator[tuple[str, TimescaleState]]:
    """A new database there, and what the server offers."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(unpreloaded_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(unpreloaded_admin_url), "dbname": name})
    with psycopg.connect(url) as conn:
        state = timescaledb_state(conn)
    yield url, state
    with psycopg.connect(unpreloaded_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _extension_created(conn) -> bool:
    return bool(conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone())


def test_auto_goes_native_with_one_warning_when_timescaledb_is_not_preloaded(
    unpreloaded_db, caplog
):
    # Was: `extension "timescaledb" must be preloaded` from CREATE EXTENSION, a crash.
    url, state = unpreloaded_db
    caplog.set_level(logging.INFO, logger="ingest.schema")
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn) is StorageMode.NATIVE
        assert migrate(conn) is StorageMode.NATIVE  # decided once, not warned again
        assert storage_mode(conn) is StorageMode.NATIVE
        assert not _extension_created(conn)
        relkind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'")
        assert relkind.fetchone() == ("p",)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if state is TimescaleState.NOT_PRELOADED:
        assert len(warnings) == 1, warnings
        assert "installed but not preloaded: using native partitions" in warnings[0]
        assert "shared_preload_libraries" in warnings[0]
    else:
        assert state is TimescaleState.MISSING and warnings == []


def test_storage_timescaledb_that_cannot_be_had_is_a_one_line_error(unpreloaded_db):
    url, state = unpreloaded_db
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(SchemaError) as err:
            migrate(conn, storage="timescaledb")
        for table in ("readings", "gridread_meta"):  # nothing written, no mode recorded
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
    message = str(err.value)
    assert "\n" not in message
    assert f'storage = "timescaledb", but TimescaleDB is {state} here' in message
    fix = "shared_preload_libraries" if state is TimescaleState.NOT_PRELOADED else "install"
    assert fix in message


def test_the_storage_setting_reaches_migrate(unpreloaded_db):
    url, state = unpreloaded_db
    env = {"GRIDREAD_DATABASE_URL": url, "GRIDREAD_STORAGE": "timescaledb"}
    line = one_error_line(run_cli("migrate", env=env))
    assert f"TimescaleDB is {state} here" in line
    env["GRIDREAD_STORAGE"] = "native"
    assert run_cli("migrate", env=env).returncode == 0
    with psycopg.connect(url) as conn:
        assert storage_mode(conn) is StorageMode.NATIVE


def test_native_never_creates_the_extension(db_url):
    # on the session server, which preloads TimescaleDB in the Timescale run
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn, storage="native") is StorageMode.NATIVE
        assert not _extension_created(conn)
        relkind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'")
        assert relkind.fetchone() == ("p",)


def test_the_mode_of_a_database_does_not_change(migrated_url, storage):
    other = StorageMode.NATIVE if storage is StorageMode.TIMESCALEDB else StorageMode.TIMESCALEDB
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        with pytest.raises(SchemaError) as err:
            migrate(conn, storage=other)
        assert migrate(conn) is storage  # auto keeps what is there
        assert migrate(conn, storage=storage) is storage
    assert str(err.value) == (
        f'storage = "{other}", but this database was created with {storage} storage;'
        " the mode cannot change (use a new database, or the setting it was made with)"
    )


def test_storage_setting_is_checked():
    assert load_settings({}).storage == "auto"
    with pytest.raises(ConfigError, match="storage: Input should be 'auto', 'timescaledb'"):
        load_settings({"storage": "timescale"})


def test_the_embedded_server_preloads_timescaledb_when_the_wheel_holds_it(tmp_path, caplog):
    # A data dir first started without the preload (as before), then by gridread: restarted
    # with it when TimescaleDB is installed, so the demo's readings are a hypertable.
    first = embedded_server(tmp_path / "pgdata", cleanup_mode="stop", timescaledb=False)
    first.cleanup()
    installed = timescaledb_installed()
    caplog.set_level(logging.INFO, logger="gridread.database")
    url = start_embedded(tmp_path)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            libs = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            assert ("timescaledb" in libs) is installed
            assert conn.execute("SELECT current_database()").fetchone() == (EMBEDDED_DB,)
            expected = StorageMode.TIMESCALEDB if installed else StorageMode.NATIVE
            assert migrate(conn) is expected
            if installed:
                telemetry = conn.execute("SHOW timescaledb.telemetry_level").fetchone()[0]
                assert telemetry == "off"
    finally:
        stop_embedded()
    said = "TimescaleDB preloaded (telemetry off)" if installed else "without TimescaleDB"
    assert f"embedded PostgreSQL: {said}" in caplog.text
