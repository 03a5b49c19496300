"""An open live stream's credentials, re-checked while it lasts.

A stream outlives the request that authenticated it, so revoking its key, deactivating its
user, taking away `read`, logging out or the token's expiry must end it: `guarded()` passes
the stream's events on and re-runs `authenticate()` every `LivePolicy.recheck` seconds and at
the credential's own expiry. When the caller is refused (401) or lost `read` (403), a last
`closed` event `{reason}` is sent and the stream ends; the client's reconnect then gets the
401. A database that cannot answer (503) keeps the stream and is tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request

from api.live import LiveFeed
from api.security import TOKEN_PREFIX, Permission, authenticate, secret_hash

log = logging.getLogger(__name__)


def _secret(request: Request) -> str:
    """The credential the request authenticated with (authenticate() accepted it)."""
    key = request.headers.get("x-api-key", "").strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return key or (value.strip() if scheme.lower() == "bearer" else "")


async def expiry(conn, request: Request) -> float | None:
    """When the request's credential expires (Unix seconds), None if it does not."""
    secret = _secret(request)
    if secret.startswith(TOKEN_PREFIX):
        sql = "SELECT extract(epoch FROM expires_at) FROM login_tokens WHERE token_hash = %s"
    else:
        sql = "SELECT extract(epoch FROM expires_at) FROM api_keys WHERE key_hash = %s"
    cur = await conn.execute(sql, (secret_hash(secret),))
    row = await cur.fetchone()
    return float(row[0]) if row is not None and row[0] is not None else None


async def refusal(request: Request) -> str | None:
    """Why the request's caller may not go on reading the feed, or None if it still may."""
    request.state.principal = None  # authenticate() caches per request: look up afresh
    try:
        who = await authenticate(request)
    except HTTPException as exc:
        if exc.status_code != 401:
            log.warning("live stream: credentials not re-checked (%s)", exc.detail)
            return None
        return str(exc.detail)
    if not who.can(Permission.READ):
        return f"permission {Permission.READ.value!r} no longer granted"
    return None


async def guarded(
    request: Request,
    feed: LiveFeed,
    events: AsyncIterator[dict[str, Any]],
    expires: float | None,
) -> AsyncIterator[dict[str, Any]]:
    """`events` while the caller's credentials hold; a last `closed` event when they stop."""
    recheck = feed.policy.recheck
    check_at = time.monotonic() + recheck
    # at the expiry (a little after, so the database agrees it has passed)
    ends_at = time.monotonic() + (expires - time.time()) + 0.05 if expires else float("inf")
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            due = min(check_at, ends_at)
            done, _ = await asyncio.wait({pending}, timeout=max(due - time.monotonic(), 0.0))
            if pending in done:
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield event
                continue
            if (reason := await refusal(request)) is not None:
                yield {
                    "id": feed.event_id(feed.newest()),
                    "event": "closed",
                    "data": json.dumps({"reason": reason}),
                }
                return
            check_at = time.monotonic() + recheck
            if ends_at <= time.monotonic():  # still accepted (clocks differ): recheck's turn
                ends_at = float("inf")
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()
