from fastapi import APIRouter, Depends

from api.schemas import QuantityPublic
from api.security import AUTH_RESPONSES, Permission, require
from ingest.quantities import registry

router = APIRouter(
    prefix="/quantities",
    tags=["quantities"],
    responses=AUTH_RESPONSES,
    dependencies=[Depends(require(Permission.READ))],
)


@router.get("", response_model=list[QuantityPublic])
async def list_quantities():
    """Every quantity gridread stores, keyed by OBIS code, with its unit."""
    return [
        QuantityPublic(obis=q.obis, name=q.name, unit=q.unit, kind=q.kind)
        for q in registry().values()
    ]
