"""The demo's users: one per role (``demo-<role>``), each with a fresh API key per run (the
previous run's demo keys are revoked), written to ``<data_dir>/demo-keys.json`` (mode 0600)
and shown in the banner, so every curl of the banner works as it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg

from api.credentials import create_api_key, create_user
from api.security import Role
from ingest.audit import RUNTIME_ACTOR, record

KEYS_FILE = "demo-keys.json"
LABEL = "demo"


def demo_users(url: str, data_dir: Path) -> dict[str, str]:
    """role → a new API key of ``demo-<role>``; also written to `data_dir`/demo-keys.json."""
    keys: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for role in Role:
            name = f"demo-{role.value}"
            if conn.execute("SELECT 1 FROM users WHERE name = %s", (name,)).fetchone() is None:
                create_user(conn, name, [role.value], created_by=RUNTIME_ACTOR)
            with conn.transaction():
                old = conn.execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE owner = %s AND label = %s"
                    " AND revoked_at IS NULL RETURNING id",
                    (name, LABEL),
                ).fetchall()
                for (key_id,) in old:
                    record(conn, RUNTIME_ACTOR, "revoke", "api_key", key_id, None, None)
            keys[role.value] = create_api_key(conn, name, label=LABEL, actor=RUNTIME_ACTOR)[1]
    path = Path(data_dir) / KEYS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=1)
    return keys
