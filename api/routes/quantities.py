from fastapi import APIRouter

from api.schemas import QuantityPublic
from ingest.quantities import registry

router = APIRouter(prefix="/quantities", tags=["quantities"])


@router.get("", response_model=list[QuantityPublic])
async def list_quantities():
    """Every quantity gridread stores, keyed by OBIS code, with its unit."""
    return [
        QuantityPublic(obis=q.obis, name=q.name, unit=q.unit, kind=q.kind)
        for q in registry().values()
    ]
