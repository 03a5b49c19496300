"""The FastAPI application. `create_app(conninfo, timezone=…, analytics=…)` is all the wiring
it needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool

from analytics.jobs import LineLossPolicy
from api import audit_head
from api.live import LiveFeed, LivePolicy
from api.login_guard import LoginGuard
from api.metrics import instrument
from api.problems import install as install_problems
from api.query import refuse_calendar_overflow, refuse_repeated_query_parameters
from api.routes import analytics as analytics_routes
from api.routes import (
    audit,
    auth,
    billing,
    concentrators,
    devices,
    health,
    inventory,
    inventory_bulk,
    inventory_devices,
    lineloss,
    live,
    power_quality,
    quantities,
    reads,
    reads_data,
    reliability,
    topology,
    users,
    worklist,
)
from api.routes import control as control_routes
from api.security_policy import SecurityPolicy
from ingest.localtime import DEFAULT_TIMEZONE


def create_app(
    conninfo: str,
    *,
    pool_size: int = 4,
    timezone: str = DEFAULT_TIMEZONE,
    service_states: Callable[[], list[dict]] = list,
    analytics: LineLossPolicy | None = None,
    token_lifetime: float = 3600.0,
    live_feed: LivePolicy | None = None,
    audit_edit_flag_share: float = 0.2,
    control_request_ttl: float = 900.0,
    security: SecurityPolicy | None = None,
) -> FastAPI:
    """`timezone`: the site's, for local days (the `timezone` setting); `service_states`: the
    running services' states for /health (the supervisor's); `analytics`: the analytics
    settings (register modulus, max step, alignment tolerance) the endpoints that compute
    from registers use, as the line-loss job does (default: the settings' defaults); `live_feed`:
    the live feed's window and alarm kinds."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # open=False + open(wait=False): the API starts even while the database is down,
        # and /health says so.
        pool = AsyncConnectionPool(conninfo, min_size=1, max_size=pool_size, open=False)
        await pool.open(wait=False)
        app.state.pool = pool
        feed = app.state.live = LiveFeed(conninfo, live_feed)
        listening = asyncio.create_task(feed.run(), name="live-feed")
        interval = app.state.security.audit_head_interval
        anchoring = asyncio.create_task(audit_head.run(pool, interval), name="audit-head")
        try:
            yield
        finally:
            for task in (listening, anchoring):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
    install_problems(app)
    app.state.token_lifetime = token_lifetime
    app.state.audit_edit_flag_share = audit_edit_flag_share
    app.state.control_request_ttl = control_request_ttl  # seconds a request awaits approval
    app.state.security = security or SecurityPolicy()
    app.state.login_guard = LoginGuard(app.state.security)
    refuse_repeated_query_parameters(app)
    refuse_calendar_overflow(app)
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
    app.include_router(inventory.router)
    app.include_router(inventory_devices.router)
    app.include_router(inventory_bulk.router)
    app.include_router(reads_data.router)
    app.include_router(auth.router)
    app.include_router(live.router)
    app.mount("/live/static", StaticFiles(directory=live.STATIC), name="live-static")
    app.include_router(audit.router)
    app.include_router(users.router)
    app.include_router(control_routes.router)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    instrument(app)  # last: outermost, it sees every answer (api/metrics.py)
    return app
