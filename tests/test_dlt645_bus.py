"""A bus of simulated DL/T 645 meters on a real pty, polled end to end into PostgreSQL."""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from collectors import metrics as cmetrics
from collectors.dlt645.codec import RelayAction
from collectors.dlt645.collector import BusPolicy, Dlt645BusCollector, MeterRef
from collectors.dlt645.dataids import singles
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import SerialTransport
from collectors.exceptions import DeviceRejected
from ingest.model import Quality
from ingest.readstats import success_rates
from ingest.store import PgCollectorStore
from ingest.writer import ReadingWriter
from simulators.dlt645_bus import DLT645BusSimulator, Fault, make_meters
from simulators.modbus_meter import ManualClock
from tests.api_auth import credentials

BAUD = 38_400  # the pty carries any rate; a fast one keeps the suite quick
T0 = datetime(2026, 11, 26, 10, 7, 30, tzinfo=UTC).timestamp()


def counter(metric, *labels) -> float:
    return metric.labels(*labels)._value.get()


class Rig:
    def __init__(self, url, n, **policy):
        self.url = url
        self.clock = ManualClock(T0)
        self.sim_meters = make_meters(n)
        self.sim = DLT645BusSimulator(self.sim_meters, baud=BAUD, clock=self.clock)
        self.policy = BusPolicy(**policy)

    async def __aenter__(self):
        await self.sim.start()
        with psycopg.connect(self.url) as conn, conn.transaction():
            self.refs = []
            for m in self.sim_meters:
                (device_id,) = conn.execute(
                    "INSERT INTO devices"
                    " (name, kind, protocol, endpoint, poll_interval, attributes)"
                    " VALUES (%s, 'meter', 'dlt645', %s, 300, jsonb_build_object('bus', 'bus-1',"
                    " 'address', %s::text)) RETURNING id",
                    (f"m-{m.address[-4:]}", self.sim.port, m.address),
                ).fetchone()
                self.refs.append(MeterRef(device_id, f"m-{m.address[-4:]}", m.address))
        self.store = await PgCollectorStore.open(self.url)
        self.writer = ReadingWriter(self.url, max_delay=0.05)
        self.writer_task = asyncio.create_task(self.writer.run())
        self.bus = Dlt645Bus(
            SerialTransport(self.sim.port, baud=BAUD), BusTiming(baud=BAUD, turnaround=0.1)
        )
        self.collector = Dlt645BusCollector(
            name="bus-1",
            bus=self.bus,
            meters=self.refs,
            sink=self.writer,
            store=self.store,
            policy=self.policy,
            now=self.clock,
        )
        return self

    async def __aexit__(self, *exc):
        await self.writer.close()
        await self.writer_task
        await self.bus.transport.close()
        await self.sim.stop()
        await self.store.close()

    def rows(self, sql, *args):
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, args).fetchall()


async def test_a_bus_of_16_meters_is_stored_as_served(migrated_url):
    async with Rig(migrated_url, 16) as rig:
        for _ in range(2):
            rig.clock.advance(300)
            outcomes = await rig.collector.poll_all()
            assert all(o.ok for o in outcomes)
            await rig.writer.flush()
            ts = datetime.fromtimestamp(rig.clock(), UTC)
            for ref, sim in zip(rig.refs, rig.sim_meters, strict=True):
                truth = rig.sim.truth(sim.address)
                stored = dict(
                    rig.rows(
                        "SELECT quantity, value FROM readings WHERE device_id = %s AND ts = %s",
                        ref.device_id,
                        ts,
                    )
                )
                # registers exactly as the meter keeps them (two decimals)
                for q in ("1.8.0", "1.8.1", "1.8.2", "1.8.3", "1.8.4", "2.8.0", "3.8.0"):
                    assert Decimal(str(stored[q])) == truth[q], (sim.address, q)
                # instantaneous values to the resolution of their wire format
                for q, step in (
                    ("32.7.0", 0.1),
                    ("31.7.0", 0.001),
                    ("1.7.0", 0.0001),
                    ("13.7.0", 0.001),
                    ("14.7.0", 0.01),
                ):
                    assert abs(stored[q] - float(truth[q])) <= step / 2 + 1e-9, (sim.address, q)
                assert len(stored) == 18  # 5 + 1 + 1 + 1 energy, 3 + 3 phase, P, Q, PF, f
        with psycopg.connect(migrated_url) as conn:
            [rate] = success_rates(conn, datetime.fromtimestamp(T0, rig.collector.tz).date())
        assert rate["due"] == 16 and rate["read"] == 16 and rate["rate"] == 1.0


async def test_faulty_meters_do_not_stop_the_bus_and_are_counted_per_kind(migrated_url, caplog):
    caplog.set_level("WARNING", logger="collectors.dlt645.instants")
    async with Rig(migrated_url, 16) as rig:
        rig.sim_meters[2].fault = Fault.NO_REPLY
        rig.sim_meters[4].fault = Fault.BAD_CHECKSUM
        rig.sim_meters[6].fault = Fault.GARBAGE  # noise before a good frame: still read
        rig.sim_meters[8].fault = Fault.ERROR_REPLY
        before = {
            k: counter(cmetrics.POLL_ERRORS, "dlt645", k)
            for k in ("timeout", "bad_frame", "exception_response")
        }
        rig.clock.advance(300)
        outcomes = await rig.collector.poll_all()
        await rig.writer.flush()
        ok = {o.device_id for o in outcomes if o.ok}
        failed = {r.name for r in rig.refs if r.device_id not in ok}
        assert failed == {rig.refs[i].name for i in (2, 4, 8)}
        after = {k: counter(cmetrics.POLL_ERRORS, "dlt645", k) for k in before}
        assert after["timeout"] - before["timeout"] == 2  # one exchange, retried once
        assert after["bad_frame"] - before["bad_frame"] == 2
        # the refusing meter is asked every instant DI, and each refused block item by item
        dis = BusPolicy().instant_dis
        assert after["exception_response"] - before["exception_response"] == len(dis) + sum(
            len(singles(di)) for di in dis
        )
        counts = dict(rig.rows("SELECT device_id, count(*) FROM readings GROUP BY 1"))
        assert len(counts) == 13  # no readings from the silent, garbling and refusing meters
        assert rig.refs[8].device_id not in counts
        assert rig.refs[6].device_id in counts
        stats = dict(rig.rows("SELECT device_id, last_error FROM read_stats WHERE successes = 0"))
        assert stats[rig.refs[2].device_id].startswith("timeout:")
        assert stats[rig.refs[4].device_id].startswith("bad_frame:")
        with psycopg.connect(migrated_url) as conn:
            [rate] = success_rates(conn, datetime.fromtimestamp(T0, rig.collector.tz).date())
        assert (rate["read"], rate["due"], rate["failed"]) == (13, 16, 3)
        assert "(202107070003) not read: timeout" in caplog.text


async def test_gaps_are_re_read_from_the_meters_memory_with_the_re_read_flag(migrated_url):
    async with Rig(migrated_url, 2, reread_days=1) as rig:
        ref, sim = rig.refs[0], rig.sim_meters[0]
        # the daily reads: yesterday's freeze and 96 curve points as normal reads, then the
        # 1-day re-read window fills today's 73 points (00:00 … 18:00 local) as re-reads
        await rig.collector.read_daily()
        await rig.writer.flush()
        by_flag = dict(
            rig.rows(
                "SELECT quality, count(*) FROM readings"
                " WHERE device_id = %s AND quantity = '1.8.0' GROUP BY 1",
                ref.device_id,
            )
        )
        assert by_flag == {int(Quality.GOOD): 96, int(Quality.RE_READ): 73}
        # the database loses yesterday's frozen value and a stretch of the curve
        deleted = rig.rows(
            "WITH first AS (SELECT min(ts) AS t FROM readings WHERE quantity = '1.8.0')"
            " DELETE FROM readings WHERE device_id = %s AND (quantity LIKE '%%*d' OR"
            " (ts >= (SELECT t FROM first) + interval '5 hours'"
            "  AND ts < (SELECT t FROM first) + interval '8 hours'))"
            " RETURNING quantity, ts, value",
            ref.device_id,
        )
        assert len(deleted) == 5 + 12 * 4  # five frozen registers; 12 points × 4 registers
        summary = await rig.collector.reread(ref, days=2)
        await rig.writer.flush()
        assert summary["frozen_restored"] >= 1 and summary["curve_missing"] >= 12
        restored = {
            (q, ts): (v, flags)
            for q, ts, v, flags in rig.rows(
                "SELECT quantity, ts, value, quality FROM readings WHERE device_id = %s",
                ref.device_id,
            )
        }
        for quantity, ts, value in deleted:
            got_value, flags = restored[(quantity, ts)]
            assert got_value == value and Quality(flags) & Quality.RE_READ, (quantity, ts)
        # the freshly read points of today are re-read marked too, and equal the meter's record
        truth = rig.sim.truth(sim.address, ts.timestamp())
        assert Decimal(str(restored[("1.8.0", ts)][0])) == truth["1.8.0"]
        # nothing is missing any more: a second pass asks for nothing
        again = await rig.collector.reread(ref, days=2)
        assert again["frozen_missing"] == 0 and again["curve_missing"] == 0


async def test_clock_drift_within_bound_is_corrected_beyond_it_is_an_event(migrated_url):
    async with Rig(migrated_url, 3, clock_bound=60) as rig:
        rig.sim_meters[0].clock_offset = 25.0  # within the bound: broadcast corrects it
        rig.sim_meters[1].clock_offset = -600.0  # beyond: an event, no correction
        drifts = await rig.collector.check_clocks()
        assert drifts[rig.sim_meters[0].address] == pytest.approx(25, abs=1)
        assert drifts[rig.sim_meters[1].address] == pytest.approx(-600, abs=1)
        await asyncio.sleep(0.05)  # the broadcast has no reply; let the simulator take it
        assert abs(rig.sim_meters[0].clock_offset) < 1
        assert rig.sim_meters[1].clock_offset == -600.0
        events = rig.rows("SELECT device_id, kind, detail FROM events")
        assert [(d, k) for d, k, _ in events] == [(rig.refs[1].device_id, "clock_drift")]
        assert events[0][2]["drift_s"] == pytest.approx(-600, abs=1)
        rig.clock.advance(60)
        await rig.collector.poll_all()
        await rig.writer.flush()
        flags = dict(rig.rows("SELECT device_id, bit_or(quality) FROM readings GROUP BY 1"))
        assert Quality(flags[rig.refs[1].device_id]) & Quality.CLOCK_SUSPECT
        assert not Quality(flags[rig.refs[0].device_id]) & Quality.CLOCK_SUSPECT


async def test_new_power_down_records_become_events_once(migrated_url):
    async with Rig(migrated_url, 2) as rig:
        await rig.collector.poll_all()  # counters start at 0
        start, end = datetime(2026, 11, 26, 17, 1, 2), datetime(2026, 11, 26, 17, 9, 30)
        rig.sim.power_down(rig.sim_meters[1].address, start, end)
        rig.clock.advance(300)
        await rig.collector.poll_all()
        rig.clock.advance(300)
        await rig.collector.poll_all()  # unchanged counter: nothing new
        events = rig.rows("SELECT device_id, ts, kind, detail FROM events")
        assert len(events) == 1
        device_id, ts, kind, detail = events[0]
        assert (device_id, kind) == (rig.refs[1].device_id, "power_down")
        assert ts == datetime(2026, 11, 26, 9, 1, 2, tzinfo=UTC)  # 17:01:02 in Shanghai
        assert detail["end"] == "2026-11-26T09:09:30+00:00"


async def test_register_rollover_is_flagged(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        sim = rig.sim_meters[0]
        sim.register_offset = (
            Decimal("999999.99") - rig.sim.truth(sim.address)["1.8.0"] - Decimal("0.50")
        )
        await rig.collector.poll_all()
        rig.clock.advance(3600)  # enough energy to pass 999999.99
        await rig.collector.poll_all()
        await rig.writer.flush()
        values = rig.rows(
            "SELECT value, quality FROM readings WHERE quantity = '1.8.0' ORDER BY ts"
        )
        assert values[0][0] > 999999 and values[1][0] < values[0][0]
        assert (
            Quality(values[1][1]) & Quality.OVERFLOW
            and not Quality(values[0][1]) & Quality.OVERFLOW
        )


async def test_relay_control_needs_the_password(migrated_url):
    async with Rig(migrated_url, 2) as rig:
        ref, sim = rig.refs[0], rig.sim_meters[0]
        with pytest.raises(DeviceRejected, match="UNAUTHORISED"):
            await rig.collector.relay(
                ref, RelayAction.DISCONNECT, password="02000000", operator="00000001"
            )
        assert sim.relay_closed
        await rig.collector.relay(
            ref, RelayAction.DISCONNECT, password="02123456", operator="00000001"
        )
        assert not sim.relay_closed
        [(kind, detail)] = rig.rows("SELECT kind, detail FROM events")
        assert kind == "relay_operated" and detail["action"] == "DISCONNECT"


async def test_discovery_finds_every_meter_on_a_shared_bus(migrated_url):
    async with Rig(migrated_url, 4) as rig:
        rig.sim_meters[3].address = "202107070101"  # same low byte as meter 1: a collision
        rig.sim.meters = {m.address: m for m in rig.sim_meters}
        found = await rig.collector.discover()
        assert sorted(found) == sorted(m.address for m in rig.sim_meters)


async def test_read_success_rate_and_events_in_the_api_and_metrics(migrated_url):
    from fastapi.testclient import TestClient

    from api.app import create_app

    async with Rig(migrated_url, 4) as rig:
        rig.sim_meters[1].fault = Fault.NO_REPLY
        rig.sim.power_down(
            rig.sim_meters[0].address, datetime(2026, 11, 26, 8, 0), datetime(2026, 11, 26, 8, 5)
        )
        await rig.collector.poll_all()
        assert counter(cmetrics.READ_SUCCESS, "bus-1") == 0.75
        day = datetime.fromtimestamp(T0, rig.collector.tz).date().isoformat()
        with TestClient(
            create_app(migrated_url), headers=credentials(migrated_url, "viewer")
        ) as client:
            [bus] = client.get("/read-stats", params={"day": day}).json()
            assert bus == {
                "bus": "bus-1",
                "day": day,
                "due": 4,
                "read": 3,
                "failed": 1,
                "rate": 0.75,
            }
            meters = {
                m["address"]: m for m in client.get("/read-stats/bus-1", params={"day": day}).json()
            }
            silent = meters[rig.sim_meters[1].address]
            assert silent["successes"] == 0 and silent["last_error"].startswith("timeout")
            assert client.get("/read-stats/nope").status_code == 404
            events = client.get(
                f"/devices/{rig.refs[0].name}/events",
                params={"start": "2026-11-25T00:00:00Z", "end": "2026-11-27T00:00:00Z"},
            ).json()
            assert [(e["kind"], e["ts"]) for e in events["data"]] == [
                ("power_down", "2026-11-26T00:00:00Z")
            ]
