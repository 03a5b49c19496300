"""Every route of the app × every role, anonymous and a revoked key, over a real uvicorn and
PostgreSQL: exactly the principals the table below allows get past authentication and
authorisation (any status but 401/403); the others get 401 (no valid credentials) or 403
(a role without the permission).

The table is written out, not derived from the code, so a route protected by the wrong
permission fails here. A route missing from the table fails too: a new route must be
declared in it (with the permission it needs, or OPEN)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import uvicorn
from starlette.routing import Mount

from api.app import create_app
from api.security import ROLE_PERMISSIONS, Permission, Role
from tests.api_auth import credentials

P = Permission
OPEN = "open"  # no credentials needed
ANY = "any"  # any valid credentials, whatever the roles

EXPECTED: dict[tuple[str, str], Permission | str] = {
    ("GET", "/health"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("POST", "/auth/token"): OPEN,
    ("GET", "/auth/me"): ANY,
    ("POST", "/auth/logout"): ANY,
    ("POST", "/auth/me/password"): ANY,
    ("POST", "/auth/me/keys"): ANY,
    ("GET", "/devices"): P.READ,
    ("GET", "/devices/{name}"): P.READ,
    ("GET", "/devices/{name}/readings"): P.READ,
    ("GET", "/devices/{name}/latest"): P.READ,
    ("GET", "/devices/{name}/events"): P.READ,
    ("GET", "/quantities"): P.READ,
    ("GET", "/read-stats"): P.READ,
    ("GET", "/read-stats/{bus}"): P.READ,
    ("GET", "/concentrators/read-stats"): P.READ,
    ("GET", "/concentrators/read-stats/by-area"): P.READ,
    ("GET", "/topology/substations"): P.READ,
    ("GET", "/topology/feeders"): P.READ,
    ("GET", "/topology/areas"): P.READ,
    ("GET", "/topology/areas/{name}/members"): P.READ,
    ("GET", "/topology/meters/{name}/history"): P.READ,
    ("GET", "/meters/verification-due"): P.READ,
    ("GET", "/lineloss"): P.READ,
    ("GET", "/lineloss/ranking"): P.READ,
    ("GET", "/lineloss/areas/{name}/contributions"): P.READ,
    ("GET", "/analytics/meter-errors"): P.READ,
    ("GET", "/analytics/mapping-flags"): P.READ,
    ("GET", "/analytics/multiplier-flags"): P.READ,
    ("GET", "/power-quality/voltage"): P.READ,
    ("GET", "/power-quality/composite"): P.READ,
    ("GET", "/power-quality/unbalance"): P.READ,
    ("GET", "/power-quality/monitor-flags"): P.READ,
    ("GET", "/worklist"): P.READ,
    ("GET", "/worklist/outcomes"): P.READ,
    ("GET", "/worklist/cases/{case_id}"): P.READ,
    ("PATCH", "/worklist/cases/{case_id}/status"): P.CASES_WORK,
    ("POST", "/worklist/cases/{case_id}/transitions"): P.CASES_WORK,
    ("GET", "/reliability/interruptions"): P.READ,
    ("GET", "/reliability/indices"): P.READ,
    ("GET", "/reliability/notices"): P.READ,
    ("POST", "/reliability/notices"): P.NOTICES_WRITE,
    ("GET", "/billing/export"): P.BILLING_EXPORT,
    ("GET", "/billing/reads/{name}"): P.READ,
    ("POST", "/billing/reads/{name}/edit"): P.READS_EDIT,
    ("GET", "/audit"): P.AUDIT_READ,
    ("GET", "/audit/verify"): P.AUDIT_READ,
    ("GET", "/users"): P.USERS_MANAGE,
    ("POST", "/users"): P.USERS_MANAGE,
    ("GET", "/users/{name}"): P.USERS_MANAGE,
    ("PATCH", "/users/{name}"): P.USERS_MANAGE,
    ("GET", "/users/{name}/keys"): P.USERS_MANAGE,
    ("POST", "/users/{name}/keys"): P.USERS_MANAGE,
    ("DELETE", "/users/{name}/keys/{key_id}"): P.USERS_MANAGE,
    # load control: approving is a right of its own, never over one's own request (tested in
    # tests/test_control_api.py, which needs two users); cancelling is the requester's
    ("GET", "/control/commands"): P.READ,
    ("GET", "/control/commands/{command_id}"): P.READ,
    ("POST", "/control/commands"): P.CONTROL_REQUEST,
    ("POST", "/control/commands/{command_id}/approve"): P.CONTROL_APPROVE,
    ("POST", "/control/commands/{command_id}/reject"): P.CONTROL_APPROVE,
    ("POST", "/control/commands/{command_id}/cancel"): P.CONTROL_REQUEST,
    # the live page's files are open; its data needs credentials
    ("GET", "/live"): OPEN,
    ("GET", "/live/static/{path}"): OPEN,
    ("GET", "/live/config"): P.READ,
    ("GET", "/live/stream"): P.READ,
    ("GET", "/reads/raw"): P.READ,
    ("GET", "/reads/interval"): P.READ,
    ("GET", "/reads/validated"): P.READ,
    # the inventory: reading it is everyone's, changing it the metering engineer's
    ("GET", "/inventory/areas"): P.READ,
    ("GET", "/inventory/areas/{name}"): P.READ,
    ("GET", "/inventory/csv/{table}"): P.READ,
    ("GET", "/inventory/devices"): P.READ,
    ("GET", "/inventory/devices/{name}"): P.READ,
    ("GET", "/inventory/export"): P.READ,
    ("GET", "/inventory/feeders"): P.READ,
    ("GET", "/inventory/feeders/{name}"): P.READ,
    ("GET", "/inventory/geojson"): P.READ,
    ("GET", "/inventory/meter-assets"): P.READ,
    ("GET", "/inventory/meter-assets/{name}"): P.READ,
    ("GET", "/inventory/meters/{name}/placements"): P.READ,
    ("GET", "/inventory/overrides"): P.READ,
    ("GET", "/inventory/substations"): P.READ,
    ("GET", "/inventory/substations/{name}"): P.READ,
    ("DELETE", "/inventory/areas/{name}"): P.INVENTORY_WRITE,
    ("DELETE", "/inventory/devices/{name}"): P.INVENTORY_WRITE,
    ("DELETE", "/inventory/feeders/{name}"): P.INVENTORY_WRITE,
    ("DELETE", "/inventory/meter-assets/{name}"): P.INVENTORY_WRITE,
    ("DELETE", "/inventory/overrides/{entity}/{entity_id}"): P.INVENTORY_WRITE,
    ("DELETE", "/inventory/substations/{name}"): P.INVENTORY_WRITE,
    ("POST", "/inventory/import"): P.INVENTORY_WRITE,
    ("POST", "/inventory/meters/{name}/placements"): P.INVENTORY_WRITE,
    ("POST", "/inventory/meters/{name}/placements/end"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/areas/{name}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/areas/{name}/location"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/concentrators/{name}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/csv/{table}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/devices/{name}/location"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/feeders/{name}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/meter-assets/{name}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/meters/{name}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/monitors/{name}"): P.INVENTORY_WRITE,
    ("PUT", "/inventory/substations/{name}"): P.INVENTORY_WRITE,
}

PRINCIPALS = [r.value for r in Role] + ["anonymous", "revoked key"]
APP = create_app("postgresql:///unused")  # its routes; building them needs no database


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route, the included routers' too (HEAD: as its GET)."""
    out: set[tuple[str, str]] = set()

    def walk(routes, prefix: str = "") -> None:
        for r in routes:
            contexts = getattr(r, "effective_route_contexts", None)
            if contexts is not None:  # FastAPI's included router
                walk(list(contexts()), prefix)
            elif isinstance(r, Mount):  # static files and sub-apps: one GET below them
                out.add(("GET", prefix + r.path + "/{path}"))
            else:
                for m in getattr(r, "methods", None) or ():
                    if m != "HEAD":
                        out.add((m, prefix + r.path))

    walk(app.routes)
    return out


ROUTES = sorted(app_routes(APP))


def test_every_route_is_in_the_table():
    # the walk sees at least what the OpenAPI document lists (so it cannot silently miss)
    documented = {(m.upper(), p) for p, ops in APP.openapi()["paths"].items() for m in ops}
    assert documented <= set(ROUTES)
    missing = sorted(set(ROUTES) - set(EXPECTED))
    assert not missing, f"routes missing from EXPECTED (declare their permission): {missing}"
    gone = sorted(set(EXPECTED) - set(ROUTES))
    assert not gone, f"EXPECTED names routes the app no longer has: {gone}"


def allowed(need: Permission | str, principal: str) -> bool:
    if need == OPEN:
        return True
    if principal in ("anonymous", "revoked key"):
        return False
    return need == ANY or need in ROLE_PERMISSIONS[Role(principal)]


@pytest.fixture(scope="module")
def served(pg_admin_url: str, storage) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """A real server on a fresh migrated database, and the headers of each principal."""
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from ingest.schema import migrate

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(pg_admin_url), "dbname": name})
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, storage=storage)
    headers = {r.value: credentials(url, r) for r in Role}
    headers["anonymous"] = {}
    headers["revoked key"] = credentials(url, Role.ADMIN, name="revoked")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE owner = 'revoked'")
    server = uvicorn.Server(
        uvicorn.Config(create_app(url), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:  # the listening socket, not a guessed time
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", headers
    server.should_exit = True
    thread.join(10)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _concrete(path: str) -> str:
    """Path parameters filled with values of their kind (ids 1, names 'x')."""
    return "/".join(
        ("1" if seg.endswith("_id}") else "x") if seg.startswith("{") else seg
        for seg in path.split("/")
    )


@pytest.mark.parametrize("method, path", ROUTES)
def test_route_lets_in_exactly_its_roles(served, method, path):
    base, headers = served
    need = EXPECTED.get((method, path))
    assert need is not None, f"{method} {path} is missing from EXPECTED"
    got = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        for who in PRINCIPALS:
            body = {} if method in ("POST", "PATCH", "PUT") else None
            # status only: a stream (the live feed) is not read to its end
            with client.stream(method, _concrete(path), headers=headers[who], json=body) as r:
                got[who] = r.status_code
    wrong = {}
    for who, status in got.items():
        if allowed(need, who):
            if status in (401, 403):
                wrong[who] = status
        else:
            want = 403 if who in {r.value for r in Role} else 401
            if status != want:
                wrong[who] = status
    assert not wrong, f"{method} {path} needs {need}: got {got}"
