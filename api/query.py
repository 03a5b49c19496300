"""One value per query parameter: FastAPI silently keeps the last of a repeated scalar
parameter (``?day=1&day=2``), so a client's mistake would be answered as if it were meant.
No route takes a list in its query, so any repetition is refused with a declared 422."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def refuse_repeated_query_parameters(app: FastAPI) -> None:
    @app.middleware("http")
    async def _one_value_each(request: Request, call_next):
        seen: set[str] = set()
        for name, value in parse_qsl(request.url.query, keep_blank_values=True):
            if name in seen:
                detail = [
                    {
                        "type": "repeated_parameter",
                        "loc": ["query", name],
                        "msg": f"query parameter {name!r} given more than once",
                        "input": value,
                    }
                ]
                return JSONResponse({"detail": detail}, status_code=422)
            seen.add(name)
        return await call_next(request)
