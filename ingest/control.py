"""Load-control commands in the database (migration 15): every step a transaction that also
writes its `audit_log` row, so a command's history is the audit log's.

The API requests, approves, rejects and cancels; the executor (collectors/control.py) expires
what nobody approved in time, claims approved commands (``FOR UPDATE SKIP LOCKED``: several
executors never run one twice) and records the outcome. Who may do what is checked here too,
as data of the row: nobody approves their own request (also a CHECK), only the requester
cancels, and only a ``requested`` command changes by a person's hand.

    ControlError
    ├── UnknownCommand     no such command
    ├── NotAllowed         the caller may not do this to this command (own approval …)
    └── WrongState         the command is past the state the step needs (or expired)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.audit import RUNTIME_ACTOR, arecord

ACTIONS = ("disconnect", "reconnect", "demand_limit")
EXECUTOR = RUNTIME_ACTOR  # the audit log's actor for the executor's steps
ENTITY = "control_command"


class ControlError(Exception):
    """Base of the command store's refusals."""


class UnknownCommand(ControlError):
    pass


class NotAllowed(ControlError):
    pass


class WrongState(ControlError):
    pass


_SELECT = """
    SELECT c.id, d.name AS device, c.device_id, c.action, c.parameters, c.status,
        c.requested_by, c.requested_at, c.reason, c.expires_at, c.approved_by, c.approved_at,
        c.decided_by, c.decided_at, c.executed_at, c.finished_at, c.result, c.error
    FROM control_commands c JOIN devices d ON d.id = c.device_id
"""


def _json(row: dict[str, Any] | None) -> Any:
    return None if row is None else json.loads(json.dumps(row, default=str))


async def _audit(
    conn: AsyncConnection, actor: str, step: str, before: dict | None, after: dict
) -> None:
    await arecord(conn, actor, f"control.{step}", ENTITY, after["id"], _json(before), _json(after))


async def get_command(conn: AsyncConnection, command_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SELECT + " WHERE c.id = %s", (command_id,))
        return await cur.fetchone()


async def list_commands(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    device: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `before_id` pages on."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _SELECT + " WHERE (%(status)s::text IS NULL OR c.status = %(status)s)"
            " AND (%(device)s::text IS NULL OR d.name = %(device)s)"
            " AND (%(before)s::bigint IS NULL OR c.id < %(before)s)"
            " ORDER BY c.id DESC LIMIT %(limit)s",
            {"status": status, "device": device, "before": before_id, "limit": limit},
        )
        return await cur.fetchall()


async def request_command(
    conn: AsyncConnection,
    *,
    device_id: int,
    action: str,
    parameters: dict[str, Any],
    reason: str,
    requested_by: str,
    actor: str,
    ttl: timedelta,
) -> dict[str, Any]:
    if action not in ACTIONS:
        raise ValueError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
    async with conn.transaction():
        (command_id,) = await (
            await conn.execute(
                "INSERT INTO control_commands (device_id, action, parameters, requested_by,"
                " reason, expires_at) VALUES (%s, %s, %s, %s, %s, now() + %s) RETURNING id",
                (device_id, action, Jsonb(parameters), requested_by, reason, ttl),
            )
        ).fetchone()
        row = await get_command(conn, command_id)
        assert row is not None
        await _audit(conn, actor, "request", None, row)
    return row


async def _locked(conn: AsyncConnection, command_id: int) -> dict[str, Any]:
    await conn.execute("SELECT 1 FROM control_commands WHERE id = %s FOR UPDATE", (command_id,))
    row = await get_command(conn, command_id)
    if row is None:
        raise UnknownCommand(f"no control command {command_id}")
    return row


def _open(row: dict[str, Any], now: datetime, step: str) -> None:
    if row["status"] != "requested":
        raise WrongState(f"command {row['id']} is {row['status']}: it cannot be {step}")
    if row["expires_at"] <= now:
        raise WrongState(f"command {row['id']} expired at {row['expires_at'].isoformat()}")


async def _now(conn: AsyncConnection) -> datetime:
    (now,) = await (await conn.execute("SELECT now()")).fetchone()
    return now


async def approve(conn: AsyncConnection, command_id: int, *, by: str, actor: str) -> dict[str, Any]:
    """`by`: the approving user's name (never the requester's)."""
    async with conn.transaction():
        before = await _locked(conn, command_id)
        if before["requested_by"] == by:
            raise NotAllowed(f"{by} requested command {command_id}: another user must approve it")
        _open(before, await _now(conn), "approved")
        await conn.execute(
            "UPDATE control_commands SET status = 'approved', approved_by = %s,"
            " approved_at = now() WHERE id = %s",
            (by, command_id),
        )
        after = await get_command(conn, command_id)
        assert after is not None
        await _audit(conn, actor, "approve", before, after)
    return after


async def reject(
    conn: AsyncConnection, command_id: int, *, by: str, actor: str, reason: str
) -> dict[str, Any]:
    async with conn.transaction():
        before = await _locked(conn, command_id)
        if before["requested_by"] == by:
            raise NotAllowed(f"{by} requested command {command_id}: cancel it instead")
        _open(before, await _now(conn), "rejected")
        why = f"rejected by {by}: {reason}"
        return await _decide(conn, before, ("reject", "rejected"), by, actor, why)


async def cancel(
    conn: AsyncConnection, command_id: int, *, by: str, actor: str, reason: str | None = None
) -> dict[str, Any]:
    """Only the requester cancels, and only before approval."""
    async with conn.transaction():
        before = await _locked(conn, command_id)
        if before["requested_by"] != by:
            raise NotAllowed(f"only {before['requested_by']} may cancel command {command_id}")
        if before["status"] != "requested":
            raise WrongState(f"command {command_id} is {before['status']}: it cannot be cancelled")
        why = f"cancelled by {by}" + (f": {reason}" if reason else "")
        return await _decide(conn, before, ("cancel", "cancelled"), by, actor, why)


async def _decide(
    conn: AsyncConnection, before: dict, step: tuple[str, str], by: str, actor: str, why: str
) -> dict[str, Any]:
    verb, status = step
    await conn.execute(
        "UPDATE control_commands SET status = %s, decided_by = %s, decided_at = now(),"
        " finished_at = now(), error = %s WHERE id = %s",
        (status, by, why, before["id"]),
    )
    after = await get_command(conn, before["id"])
    assert after is not None
    await _audit(conn, actor, verb, before, after)
    return after


async def expire_due(conn: AsyncConnection) -> list[int]:
    """Requests nobody approved before `expires_at` become expired, approved ones not started
    by then failed; returns their ids."""
    expired = []
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM control_commands WHERE status = 'requested' AND expires_at <= now()"
            " ORDER BY id FOR UPDATE SKIP LOCKED"
        )
        for (command_id,) in await cur.fetchall():
            before = await get_command(conn, command_id)
            await conn.execute(
                "UPDATE control_commands SET status = 'expired', finished_at = now(),"
                " error = 'not approved before ' || expires_at::text WHERE id = %s",
                (command_id,),
            )
            after = await get_command(conn, command_id)
            assert after is not None
            await _audit(conn, EXECUTOR, "expire", before, after)
            expired.append(command_id)
        cur = await conn.execute(
            "SELECT id FROM control_commands WHERE status = 'approved' AND expires_at <= now()"
            " ORDER BY id FOR UPDATE SKIP LOCKED"
        )
        for (command_id,) in await cur.fetchall():  # approved, but never started in time
            before = await get_command(conn, command_id)
            await conn.execute(
                "UPDATE control_commands SET status = 'failed', finished_at = now(),"
                " error = 'approved, but not started before it expired at ' || expires_at::text"
                " WHERE id = %s",
                (command_id,),
            )
            after = await get_command(conn, command_id)
            assert after is not None
            await _audit(conn, EXECUTOR, "fail", before, after)
            expired.append(command_id)
    return expired


async def claim_next(conn: AsyncConnection) -> dict[str, Any] | None:
    """The oldest approved command, now `executing` (committed: a crash leaves it so, never
    runs it twice); None when there is none."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM control_commands WHERE status = 'approved' AND expires_at > now()"
            " ORDER BY approved_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        found = await cur.fetchone()
        if found is None:
            return None
        before = await get_command(conn, found[0])
        await conn.execute(
            "UPDATE control_commands SET status = 'executing', executed_at = now() WHERE id = %s",
            found,
        )
        after = await get_command(conn, found[0])
        assert after is not None and before is not None
        await _audit(conn, EXECUTOR, "execute", before, after)
    return after


async def finish(
    conn: AsyncConnection,
    command_id: int,
    *,
    result: dict[str, Any] | None,
    error: str | None,
) -> dict[str, Any]:
    """`error` None: succeeded, else failed with it; `result` what the device said."""
    status = "succeeded" if error is None else "failed"
    async with conn.transaction():
        before = await _locked(conn, command_id)
        await conn.execute(
            "UPDATE control_commands SET status = %s, finished_at = now(), result = %s,"
            " error = %s WHERE id = %s",
            (status, None if result is None else Jsonb(result), error, command_id),
        )
        after = await get_command(conn, command_id)
        assert after is not None
        await _audit(conn, EXECUTOR, "succeed" if error is None else "fail", before, after)
    return after


async def fail_stranded(conn: AsyncConnection, older_than: timedelta) -> list[int]:
    """Commands left `executing` longer than `older_than` (the executor stopped mid-way):
    failed, since nobody knows whether the meter acted; returns their ids."""
    stranded = []
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM control_commands WHERE status = 'executing'"
            " AND executed_at < now() - %s ORDER BY id FOR UPDATE SKIP LOCKED",
            (older_than,),
        )
        for (command_id,) in await cur.fetchall():
            before = await get_command(conn, command_id)
            await conn.execute(
                "UPDATE control_commands SET status = 'failed', finished_at = now(),"
                " error = 'the executor stopped while running it: the relay state is unknown'"
                " WHERE id = %s",
                (command_id,),
            )
            after = await get_command(conn, command_id)
            assert after is not None
            await _audit(conn, EXECUTOR, "fail", before, after)
            stranded.append(command_id)
    return stranded
