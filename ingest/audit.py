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


# --- reading and verifying (GET /audit, GET /audit/verify) ---------------------------------

# Unusual edits, each named by its rule. A metering point's "base" is its `before` (an
# update) or, for a new period of the same meter, the previous audited state of that meter:
# a multiplier change or an area move is usually a new period, not an update.
UNUSUAL_RULES = ("multiplier_change", "meter_moved_area", "large_read_edit")

LIST_SQL = """
WITH page AS (
    SELECT a.* FROM audit_log a
    WHERE (%(entity)s::text IS NULL OR a.entity = %(entity)s)
      AND (%(entity_id)s::text IS NULL OR a.entity_id = %(entity_id)s)
      AND (%(actor)s::text IS NULL OR a.actor = %(actor)s)
      AND (%(start)s::timestamptz IS NULL OR a.at >= %(start)s)
      AND (%(end)s::timestamptz IS NULL OR a.at < %(end)s)
      AND (%(before_id)s::bigint IS NULL OR a.id < %(before_id)s)
), based AS (
    SELECT page.*, coalesce(page.before, prev.after) AS base FROM page
    LEFT JOIN LATERAL (
        SELECT q.after FROM audit_log q
        WHERE page.entity = 'metering_point' AND page.before IS NULL
          AND q.entity = 'metering_point' AND q.id < page.id
          AND split_part(q.entity_id, '@', 1) = split_part(page.entity_id, '@', 1)
        ORDER BY q.id DESC LIMIT 1
    ) prev ON true
), flagged AS (
    SELECT based.*, array_remove(ARRAY[
        CASE WHEN entity = 'metering_point' AND base IS NOT NULL
              AND (base->>'ct_ratio')::float8 * (base->>'pt_ratio')::float8
                  IS DISTINCT FROM (after->>'ct_ratio')::float8 * (after->>'pt_ratio')::float8
             THEN 'multiplier_change' END,
        CASE WHEN entity = 'metering_point' AND base IS NOT NULL
              AND base->>'area' IS DISTINCT FROM after->>'area'
             THEN 'meter_moved_area' END,
        CASE WHEN entity = 'validated_read' AND action = 'edit'
              AND abs((after->>'value')::float8 - coalesce((before->>'value')::float8, 0))
                  > %(edit_share)s * abs(coalesce((before->>'value')::float8, 0))
             THEN 'large_read_edit' END
    ], NULL) AS unusual
    FROM based
)
SELECT id, at, actor, action, entity, entity_id, before, after, encode(prev_hash, 'hex'),
       encode(hash, 'hex'), unusual
FROM flagged WHERE NOT %(unusual_only)s OR cardinality(unusual) > 0
ORDER BY id DESC LIMIT %(limit)s
"""
LIST_COLUMNS = (
    "id", "at", "actor", "action", "entity", "entity_id", "before", "after", "prev_hash",
    "hash", "unusual",
)  # fmt: skip

# The first row whose stored hashes do not hold: its prev_hash is not the previous row's
# hash (a row removed or inserted around it, or the previous one rewritten), or its hash is
# not sha256(prev_hash || its content) (the row itself changed).
VERIFY_SQL = """
WITH c AS (
    SELECT id, prev_hash, hash,
           lag(hash) OVER (ORDER BY id) AS stored_prev,
           sha256(prev_hash || audit_canonical(id, at, actor, action, entity, entity_id,
                                               before, after)) AS recomputed
    FROM audit_log
)
SELECT (SELECT count(*) FROM c),
       (SELECT id FROM c WHERE prev_hash <> coalesce(stored_prev, %(genesis)s)
                             OR hash <> recomputed ORDER BY id LIMIT 1),
       (SELECT CASE WHEN hash <> recomputed THEN 'content'  ELSE 'link' END FROM c
         WHERE prev_hash <> coalesce(stored_prev, %(genesis)s) OR hash <> recomputed
         ORDER BY id LIMIT 1),
       (SELECT id FROM c ORDER BY id DESC LIMIT 1),
       (SELECT hash FROM c ORDER BY id DESC LIMIT 1),
       (SELECT last_id FROM audit_chain), (SELECT hash FROM audit_chain)
"""


def verify_chain_sql() -> tuple[str, dict]:
    return VERIFY_SQL, {"genesis": bytes(32)}


def verdict(row: tuple) -> dict:
    """The result of VERIFY_SQL as the API's body: ok, rows, first_broken (id, reason),
    head (the last row's hash, to be kept elsewhere: rewriting the whole log from a row on
    is only detectable against a head recorded before)."""
    rows, broken_id, kind, last_id, last_hash, head_id, head_hash = row
    first_broken = None
    if broken_id is not None:
        reason = (
            "its content does not match its hash (the row was changed)"
            if kind == "content"
            else "its prev_hash is not the previous row's hash (a row before it was removed,"
            " added or rewritten)"
        )
        first_broken = {"id": broken_id, "reason": reason}
    elif (last_id or 0) != head_id or (last_hash is not None and last_hash != head_hash):
        first_broken = {
            "id": head_id,
            "reason": "the chain's head names a row that is not the last one (rows at the"
            " end were removed)",
        }
    return {
        "ok": first_broken is None,
        "rows": rows,
        "first_broken": first_broken,
        "head": bytes(head_hash).hex() if head_hash is not None else None,
    }
