from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from api import crud
from api.schemas import Health, ServiceHealth

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request):
    """200 and ``"status": "ok"`` when the API can query the database and no service is
    failing; 503 and ``"degraded"`` when the database is unavailable or a service is failing
    (restarting, or failed less than ``service_stable_after`` ago). Every service is listed
    with its state; one that finished (nothing to do) is not a fault."""
    services = [ServiceHealth(**s) for s in request.app.state.service_states()]
    pool: AsyncConnectionPool = request.app.state.pool
    mode = None
    try:
        async with pool.connection(timeout=2) as conn:
            mode = await crud.storage_mode(conn=conn)
        database = "ok"
    except Exception as exc:
        database = f"unavailable: {type(exc).__name__}"
    ok = database == "ok" and not any(s.degraded for s in services)
    body = Health(
        status="ok" if ok else "degraded",
        database=database,
        storage_mode=mode,
        services=services,
    )
    return body if ok else JSONResponse(body.model_dump(), status_code=503)
