"""The topology tables of the config file: parsed, validated as a whole with one-line errors,
stored in the device load's transaction with history and audit (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from collectors.exceptions import ConfigError
from gridread.inventory import store_inventory
from gridread.topology import areas, feeders, placements_between, replacements_between
from tests.topology_site import TOPOLOGY, inventory

CST = "+08:00"


def edited(old: str, new: str) -> str:
    assert old in TOPOLOGY, old
    return TOPOLOGY.replace(old, new, 1)


POINT_C1 = 'meter = "a-01-c0001"\nrole = "customer"\narea = "a-01"\nphase = "B"'
TOTAL_A02 = 'meter = "a-02-total"\nrole = "area_total"\narea = "a-02"\nct_ratio = 40'


@pytest.mark.parametrize(
    "topology, error",
    [
        (
            edited('substation = "sub-01"', 'substation = "sub-99"'),
            "site.toml: feeder 1 (f-01): unknown substation 'sub-99'",
        ),
        (
            edited('name = "a-02"\nfeeder = "f-01"', 'name = "a-02"\nfeeder = "f-9"'),
            "site.toml: area 2 (a-02): unknown feeder 'f-9'",
        ),
        (
            edited(TOTAL_A02, TOTAL_A02.replace('area = "a-02"', 'area = "a-03"')),
            "site.toml: metering_point 4 (a-02-total): unknown area 'a-03'",
        ),
        (
            edited('meter = "a-02-total"\nrole', 'meter = "nope"\nrole'),
            "site.toml: metering_point 4 (nope): unknown meter 'nope'",
        ),
        (
            # a concentrator is a device but not a meter
            edited('meter = "a-02-total"\nrole', 'meter = "jzq-1"\nrole'),
            "site.toml: metering_point 4 (jzq-1): unknown meter 'jzq-1'",
        ),
        (
            # the first period of a-01-c0001 left open: in a-01 and a-02 from March
            edited(
                'phase = "B"\ncustomer_class = "residential"\ntariff = "residential-tou"\n'
                "valid_to = 2026-03-01",
                'phase = "B"',
            ),
            "site.toml: metering_point 7 (a-01-c0001): meter in area a-01 and in area a-02"
            f" from 2026-03-01T00:00:00{CST}",
        ),
        (
            edited(TOTAL_A02, 'meter = "a-02-total"\nrole = "customer"\narea = "a-02"'),
            "site.toml: area 2 (a-02): area a-02 has no area_total metering point",
        ),
        (
            edited(POINT_C1, POINT_C1.replace('area = "a-01"', 'area = "d-01"')),
            "site.toml: metering_point 6 (a-01-c0001): area d-01 is dedicated (专变)",
        ),
        (
            edited("ct_ratio = 40", "ct_ratio = 0"),
            "site.toml: metering_point 4 (a-02-total): ct_ratio: 0 must be > 0 (multiplier 0)",
        ),
        (
            edited("pt_ratio = 100\ncustomer_class", "pt_ratio = -1\ncustomer_class"),
            "site.toml: metering_point 5 (d-01-meter): pt_ratio: -1 must be > 0",
        ),
        (
            edited(
                "valid_from = 2026-01-01T00:00:00+08:00\nvalid_to = 2026-11-10T10:30:00+08:00",
                "valid_from = 2026-01-01T00:00:00+08:00\nvalid_to = 2026-01-01",
            ),
            "site.toml: metering_point 8 (a-01-c0002): valid_to: 2026-01-01T00:00:00+08:00 is"
            " not after valid_from 2026-01-01T00:00:00+08:00",
        ),
        (
            edited('role = "feeder_head"\nfeeder = "f-01"', 'role = "feeder_head"\narea = "a-01"'),
            "site.toml: metering_point 1 (f-01-head): area: a feeder_head point names its"
            " feeder, not an area",
        ),
        (
            edited(TOTAL_A02, TOTAL_A02.replace('area = "a-02"', 'area = "a-01"')),
            "site.toml: metering_point 4 (a-02-total): two area_total points at once in area"
            " a-01: a-01-total and a-02-total from the beginning",
        ),
        (
            edited(
                "valid_from = 2026-11-10T10:30:00+08:00\n",
                "valid_from = 2026-11-10T10:45:00+08:00\n",
            ),
            "site.toml: replacement 1 (a-01-c0002): no metering point of a-01-c0002r starts at"
            f" 2026-11-10T10:30:00{CST}",
        ),
        (
            edited("at = 2026-11-10T10:30:00+08:00", "at = 2026-11-10T10:00:00+08:00"),
            "site.toml: replacement 1 (a-01-c0002): no metering point of a-01-c0002 ends at"
            f" 2026-11-10T10:00:00{CST}",
        ),
        (
            edited('new_meter = "a-01-c0002r"', 'new_meter = "a-01-c0002"'),
            "site.toml: replacement 1 (a-01-c0002): new_meter: a-01-c0002 is also the old_meter",
        ),
        (
            edited('meter = "a-02-total"\naccuracy', 'meter = "a-01-c0001"\naccuracy'),
            "site.toml: meter_asset 2 (a-01-c0001): meter_asset a-01-c0001 is defined twice",
        ),
        (
            edited('rotation_plan = "2032"', 'rotation_plan = "2032"\ncolour = "red"'),
            "site.toml: meter_asset 1 (a-01-c0001): colour: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_topology_is_a_one_line_error_naming_table_entry_and_field(topology, error):
    with pytest.raises(ConfigError) as exc:
        inventory(topology)
    assert str(exc.value).startswith(error), str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_replacement_whose_new_meter_is_placed_elsewhere_is_refused():
    # the new meter goes to another area: the replacement does not continue the point
    topo = edited(
        'meter = "a-01-c0002r"\nrole = "customer"\narea = "a-01"',
        'meter = "a-01-c0002r"\nrole = "customer"\narea = "a-02"',
    )
    with pytest.raises(ConfigError, match=r"^site\.toml: replacement 1 \(a-01-c0002\):"):
        inventory(topo)


def test_dates_are_local_midnight_in_the_site_zone():
    topo = inventory(timezone="Europe/Paris").topology
    by_meter = {(p.meter, p.area): p for p in topo["metering_point"]}
    moved = by_meter["a-01-c0001", "a-02"].valid_from
    assert moved == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # midnight CET = 23:00 UTC
    # an explicit offset is kept as written
    assert by_meter["a-01-c0002r", "a-01"].valid_from == datetime(2026, 11, 10, 2, 30, tzinfo=UTC)
    assert by_meter["a-02-total", "a-02"].valid_from is None  # absent: −infinity


def _audit(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT action, entity, entity_id FROM audit_log WHERE entity <> 'device' ORDER BY id"
        ).fetchall()


def test_stored_in_the_device_load_and_reloading_is_a_no_op(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        ids = store_inventory(conn, inventory(), actor="test")
    first = _audit(migrated_url)
    # 1 substation + 1 feeder + 3 areas + 2 assets + 9 points + 1 replacement
    assert len(first) == 17 and {a for a, _, _ in first} == {"create"}
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
        assert _audit(migrated_url) == first
        # every protocol placed: Modbus, DL/T 645 bus, concentrator (MQTT)
        protocols = conn.execute(
            "SELECT DISTINCT d.protocol FROM metering_points p JOIN devices d"
            " ON d.id = p.device_id ORDER BY 1"
        ).fetchall()
        assert protocols == [("dlt645",), ("modbus_tcp",), ("mqtt",)]
        placed = placements_between(
            conn, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
        )
        reps = replacements_between(
            conn, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        )
        # `at` is in [start, end): none from the instant after it
        assert not replacements_between(
            conn, datetime(2026, 11, 10, 2, 30, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
        )
        [feeder] = feeders(conn)
        assert (feeder.name, feeder.substation, feeder.voltage_kv) == ("f-01", "sub-01", 10.0)
        assert [(a.name, a.feeder_id, a.kind, a.transformer_kva) for a in areas(conn)] == [
            ("a-01", feeder.id, "public", 400.0),
            ("a-02", feeder.id, "public", 200.0),
            ("d-01", feeder.id, "dedicated", 630.0),
        ]
    c1 = [(p.area, p.phase, p.valid_from, p.valid_to) for p in placed if p.device == "a-01-c0001"]
    march = datetime(2026, 2, 28, 16, 0, tzinfo=UTC)  # 2026-03-01 local midnight in Shanghai
    assert c1 == [
        ("a-01", "B", datetime(2026, 2, 1, tzinfo=UTC), march),
        ("a-02", "A", march, datetime(2026, 4, 1, tzinfo=UTC)),
    ]
    head = next(p for p in placed if p.role == "feeder_head")
    assert (head.device_id, head.area, head.feeder, head.multiplier) == (
        ids["f-01-head"],
        None,
        "f-01",
        200 * 100,
    )
    total = [(p.multiplier, p.valid_to) for p in placed if p.device == "a-01-total"]
    assert total == [(80, march), (120, datetime(2026, 4, 1, tzinfo=UTC))]
    [rep] = reps
    assert (rep.old_device, rep.new_device, rep.old_final, rep.new_first) == (
        "a-01-c0002",
        "a-01-c0002r",
        12345.67,
        0.0,
    )
    assert rep.at == datetime(2026, 11, 10, 2, 30, tzinfo=UTC)


MOVE = (
    'meter = "a-02-total"\nrole = "area_total"\narea = "a-02"\nct_ratio = 40\n'
    "valid_to = 2026-06-01\n\n"
    "[[metering_point]]\n"
    'meter = "a-02-total"\nrole = "area_total"\narea = "a-02"\nct_ratio = 60\n'
    "valid_from = 2026-06-01"
)


def test_a_changed_multiplier_is_history_with_before_and_after(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
    n = len(_audit(migrated_url))
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(edited(TOTAL_A02, MOVE)), actor="ops")
        rows = conn.execute(
            "SELECT ct_ratio, multiplier, CASE WHEN isfinite(valid_from) THEN valid_from END,"
            " valid_to FROM metering_points p"
            " JOIN devices d ON d.id = p.device_id WHERE d.name = 'a-02-total'"
            " ORDER BY valid_from"
        ).fetchall()
        audit = conn.execute(
            "SELECT actor, action, entity_id, before->>'valid_to', after->>'valid_to',"
            " after->>'ct_ratio' FROM audit_log WHERE entity <> 'device' ORDER BY id OFFSET %s",
            (n,),
        ).fetchall()
    june = datetime(2026, 5, 31, 16, 0, tzinfo=UTC)
    assert [r[:2] for r in rows] == [(40, 40), (60, 60)]
    assert rows[0][2] is None and rows[0][3] == june and rows[1][2] == june and rows[1][3] is None
    assert [a[:3] + a[5:] for a in audit] == [
        ("ops", "update", "a-02-total@-infinity", "40.0"),
        ("ops", "create", "a-02-total@2026-05-31T16:00:00+00:00", "60.0"),
    ]
    assert audit[0][3] is None and datetime.fromisoformat(audit[0][4]) == june


def test_dropping_a_stored_metering_point_is_refused_and_nothing_is_written(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
    before = _audit(migrated_url)
    # the d-01 meter's point removed, and a new asset that must not be written either
    dropped = edited(
        'meter = "d-01-meter"\nrole = "area_total"\narea = "d-01"',
        'meter = "d-01-meter"\nrole = "area_total"\narea = "d-01"\nvalid_from = 2026-05-01',
    ).replace('accuracy_class = "2"', 'accuracy_class = "1"')
    with psycopg.connect(migrated_url) as conn, pytest.raises(ConfigError) as exc:
        store_inventory(conn, inventory(dropped), actor="test")
    assert str(exc.value) == (
        "site.toml: metering_point d-01-meter from the beginning is stored but missing:"
        " history is kept, give it a valid_to instead"
    )
    assert _audit(migrated_url) == before


def test_a_file_without_metering_points_leaves_the_stored_ones(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(), actor="test")
        before = _audit(migrated_url)
        store_inventory(conn, inventory(""), actor="test")
        assert _audit(migrated_url) == before
        (n,) = conn.execute("SELECT count(*) FROM metering_points").fetchone()
    assert n == 9


def test_a_moved_meter_and_a_changed_area_are_audited_updates(migrated_url):
    # first load: c0001 open-ended in a-01 (its move to a-02 not yet known)
    moved = (
        '[[metering_point]]\nmeter = "a-01-c0001"\nrole = "customer"\narea = "a-02"\n'
        'phase = "A"\ncustomer_class = "residential"\nvalid_from = 2026-03-01\n'
    )
    first = edited(moved, "").replace(
        'tariff = "residential-tou"\nvalid_to = 2026-03-01', 'tariff = "residential-tou"'
    )
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(first), actor="test")
    n = len(_audit(migrated_url))
    bigger = TOPOLOGY.replace("transformer_kva = 200", "transformer_kva = 315")
    with psycopg.connect(migrated_url) as conn:
        store_inventory(conn, inventory(bigger), actor="ops")
        changes = conn.execute(
            "SELECT action, entity, entity_id, before, after FROM audit_log"
            " WHERE entity <> 'device' ORDER BY id OFFSET %s",
            (n,),
        ).fetchall()
    assert [c[:3] for c in changes] == [
        ("update", "area", "a-02"),
        ("update", "metering_point", "a-01-c0001@-infinity"),
        ("create", "metering_point", "a-01-c0001@2026-02-28T16:00:00+00:00"),
    ]
    area_before, area_after = changes[0][3:]
    assert (area_before["transformer_kva"], area_after["transformer_kva"]) == (200.0, 315.0)
    point_before, point_after = changes[1][3:]
    assert point_before["valid_to"] is None
    assert point_after["valid_to"] == "2026-03-01T00:00:00+08:00"


def test_the_cli_refuses_a_bad_topology_on_one_line(tmp_path, db_url):
    from tests.test_cli import one_error_line, run_cli
    from tests.topology_site import DEVICES

    cfg = tmp_path / "site.toml"
    cfg.write_text(DEVICES + edited("ct_ratio = 40", "ct_ratio = 0"))
    line = one_error_line(run_cli("migrate", "-c", str(cfg), env={"GRIDREAD_DATABASE_URL": db_url}))
    assert line == (
        f"gridread: error: {cfg}: metering_point 4 (a-02-total): ct_ratio: 0 must be > 0"
        " (multiplier 0)"
    )


def test_the_cli_accepts_the_topology_tables_in_the_config_file(tmp_path, db_url):
    # they are inventory, not settings: the settings' check of unknown keys leaves them
    from tests.test_cli import run_cli
    from tests.topology_site import DEVICES

    cfg = tmp_path / "site.toml"
    cfg.write_text(DEVICES + TOPOLOGY)
    result = run_cli("migrate", "-c", str(cfg), env={"GRIDREAD_DATABASE_URL": db_url})
    assert result.returncode == 0 and "schema is up to date" in result.stdout, result.stderr
