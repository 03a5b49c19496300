"""Load control: relay disconnect / reconnect and demand limits, with two-person approval.

A load operator requests (``control.request``), another user with ``control.approve``
approves or rejects, the runtime's executor carries the command out on the collector that
owns the device and records the meter's reply and the relay state read back. Unapproved
requests expire after ``control_request_ttl``. Every step is in the audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, model_validator

from api.deps import Conn
from api.params import TEXT, UNAVAILABLE
from api.routes.reliability import _SharedPathRoute  # a 405 lists GET and POST of a path
from api.schemas import ErrorPublic
from api.security import AUTH_RESPONSES, Permission, Principal, require
from collectors.control import refusal
from collectors.exceptions import ConfigError
from collectors.modbus.registermap import load_register_map
from ingest import control

router = APIRouter(
    prefix="/control",
    tags=["load control"],
    responses={**AUTH_RESPONSES, **UNAVAILABLE},
    route_class=_SharedPathRoute,
)

Reader = Annotated[Principal, Depends(require(Permission.READ))]
Requester = Annotated[Principal, Depends(require(Permission.CONTROL_REQUEST))]
Approver = Annotated[Principal, Depends(require(Permission.CONTROL_APPROVE))]

BIGINT = 2**63 - 1
CommandId = Annotated[int, Path(ge=1, le=BIGINT, description="the command's id")]
Status = Literal[
    "requested", "approved", "executing", "succeeded", "failed", "rejected", "expired", "cancelled"
]


class CommandCreate(BaseModel):
    device: str = Field(min_length=1, max_length=64, pattern=TEXT, examples=["demo-meter-03"])
    action: Literal["disconnect", "reconnect", "demand_limit"]
    parameters: dict[str, float] = Field(
        default_factory=dict,
        description='demand_limit: {"kw": limit}; disconnect / reconnect: none',
        examples=[{}, {"kw": 12.5}],
    )
    reason: str = Field(
        min_length=1, max_length=500, pattern=r"^[^\x00]*\S[^\x00]*$", examples=["arrears: 114"]
    )

    @model_validator(mode="after")
    def _parameters(self) -> CommandCreate:
        if self.action == "demand_limit":
            if set(self.parameters) != {"kw"} or not 0 < self.parameters["kw"] <= 100_000:
                raise ValueError('demand_limit needs parameters {"kw": a limit > 0}')
        elif self.parameters:
            raise ValueError(f"{self.action} takes no parameters")
        return self


class Decision(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00]*\S[^\x00]*$")


class CommandPublic(BaseModel):
    id: int
    device: str
    action: str
    parameters: dict[str, Any]
    status: Status
    requested_by: str
    requested_at: datetime
    reason: str
    expires_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    decided_by: str | None = Field(description="who rejected or cancelled it")
    decided_at: datetime | None
    executed_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None = Field(
        description="the meter's reply and the relay state read back (relay: open | closed)"
    )
    error: str | None


NOT_JSON = {400: {"model": ErrorPublic, "description": "The body is not JSON"}}
ERRORS = {
    404: {"model": ErrorPublic, "description": "no such command (or device)"},
    409: {"model": ErrorPublic, "description": "past the state this step needs, or expired"},
}


def _http(exc: control.ControlError) -> HTTPException:
    if isinstance(exc, control.UnknownCommand):
        return HTTPException(404, str(exc))
    if isinstance(exc, control.NotAllowed):
        return HTTPException(403, str(exc))
    return HTTPException(409, str(exc))


@router.post(
    "/commands",
    status_code=201,
    response_model=CommandPublic,
    responses={
        **NOT_JSON,
        404: ERRORS[404],
        422: {"description": "the body is invalid, or the device cannot do this action"},
    },
)
async def request_command(body: CommandCreate, who: Requester, conn: Conn, request: Request):
    """Request a command; it waits for another user's approval until it expires."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, kind, protocol, register_map, attributes FROM devices"
            " WHERE name = %s",
            (body.device,),
        )
        device = await cur.fetchone()
    if device is None:
        raise HTTPException(404, f"no device {body.device!r}")
    regmap = None
    if device["protocol"] == "modbus_tcp" and device["register_map"]:
        try:
            regmap = load_register_map(device["register_map"])
        except ConfigError:
            regmap = None  # a map by a path relative to the config file: the executor checks
    why = refusal(
        name=device["name"],
        kind=device["kind"],
        protocol=device["protocol"],
        attributes=device["attributes"],
        regmap=regmap,
        action=body.action,
    )
    if why:
        raise HTTPException(422, why)
    row = await control.request_command(
        conn,
        device_id=device["id"],
        action=body.action,
        parameters=body.parameters,
        reason=body.reason,
        requested_by=who.name,
        actor=who.actor,
        ttl=timedelta(seconds=request.app.state.control_request_ttl),
    )
    await conn.commit()  # before the answer: the approver may act on it at once
    return row


@router.get("/commands", response_model=list[CommandPublic])
async def list_commands(
    _: Reader,
    conn: Conn,
    status: Status | None = None,
    device: Annotated[str | None, Query(pattern=TEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=BIGINT, description="page: ids below")] = None,
):
    """Newest first."""
    return await control.list_commands(
        conn, status=status, device=device, limit=limit, before_id=before
    )


@router.get("/commands/{command_id}", response_model=CommandPublic, responses={404: ERRORS[404]})
async def get_command(command_id: CommandId, _: Reader, conn: Conn):
    row = await control.get_command(conn, command_id)
    if row is None:
        raise HTTPException(404, f"no control command {command_id}")
    return row


@router.post("/commands/{command_id}/approve", response_model=CommandPublic, responses=ERRORS)
async def approve(command_id: CommandId, who: Approver, conn: Conn):
    """Approve another user's request (never one's own: 403). The executor runs it next."""
    try:
        row = await control.approve(conn, command_id, by=who.name, actor=who.actor)
    except control.ControlError as exc:
        raise _http(exc) from None
    await conn.commit()
    return row


@router.post(
    "/commands/{command_id}/reject", response_model=CommandPublic, responses={**ERRORS, **NOT_JSON}
)
async def reject(command_id: CommandId, body: Decision, who: Approver, conn: Conn):
    """Refuse another user's request, with the reason."""
    try:
        row = await control.reject(
            conn, command_id, by=who.name, actor=who.actor, reason=body.reason
        )
    except control.ControlError as exc:
        raise _http(exc) from None
    await conn.commit()
    return row


@router.post("/commands/{command_id}/cancel", response_model=CommandPublic, responses=ERRORS)
async def cancel(command_id: CommandId, who: Requester, conn: Conn):
    """Withdraw one's own request before it is approved."""
    try:
        row = await control.cancel(conn, command_id, by=who.name, actor=who.actor)
    except control.ControlError as exc:
        raise _http(exc) from None
    await conn.commit()
    return row
