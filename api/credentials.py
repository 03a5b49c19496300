"""Secrets and the users who hold them: password hashing, API keys, login tokens.

Passwords: scrypt (stdlib ``hashlib.scrypt``, memory-hard, so no new native dependency) at
OWASP's equivalent setting N=2^15, r=8, p=3 (32 MiB, ~0.1-0.3 s a hash); the parameters are
stored in the hash, so they can be raised later without breaking old hashes.
API keys (``grk_…``) and login tokens (``grt_…``) are 32 random bytes: the database keeps
only their sha256 (a fast hash is enough for a secret nobody can guess).

The sync functions serve the CLI and the tests; the API uses the async ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import psycopg

from api.security import KEY_PREFIX, Role, secret_hash
from ingest.audit import arecord, record

NAME_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"  # a user's name (the database checks the same)
MIN_PASSWORD = 12
DISPLAY_CHARS = 12  # "grk_" and 8 characters of the key, shown in listings
_SCRYPT = (15, 8, 3)  # log2 N, r, p
_MAXMEM = 64 * 1024 * 1024


class CredentialError(ValueError):
    """A user, role or key that cannot be created as asked (one line, for the caller)."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise CredentialError(f"a password needs at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    log_n, r, p = _SCRYPT
    digest = _scrypt(password, salt, log_n, r, p)
    return f"scrypt${log_n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; a missing hash (no password set) still costs one hash."""
    if not stored:
        _scrypt(password, b"\0" * 16, *_SCRYPT)
        return False
    try:
        algo, log_n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = _scrypt(password, _unb64(salt), int(log_n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, _unb64(digest))


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def check_roles(roles: list[str] | tuple[str, ...]) -> list[str]:
    """The roles as their names, or a CredentialError naming the unknown one."""
    out = []
    for r in roles:
        try:
            out.append(Role(r).value)
        except ValueError:
            known = ", ".join(x.value for x in Role)
            raise CredentialError(f"unknown role {r!r} (known: {known})") from None
    return sorted(set(out))


def create_user(
    conn: psycopg.Connection,
    name: str,
    roles: list[str] | tuple[str, ...],
    *,
    password: str | None = None,
    created_by: str,
) -> None:
    """A new user (audited); CredentialError if the name is taken or a role unknown."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise CredentialError(f"user name {name!r}: 1-64 of A-Z a-z 0-9 . _ @ -")
    roles = check_roles(roles)
    pw_hash = hash_password(password) if password is not None else None
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO users (name, password_hash, roles, created_by) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",  # the name, in any case
            (name, pw_hash, roles, created_by),
        )
        if cur.rowcount == 0:
            raise CredentialError(f"user {name!r} exists already")
        record(conn, created_by, "create", "user", name, None, _user_doc(roles, True))


def create_api_key(
    conn: psycopg.Connection,
    owner: str,
    *,
    label: str = "",
    expires_at: datetime | None = None,
    actor: str,
) -> tuple[int, str]:
    """A new key of `owner` (audited, without the key): (id, key). The key is shown once."""
    key = new_secret(KEY_PREFIX)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE name = %s", (owner,)).fetchone() is None:
            raise CredentialError(f"no user {owner!r}")
        (key_id,) = conn.execute(
            "INSERT INTO api_keys (owner, label, key_hash, prefix, expires_at)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (owner, label, secret_hash(key), key[:DISPLAY_CHARS], expires_at),
        ).fetchone()
        record(conn, actor, "create", "api_key", key_id, None, _key_doc(owner, label, key))
    return key_id, key


async def acreate_api_key(
    aconn: psycopg.AsyncConnection,
    owner: str,
    *,
    label: str = "",
    expires_at: datetime | None = None,
    actor: str,
) -> tuple[int, str]:
    """`create_api_key` in the caller's transaction (the API's)."""
    key = new_secret(KEY_PREFIX)
    cur = await aconn.execute(
        "INSERT INTO api_keys (owner, label, key_hash, prefix, expires_at)"
        " SELECT name, %s, %s, %s, %s FROM users WHERE name = %s RETURNING id",
        (label, secret_hash(key), key[:DISPLAY_CHARS], expires_at, owner),
    )
    row = await cur.fetchone()
    if row is None:
        raise CredentialError(f"no user {owner!r}")
    await arecord(aconn, actor, "create", "api_key", row[0], None, _key_doc(owner, label, key))
    return row[0], key


def _user_doc(roles: list[str], active: bool) -> dict:
    return {"roles": roles, "active": active}


def _key_doc(owner: str, label: str, key: str) -> dict:
    return {"owner": owner, "label": label, "prefix": key[:DISPLAY_CHARS]}


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=1 << log_n, r=r, p=p, maxmem=_MAXMEM, dklen=32
    )


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
