"""A bus of simulated DL/T 645 meters on a real pty, polled end to end into PostgreSQL."""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from collectors import metrics as cmetrics
from collectors.dlt645.collector import BusPolicy, Dlt645BusCollector, MeterRef
from collectors.dlt645.session import BusTiming, Dlt645Bus
from collectors.dlt645.transport import SerialTransport
from ingest.readstats import success_rates
from ingest.writer import ReadingWriter
from simulators.dlt645_bus import DLT645BusSimulator, Fault, make_meters
from simulators.modbus_meter import ManualClock

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
        self.writer = ReadingWriter(self.url, max_delay=0.05)
        self.writer_task = asyncio.create_task(self.writer.run())
        self.bus = Dlt645Bus(SerialTransport(self.sim.port, baud=BAUD), BusTiming(baud=BAUD))
        self.collector = Dlt645BusCollector(
            name="bus-1",
            bus=self.bus,
            meters=self.refs,
            sink=self.writer,
            conninfo=self.url,
            policy=self.policy,
            now=self.clock,
        )
        return self

    async def __aexit__(self, *exc):
        await self.writer.close()
        await self.writer_task
        await self.bus.transport.close()
        await self.sim.stop()

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
    caplog.set_level("WARNING", logger="collectors.dlt645.collector")
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
        assert after["exception_response"] - before["exception_response"] == len(
            BusPolicy().instant_dis
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
        assert "not read: meter 202107070003" in caplog.text
