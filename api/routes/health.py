from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from api import crud
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health(request: Request):
    """200 when the API can query the database, 503 otherwise."""
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=2) as conn:
            mode = await crud.storage_mode(conn=conn)
    except Exception as exc:
        body = Health(status="degraded", database=f"unavailable: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", database="ok", storage_mode=mode)
