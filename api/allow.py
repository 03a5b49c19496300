"""A 405's `Allow` header naming every method of the path. Starlette names only the methods
of the first route matching the path, so a path served by two routes (GET /users and POST
/users) answered `Allow: GET`; the OpenAPI document lists them all, and so does this."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request


def complete_allow_header(app: FastAPI) -> None:
    table: list[tuple[re.Pattern[str], str]] = []

    def allowed(path: str) -> str | None:
        if not table:  # built on first use: every router is included by then
            for template, ops in app.openapi()["paths"].items():
                regex = "/".join(
                    "[^/]+" if seg.startswith("{") else re.escape(seg)
                    for seg in template.split("/")
                )
                methods = ", ".join(sorted(m.upper() for m in ops))
                table.append((re.compile(f"^{regex}$"), methods))
        return next((m for rx, m in table if rx.match(path)), None)

    @app.middleware("http")
    async def _allow(request: Request, call_next):
        response = await call_next(request)
        if response.status_code == 405:
            methods = allowed(request.url.path)
            if methods:
                response.headers["allow"] = methods
        return response
