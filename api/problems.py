"""The error model: every error the API answers is ``application/problem+json`` (RFC 9457).

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "no device named 'x'", "instance": "/devices/x"}

- `HTTPException` (a route's 404, 503 …, the 401/403 of the security dependency, and the
  router's own 404 of an unknown path and 405 of a wrong method): ``type`` about:blank, the
  status's phrase as ``title``, the exception's ``detail`` and headers (``WWW-Authenticate``,
  ``Allow``) kept.
- Request validation: 422 with ``type`` `VALIDATION`; ``detail`` and ``errors`` are both the
  list of FastAPI's errors (``loc``, ``msg``, ``type``): ``detail`` for the clients written
  against FastAPI's shape, ``errors`` as RFC 9457's extension member.
- Anything else: 500 with a reference, no internals (no message, no traceback); the
  exception is logged with that reference.

`install(app)` registers the handlers and rewrites the OpenAPI document so every error
response it declares has this media type (and adds the 500 to every operation).
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
VALIDATION = "urn:gridread:problem:validation"
INTERNAL = "urn:gridread:problem:internal"


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field("about:blank", description="what kind of problem; about:blank: the status")
    title: str = Field(description="the status's phrase, or the problem type's title")
    status: int = Field(description="the HTTP status code")
    detail: Any = Field(None, description="what went wrong with this request")
    instance: str | None = Field(None, description="the request's path")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "no device named 'meter-99'",
                    "instance": "/devices/meter-99",
                }
            ]
        }
    }


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: query/path/body, then the field")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationProblem(Problem):
    """A request the API refuses as invalid (422): every error found, in FastAPI's shape."""

    detail: list[ValidationIssue]
    errors: list[ValidationIssue]


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    status: int,
    detail: Any = None,
    *,
    request: Request | None = None,
    type_: str = "about:blank",
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """A problem+json response (handlers elsewhere in the API use it too)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {
        "type": type_,
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path if request is not None else None,
        **extra,
    }
    return ProblemResponse(jsonable_encoder(body), status_code=status, headers=headers)


def validation_problem(errors: list[Any], *, request: Request | None = None) -> ProblemResponse:
    errs = jsonable_encoder(errors)
    return problem(
        422,
        errs,
        request=request,
        type_=VALIDATION,
        title="The request is not valid",
        errors=errs,
    )


async def _http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
    detail = exc.detail
    if detail == HTTPStatus(exc.status_code).phrase and exc.status_code == 404:
        detail = f"no such resource: {request.url.path}"
    elif detail == HTTPStatus(exc.status_code).phrase and exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed(request)}
    return problem(exc.status_code, detail, request=request, headers=headers)


def _allowed(request: Request) -> str:
    """Every method of the path: Starlette's 405 lists only those of the first route that
    matches it (a path with GET, PUT and DELETE routes would say GET)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(r.matches(scope)[0] is Match.FULL for r in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


async def _validation(request: Request, exc: RequestValidationError) -> ProblemResponse:
    return validation_problem([_no_secret(e) for e in exc.errors()], request=request)


def _secret(key: object) -> bool:
    return isinstance(key, str) and "password" in key.lower()


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "[redacted]" if _secret(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _no_secret(error: Any) -> Any:
    """A validation error without the password it would echo: no `input` for a password
    field, and password fields of a whole body (a missing-field error quotes it) redacted."""
    if not isinstance(error, dict):
        return error
    if any(_secret(part) for part in error.get("loc", ())):
        return {k: v for k, v in error.items() if k != "input"}
    return {**error, "input": _redact(error["input"])} if "input" in error else error


async def _internal(request: Request, exc: Exception) -> ProblemResponse:
    ref = uuid.uuid4().hex[:12]
    log.error(
        "unhandled error on %s %s (ref %s)", request.method, request.url.path, ref, exc_info=exc
    )
    return problem(
        500,
        f"internal error (reference {ref}; the details are in the server's log)",
        request=request,
        type_=INTERNAL,
        reference=ref,
    )


def install(app: FastAPI) -> None:
    """Register the handlers and declare problem+json in the app's OpenAPI document."""
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _internal)
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare(original())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_SCHEMAS = {"ErrorPublic": "Problem", "HTTPValidationError": "ValidationProblem"}
_PROBLEM = "#/components/schemas/Problem"
_UNPARSABLE = {
    "description": "The body cannot be parsed (not JSON, not UTF-8)",
    "content": {MEDIA_TYPE: {"schema": {"$ref": _PROBLEM}}},
}
_INTERNAL = {
    "description": "An internal error: a reference to the server's log, no internals",
    "content": {MEDIA_TYPE: {"schema": {"$ref": _PROBLEM}}},
}


def declare(doc: dict[str, Any]) -> dict[str, Any]:
    """Error responses declared with FastAPI's error models answer problem+json: their
    content moves to that media type with the problem schemas; every operation gets the 500."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ValidationIssue, ValidationProblem):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for code, resp in op["responses"].items():
                if code[0] not in "45":
                    continue
                if not resp.get("content"):  # declared without a body: it is a Problem
                    resp["content"] = {MEDIA_TYPE: {"schema": {"$ref": _PROBLEM}}}
                    continue
                content = resp["content"]
                plain = content.get("application/json")
                if plain is None:
                    continue
                ref = plain.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if ref in _ERROR_SCHEMAS:
                    del content["application/json"]
                    content[MEDIA_TYPE] = {
                        "schema": {"$ref": f"#/components/schemas/{_ERROR_SCHEMAS[ref]}"}
                    }
            if "requestBody" in op:  # FastAPI's own 400 for a body it cannot parse
                op["responses"].setdefault("400", _UNPARSABLE)
            op["responses"].setdefault("500", _INTERNAL)
    return doc
