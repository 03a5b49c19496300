"""CSV import and export of one topology table, for a utility's existing ledgers.

The header is the table's keys in the inventory file (README "Grid topology"); an empty cell
is an absent key. Instants are written ISO 8601 with the site zone's offset, dates as
YYYY-MM-DD, and read as the file's are (a date: local midnight in the site's zone). An
import is the same as the file's tables of that kind: validated with what is stored, one
transaction, each change audited; a metering-point import must carry every stored point
(export, edit, import)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import psycopg

from collectors.exceptions import ConfigError
from gridread.topology import SPECS, Topology, entry_name, parse_entry
from gridread.topology_store import load_topology, store_topology
from ingest.localtime import DEFAULT_TIMEZONE

TABLES = {
    "substations": "substation",
    "feeders": "feeder",
    "areas": "area",
    "metering_points": "metering_point",
    "meter_assets": "meter_asset",
    "replacements": "replacement",
}


def header(table: str) -> list[str]:
    return list(SPECS[TABLES[table]][0].model_fields)


def _cell(v: Any, tz: ZoneInfo) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.astimezone(tz).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def write_csv(specs: Iterable[Any], table: str, out: TextIO, *, timezone: str) -> None:
    tz = ZoneInfo(timezone)
    columns = header(table)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for spec in specs:
        writer.writerow([_cell(getattr(spec, c), tz) for c in columns])


def export_csv(
    conn: psycopg.Connection, table: str, out: TextIO, *, timezone: str = DEFAULT_TIMEZONE
) -> None:
    """The stored table as CSV, in a stable order (by name; points by meter and start)."""
    write_csv(load_topology(conn)[TABLES[table]], table, out, timezone=timezone)


def read_csv(text: str, table: str, *, source: str, timezone: str = DEFAULT_TIMEZONE) -> Topology:
    """The rows of one table, each validated alone; errors name the CSV line."""
    if table not in TABLES:
        raise ConfigError(f"{source}: unknown table {table!r}: one of {', '.join(TABLES)}")
    key, tz = TABLES[table], ZoneInfo(timezone)
    reader = csv.reader(io.StringIO(text, newline=""))  # a bare \r ends a line, as csv wants
    columns = next(reader, None)
    if not columns:
        raise ConfigError(f"{source}: empty file: expected a header line")
    unknown = [c for c in columns if c not in header(table)]
    if unknown or len(set(columns)) != len(columns):
        raise ConfigError(
            f"{source} line 1: header {','.join(columns)}: expected columns among"
            f" {','.join(header(table))}, each once"
        )
    topo = Topology(provided={key}, source=source)
    for row in reader:
        line = reader.line_num
        if not any(row):
            continue
        if len(row) != len(columns):
            raise ConfigError(
                f"{source} line {line}: {len(row)} cells, the header has {len(columns)}"
            )
        entry = {c: v for c, v in zip(columns, row, strict=True) if v != ""}
        where = f"{source} line {line}: {key} {entry_name(key, entry)}"
        topo.entries[key].append((where, parse_entry(key, entry, where, tz)))
    return topo


def import_csv(
    conn: psycopg.Connection,
    text: str,
    table: str,
    *,
    source: str,
    actor: str,
    timezone: str = DEFAULT_TIMEZONE,
) -> int:
    """Validate the rows with what is stored, then write them in one transaction (audited).
    Returns the number of entries created or changed."""
    topo = read_csv(text, table, source=source, timezone=timezone)
    return store_topology(conn, topo, source=source, actor=actor)
