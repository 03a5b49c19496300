"""PostgreSQL's binary COPY format for fixed-width, non-null columns, as numpy structured
arrays: no Python loop per row in either direction.

A binary COPY stream is a 19-byte header (signature, flags, extension length), then per row
an int16 field count and per field an int32 length and the value (big-endian), then an
int16 −1 trailer. With only int2/int4/int8/float8 columns and no NULLs every row has the same
size, so one `np.frombuffer` reads them all and one structured array writes them.
"""

from __future__ import annotations

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

_SIZES = {"int2": 2, "int4": 4, "int8": 8, "float8": 8}
_KINDS = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8"}


class CopyFormatError(ValueError):
    """A binary COPY stream that is not the fixed-width shape asked for."""


def _row_dtype(types: list[str]) -> np.dtype:
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, t in enumerate(types):
        fields += [(f"len{i}", ">i4"), (f"v{i}", _KINDS[t])]
    return np.dtype(fields)


def decode(data: bytes, types: list[str]) -> list[np.ndarray]:
    """The columns of a binary COPY stream of `types` (one native-endian array each)."""
    if not data.startswith(SIGNATURE):
        raise CopyFormatError("not a binary COPY stream (signature missing)")
    ext = int.from_bytes(data[15:19], "big")
    body = data[19 + ext :]
    if not body.endswith(TRAILER):
        raise CopyFormatError("binary COPY stream without its trailer")
    body = body[: -len(TRAILER)]
    dtype = _row_dtype(types)
    if len(body) % dtype.itemsize:
        raise CopyFormatError("binary COPY rows are not fixed-width (a NULL or a wide value?)")
    rows = np.frombuffer(body, dtype=dtype)
    if len(rows) and (
        np.any(rows["count"] != len(types))
        or any(np.any(rows[f"len{i}"] != _SIZES[t]) for i, t in enumerate(types))
    ):
        raise CopyFormatError("binary COPY rows do not have the expected columns")
    return [rows[f"v{i}"].astype(_KINDS[t][1:]) for i, t in enumerate(types)]


def encode(columns: list[tuple[np.ndarray, str]]) -> bytes:
    """A binary COPY stream of the given (values, type) columns, all of one length."""
    types = [t for _, t in columns]
    n = len(columns[0][0]) if columns else 0
    rows = np.empty(n, dtype=_row_dtype(types))
    rows["count"] = len(types)
    for i, (values, t) in enumerate(columns):
        if len(values) != n:
            raise ValueError("columns of different lengths")
        rows[f"len{i}"] = _SIZES[t]
        rows[f"v{i}"] = values
    return HEADER + rows.tobytes() + TRAILER
