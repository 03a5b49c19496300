"""Dead letters: what could not be stored, with the reason and the bytes as received.

A dead letter must be storable whatever it is about: the reason is made valid text (no NUL,
no lone surrogates, bounded length) and the raw bytes are kept up to a cap, with their
original size, so one 20 MB message cannot bloat the table. The collectors' store
(ingest/store.py) writes them; a dead letter the database refuses is stored again as
`refused()`: a sanitised reason and the raw bytes, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

REASON_MAX = 4000  # characters of reason kept; the rest is summarised by its length
DEFAULT_RAW_MAX = 64 * 1024

INSERT_SQL = (
    "INSERT INTO dead_letters (source, reason, payload, raw, raw_size) VALUES (%s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class DeadLetter:
    source: str  # e.g. "mqtt"
    reason: str
    payload: dict[str, object] = field(default_factory=dict)  # e.g. {"topic": …}; JSON
    raw: bytes | None = None  # as received; capped when stored


def sanitise(text: str, limit: int = REASON_MAX) -> str:
    """Text PostgreSQL's text and jsonb accept: lone surrogates and NUL escaped, capped."""
    clean = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(clean) > limit:
        clean = f"{clean[:limit]}… ({len(clean) - limit} more characters)"
    return clean


def dead_letter_row(letter: DeadLetter, raw_max: int = DEFAULT_RAW_MAX) -> tuple:
    """INSERT_SQL's parameters: reason and payload's text sanitised, raw capped, its size
    kept."""
    raw = letter.raw
    return (
        letter.source,
        sanitise(letter.reason),
        json.dumps(
            {k: sanitise(v) if isinstance(v, str) else v for k, v in letter.payload.items()}
        ),
        None if raw is None else raw[:raw_max],
        None if raw is None else len(raw),
    )


def refused(letter: DeadLetter, exc: BaseException) -> DeadLetter:
    """What is stored instead of a dead letter the database refused: why, and the bytes."""
    why = f"dead letter refused ({type(exc).__name__}); raw bytes kept"
    return DeadLetter(letter.source, why, raw=letter.raw)
