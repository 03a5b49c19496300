"""The world through the whole pipeline to its line loss, end to end.

A world of one feeder (two public areas of ten customers and a dedicated transformer, two
local days of 15-min data, long past): its customers behind concentrators publishing to a
real Mosquitto, ingested by the real MQTT worker; its feeder head, area totals and dedicated
customer on the Modbus TCP gateway, polled by the real collector at each 15-min boundary (a
manual clock: the meter simulator and the collector's time stamps); the plausibility screen
of `gridread run`; the inventory (devices and topology) loaded by gridread's loader; then the
real line-loss job (`analytics.jobs.run_lineloss`).

Ground truth: the world's measured loss (what the meters' shown registers say, true
multipliers and areas) plus the signatures of its inventory faults (a wrong CT in the ledger,
a customer the ledger places in the other area). One customer is "not read" by its
concentrator on the first day: that day's intervals of its area are not computable, with
coverage (1 total + 9 of 10 customers) / 11; the re-read (补抄) fills them and the next run
recomputes them.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from analytics.jobs import run_lineloss
from analytics.store import AnalyticsStore
from collectors.modbus.collector import ModbusTcpCollector
from collectors.mqtt.rereads import ConcentratorRereader
from collectors.mqtt.worker import MqttIngestWorker, MqttSettings
from collectors.scheduler import PollPolicy, PollScheduler
from gridread.broker import CONTROL, INGEST
from gridread.inventory import parse_inventory, store_inventory
from gridread.runtime import lineloss_policy, plausibility_screen
from gridread.settings import load_settings
from ingest.writer import ReadingWriter
from simulators.modbus_meter import ManualClock
from simulators.world import Fault, WorldSpec, build_world
from simulators.world.serve import ServedWorld
from simulators.world.spec import INVENTORY_FAULTS

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 20, 16, tzinfo=UTC)  # local midnight of 21 November
DAY = 96  # intervals
NOT_READ = "f01-a01-c003"  # not read by its concentrator on the first day
LEDGER = 11  # customers the ledger places in f01-a01: its 10 and f01-a02-c005 (wrong_area)
SETTINGS = load_settings({}, source="test")  # the defaults `gridread run` has


def the_world():
    faults = (
        Fault("theft", "f01-a01-c006", START + timedelta(hours=30), {"share": 0.4}),
        Fault("meter_error", "f01-a02-c002", None, {"pct": -3.0}),
        Fault("rollover", "f01-a01-c008", START + timedelta(hours=20)),
        Fault("wrong_multiplier", "f01-a02-total", START + timedelta(hours=36), {"ct_ratio": 40}),
        Fault("wrong_area", "f01-a02-c005", None, {"area": "f01-a01"}),  # the ledger's error
    )
    return build_world(
        WorldSpec(seed=41, start=START, days=2, feeders=1, areas_per_feeder=2,
                  meters_per_area=10, faults=faults)
    )  # fmt: skip


def inventory_truth(w) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(level, group) → supply, sales, loss per interval, as an analysis using the inventory
    must find them: the measured balance, plus each inventory fault's signature on the
    group's supply (the faulty meter is its supply meter) or its sales (a member)."""
    g, t = w.grid, w.truth
    out = {}
    area, feeder = t.area_balance(), t.feeder_balance()
    for j, name in enumerate(g.areas):
        if not g.area_dedicated[j]:
            out[("area", name)] = {k: area[k][j].copy() for k in ("supply", "sales", "loss")}
    for j, name in enumerate(g.feeders):
        out[("feeder", name)] = {k: feeder[k][j].copy() for k in ("supply", "sales", "loss")}
    for record in t.fault_records():
        if record["kind"] not in INVENTORY_FAULTS:
            continue  # an energy fault is in what the meters measured already
        role = g.role[g.index(record["meter"])]
        for sig in record["signature"]:
            group = out[(sig["level"], sig["group"])]
            d = sig["delta_loss"]
            group["loss"] += d
            supplies = role == ("area_total" if sig["level"] == "area" else "feeder_head")
            if supplies:
                group["supply"] += d
            else:
                group["sales"] -= d
    return out


def results(url, period) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """The lineloss rows of a period by (level, name): columns as arrays in time order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT level, name, extract(epoch FROM start)::int8, supply, sales, loss, rate,"
            " coverage, status, present, expected, supply_present, supply_expected"
            " FROM lineloss WHERE period = %s ORDER BY level, name, start",
            (period,),
        ).fetchall()
    cols = ("start", "supply", "sales", "loss", "rate", "coverage", "status", "present",
            "expected", "supply_present", "supply_expected")  # fmt: skip
    out: dict[tuple[str, str], dict[str, list]] = {}
    for level, name, *values in rows:
        group = out.setdefault((level, name), {c: [] for c in cols})
        for c, v in zip(cols, values, strict=True):
            group[c].append(np.nan if v is None else v)
    return {k: {c: np.array(v) for c, v in g.items()} for k, g in out.items()}


def by_day(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, DAY).sum(axis=1)


def status_of(rate: np.ndarray) -> list[str]:
    bands = lineloss_policy(SETTINGS).bands
    return [
        "negative" if r < bands.negative_below else "high" if r > bands.high_above else "normal"
        for r in rate
    ]


def assert_equals_truth(got: dict, truth: dict, cols: slice = slice(None)) -> None:
    """supply and sales to 1e-9 relative; the loss to 1e-9 of its supply (it may be near 0),
    so the rate to 1e-7 percentage points; status by the bands; coverage 1."""
    supply = truth["supply"][cols]
    for c in ("supply", "sales"):
        np.testing.assert_allclose(got[c][cols], truth[c][cols], rtol=1e-9, atol=0, err_msg=c)
    assert (np.abs(got["loss"][cols] - truth["loss"][cols]) <= 1e-9 * np.abs(supply)).all()
    rate = truth["loss"][cols] / supply * 100.0
    np.testing.assert_allclose(got["rate"][cols], rate, rtol=1e-9, atol=1e-7)
    assert list(got["status"][cols]) == status_of(rate)
    assert (got["coverage"][cols] == 1.0).all()


async def wait_for_rows(url: str, sql: str, at_least: int, what: str, within: float = 20.0):
    """Until `sql` (a count) reaches `at_least` committed rows; fails past the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        with psycopg.connect(url) as conn:
            [(n,)] = conn.execute(sql).fetchall()
        if n >= at_least:
            return
        if loop.time() > deadline:
            pytest.fail(f"{what}: {n} of {at_least} rows after {within:g} s")
        await asyncio.sleep(0.05)


async def test_the_world_line_loss_through_the_pipeline_equals_the_truth(
    migrated_url, mqtt_broker, collector_store
):
    w = the_world()
    b = w.truth.boundaries
    end = int(b[-1])
    clock = ManualClock(float(b[0]))
    served = ServedWorld(
        w,
        mqtt_host=mqtt_broker.host,
        mqtt_port=mqtt_broker.port,
        clock=clock,
        mqtt_accounts=mqtt_broker.concentrators,
    )
    await served.start()
    url = migrated_url
    inv = parse_inventory(served.inventory(), source="world", base_dir=Path("."))
    with psycopg.connect(url) as conn:
        ids = store_inventory(conn, inv, actor="test")
    writer = ReadingWriter(
        url, max_delay=0.05, screen=plausibility_screen(SETTINGS, inv.nominals(ids))
    )
    writer_task = asyncio.create_task(writer.run())
    group = f"g{uuid.uuid4().hex[:8]}"
    worker = MqttIngestWorker(
        MqttSettings(
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            group=group,
            client_id=f"w-{group}",
            auth=mqtt_broker.auth(INGEST),
        ),
        writer,
        collector_store,
    )
    worker_task = asyncio.create_task(worker.run())
    rereader = ConcentratorRereader(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        store=collector_store,
        auth=mqtt_broker.auth(CONTROL),
        days=2,
        timeout=20,
    )
    collectors = [
        ModbusTcpCollector(
            device_id=ids[d.name], device_name=d.name, host=d.host, port=d.port,
            unit_id=d.unit_id, register_map=inv.maps[d.register_map], timeout=2.0, now=clock,
        )
        for d in inv.devices
    ]  # fmt: skip
    customers = [m for c in served.concentrators for m in c.meters]
    conc_sql = (
        "SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id"
        f" WHERE d.name = ANY(ARRAY{customers!r})"
    )
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 15)
        await rereader.start()
        # the concentrators upload each local day the morning after (the third: only its
        # midnight register matters, the world stands still after its end); one meter is
        # not read on the first day
        [a01] = [c for c in served.concentrators if NOT_READ in c.meters]
        days = [datetime.fromtimestamp(int(b[0]), UTC) + timedelta(days=d) for d in range(3)]
        expected = 0
        for d, day in enumerate(days):
            a01.failing = {NOT_READ} if d == 0 else set()
            await served.upload_day(day)
            expected += sum(
                len(c.day_payload(m, day)["readings"])
                for c in served.concentrators
                for m in c.meters
                if m not in c.failing
            )
        # the Modbus meters polled live at every boundary
        scheduler = PollScheduler(writer, PollPolicy(timeout=3.0, retries=0))
        for k in range(len(b)):
            clock.now = float(b[k])
            polled = await asyncio.gather(*(scheduler.poll(c) for c in collectors))
            assert all(polled), f"a Modbus poll failed at boundary {k}"
        await wait_for_rows(url, conc_sql, expected, "concentrator readings")
        await writer.flush()

        # the job, once the last interval has settled
        policy = lineloss_policy(SETTINGS)
        now = datetime.fromtimestamp(end + policy.settle_s, UTC)

        def job():
            with psycopg.connect(url, autocommit=True) as conn:
                return run_lineloss(AnalyticsStore(conn), policy, now)

        first = await asyncio.to_thread(job)
        assert (first.computed_from, first.computed_until) == (
            datetime.fromtimestamp(int(b[0]), UTC),
            datetime.fromtimestamp(end, UTC),
        )
        check_first_run(url, w)

        # the re-read (补抄) of the last two local days finds the meter's gap and fills it
        replies = await rereader.run_once(now=now.astimezone(TZ))
        assert replies == {"f01-a01-jzq": {"status": "done", "meters": 1, "messages": 2}}
        await wait_for_rows(
            url, conc_sql, expected + len(a01.day_payload(NOT_READ, days[0])["readings"]),
            "re-read readings",
        )  # fmt: skip
        await writer.flush()
        second = await asyncio.to_thread(job)
        assert "incomplete intervals in the re-read window" in second.reasons
        check_complete(url, w)
    finally:
        for c in collectors:
            await c.close()
        await rereader.stop()
        await served.stop()
        await worker.drain()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await writer.close()
        await writer_task
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM readings WHERE quantity = '1.8.0' AND quality & 4 <> 0"
        ).fetchone() == (0,)  # no register failed the plausibility screen


def check_first_run(url: str, w) -> None:
    truth = inventory_truth(w)
    quarter, day, month = results(url, "15min"), results(url, "day"), results(url, "month")
    assert set(quarter) == set(truth) | {("voltage", "0.4 kV"), ("voltage", "10 kV")}
    first, second = slice(0, DAY), slice(DAY, 2 * DAY)
    for key, tr in truth.items():
        got = quarter[key]
        assert len(got["start"]) == 2 * DAY
        np.testing.assert_array_equal(got["start"], w.truth.boundaries[:-1])
        if key != ("area", "f01-a01"):
            assert_equals_truth(got, tr)
            assert_equals_truth(day[key], {c: by_day(a) for c, a in tr.items()})
            continue
        # the not-read customer's first day: not computable, coverage (1 total + 10 of the
        # 11 customers) / 12; supply and sales hold what is present: the sales lack its energy
        assert_equals_truth(got, tr, second)
        assert set(got["status"][first]) == {"not_computable"}
        assert np.isnan(got["loss"][first]).all() and np.isnan(got["rate"][first]).all()
        assert (1 + LEDGER - 1) / (1 + LEDGER) == 11 / 12
        assert (got["coverage"][first] == 11 / 12).all()
        assert (got["present"][first] == 1 + LEDGER - 1).all()  # meters: total + customers
        assert (got["expected"][first] == 1 + LEDGER).all()
        assert (got["supply_present"][first] == 1).all()
        np.testing.assert_allclose(got["supply"][first], tr["supply"][first], rtol=1e-9)
        missing = w.truth.measured[w.grid.index(NOT_READ), first]
        np.testing.assert_allclose(got["sales"][first], tr["sales"][first] - missing, rtol=1e-9)
        d = day[key]
        assert d["status"][0] == "not_computable"
        assert d["coverage"][0] == (DAY + DAY * (LEDGER - 1)) / (DAY * (1 + LEDGER)) == 11 / 12
        assert_equals_truth(d, {c: by_day(a) for c, a in tr.items()}, slice(1, 2))
        # the month (from 21 November): the total's 2 × 96 intervals and the customers'
        # 96 × 10 + 96 × 11 of 2 × 96 × 11
        m = month[key]
        assert m["status"][0] == "not_computable"
        assert (
            m["coverage"][0]
            == (2 * DAY + DAY * (LEDGER - 1) + DAY * LEDGER) / (2 * DAY * (1 + LEDGER))
            == 23 / 24
        )
    feeder = truth[("feeder", "f01")]
    assert_equals_truth(month[("feeder", "f01")], {c: a.sum(keepdims=True) for c, a in
                                                   feeder.items()})  # fmt: skip
    # the 0.4 kV level: not computable while one of its areas is; then Σ loss / Σ supply
    lv = quarter[("voltage", "0.4 kV")]
    assert set(lv["status"][first]) == {"not_computable"}
    public = [v for (level, _), v in truth.items() if level == "area"]
    loss = sum(v["loss"][second] for v in public)
    supply = sum(v["supply"][second] for v in public)
    np.testing.assert_allclose(lv["rate"][second], loss / supply * 100, rtol=1e-9, atol=1e-7)
    assert_equals_truth(quarter[("voltage", "10 kV")], feeder)  # its one feeder


def check_complete(url: str, w) -> None:
    """After the re-read: every 15-min, day and month result equals the truth."""
    truth = inventory_truth(w)
    quarter, day, month = results(url, "15min"), results(url, "day"), results(url, "month")
    for key, tr in truth.items():
        assert_equals_truth(quarter[key], tr)
        assert_equals_truth(day[key], {c: by_day(a) for c, a in tr.items()})
        assert_equals_truth(month[key], {c: a.sum(keepdims=True) for c, a in tr.items()})
    public = [v for (level, _), v in truth.items() if level == "area"]
    lv = quarter[("voltage", "0.4 kV")]
    assert set(lv["status"]) != {"not_computable"} and (lv["coverage"] == 1).all()
    loss, supply = sum(v["loss"] for v in public), sum(v["supply"] for v in public)
    np.testing.assert_allclose(lv["rate"], loss / supply * 100, rtol=1e-9, atol=1e-7)
