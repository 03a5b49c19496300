"""The audit chain's head (last row's id and hash) exported outside the database: a
Prometheus info/gauge and a log line, after each verification and every
`audit_head_interval` seconds. Kept elsewhere (the metrics store, the log archive), it is the
anchor a rewrite of the whole chain by the database's owner cannot match."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge, Info
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("gridread.audit")

HEAD_ID = Gauge("gridread_audit_chain_head_id", "Id of the audit log's last chained row")
HEAD = Info("gridread_audit_chain_head", "The audit chain's head: last row id and its hash")


def export(head_id: int, head_hash: bytes | str | None) -> None:
    hex_hash = head_hash if isinstance(head_hash, str) else bytes(head_hash or b"").hex()
    HEAD_ID.set(head_id)
    HEAD.info({"id": str(head_id), "hash": hex_hash})
    log.info("audit chain head id=%d hash=%s", head_id, hex_hash)


async def read_and_export(pool: AsyncConnectionPool) -> None:
    async with pool.connection(timeout=5) as conn:
        cur = await conn.execute("SELECT last_id, hash FROM audit_chain")
        row = await cur.fetchone()
    if row is not None:
        export(row[0], row[1])


async def run(pool: AsyncConnectionPool, interval: float) -> None:
    """Export the head now and every `interval` seconds (a database outage only skips one)."""
    while True:
        try:
            await read_and_export(pool)
        except Exception as exc:
            log.warning("audit chain head not exported: %s", exc)
        await asyncio.sleep(interval)
