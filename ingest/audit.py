"""One row of the audit log, written in the caller's transaction (same as the change it
records). The hash chain is the database's (migration 14's trigger): callers only say who did
what to which entity, with the state before and after."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_INSERT = (
    "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
)
RUNTIME_ACTOR = "gridread"  # the runtime's own steps (jobs, collectors)


def _params(actor: str, action: str, entity: str, entity_id: Any, before: Any, after: Any):
    if not actor or not action or not entity:
        raise ValueError("audit record needs an actor, an action and an entity")
    return (
        actor,
        action,
        entity,
        str(entity_id),
        None if before is None else Jsonb(before),
        None if after is None else Jsonb(after),
    )


def record(
    conn: psycopg.Connection,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    before: Any = None,
    after: Any = None,
) -> int:
    """Append a row; return its id."""
    row = conn.execute(_INSERT, _params(actor, action, entity, entity_id, before, after))
    return row.fetchone()[0]


async def arecord(
    aconn: psycopg.AsyncConnection,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    before: Any = None,
    after: Any = None,
) -> int:
    """`record` on an async connection."""
    cur = await aconn.execute(_INSERT, _params(actor, action, entity, entity_id, before, after))
    return (await cur.fetchone())[0]
