"""Dependencies shared by the routes, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout


async def _connection(request: Request) -> AsyncIterator[AsyncConnection]:
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=5) as conn:
            yield conn
    except PoolTimeout as exc:
        raise HTTPException(503, "database unavailable") from exc


def _local_tz(request: Request) -> ZoneInfo:
    return request.app.state.tz


Conn = Annotated[AsyncConnection, Depends(_connection)]
LocalTz = Annotated[ZoneInfo, Depends(_local_tz)]
"""The site's time zone (setting `timezone`): local days of read statistics."""
