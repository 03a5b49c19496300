"""Schemathesis against the API's own OpenAPI document, served by a real uvicorn over a real
PostgreSQL with devices, readings, events, read statistics, a grid and the line-loss and
diagnostics jobs' results stored (tests/api_seed.py): no 500s, and every response (status,
headers, body) matches what the schema declares; with credentials of a role that may call
the operation (the permission table of tests/test_security_matrix.py), and without: 401
(anonymous) or 403 (a role without the permission), declared."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from schemathesis.checks import positive_data_acceptance

from api.app import create_app
from api.security import ROLE_PERMISSIONS, Role
from ingest.localtime import DEFAULT_TIMEZONE
from ingest.schema import migrate
from tests.api_auth import credentials
from tests.api_seed import seed
from tests.test_security_matrix import ANY, EXPECTED, OPEN

# Small enough that all operations run in well under a minute on the 2-core test box.
MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def seeded_url(pg_admin_url: str, storage) -> Iterator[str]:
    """One stored world for every operation (the tests only read)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(pg_admin_url), "dbname": name})
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, storage=storage)
    seed(url)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def api_url(seeded_url: str) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(seeded_url), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:  # wait for the listening socket, not for a guessed time
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_seed_holds_real_analytics_rows(seeded_url: str):
    """What the operations below read: the jobs' results of every kind, not empty tables."""
    with psycopg.connect(seeded_url) as conn:
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM lineloss").fetchall()}
        assert statuses == {"normal", "high", "negative", "not_computable"}
        levels = conn.execute("SELECT DISTINCT level, period FROM lineloss").fetchall()
        assert len(levels) == 9  # area, feeder, voltage × 15min, day, month
        errors = conn.execute("SELECT identifiable, count(*) FROM meter_errors GROUP BY 1")
        assert dict(errors.fetchall()).keys() == {True, False}
        flags = conn.execute("SELECT flagged, count(*) FROM mapping_flags GROUP BY 1")
        assert dict(flags.fetchall()).keys() == {True, False}
        (due,) = conn.execute(
            "SELECT count(*) FROM meter_assets WHERE next_verification < now()"
        ).fetchone()
        assert due == 1


# The document the app serves; building it needs no database.
schema = schemathesis.openapi.from_dict(create_app("postgresql:///unused").openapi())


@pytest.fixture(scope="module")
def keys(seeded_url: str) -> dict[str, dict[str, str]]:
    return {r.value: credentials(seeded_url, r) for r in Role}


def _need(case):
    # a method the path does not have (schemathesis tries some): 405 before any
    # authentication, as for an open route (every route is in the table: the matrix test)
    return EXPECTED.get((case.method.upper(), case.path), OPEN)


def _allowed_role(case) -> str:
    """A role that may call the operation (the viewer for reads, else the first that may)."""
    need = _need(case)
    if need in (OPEN, ANY):
        return Role.VIEWER.value
    return next(r.value for r in Role if need in ROLE_PERMISSIONS[r])


def _refused_role(case) -> str | None:
    need = _need(case)
    if need in (OPEN, ANY):
        return None
    return next((r.value for r in Role if need not in ROLE_PERMISSIONS[r]), None)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case, api_url, keys):
    # Every check but one: a schema-valid request may still be refused for rules OpenAPI
    # cannot state (start < end; a quantity code from the registry), with a declared 422.
    case.call_and_validate(
        base_url=api_url,
        headers=keys[_allowed_role(case)],
        excluded_checks=[positive_data_acceptance],
    )


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_without_credentials_or_permission_refused_as_declared(case, api_url, keys):
    """Anonymous: 401 on every protected operation; a role without the permission: 403;
    both bodies as declared. Open operations answer anyone."""
    anonymous = case.call_and_validate(base_url=api_url, excluded_checks=[positive_data_acceptance])
    need = _need(case)
    if need == OPEN:  # (the login's own 401 is its answer to a wrong password)
        assert anonymous.status_code != 403, anonymous.text
        assert "not authenticated" not in anonymous.text
        return
    before_auth = {422: ("repeated_parameter", "json_invalid"), 400: ("error parsing the body",)}
    if any(t in anonymous.text for t in before_auth.get(anonymous.status_code, ())):
        # refused for anyone before any dependency runs: a repeated query parameter
        # (api.query's middleware), a body that is not JSON (FastAPI parses it first)
        return
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == ["Bearer"]
    refused = _refused_role(case)
    if refused is not None:
        r = case.call_and_validate(
            base_url=api_url, headers=keys[refused], excluded_checks=[positive_data_acceptance]
        )
        assert r.status_code == 403, r.text


@pytest.fixture(scope="module")
def seeded_days(seeded_url: str) -> dict[str, str]:
    """The seed's two local days and the instants bounding them (it places them before its
    own today): {day1}, {day2}, {start}, {end}, {month} in the requests below."""
    with psycopg.connect(seeded_url) as conn:
        starts = conn.execute(
            "SELECT DISTINCT start FROM lineloss WHERE period = 'day' ORDER BY start"
        ).fetchall()
    tz = ZoneInfo(DEFAULT_TIMEZONE)
    day1, day2 = (s.astimezone(tz).date() for (s,) in starts)
    start = datetime.combine(day1, datetime.min.time(), tz)
    return {
        "month": start.replace(day=1).isoformat(),  # where its month's row starts
        "day1": day1.isoformat(),
        "day2": day2.isoformat(),
        "start": start.isoformat(),
        "end": (start + timedelta(days=2)).isoformat(),
    }


# Requests naming what the seed holds (random names and instants rarely hit it): each answer
# must conform to the schema too, and hold rows.
SEEDED = [
    ("/topology/areas/{name}/members", {"name": "a1"}, {"at": "{end}"}),
    ("/topology/meters/{name}/history", {"name": "a1-c2"}, {}),
    ("/lineloss/areas/{name}/contributions", {"name": "a1"}, {"day": "{day2}"}),
    ("/lineloss/areas/{name}/contributions", {"name": "a2"}, {"day": "{day1}"}),
    ("/lineloss/areas/{name}/contributions", {"name": "d1"}, {"day": "{day1}"}),
    ("/lineloss/ranking", {}, {"day": "{day2}"}),
    ("/lineloss/ranking", {}, {"period": "month", "day": "{day1}"}),
    ("/analytics/meter-errors", {}, {}),
    ("/analytics/mapping-flags", {}, {"flagged": "false"}),
    ("/meters/verification-due", {}, {}),
    ("/devices/{name}/readings", {"name": "a2-c2"}, {"quantity": "1.8.0", "start": "{start}"}),
] + [
    (
        "/lineloss",
        {},
        {"level": level, "period": period, "start": "{month}" if period == "month" else "{start}"},
    )
    for level in ("area", "feeder", "voltage")
    for period in ("15min", "day", "month")
]


@pytest.mark.parametrize("path, path_parameters, query", SEEDED)
def test_seeded_rows_conform_to_the_schema(
    api_url, keys, seeded_days, path, path_parameters, query
):
    query = {k: v.format(**seeded_days) for k, v in query.items()}
    case = schema[path]["GET"].Case(path_parameters=path_parameters, query=query)
    response = case.call_and_validate(base_url=api_url, headers=keys["viewer"])
    assert response.status_code == 200, response.text
    body = response.json()
    rows = (
        body.get("data", body.get("members", body.get("ranked")))
        if isinstance(body, dict)
        else body
    )
    assert rows, body
