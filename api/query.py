"""Refusals at the query level, each a declared 422 in FastAPI's validation shape:

- one value per query parameter: FastAPI silently keeps the last of a repeated scalar
  (``?day=1&day=2``), so a client's mistake would be answered as if it were meant; no route
  takes a list in its query;
- a day or instant so near the calendar's ends that a route's date arithmetic overflows."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request

from api.problems import ProblemResponse, validation_problem


def refuse_calendar_overflow(app: FastAPI) -> None:
    """A day or instant so near the calendar's ends that a route's date arithmetic overflows
    (e.g. the day after 9999-12-31) is the caller's error: a declared 422, not a 500."""

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> ProblemResponse:
        detail = [
            {
                "type": "calendar_overflow",
                "loc": ["query"],
                "msg": f"a date or instant too near the calendar's ends: {exc}",
                "input": request.url.query,
            }
        ]
        return validation_problem(detail, request=request)


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
                return validation_problem(detail, request=request)
            seen.add(name)
        return await call_next(request)
