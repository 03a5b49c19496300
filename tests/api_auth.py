"""Credentials for API tests (contract of issue 11): users and API keys made directly in the
migrated database, as `gridread users` makes them.

    headers = credentials(migrated_url, "viewer")          # {"X-API-Key": "grk_…"}
    client.get("/devices", headers=headers)
    user(migrated_url, "ann", "a long password", ["load_operator"])   # can POST /auth/token
"""

from __future__ import annotations

import secrets

import psycopg

from api.credentials import create_api_key, create_user
from api.security import Role

TEST_ACTOR = "tests"


def credentials(url: str, role: str | Role, name: str | None = None) -> dict[str, str]:
    """A new user holding `role` (name default "<role>-<random>") with an API key, in the
    migrated database at `url`: the headers that authenticate as it."""
    role = Role(role)
    name = name or f"{role.value}-{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        create_user(conn, name, [role.value], created_by=TEST_ACTOR)
        _, key = create_api_key(conn, name, label="tests", actor=TEST_ACTOR)
    return {"X-API-Key": key}


def user(url: str, name: str, password: str, roles: list[str | Role] | tuple = ()) -> None:
    """A user who can log in with `password` (POST /auth/token)."""
    with psycopg.connect(url, autocommit=True) as conn:
        create_user(
            conn, name, [Role(r).value for r in roles], password=password, created_by=TEST_ACTOR
        )
