"""The HTTP API against a real PostgreSQL: hostile query strings and paths get a 4xx with a
body that matches the declared schema, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api_auth import credentials
from tests.api_seed import seed


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    seed(migrated_url)
    with TestClient(
        create_app(migrated_url),
        headers=credentials(migrated_url, "viewer"),
        raise_server_exceptions=False,
    ) as c:
        yield c


def assert_validation_error(r, *, field: str) -> None:
    """A 422 whose body is FastAPI's declared HTTPValidationError, naming the field."""
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for err in detail:
        assert isinstance(err["msg"], str) and isinstance(err["type"], str), err
        assert all(isinstance(p, str | int) for p in err["loc"]), err
    assert any(err["loc"][-1] == field for err in detail), detail


@pytest.mark.parametrize(
    "url, field",
    [
        ("/devices/meter-01/readings?quantity=1.8.0&end=0001-01-01", "end"),
        ("/devices/meter-01/events?end=0001-01-01", "end"),
        ("/devices/meter-01/events?end=0001-01-20T00:00:00Z", "end"),
    ],
)
def test_instants_before_the_calendar_starts_are_422(client, url, field):
    assert_validation_error(client.get(url), field=field)


@pytest.mark.parametrize(
    "url", ["/concentrators/read-stats", "/concentrators/read-stats/by-area", "/read-stats"]
)
def test_the_last_day_of_the_calendar_is_not_a_500(client, url):
    r = client.get(url, params={"day": "9999-12-31"})
    if r.status_code == 422:
        assert_validation_error(r, field="day")
    else:
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "url, field",
    [
        ("/read-stats?day=0", "day"),
        ("/concentrators/read-stats?day=20261125", "day"),
        ("/devices/meter-01/events?start=0", "start"),
        ("/devices/meter-01/readings?quantity=1.8.0&end=1764000000", "end"),
    ],
)
def test_numbers_are_not_taken_as_unix_times(client, url, field):
    # the schema says ISO 8601 (format date / date-time); pydantic alone took "0" as 1970
    assert_validation_error(client.get(url), field=field)


def test_a_valid_window_still_answers(client):
    r = client.get(
        "/devices/meter-01/readings",
        params={"quantity": "1.8.0", "start": "2026-11-25T00:00:00Z", "end": "2026-11-26"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 8
    r = client.get("/devices/meter-01/events", params={"start": "2026-11-25", "end": "2026-11-26"})
    assert [e["kind"] for e in r.json()["data"]] == ["power_down"]


@pytest.mark.parametrize(
    "url",
    [
        "/devices/meter%00-01",
        "/devices/meter%00-01/latest",
        "/devices/meter%00-01/events",
        "/devices/meter%00-01/readings?quantity=1.8.0",
        "/read-stats/bus%001",
    ],
)
def test_nul_in_a_name_is_a_client_error(client, url):
    r = client.get(url)
    assert r.status_code in (404, 422), r.text
    if r.status_code == 422:
        assert_validation_error(r, field="name" if "devices" in url else "bus")


def test_nul_in_a_kind_is_422(client):
    assert_validation_error(client.get("/devices?kind=me%00ter"), field="kind")


def test_events_with_start_after_end_are_422(client):
    r = client.get("/devices/meter-01/events", params={"start": "2026-11-26", "end": "2026-11-25"})
    assert_validation_error(r, field="start")


def test_start_after_end_of_readings_is_a_declared_422(client):
    r = client.get(
        "/devices/meter-01/readings",
        params={"quantity": "1.8.0", "start": "2026-11-26", "end": "2026-11-25"},
    )
    assert_validation_error(r, field="start")


def test_an_unknown_quantity_is_a_declared_422(client):
    assert_validation_error(
        client.get("/devices/meter-01/readings", params={"quantity": "9.9.9"}), field="quantity"
    )


def test_concentrator_read_stats_are_declared_and_served(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"ConcentratorReadStats", "AreaReadStats", "FailingMeter"} <= set(schemas)
    [c] = client.get("/concentrators/read-stats", params={"day": "2026-11-25"}).json()
    assert (c["concentrator"], c["due"], c["read"], c["failing"]) == ("jzq-1", 1, 1, [])
    [a] = client.get("/concentrators/read-stats/by-area", params={"day": "2026-11-24"}).json()
    assert (a["area"], a["concentrators"], a["read"]) == ("a1", ["jzq-1"], 0)
    assert a["failing"] == [{"meter": "jzq1-m01", "last_read": "2026-11-25T16:00:00Z"}]


def test_nul_in_a_quantity_is_422(client):
    r = client.get("/devices/meter-01/readings", params={"quantity": "1.8\x00.0"})
    assert_validation_error(r, field="quantity")


def test_every_404_is_declared(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/devices/{name}",
        "/devices/{name}/readings",
        "/devices/{name}/latest",
        "/devices/{name}/events",
        "/read-stats/{bus}",
    ):
        assert "404" in paths[path]["get"]["responses"], path
        assert (
            client.get(
                path.replace("{name}", "nope").replace("{bus}", "nope")
                + ("?quantity=1.8.0" if path.endswith("readings") else "")
            ).status_code
            == 404
        ), path


def test_an_unreachable_database_is_a_declared_503():
    app = create_app("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with TestClient(app, raise_server_exceptions=False) as c:
        paths = c.get("/openapi.json").json()["paths"]
        assert "503" in paths["/devices"]["get"]["responses"]
        assert "503" in paths["/concentrators/read-stats"]["get"]["responses"]
        # credentials are checked against the database too: unavailable, not "unknown key"
        r = c.get("/devices", headers={"X-API-Key": "grk_any"})
        assert r.status_code == 503 and r.json()["detail"] == "database unavailable"


@pytest.mark.parametrize(
    "url",
    [
        "/meters/verification-due?within_days=30&within_days=5",
        "/devices/x/readings?quantity=1.8.0&quantity=32.7.0",
    ],
)
def test_a_repeated_query_parameter_is_a_422_not_its_last_value(client, url):
    # FastAPI alone answers with the last value, so the client's ambiguity went unnoticed.
    r = client.get(url)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", url.split("?")[1].split("=")[0]]


@pytest.mark.parametrize(
    "url",
    [
        "/power-quality/monitor-flags?last=0001-01-05",  # 31 days back: before year 1
        "/lineloss/ranking?day=9999-12-31",  # the next midnight does not exist
    ],
)
def test_a_day_at_the_calendars_end_is_not_a_500(client, url):
    r = client.get(url)
    assert r.status_code in (200, 404, 422), r.text
    if r.status_code == 422:
        assert r.json()["detail"][0]["loc"][0] == "query"
