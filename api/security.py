"""Who may do what: roles, their permissions, and the dependency every route declares.

CONTRACT (issue 11): the names below are what every part codes against. The "auth" part
implements `authenticate()` (API keys, login tokens) and everything behind it.

A route declares the permission it needs:

    router = APIRouter(dependencies=[Depends(require(Permission.READ))])      # every route
    async def approve(..., who: Annotated[Principal, Depends(require(Permission.CONTROL_APPROVE))])

Credentials: `X-API-Key: <key>` or `Authorization: Bearer <login token or API key>`. Keys
(``grk_…``) and login tokens (``grt_…``, from `POST /auth/token`) are looked up by their
sha256; an unknown, expired or revoked secret, or an inactive user, is a 401 with
``WWW-Authenticate: Bearer``; a known caller without the permission a 403.

A role does only its own work: the administrator manages users and reads the audit log, and
has no operating rights; approving a command needs a different user than the one who asked;
executing is the collector's (the runtime), never an API caller's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.schemas import ErrorPublic


class Permission(StrEnum):
    READ = "read"  # every GET of data, the live feed and page
    BILLING_EXPORT = "billing.export"
    READS_EDIT = "reads.edit"  # edit or estimate a read
    INVENTORY_WRITE = "inventory.write"  # create/update/delete/import inventory
    CASES_WORK = "cases.work"  # inspection worklist transitions
    NOTICES_WRITE = "notices.write"  # planned-outage notices
    CONTROL_REQUEST = "control.request"
    CONTROL_APPROVE = "control.approve"  # never one's own request
    AUDIT_READ = "audit.read"  # the audit log and its verification
    USERS_MANAGE = "users.manage"  # users, roles, API keys


class Role(StrEnum):
    VIEWER = "viewer"
    METERING_ENGINEER = "metering_engineer"
    LOAD_OPERATOR = "load_operator"
    BILLING = "billing"
    INSPECTOR = "inspector"
    ADMIN = "admin"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({P.READ}),
    Role.METERING_ENGINEER: frozenset({P.READ, P.INVENTORY_WRITE}),
    Role.LOAD_OPERATOR: frozenset({P.READ, P.NOTICES_WRITE, P.CONTROL_REQUEST, P.CONTROL_APPROVE}),
    Role.BILLING: frozenset({P.READ, P.BILLING_EXPORT, P.READS_EDIT}),
    Role.INSPECTOR: frozenset({P.READ, P.CASES_WORK, P.AUDIT_READ}),
    Role.ADMIN: frozenset({P.READ, P.USERS_MANAGE, P.AUDIT_READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a user (password login → token) or an API key (machines)."""

    name: str  # the user's name; an API key acts as its owner, audited as "<user>/key:<id>"
    roles: frozenset[Role]
    kind: Literal["user", "api_key"]
    actor: str  # what the audit log records as `actor`

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset().union(*(ROLE_PERMISSIONS[r] for r in self.roles))

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


KEY_PREFIX = "grk_"  # API keys
TOKEN_PREFIX = "grt_"  # login tokens
KEY_TOUCH_SECONDS = 60  # last_used_at of a key is written at most this often

# Declared so the OpenAPI names both ways in (the docs' Authorize button, schemathesis);
# authenticate() reads the headers itself.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)

AUTH_RESPONSES: dict[int | str, dict] = {
    401: {
        "model": ErrorPublic,
        "description": "No, unknown, expired or revoked credentials, or an inactive user",
    },
    403: {
        "model": ErrorPublic,
        "description": "The caller's roles do not grant the permission this route needs",
    },
}
"""Responses every protected route may give (declare them in the route's `responses`)."""


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    """The caller of `request`, or HTTPException 401 (with WWW-Authenticate). Accepts
    `Authorization: Bearer <token or API key>` and `X-API-Key: <key>`. Looked up once per
    request (several dependencies may ask)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    key = request.headers.get("x-api-key", "").strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else ""
    if key and bearer:
        raise unauthorized("send one credential: X-API-Key or Authorization, not both")
    secret = key or bearer
    if not secret:
        raise unauthorized("not authenticated: send X-API-Key or Authorization: Bearer")
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=5) as conn:
            if secret.startswith(TOKEN_PREFIX):
                principal = await _token_principal(conn, secret)
            else:
                principal = await _key_principal(conn, secret)
    except PoolTimeout as exc:
        raise HTTPException(503, "database unavailable") from exc
    request.state.principal = principal
    request.state.secret = secret  # what logout revokes, whichever header carried it
    return principal


async def _token_principal(conn, secret: str) -> Principal:
    cur = await conn.execute(
        "SELECT u.name, u.roles, u.active, t.expires_at <= now(), t.revoked_at IS NOT NULL"
        " FROM login_tokens t JOIN users u ON u.name = t.owner WHERE t.token_hash = %s",
        (secret_hash(secret),),
    )
    row = await cur.fetchone()
    if row is None:
        raise unauthorized("unknown login token")
    name, roles, active, expired, revoked = row
    _check(active=active, expired=expired, revoked=revoked, what="login token")
    return Principal(name, _roles(roles), "user", name)


async def _key_principal(conn, secret: str) -> Principal:
    cur = await conn.execute(
        "SELECT u.name, u.roles, u.active, k.id, coalesce(k.expires_at <= now(), false),"
        " k.revoked_at IS NOT NULL,"
        f" k.last_used_at IS NULL OR k.last_used_at < now() - interval '{KEY_TOUCH_SECONDS} s'"
        " FROM api_keys k JOIN users u ON u.name = k.owner WHERE k.key_hash = %s",
        (secret_hash(secret),),
    )
    row = await cur.fetchone()
    if row is None:
        raise unauthorized("unknown API key")
    name, roles, active, key_id, expired, revoked, stale = row
    _check(active=active, expired=expired, revoked=revoked, what="API key")
    if stale:
        await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))
    return Principal(name, _roles(roles), "api_key", f"{name}/key:{key_id}")


def _check(*, active: bool, expired: bool, revoked: bool, what: str) -> None:
    if revoked:
        raise unauthorized(f"{what} revoked")
    if expired:
        raise unauthorized(f"{what} expired")
    if not active:
        raise unauthorized("user inactive")


def _roles(names: list[str]) -> frozenset[Role]:
    return frozenset(Role(n) for n in names)


async def caller(
    request: Request,
    _token: Annotated[str | None, Depends(oauth2_scheme)],
    _key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """A dependency: the authenticated caller, whatever its roles (or 401)."""
    return await authenticate(request)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if it holds `permission`; else 401 (no or bad credentials)
    or 403 (authenticated, not allowed)."""
    permission = Permission(permission)

    async def dependency(who: Annotated[Principal, Depends(caller)]) -> Principal:
        if not who.can(permission):
            raise HTTPException(403, f"permission {permission.value!r} needed")
        return who

    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency
