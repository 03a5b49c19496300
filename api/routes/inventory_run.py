"""Running an inventory edit (`gridread.inventory_edit`, sync psycopg) from a route: in a
thread, on its own connection, its errors mapped to problems (422 invalid, 404, 409)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from api.params import UNAVAILABLE
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES
from collectors.exceptions import ConfigError
from gridread.inventory_edit import InUse, NotFound

T = TypeVar("T")

READ_RESPONSES: dict[int | str, dict[str, Any]] = {**UNAVAILABLE, **AUTH_RESPONSES}
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_RESPONSES,
    404: {"model": ErrorPublic, "description": "No such entry"},
    409: {"model": ErrorPublic, "description": "The entry is in use (a delete would orphan it)"},
}


def invalid_inventory(msg: str) -> RequestValidationError:
    """A 422 naming the entry and field in one line, in the validation errors' shape."""
    return RequestValidationError([{"type": "inventory", "loc": ("body",), "msg": msg}])


async def run(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    conninfo: str = request.app.state.conninfo

    def work() -> T:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            return fn(conn, *args, **kwargs)

    try:
        return await run_in_threadpool(work)
    except ConfigError as exc:
        raise invalid_inventory(str(exc)) from None
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InUse as exc:
        raise HTTPException(409, str(exc)) from None
    except psycopg.OperationalError as exc:
        raise HTTPException(503, "database unavailable") from exc
