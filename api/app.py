"""The FastAPI application. `create_app(conninfo, timezone=…, analytics=…)` is all the wiring
it needs."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool

from analytics.jobs import LineLossPolicy
from api.allow import complete_allow_header
from api.query import refuse_calendar_overflow, refuse_repeated_query_parameters
from api.routes import analytics as analytics_routes
from api.routes import (
    audit,
    auth,
    billing,
    concentrators,
    devices,
    health,
    lineloss,
    power_quality,
    quantities,
    reads,
    reliability,
    topology,
    users,
    worklist,
)
from ingest.localtime import DEFAULT_TIMEZONE


def create_app(
    conninfo: str,
    *,
    pool_size: int = 4,
    timezone: str = DEFAULT_TIMEZONE,
    service_states: Callable[[], list[dict]] = list,
    analytics: LineLossPolicy | None = None,
    token_lifetime: float = 3600.0,
    audit_edit_flag_share: float = 0.2,
) -> FastAPI:
    """`timezone`: the site's, for local days (the `timezone` setting); `service_states`: the
    running services' states for /health (the supervisor's); `analytics`: the analytics
    settings (register modulus, max step, alignment tolerance) the endpoints that compute
    from registers use, as the line-loss job does (default: the settings' defaults)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # open=False + open(wait=False): the API starts even while the database is down,
        # and /health says so.
        pool = AsyncConnectionPool(conninfo, min_size=1, max_size=pool_size, open=False)
        await pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="gridread",
        summary="Meter readings, devices and collector health of the gridread head end",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.tz = ZoneInfo(timezone)
    app.state.conninfo = conninfo  # analytics loaders run sync psycopg in a thread
    app.state.service_states = service_states
    app.state.analytics = analytics or LineLossPolicy(timezone=timezone)
    app.state.token_lifetime = token_lifetime
    app.state.audit_edit_flag_share = audit_edit_flag_share
    refuse_repeated_query_parameters(app)
    refuse_calendar_overflow(app)
    complete_allow_header(app)
    app.include_router(health.router)
    app.include_router(devices.router)
    app.include_router(quantities.router)
    app.include_router(reads.router)
    app.include_router(concentrators.router)
    app.include_router(topology.router)
    app.include_router(topology.meters_router)
    app.include_router(lineloss.router)
    app.include_router(analytics_routes.router)
    app.include_router(power_quality.router)
    app.include_router(worklist.router)
    app.include_router(reliability.router)
    app.include_router(billing.router)
    app.include_router(auth.router)
    app.include_router(audit.router)
    app.include_router(users.router)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
