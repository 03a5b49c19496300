"""CSV export and import of the topology tables: the `gridread topology` commands round-trip
a stored site into a fresh database; bad rows are one-line errors with the CSV line number
and nothing is written (real PostgreSQL)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collectors.exceptions import ConfigError
from gridread.inventory import store_inventory
from gridread.topology_csv import TABLES, export_csv, import_csv, read_csv
from ingest.schema import migrate
from tests.test_cli import one_error_line, run_cli
from tests.topology_site import inventory


@pytest.fixture
def fresh_url(pg_admin_url: str, storage) -> Iterator[str]:
    """A second migrated database with the site's devices and no topology."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(pg_admin_url), "dbname": name})
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, storage=storage)
    with psycopg.connect(url) as conn:
        store_inventory(conn, inventory(""), actor="test")
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _audit_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]


def test_export_import_export_round_trips_through_the_cli(migrated_url, fresh_url, tmp_path):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
    before = _audit_count(fresh_url)
    for table in TABLES:  # parents first: their names resolve the children's
        out = run_cli(
            "topology", "export", "--table", table, env={"GRIDREAD_DATABASE_URL": migrated_url}
        )
        assert out.returncode == 0, out.stderr
        path = tmp_path / f"{table}.csv"
        path.write_text(out.stdout)
        imported = run_cli(
            "topology",
            "import",
            str(path),
            "--table",
            table,
            env={"GRIDREAD_DATABASE_URL": fresh_url},
        )
        assert imported.returncode == 0, imported.stderr
        again = run_cli(
            "topology", "export", "--table", table, env={"GRIDREAD_DATABASE_URL": fresh_url}
        )
        assert again.stdout == out.stdout, table
    # each entry created once, audited: 1 + 1 + 3 + 9 + 2 + 1
    assert _audit_count(fresh_url) - before == 17
    points = (tmp_path / "metering_points.csv").read_text().splitlines()
    assert points[0] == (
        "meter,role,area,feeder,phase,ct_ratio,pt_ratio,customer_class,tariff,location,"
        "valid_from,valid_to"
    )
    assert "a-01-total,area_total,a-01,,ABC,80.0,1.0,,,,,2026-03-01T00:00:00+08:00" in points


CSV_POINTS = """meter,role,area,ct_ratio,valid_from,valid_to
a-01-total,area_total,a-01,80,,2026-03-01
a-01-total,area_total,a-01,120,2026-03-01,
"""


def _export(url: str, table: str) -> str:
    buf = io.StringIO()
    with psycopg.connect(url) as conn:
        export_csv(conn, table, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "text, error",
    [
        (
            CSV_POINTS + "a-02-total,area_total,a-02,0,,\n",
            "points.csv line 4: metering_point a-02-total: ct_ratio: 0 must be > 0",
        ),
        (
            CSV_POINTS + "a-02-total,area_total,a-02,forty,,\n",
            "points.csv line 4: metering_point a-02-total: ct_ratio: Input should be a valid"
            " number",
        ),
        (
            CSV_POINTS + "a-02-total,area_total,a-09,1,,\n",
            "points.csv line 4: metering_point a-02-total: unknown area 'a-09'",
        ),
        (
            CSV_POINTS + "a-01-total,customer,a-02,1,2026-02-01,\n",
            "points.csv line 4: metering_point a-01-total: meter in area a-01 and in area a-02"
            " from 2026-02-01T00:00:00+08:00",
        ),
        (
            CSV_POINTS + "a-02-total,area_total,a-02\n",
            "points.csv line 4: 3 cells, the header has 6",
        ),
        (
            "meter,role,area,colour\n",
            "points.csv line 1: header meter,role,area,colour: expected columns among meter,",
        ),
        (
            CSV_POINTS,  # a-02 and d-01 exist, stored, with no total meter
            "stored area a-02: area a-02 has no area_total metering point",
        ),
    ],
)
def test_a_bad_csv_row_is_one_line_with_its_line_number_and_nothing_is_written(
    migrated_url, fresh_url, text, error
):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
    _site_without_points_from(migrated_url, fresh_url)
    before = _audit_count(fresh_url)
    with psycopg.connect(fresh_url) as conn, pytest.raises(ConfigError) as exc:
        import_csv(conn, text, "metering_points", source="points.csv", actor="test")
    assert str(exc.value).startswith(error), str(exc.value)
    assert _audit_count(fresh_url) == before


def _site_without_points_from(src: str, dst: str) -> None:
    with psycopg.connect(dst) as conn:
        for table in ("substations", "feeders", "areas"):
            import_csv(conn, _export(src, table), table, source=f"{table}.csv", actor="test")


def test_the_cli_reports_a_bad_row_on_one_line(fresh_url, tmp_path: Path):
    path = tmp_path / "subs.csv"
    path.write_text("name,voltage_kv\nsub-01,35\nsub-02,-10\n")
    line = one_error_line(
        run_cli(
            "topology",
            "import",
            str(path),
            "--table",
            "substations",
            env={"GRIDREAD_DATABASE_URL": fresh_url},
        )
    )
    assert line == (
        f"gridread: error: {path} line 3: substation sub-02: voltage_kv: Input should be"
        " greater than 0 (got '-10')"
    )
    with psycopg.connect(fresh_url) as conn:
        assert conn.execute("SELECT count(*) FROM substations").fetchone() == (0,)


def test_a_bare_carriage_return_is_a_line_end_not_a_crash():
    # schemathesis sent "\r¦…" to PUT /inventory/csv/replacements: csv.Error, a 500
    with pytest.raises(ConfigError, match="empty file"):
        read_csv("\r¦\xf2U", "replacements", source="x.csv")
