"""The shipped Grafana dashboard (deploy/grafana/gridread.json): every SQL query, interpolated
as Grafana does (tests/grafana_dashboard.py), runs against a migrated database with seeded data
and returns the expected columns and values; every Prometheus expression reads only metrics
that a running gridread exports (its /metrics scraped)."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import psycopg
import pytest

from ingest.schema import StorageMode, ensure_partitions
from tests import grafana_dashboard as gd
from tests.conftest import free_port
from tests.test_lifecycle import Gridread

# The dashboard's time range: the 7 days before 10:00 local (Asia/Shanghai, the site zone the
# migration records) on 2026-11-25. Local today starts 2026-11-24 16:00 UTC.
END = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
START = END - timedelta(days=7)  # 2026-11-18 10:00 local
TODAY = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
YESTERDAY = TODAY - timedelta(days=1)
VARIABLES = {"meter": "v-m1", "__interval": "1h"}


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def seed(url: str) -> None:
    devices = {
        "b1-m1": ("dlt645", {"bus": "b1"}),
        "b1-m2": ("dlt645", {"bus": "b1"}),
        "b1-m3": ("dlt645", {"bus": "b1"}),
        "b2-m1": ("dlt645", {"bus": "b2"}),
        "c1-m1": ("mqtt", {"concentrator": "jzq-1", "area": "a1"}),
        "c1-m2": ("mqtt", {"concentrator": "jzq-1", "area": "a1"}),
        "c2-m1": ("mqtt", {"concentrator": "jzq-2", "area": "a2", "timezone": "UTC"}),
        "v-m1": ("modbus_tcp", {}),
    }
    with psycopg.connect(url) as conn:
        ids = {}
        for name, (protocol, attrs) in devices.items():
            (ids[name],) = conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
                " VALUES (%s, 'meter', %s, 'x', 60, %s) RETURNING id",
                (name, protocol, json.dumps(attrs)),
            ).fetchone()
        conn.execute(  # not a meter: not in the $meter variable
            "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
            " VALUES ('jzq-1', 'concentrator', 'mqtt', 'mqtt', 60)"
        )
        stats = [  # (day, bus, meter, attempts, successes, last_error)
            (date(2026, 11, 24), "b1", "b1-m1", 1, 1, None),
            (date(2026, 11, 24), "b1", "b1-m2", 1, 1, None),
            (date(2026, 11, 24), "b1", "b1-m3", 3, 0, "timeout"),
            (date(2026, 11, 24), "b2", "b2-m1", 1, 1, None),
            (date(2026, 11, 25), "b1", "b1-m1", 1, 1, None),
            (date(2026, 11, 25), "b1", "b1-m2", 2, 0, "no reply"),
            (date(2026, 11, 25), "b2", "b2-m1", 1, 1, None),
        ]
        for day, bus, meter, attempts, ok, err in stats:
            conn.execute(
                "INSERT INTO read_stats (day, bus, device_id, attempts, successes, last_error,"
                " last_error_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (day, bus, ids[meter], attempts, ok, err, END if err else None),
            )
        ensure_partitions(conn, {date(2026, 11, d) for d in (10, 23, 24, 25)})
        readings = [
            # frozen registers (1.8.0*d) of local 2026-11-24, frozen at its end: c1-m1 at the
            # site's midnight; c2-m1 at its own zone's (UTC); c1-m2 only the day before's
            ("c1-m1", "1.8.0*d", t("2026-11-24T16:00"), 10.0),
            ("c1-m2", "1.8.0*d", t("2026-11-23T16:00"), 10.0),
            ("c2-m1", "1.8.0*d", t("2026-11-25T00:00"), 10.0),
            ("v-m1", "32.7.0", t("2026-11-10T00:00"), 999.0),  # before the range
        ]
        for k, (a, b, c) in enumerate([(220, 221, 219), (222, 221, 219), (224, 221, 219)]):
            ts = t("2026-11-24T00:00") + timedelta(minutes=15 * k)
            readings += [("v-m1", "32.7.0", ts, a), ("v-m1", "52.7.0", ts, b)]
            readings += [("v-m1", "72.7.0", ts, c)]
        readings += [
            ("v-m1", "32.7.0", t("2026-11-24T00:45"), 226.0),
            ("v-m1", "32.7.0", t("2026-11-24T01:00"), 230.0),
            ("v-m1", "52.7.0", t("2026-11-24T01:00"), 228.0),
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (device_id, quantity, ts, value) VALUES (%s, %s, %s, %s)",
                [(ids[m], q, ts, v) for m, q, ts, v in readings],
            )
            lineloss = [  # (level, name, start, rate, status)
                ("area", "a1", TODAY, 3.2, "normal"),
                ("area", "a2", TODAY, 14.5, "high"),
                ("area", "a3", TODAY, -6.0, "negative"),
                ("area", "a4", TODAY, None, "not_computable"),
                ("area", "a5", TODAY, 25.0, "high"),
                ("area", "a1", YESTERDAY, 50.0, "high"),  # not today
                ("feeder", "f1", YESTERDAY, 5.0, "normal"),
                ("feeder", "f1", TODAY, None, "not_computable"),
                ("feeder", "f1", t("2026-11-10T16:00"), 7.0, "normal"),  # before the range
            ]
            cur.executemany(
                "INSERT INTO lineloss (level, name, period, start, supply, sales, loss, rate,"
                " coverage, status) VALUES (%s, %s, 'day', %s, 100, %s, %s, %s, 1, %s)",
                [
                    (lv, n, s, None if r is None else 100 - r, r, r, st)
                    for lv, n, s, r, st in lineloss
                ],
            )
            pq = [  # (kind, name, start, rate, over_s, under_s, nominal, upper, lower)
                ("composite", "all", YESTERDAY, 98.5, 0, 0, None, None, None),
                ("composite", "all", TODAY, 99.0, 0, 0, None, None, None),
                ("class", "A", TODAY, 97.0, 0, 0, None, None, None),
                ("area", "a1", YESTERDAY, 99.5, 120, 0, None, None, None),
                ("area", "a2", YESTERDAY, 95.0, 0, 4320, None, None, None),
                ("area", "a3", YESTERDAY, None, 0, 0, None, None, None),  # nothing monitored
                ("area", "a1", TODAY, 10.0, 0, 0, None, None, None),  # not yesterday
                ("meter", "v-m1", YESTERDAY, 99.0, 0, 0, 220, 7, -10),
                ("meter", "v-m1", t("2026-11-19T16:00"), 99.0, 0, 0, 230, 10, -10),  # older
            ]
            cur.executemany(
                "INSERT INTO pq_voltage (kind, name, phase, period, start, rate, over_s, under_s,"
                " nominal_v, upper_pct, lower_pct, max_v, min_v)"
                " VALUES (%s, %s, '-', 'day', %s, %s, %s, %s, %s, %s, %s, 236, 201)",
                pq,
            )
            cases = [  # (meter, area, kind, score, status, assignee)
                ("c1-m1", "a1", "theft", 3.5, "open", None),
                ("c1-m2", "a1", "theft", 2.0, "assigned", "li"),
                ("b1-m1", None, "stopped", 1.0, "open", None),
                ("b1-m2", None, "reverse_wiring", 5.0, "confirmed", None),  # closed
                ("b1-m3", None, "stopped", 4.0, "false_positive", None),  # closed
            ]
            cur.executemany(
                "INSERT INTO anomaly_cases (device_id, area, kind, score, theft_score, rank,"
                " since, evidence, status, assignee, window_start, window_end)"
                " VALUES (%s, %s, %s, %s, 0, 1, %s, '{}', %s, %s, %s, %s)",
                [
                    (ids[m], a, k, s, YESTERDAY, st, who, START, END)
                    for m, a, k, s, st, who in cases
                ],
            )
            cur.executemany(
                "INSERT INTO dead_letters (received_at, source, reason, payload)"
                " VALUES (%s, 'mqtt', %s, '{}')",
                [
                    (t("2026-11-24T03:10"), "bad_payload"),
                    (t("2026-11-24T03:20"), "bad_payload"),
                    (t("2026-11-24T03:50"), "out_of_range"),
                    (t("2026-11-24T05:00"), "bad_payload"),
                    (t("2026-11-01T05:00"), "bad_payload"),  # before the range
                ],
            )
        conn.commit()


def epoch(s: str) -> float:
    return t(s).timestamp()


# Per SQL target: the columns and the rows expected from the seed, worked out by hand.
EXPECTED: dict[str, tuple[list[str], list[tuple]]] = {
    # 03:10, 03:20 bad_payload and 03:50 out_of_range fall in the 03:00 hour; 05:00 in its own
    "Dead letters per hour": (
        ["time", "metric", "value"],
        [
            (epoch("2026-11-24T03:00"), "bad_payload", 2),
            (epoch("2026-11-24T03:00"), "out_of_range", 1),
            (epoch("2026-11-24T05:00"), "bad_payload", 1),
        ],
    ),
    # local days 11-18 … 11-25, each bus: b1 has 3 meters due, b2 one; days without stats 0 %
    # b1 on 11-24: b1-m1, b1-m2 read of 3 = 66.67 %; on 11-25: b1-m1 of 3 = 33.33 %
    "RS-485 buses: read success rate per local day": (
        ["time", "metric", "value"],
        [
            (datetime(2026, 11, d - 1, 16, tzinfo=UTC).timestamp(), bus, rate)
            for d in range(18, 26)
            for bus, rate in (
                ("b1", {24: 200 / 3, 25: 100 / 3}.get(d, 0.0)),
                ("b2", 100.0 if d in (24, 25) else 0.0),
            )
        ],
    ),
    # yesterday = local 11-24: jzq-1: c1-m1 of c1-m1, c1-m2 = 50 %; jzq-2: c2-m1 (UTC) 100 %
    "Concentrators: meters with yesterday's frozen value": (
        ["concentrator", "area", "due", "read", "rate"],
        [("jzq-1", "a1", 2, 1, 50.0), ("jzq-2", "a2", 1, 1, 100.0)],
    ),
    # today: high by |rate| (a5 25, a2 14.5), negative a3, not computable a4, normal a1;
    # sales = 100 − rate, loss = rate (supply 100)
    "Worst areas today": (
        ["area", "status", "rate", "supply_kwh", "sales_kwh", "loss_kwh", "coverage"],
        [
            ("a5", "high", 25.0, 100.0, 75.0, 25.0, 1.0),
            ("a2", "high", 14.5, 100.0, 85.5, 14.5, 1.0),
            ("a3", "negative", -6.0, 100.0, 106.0, -6.0, 1.0),
            ("a4", "not_computable", None, 100.0, None, None, 1.0),
            ("a1", "normal", 3.2, 100.0, 96.8, 3.2, 1.0),
        ],
    ),
    "Areas by line-loss status today": (
        ["high", "negative", "normal", "not_computable"],
        [(2, 1, 1, 1)],
    ),
    "Feeders: daily line-loss rate": (
        ["time", "metric", "value"],
        [(YESTERDAY.timestamp(), "f1", 5.0), (TODAY.timestamp(), "f1", None)],
    ),
    "Voltage qualification rate per day": (
        ["time", "metric", "value"],
        [
            (YESTERDAY.timestamp(), "composite", 98.5),
            (TODAY.timestamp(), "class A", 97.0),
            (TODAY.timestamp(), "composite", 99.0),
        ],
    ),
    # yesterday's areas with a rate, lowest first: a2 (4320 s = 72 min under), a1 (120 s over)
    "Areas with the lowest voltage qualification yesterday": (
        ["area", "rate", "over_min", "under_min", "max_v", "min_v"],
        [("a2", 95.0, 0.0, 72.0, 236.0, 201.0), ("a1", 99.5, 2.0, 0.0, 236.0, 201.0)],
    ),
    # 1 h groups: 00:00 → A (220+222+224+226)/4 = 223, B 221, C 219; 01:00 → A 230, B 228,
    # C none; limits from the latest day: 220 × 1.07 = 235.4, 220 × 0.90 = 198
    "Voltage of $meter against its limits": (
        ["time", "phase A", "phase B", "phase C", "upper", "lower"],
        [
            (epoch("2026-11-24T00:00"), 223.0, 221.0, 219.0, 235.4, 198.0),
            (epoch("2026-11-24T01:00"), 230.0, 228.0, None, 235.4, 198.0),
        ],
    ),
    "Open inspection cases": (["open", "assigned"], [(2, 1)]),
    "Open cases by kind": (["kind", "cases"], [("theft", 2), ("stopped", 1)]),
    "Top open cases": (
        ["id", "meter", "area", "kind", "score", "status", "assignee", "since"],
        [
            (1, "c1-m1", "a1", "theft", 3.5, "open", None, YESTERDAY.timestamp()),
            (2, "c1-m2", "a1", "theft", 2.0, "assigned", "li", YESTERDAY.timestamp()),
            (3, "b1-m1", None, "stopped", 1.0, "open", None, YESTERDAY.timestamp()),
        ],
    ),
    # today (local 11-25): b1-m2 polled twice, never read
    "RS-485 meters failing today": (
        ["meter", "bus", "attempts", "last_error", "last_error_at", "last_success"],
        [("b1-m2", "b1", 2, "no reply", END.timestamp(), None)],
    ),
    "variable meter": (
        ["name"],
        [(n,) for n in ("b1-m1", "b1-m2", "b1-m3", "b2-m1", "c1-m1", "c1-m2", "c2-m1", "v-m1")],
    ),
}


def plain(value):
    """A value as compared: numbers as floats (6 decimals), instants as epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, Decimal | float | int) and not isinstance(value, bool):
        return round(float(value), 6)
    return value


@pytest.fixture
def seeded_url(migrated_url: str) -> str:
    seed(migrated_url)
    return migrated_url


def sql_targets() -> list[gd.Target]:
    return [x for x in gd.targets(gd.load()) if x.kind == gd.PG_TYPE]


def test_every_sql_panel_has_an_expectation():
    assert sorted({x.title for x in sql_targets()}) == sorted(EXPECTED)


@pytest.mark.parametrize("target", sql_targets(), ids=lambda x: f"{x.title}:{x.ref}")
def test_sql_panel_returns_the_expected_columns_and_values(seeded_url, storage, target):
    columns, rows = EXPECTED[target.title]
    # the data source's TimescaleDB switch changes $__timeGroup: both forms where they run
    for timescaledb in {False, storage is StorageMode.TIMESCALEDB}:
        sql = gd.interpolate(target.text, START, END, VARIABLES, timescaledb)
        assert "$" not in sql, sql  # every variable and macro replaced
        with psycopg.connect(seeded_url) as conn:
            cur = conn.execute(sql)
            got = [tuple(plain(v) for v in row) for row in cur.fetchall()]
            assert [c.name for c in cur.description] == columns
        assert got == [tuple(plain(v) for v in row) for row in rows]


def test_macros_are_interpolated_as_grafana_does():
    # the forms of pkg/tsdb/grafana-postgresql-datasource/macros.go
    start, end = t("2017-04-21T05:01:17"), t("2017-04-21T05:06:17.5")
    cases = {
        "$__timeFilter(ts)": "ts BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17.5Z'",
        "$__timeFrom()": "'2017-04-21T05:01:17Z'",
        "$__timeGroupAlias(ts, '5m')": 'floor(extract(epoch from ts)/300)*300 AS "time"',
        "$__timeGroup(ts, 1h)": "floor(extract(epoch from ts)/3600)*3600",
        "$__timeGroup(ts,'5m'), x": 'floor(extract(epoch from ts)/300)*300 AS "time", x',
    }
    for macro, want in cases.items():
        assert gd.interpolate_macros(macro, start, end, timescaledb=False) == want
    assert (
        gd.interpolate_macros("$__timeGroup(ts, '15m')", start, end, timescaledb=True)
        == "time_bucket('900.000s',ts)"
    )
    with pytest.raises(ValueError, match="unknown macro"):
        gd.interpolate_macros("$__nope(ts)", start, end, timescaledb=False)
    assert gd.replace_variables("'$meter' ${meter} [[meter]] $__timeTo()", {"meter": "m"}) == (
        "'m' m m $__timeTo()"
    )


def test_promql_metric_names_are_read_from_expressions():
    expr = (
        'sum by (protocol) (rate(gridread_polls_total{result="ok"}[5m]))'
        " / on (protocol) sum without (kind) (rate(gridread_poll_errors_total[$__rate_interval]))"
        " > bool 0.5 and histogram_quantile(0.99, sum by (le) (rate(x_bucket[1h])))"
    )
    assert gd.promql_metric_names(expr) == {
        "gridread_polls_total",
        "gridread_poll_errors_total",
        "x_bucket",
    }
    assert gd.promql_label_names(expr) == {"protocol", "result", "kind", "le"}


def test_every_prometheus_expression_reads_metrics_a_running_gridread_exports(
    tmp_path, migrated_url
):
    exprs = [x for x in gd.targets(gd.load()) if x.kind == gd.PROM_TYPE]
    assert exprs
    # a Modbus meter nobody answers for: its polls fail, so the poll series carry samples
    config = (
        '[[device]]\nname = "m1"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\n'
        f'port = {free_port()}\nunit_id = 1\nregister_map = "three_phase_meter"\n'
        "poll_interval = 0.5\n"
    )
    run = Gridread(tmp_path, config, migrated_url)
    try:
        run.health(lambda body: body.get("http_status") in (200, 503))
        deadline = time.monotonic() + 30
        while run.metric("gridread_polls_total", protocol="modbus_tcp", result="failed") < 1:
            assert time.monotonic() < deadline, f"no failed poll counted\n{run.stderr}"
            time.sleep(0.2)
        httpx.get(f"{run.base}/devices", timeout=5)  # an API request: its series get samples
        scrape = httpx.get(f"{run.base}/metrics", timeout=5)
        assert scrape.status_code == 200
    finally:
        run.kill()
    exported = gd.exported_series(scrape.text)
    labels = gd.exported_labels(scrape.text)
    checked = 0
    for x in exprs:
        names = gd.promql_metric_names(x.text)
        assert names, f"{x.title}: no metric in {x.text!r}"
        missing = names - exported
        assert not missing, f"{x.title} ({x.ref}): {sorted(missing)} not exported by gridread"
        # labels matched or aggregated by: those of the metrics read (where they had samples)
        seen = [labels[n] for n in names if n in labels]
        if seen:
            unknown = gd.promql_label_names(x.text) - set().union(*seen) - {"le"}
            assert not unknown, f"{x.title} ({x.ref}): no label {sorted(unknown)} on {names}"
            checked += 1
    assert checked >= 5  # the poll, ingest and API series at least


def test_the_dashboard_is_importable_as_is():
    dashboard = gd.load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["ds_postgres"]["type"] == "datasource"
    assert variables["ds_postgres"]["query"] == gd.PG_TYPE
    assert variables["ds_prometheus"]["query"] == gd.PROM_TYPE
    panels = gd.panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for target in p.get("targets", []):
            ds = target["datasource"]
            assert (
                ds["uid"]
                == {gd.PG_TYPE: "${ds_postgres}", gd.PROM_TYPE: "${ds_prometheus}"}[ds["type"]]
            ), p["title"]
