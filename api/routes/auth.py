"""Login (OAuth2 password flow) and who the caller is."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from api.credentials import (
    MIN_PASSWORD,
    NAME_PATTERN,
    hash_password,
    new_secret,
    verify_password,
)
from api.deps import Conn
from api.login_guard import LoginGuard, retry_after
from api.routes.users import KeyCreate, KeyCreated, mint_key
from api.schemas import ErrorPublic
from api.security import (
    AUTH_RESPONSES,
    TOKEN_PREFIX,
    Principal,
    caller,
    secret_hash,
    unauthorized,
)
from ingest.audit import RUNTIME_ACTOR, arecord

router = APIRouter(prefix="/auth", tags=["auth"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int  # seconds


class Me(BaseModel):
    name: str
    kind: str  # user (login token) | api_key
    actor: str  # what the audit log records for this caller
    roles: list[str]
    permissions: list[str]


@router.post(
    "/token",
    response_model=Token,
    responses={
        401: AUTH_RESPONSES[401],
        429: {"model": ErrorPublic, "description": "Locked out after failures, or busy"},
    },
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: Conn, request: Request
):
    """Exchange a user's name and password for a bearer token valid `auth_token_lifetime`
    seconds. Wrong name, wrong password, no password set and an inactive user all get the
    same 401 (no hint which). After `login_max_failures` failures of a name (or
    `login_max_failures_ip` from an address) it is locked out (429 with Retry-After, audited);
    more than `login_concurrency` password checks at once: 429."""
    guard: LoginGuard = request.app.state.login_guard
    name_key = ("user", form.username.lower()[:64])
    keys = [name_key, ("ip", request.client.host if request.client else "?")]
    wait = guard.locked_for(keys)
    if wait > 0:
        raise HTTPException(429, "too many failed logins: try later", headers=retry_after(wait))
    row = None
    if re.fullmatch(NAME_PATTERN, form.username):  # else no such user (and no NUL for SQL)
        cur = await conn.execute(
            "SELECT password_hash, active FROM users WHERE name = %s", (form.username,)
        )
        row = await cur.fetchone()
    stored, active = row if row else (None, False)
    if guard.checks.locked():  # no await from here to the acquire: no queue builds up
        raise HTTPException(429, "too many logins at once: try again", headers=retry_after(1))
    async with guard.checks:
        # scrypt is CPU-bound: off the event loop
        ok = await asyncio.to_thread(verify_password, form.password, stored)
    if not (ok and active):
        for kind, value, failures, seconds in guard.failed(keys):
            after = {"failures": failures, "seconds": seconds}
            await arecord(conn, RUNTIME_ACTOR, "lockout", "login", f"{kind}:{value}", None, after)
        await conn.commit()
        raise unauthorized("wrong user name or password")
    guard.succeeded(name_key)
    lifetime = int(request.app.state.token_lifetime)
    token = new_secret(TOKEN_PREFIX)
    await conn.execute(
        "INSERT INTO login_tokens (token_hash, owner, expires_at) VALUES (%s, %s, now() + %s)",
        (secret_hash(token), form.username, timedelta(seconds=lifetime)),
    )
    await conn.commit()
    return Token(access_token=token, expires_in=lifetime)


@router.get("/me", response_model=Me, responses=AUTH_RESPONSES)
async def me(who: Annotated[Principal, Depends(caller)]) -> Me:
    """The authenticated caller, its roles and what they allow (any valid credentials)."""
    return Me(
        name=who.name,
        kind=who.kind,
        actor=who.actor,
        roles=sorted(r.value for r in who.roles),
        permissions=sorted(p.value for p in who.permissions),
    )


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    responses={**AUTH_RESPONSES, 409: {"model": ErrorPublic, "description": "Not a login token"}},
)
async def logout(request: Request, conn: Conn, who: Annotated[Principal, Depends(caller)]):
    """Revoke the login token of this request at once. An API key is not ended so: its
    manager revokes it (DELETE /users/{name}/keys/{id})."""
    if who.kind != "user":
        raise HTTPException(409, "this request carries an API key, not a login token")
    token = request.state.secret  # as authenticate() took it (Authorization or X-API-Key)
    await conn.execute(
        "UPDATE login_tokens SET revoked_at = coalesce(revoked_at, now())"
        " WHERE token_hash = %s AND owner = %s",
        (secret_hash(token), who.name),
    )
    await conn.commit()
    return Response(status_code=204)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


@router.post(
    "/me/password",
    status_code=204,
    response_class=Response,
    responses={**AUTH_RESPONSES, 400: {"model": ErrorPublic, "description": "Not JSON"}},
)
async def change_password(
    body: PasswordChange, conn: Conn, who: Annotated[Principal, Depends(caller)]
):
    """Change the caller's own password (the current one needed, 403 if wrong). Every login
    token of the user is revoked at once, this request's too: log in again."""
    cur = await conn.execute("SELECT password_hash FROM users WHERE name = %s", (who.name,))
    row = await cur.fetchone()
    ok = await asyncio.to_thread(verify_password, body.current_password, row[0] if row else None)
    if not ok:
        raise HTTPException(403, "the current password is wrong")
    pw = await asyncio.to_thread(hash_password, body.new_password)
    async with conn.transaction():
        await conn.execute("UPDATE users SET password_hash = %s WHERE name = %s", (pw, who.name))
        cur = await conn.execute(
            "UPDATE login_tokens SET revoked_at = now() WHERE owner = %s AND revoked_at IS NULL",
            (who.name,),
        )
        after = {"password": "changed", "tokens_revoked": cur.rowcount}
        await arecord(conn, who.actor, "password", "user", who.name, None, after)
    await conn.commit()
    return Response(status_code=204)


@router.post(
    "/me/keys",
    response_model=KeyCreated,
    status_code=201,
    responses={
        **AUTH_RESPONSES,
        400: {"model": ErrorPublic, "description": "Not JSON"},
        409: {"model": ErrorPublic, "description": "Sent with an API key, not a login token"},
    },
)
async def create_own_key(
    body: KeyCreate, conn: Conn, who: Annotated[Principal, Depends(caller)]
) -> dict:
    """A new API key of the caller (self-service, shown in this answer only), with the
    caller's roles. Only from a login (a password proven): a key does not breed keys (409, as
    logout answers a key)."""
    if who.kind != "user":
        raise HTTPException(409, "log in (POST /auth/token) to make a key: not with a key")
    return await mint_key(conn, who.name, body, who)
