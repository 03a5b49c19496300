"""The API's request metrics on /metrics: counted by route template, method and status, timed
until the response starts; read back by scraping /metrics, as Prometheus does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import UNMATCHED, instrument
from tests.api_auth import credentials
from tests.api_seed import seed

READINGS = "/devices/{name}/readings"


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """/metrics as Prometheus reads it: (sample name, labels) → value."""
    r = client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def requests(route: str, method: str, status: int) -> float:
    labels = {"route": route, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("gridread_api_requests_total", labels) or 0.0


def timed(route: str, method: str, what: str = "count") -> float:
    labels = {"route": route, "method": method}
    return REGISTRY.get_sample_value(f"gridread_api_request_seconds_{what}", labels) or 0.0


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    seed(migrated_url)
    headers = credentials(migrated_url, "viewer")  # the API asks for a key (issue 11)
    with TestClient(create_app(migrated_url), raise_server_exceptions=False, headers=headers) as c:
        yield c


def test_requests_are_counted_by_route_template_method_and_status(client):
    # the process-wide registry may hold other tests' requests: compare before and after
    asked = [
        (READINGS, "GET", 200),
        ("/devices/{name}", "GET", 404),
        (UNMATCHED, "GET", 404),
        ("/devices", "GET", 422),
        ("/health", "DELETE", 405),
        ("/health", "other", 405),
    ]
    before = {k: requests(*k) for k in asked}
    timed_before = timed(READINGS, "GET")
    for name in ("meter-01", "bus1-m01", "meter-01"):  # three meters' paths, one template
        r = client.get(f"/devices/{name}/readings", params={"quantity": "1.8.0"})
        assert r.status_code == 200, r.text
    assert client.get("/devices/no-such-meter").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    # answered by a middleware before routing: still the route it was meant for
    assert client.get("/devices?kind=meter&kind=concentrator").status_code == 422
    assert client.delete("/health").status_code == 405
    assert client.request("BREW", "/health").status_code == 405  # any token is a method

    scraped = scrape(client)

    def delta(route: str, method: str, status: int) -> float:
        labels = frozenset({"route": route, "method": method, "status": str(status)}.items())
        return scraped[("gridread_api_requests_total", labels)] - before[(route, method, status)]

    assert delta(READINGS, "GET", 200) == 3
    assert delta("/devices/{name}", "GET", 404) == 1
    assert delta(UNMATCHED, "GET", 404) == 1
    assert delta("/devices", "GET", 422) == 1
    assert delta("/health", "DELETE", 405) == 1
    assert delta("/health", "other", 405) == 1
    # every answered request is timed: three readings requests more in the histogram's count
    labels = frozenset({"route": READINGS, "method": "GET"}.items())
    assert scraped[("gridread_api_request_seconds_count", labels)] - timed_before == 3
    # no series carries a raw path
    assert not any("meter-01" in str(labels) for _, labels in scraped)


def test_latency_is_measured_and_a_failing_handler_is_a_500():
    app = FastAPI()
    started = asyncio.Event()

    @app.get("/slow/{n}")
    async def slow(n: int) -> dict:
        started.set()
        await asyncio.sleep(0.2)  # the time the middleware must see
        return {"n": n}

    @app.get("/broken")
    async def broken() -> dict:
        raise RuntimeError("a bug")

    instrument(app)
    count, total = timed("/slow/{n}", "GET"), timed("/slow/{n}", "GET", "sum")
    le_01 = REGISTRY.get_sample_value(
        "gridread_api_request_seconds_bucket", {"route": "/slow/{n}", "method": "GET", "le": "0.1"}
    )
    broken_before = requests("/broken", "GET", 500)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/slow/1").json() == {"n": 1}
        assert c.get("/slow/2").json() == {"n": 2}
        assert c.get("/broken").status_code == 500
    assert timed("/slow/{n}", "GET") - count == 2
    # two requests of at least 0.2 s each: at least 0.4 s, and none in the 0.1 s bucket
    assert timed("/slow/{n}", "GET", "sum") - total >= 0.4
    after = REGISTRY.get_sample_value(
        "gridread_api_request_seconds_bucket", {"route": "/slow/{n}", "method": "GET", "le": "0.1"}
    )
    assert after == (le_01 or 0.0)
    assert requests("/broken", "GET", 500) - broken_before == 1
    assert timed("/broken", "GET") >= 1
