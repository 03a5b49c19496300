"""Users, their roles and API keys (permission users.manage). Every change is audited as the
caller; a key is shown once, when it is made."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, Field, StrictBool

from api.credentials import (
    MIN_PASSWORD,
    NAME_PATTERN,
    CredentialError,
    acreate_api_key,
    check_roles,
    hash_password,
)
from api.deps import Conn
from api.params import TEXT, UNAVAILABLE, IsoInstant, aware, invalid
from api.schemas import ErrorPublic
from api.security import (
    AUTH_RESPONSES,
    ROLE_PERMISSIONS,
    Permission,
    Principal,
    Role,
    require,
)
from ingest.audit import arecord

router = APIRouter(
    prefix="/users",
    tags=["users"],
    responses={**UNAVAILABLE, **AUTH_RESPONSES},
)
Manager = Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
UserName = Annotated[str, Path(pattern=NAME_PATTERN, description="the user's name")]
KeyId = Annotated[int, Path(ge=1, le=2**63 - 1)]
NO_USER = {404: {"model": ErrorPublic, "description": "No such user (or key)"}}
BAD_BODY = {400: {"model": ErrorPublic, "description": "The body is not JSON"}}
CONFLICT = {409: {"model": ErrorPublic, "description": "Exists already, or would lock out"}}
Password = Field(default=None, min_length=MIN_PASSWORD, max_length=1024)


class UserCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    roles: list[Role] = Field(min_length=1)
    password: str | None = Password  # none: API keys only


class UserUpdate(BaseModel):
    roles: list[Role] | None = Field(default=None, min_length=1)
    active: StrictBool | None = None  # 0 / 1 are not booleans
    password: str | None = Password


class UserPublic(BaseModel):
    name: str
    roles: list[Role]
    active: bool
    can_log_in: bool  # a password is set
    created_at: datetime
    created_by: str


class KeyCreate(BaseModel):
    label: str = Field(default="", max_length=200, pattern=TEXT)
    expires_at: IsoInstant | None = None


class KeyPublic(BaseModel):
    id: int
    owner: str
    label: str
    prefix: str  # the key's first characters
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyPublic):
    key: str  # shown this once: only its hash is stored


_USER = "SELECT name, roles, active, password_hash IS NOT NULL, created_at, created_by FROM users"
_USER_KEYS = ("name", "roles", "active", "can_log_in", "created_at", "created_by")
_KEY = (
    "SELECT id, owner, label, prefix, created_at, expires_at, revoked_at, last_used_at"
    " FROM api_keys"
)
_KEY_KEYS = tuple(KeyPublic.model_fields)


async def _user(conn, name: str, *, lock: bool = False) -> dict:
    cur = await conn.execute(_USER + " WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no user {name!r}")
    return dict(zip(_USER_KEYS, row, strict=True))


# Rights a key minted for another user must not carry (finding: users.manage must not turn
# into acting as an operator): such users make their own keys (`gridread users key`).
SENSITIVE = frozenset(
    {
        Permission.CONTROL_REQUEST,
        Permission.CONTROL_APPROVE,
        Permission.USERS_MANAGE,
        Permission.READS_EDIT,
        Permission.CASES_WORK,
    }
)


def sensitive(roles) -> bool:
    return any(ROLE_PERMISSIONS[Role(r)] & SENSITIVE for r in roles)


async def _live_keys(conn, name: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM api_keys WHERE owner = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        (name,),
    )
    return (await cur.fetchone())[0]


def _doc(user: dict) -> dict:
    """What the audit log keeps of a user (never the password hash)."""
    return {
        "roles": list(user["roles"]),
        "active": user["active"],
        "can_log_in": user["can_log_in"],
    }


@router.get("", response_model=list[UserPublic])
async def list_users(conn: Conn, _: Manager) -> list[dict]:
    cur = await conn.execute(_USER + " ORDER BY name")
    return [dict(zip(_USER_KEYS, r, strict=True)) for r in await cur.fetchall()]


@router.post("", response_model=UserPublic, status_code=201, responses={**CONFLICT, **BAD_BODY})
async def create_user(conn: Conn, body: UserCreate, who: Manager) -> dict:
    """A new user with its roles; with a password it can log in (POST /auth/token)."""
    roles = check_roles([r.value for r in body.roles])
    pw = await asyncio.to_thread(hash_password, body.password) if body.password else None
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO users (name, password_hash, roles, created_by) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",  # the name, in any case
            (body.name, pw, roles, who.actor),
        )
        if cur.rowcount == 0:
            raise HTTPException(409, f"user {body.name!r} exists already")
        user = await _user(conn, body.name)
        await arecord(conn, who.actor, "create", "user", body.name, None, _doc(user))
    return user


@router.get("/{name}", response_model=UserPublic, responses=NO_USER)
async def get_user(conn: Conn, name: UserName, _: Manager) -> dict:
    return await _user(conn, name)


@router.patch("/{name}", response_model=UserPublic, responses={**NO_USER, **CONFLICT, **BAD_BODY})
async def update_user(conn: Conn, name: UserName, body: UserUpdate, who: Manager) -> dict:
    """Set roles, (de)activate, set a first password. Nobody changes their own roles (403)
    or deactivates themself (409); a password can be set here only for a user who has none
    yet (403 after: the user changes it, POST /auth/me/password); a user holding API keys
    gets no operating role (409: revoke its keys first; see `create_key`)."""
    pw = await asyncio.to_thread(hash_password, body.password) if body.password else None
    async with conn.transaction():
        before = await _user(conn, name, lock=True)
        roles = check_roles([r.value for r in body.roles]) if body.roles else before["roles"]
        active = before["active"] if body.active is None else body.active
        if name == who.name:
            if set(roles) != set(before["roles"]):
                raise HTTPException(403, "you cannot change your own roles")
            if not active:
                raise HTTPException(409, "you cannot lock yourself out of managing users")
        if pw and before["can_log_in"]:
            raise HTTPException(
                403, "only the user changes a password once set (POST /auth/me/password)"
            )
        if sensitive(roles) and not sensitive(before["roles"]) and await _live_keys(conn, name):
            raise HTTPException(409, f"revoke the API keys of {name!r} before granting it {roles}")
        await conn.execute(
            "UPDATE users SET roles = %s, active = %s,"
            " password_hash = coalesce(%s, password_hash) WHERE name = %s",
            (roles, active, pw, name),
        )
        after = await _user(conn, name)
        doc = _doc(after) | ({"password": "changed"} if pw else {})
        await arecord(conn, who.actor, "update", "user", name, _doc(before), doc)
    return after


@router.get("/{name}/keys", response_model=list[KeyPublic], responses=NO_USER)
async def list_keys(conn: Conn, name: UserName, _: Manager) -> list[dict]:
    await _user(conn, name)
    cur = await conn.execute(_KEY + " WHERE owner = %s ORDER BY id", (name,))
    return [dict(zip(_KEY_KEYS, r, strict=True)) for r in await cur.fetchall()]


@router.post(
    "/{name}/keys",
    response_model=KeyCreated,
    status_code=201,
    responses={**NO_USER, **BAD_BODY},
)
async def create_key(conn: Conn, name: UserName, body: KeyCreate, who: Manager) -> dict:
    """A new API key of the user, shown in this answer only. Another user's key only for a
    machine account: one whose roles carry no operating right (`SENSITIVE`, 403), so a
    manager cannot act, through a key it holds, as someone who may request, approve, edit
    reads, work cases or manage users."""
    target = await _user(conn, name)
    if name != who.name and sensitive(target["roles"]):
        raise HTTPException(
            403, f"only {name!r} may make its own keys: its roles carry operating rights"
        )
    return await mint_key(conn, name, body, who)


async def mint_key(conn, name: str, body: KeyCreate, who: Principal) -> dict:
    """A new key of `name`, made by `who` (audited), with its secret (shown this once)."""
    expires = aware(body.expires_at) if body.expires_at else None
    if expires is not None and expires <= datetime.now(UTC):
        when = body.expires_at.isoformat()
        raise invalid("expires_at", when, "must be in the future", where="body")
    async with conn.transaction():
        try:
            key_id, key = await acreate_api_key(
                conn, name, label=body.label, expires_at=expires, actor=who.actor
            )
        except CredentialError as exc:
            raise HTTPException(404, str(exc)) from None
        cur = await conn.execute(_KEY + " WHERE id = %s", (key_id,))
        row = dict(zip(_KEY_KEYS, await cur.fetchone(), strict=True))
    return row | {"key": key}


@router.delete("/{name}/keys/{key_id}", status_code=204, response_class=Response, responses=NO_USER)
async def revoke_key(conn: Conn, name: UserName, key_id: KeyId, who: Manager) -> Response:
    """Revoke a key at once (kept, with its revocation time; revoking twice is harmless)."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = %s AND owner = %s RETURNING revoked_at",
            (key_id, name),
        )
        if await cur.fetchone() is None:
            raise HTTPException(404, f"no key {key_id} of user {name!r}")
        await arecord(conn, who.actor, "revoke", "api_key", key_id, None, {"owner": name})
    return Response(status_code=204)
