"""The error model: every error is application/problem+json (RFC 9457) with a `detail`, over
the real app and a real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.problems import MEDIA_TYPE
from tests.api_auth import credentials
from tests.api_seed import seed


@pytest.fixture
def app(migrated_url: str):
    seed(migrated_url)
    return create_app(migrated_url)


@pytest.fixture
def client(app, migrated_url: str) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(credentials(migrated_url, "viewer"))
        yield c


def problem_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == MEDIA_TYPE
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["type"], str) and body["type"]
    assert "detail" in body
    return body


def test_a_routes_404_names_what_is_missing(client):
    body = problem_of(client.get("/devices/no-such-meter"), 404)
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no device named 'no-such-meter'",
        "instance": "/devices/no-such-meter",
    }


def test_an_unknown_path_is_a_404_problem(client):
    body = problem_of(client.get("/no/such/path"), 404)
    assert body["detail"] == "no such resource: /no/such/path"
    assert body["instance"] == "/no/such/path"


def test_a_wrong_method_is_a_405_problem_with_allow(client):
    r = client.delete("/devices")
    body = problem_of(r, 405)
    assert body["detail"] == "method DELETE is not allowed on /devices"
    assert "GET" in r.headers["allow"]


def test_validation_is_a_422_with_the_errors_list(client):
    r = client.get("/devices/meter-01/readings", params={"quantity": "1.8.0", "limit": 0})
    body = problem_of(r, 422)
    assert body["type"] == "urn:gridread:problem:validation"
    assert body["detail"] == body["errors"]
    assert [e["loc"] for e in body["errors"]] == [["query", "limit"]]
    assert body["errors"][0]["type"] == "greater_than_equal"


def test_refusals_outside_validation_are_problems_too(client):
    # the middleware's refusal of a repeated parameter, and a quantity the registry lacks
    body = problem_of(client.get("/read-stats?day=2026-11-25&day=2026-11-26"), 422)
    assert body["errors"][0]["loc"] == ["query", "day"]
    body = problem_of(client.get("/devices/meter-01/readings?quantity=9.9.9"), 422)
    assert body["errors"][0]["loc"] == ["query", "quantity"]


def test_unauthenticated_is_a_401_problem_with_www_authenticate(app):
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/devices")
    body = problem_of(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert body["instance"] == "/devices"


def test_an_unhandled_error_is_a_500_with_no_internals_and_is_logged(app, caplog):
    @app.get("/boom", include_in_schema=False)
    async def boom():
        raise RuntimeError("password=hunter2 at /srv/secret.py line 42")

    with TestClient(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="api.problems"):
            r = client.get("/boom")
    body = problem_of(r, 500)
    assert "hunter2" not in r.text and "secret" not in r.text and "Traceback" not in r.text
    assert body["type"] == "urn:gridread:problem:internal"
    ref = body["reference"]
    assert ref in body["detail"]
    [record] = [rec for rec in caplog.records if ref in rec.getMessage()]
    assert "hunter2" in str(record.exc_info[1])


def test_openapi_declares_problem_json_for_every_error_response(app):
    doc = app.openapi()
    checked = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "500" in responses, (method, path)
            for code, resp in responses.items():
                if code[0] not in "45" or path == "/health":  # /health's 503 is its body
                    continue
                assert list(resp["content"]) == [MEDIA_TYPE], (method, path, code)
                checked += 1
    assert checked > 50
    assert doc["components"]["schemas"]["ValidationProblem"]["required"] == [
        "title",
        "status",
        "detail",
        "errors",
    ]
