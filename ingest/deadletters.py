"""Dead letters: what could not be stored, with the reason and the bytes as received.

A dead letter must be storable whatever it is about: the reason is made valid text (no NUL,
no lone surrogates, bounded length) and the raw bytes are kept up to a cap, with their
original size, so one 20 MB message cannot bloat the table.
"""

from __future__ import annotations

import json

import psycopg

REASON_MAX = 4000  # characters of reason kept; the rest is summarised by its length
DEFAULT_RAW_MAX = 64 * 1024


def sanitise(text: str, limit: int = REASON_MAX) -> str:
    """Text PostgreSQL's text and jsonb accept: lone surrogates and NUL escaped, capped."""
    clean = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(clean) > limit:
        clean = f"{clean[:limit]}… ({len(clean) - limit} more characters)"
    return clean


def store_dead_letter(
    conn: psycopg.Connection,
    *,
    source: str,
    reason: str,
    payload: dict[str, str],
    raw: bytes | None = None,
    raw_max: int = DEFAULT_RAW_MAX,
) -> None:
    """Insert one dead letter (in the caller's transaction, if any)."""
    conn.execute(
        "INSERT INTO dead_letters (source, reason, payload, raw, raw_size)"
        " VALUES (%s, %s, %s, %s, %s)",
        (
            source,
            sanitise(reason),
            json.dumps({k: sanitise(v) for k, v in payload.items()}),
            None if raw is None else raw[:raw_max],
            None if raw is None else len(raw),
        ),
    )
