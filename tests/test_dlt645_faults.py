"""Defects found against independent DL/T 645 meters and masters (issue 7 §4), each on the
simulated bus over a real pty, into a real PostgreSQL."""

import asyncio
from datetime import datetime
from decimal import Decimal

import pytest

from collectors.dlt645 import codec, instants
from collectors.dlt645.codec import Frame, Function
from collectors.dlt645.session import BusTiming
from collectors.dlt645.transport import SerialTransport
from collectors.exceptions import DeviceTimeout
from ingest.model import Quality
from ingest.retry import Backoff
from simulators.dlt645_bus import DLT645BusSimulator
from tests.test_dlt645_bus import BAUD, Rig, counter

BLOCKS = (0x0001FF00, 0x0201FF00, 0x0202FF00)


def stored(rig, ref) -> dict[str, float]:
    return dict(
        rig.rows(
            "SELECT quantity, value FROM readings WHERE device_id = %s AND quantity NOT LIKE"
            " '%%*d' AND ts = (SELECT max(ts) FROM readings WHERE device_id = %s)",
            ref.device_id,
            ref.device_id,
        )
    )


async def test_simulator_takes_the_password_in_the_standards_layout(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        sim = rig.sim_meters[0]
        sim.password = "02020637"
        valid = codec.bcd_digits(f"{datetime(2026, 12, 1):%S%M%H%d%m%y}")
        # built by hand from the standard: PA P0 P1 P2, C0..C3, N1 N2, validity
        data = bytes.fromhex("02370602010000001A00") + valid
        reply = await rig.bus.exchange(Frame(sim.address, Function.RELAY_CONTROL, data))
        assert reply is not None and not reply.is_error, reply
        assert not sim.relay_closed


async def test_meters_stay_silent_to_a_read_sent_to_the_broadcast_address(migrated_url):
    async with Rig(migrated_url, 3) as rig:
        with pytest.raises(DeviceTimeout):
            await rig.bus.exchange(codec.read_request(codec.BROADCAST, 0x00010000))
        assert rig.sim.replies == 0


async def test_a_single_phase_meter_keeps_phase_a_of_its_blocks(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        rig.sim_meters[0].missing = {"52.7.0", "72.7.0", "51.7.0", "71.7.0"}
        [outcome] = await rig.collector.poll_all()
        await rig.writer.flush()
        values = stored(rig, rig.refs[0])
        assert outcome.ok, outcome.error
        assert "32.7.0" in values and "31.7.0" in values and "1.8.0" in values
        assert not {"52.7.0", "72.7.0", "51.7.0", "71.7.0"} & set(values)
        assert rig.bus.bad_frames == 0


async def test_a_combined_register_below_zero_is_negative_and_no_rollover(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        sim = rig.sim_meters[0]
        sim.overrides = {"3.8.0": Decimal("5.00")}
        await rig.collector.poll_all()
        sim.overrides = {"3.8.0": Decimal("-3.00")}  # net reactive energy went below zero
        rig.clock.advance(300)
        await rig.collector.poll_all()
        await rig.writer.flush()
        rows = rig.rows("SELECT value, quality FROM readings WHERE quantity = '3.8.0' ORDER BY ts")
        assert rows == [(5.0, 0), (-3.0, 0)]  # signed, and a decrease is not a rollover


async def test_a_late_reply_is_not_taken_for_the_answer_to_the_next_request(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        rig.bus.timing = BusTiming(baud=BAUD, turnaround=0.3)  # a reply timeout of ~0.37 s
        sim = rig.sim_meters[0]
        sim.reply_delay = 0.6  # its answer to the first read comes after that timeout …
        with pytest.raises(DeviceTimeout):
            await rig.bus.read(sim.address, 0x00010000)
        sim.reply_delay = 0.0
        # … while the next read waits for its own answer
        [[(quantity, value)]] = await rig.bus.read(sim.address, 0x02800002)
        assert quantity == "14.7.0" and 45 < value < 55
        assert rig.bus.stale_replies == 1


async def test_a_meter_refusing_block_dis_is_read_item_by_item(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        sim = rig.sim_meters[0]
        sim.unsupported = set(BLOCKS)
        [outcome] = await rig.collector.poll_all()
        await rig.writer.flush()
        assert outcome.ok, outcome.error
        truth = rig.sim.truth(sim.address)
        values = stored(rig, rig.refs[0])
        for q in ("1.8.0", "1.8.1", "1.8.4", "32.7.0", "52.7.0", "72.7.0", "31.7.0", "71.7.0"):
            assert q in values, q
        assert values["1.8.0"] == float(truth["1.8.0"])
        # the choice is remembered per meter: the next round asks no block DI
        sim.reads.clear()
        rig.clock.advance(300)
        [outcome] = await rig.collector.poll_all()
        assert outcome.ok and not set(BLOCKS) & set(sim.reads)


async def test_a_meter_counts_as_read_only_when_its_required_quantities_arrived(migrated_url):
    async with Rig(migrated_url, 2) as rig:
        energy = [0x0001FF00, 0x00010000, 0x00010100, 0x00010200, 0x00010300, 0x00010400]
        rig.sim_meters[0].unsupported = set(energy)  # voltages and currents, no 1.8.0
        outcomes = await rig.collector.poll_all()
        assert [o.ok for o in outcomes] == [False, True]
        assert "1.8.0" in outcomes[0].error
        [(successes,)] = rig.rows(
            "SELECT successes FROM read_stats WHERE device_id = %s", rig.refs[0].device_id
        )
        assert successes == 0


async def test_one_refused_event_counter_does_not_stop_the_others(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        sim = rig.sim_meters[0]
        sim.unsupported = {0x03110000}  # no power-down counter (read first)
        sim.cover_opens.append((datetime(2026, 11, 26, 8, 0), datetime(2026, 11, 26, 8, 2)))
        [outcome] = await rig.collector.poll_all()
        assert outcome.ok
        assert rig.rows("SELECT kind FROM events") == [("cover_open",)]


async def test_an_event_counter_served_as_ff_is_skipped_not_a_crash(migrated_url):
    async with Rig(migrated_url, 1) as rig:
        sim = rig.sim_meters[0]
        sim.unavailable = {0x03110000}  # the power-down counter: FF FF FF
        sim.cover_opens.append((datetime(2026, 11, 26, 8, 0), datetime(2026, 11, 26, 8, 2)))
        [outcome] = await rig.collector.poll_all()
        assert outcome.ok
        assert rig.rows("SELECT kind FROM events") == [("cover_open",)]


async def test_frozen_and_curve_readings_of_a_meter_with_its_clock_off_are_clock_suspect(
    migrated_url,
):
    async with Rig(migrated_url, 2, clock_bound=60, reread_days=1) as rig:
        rig.sim_meters[1].clock_offset = -600.0  # beyond the bound: not corrected
        await rig.collector.check_clocks()
        await rig.collector.read_daily()
        await rig.writer.flush()
        flags = {
            (device_id, quantity): (all_of, any_of)
            for device_id, quantity, all_of, any_of in rig.rows(
                "SELECT device_id, quantity, bit_and(quality), bit_or(quality) FROM readings"
                " WHERE quantity IN ('1.8.0', '1.8.0*d') GROUP BY 1, 2"
            )
        }
        suspect = int(Quality.CLOCK_SUSPECT)
        for quantity in ("1.8.0", "1.8.0*d"):
            assert flags[(rig.refs[1].device_id, quantity)][0] & suspect, quantity
            assert not flags[(rig.refs[0].device_id, quantity)][1] & suspect, quantity


async def test_a_lost_serial_port_is_a_bus_failure_reopened_with_backoff(migrated_url, tmp_path):
    link = tmp_path / "ttyRS485"  # the adapter's stable name (as a udev symlink would be)
    async with Rig(
        migrated_url, 2, instant_interval=3600, reopen=Backoff(initial=0.05, maximum=0.2)
    ) as rig:
        link.symlink_to(rig.sim.port)
        await rig.bus.transport.close()
        rig.bus.transport = SerialTransport(str(link), baud=BAUD)
        assert all(o.ok for o in await rig.collector.poll_all())
        failures = counter(instants.BUS_FAILURES, "bus-1")
        await rig.sim.stop()  # the adapter is unplugged: its pty is gone
        outcomes = await rig.collector.poll_all()
        assert [o.ok for o in outcomes] == [False, False]
        assert all(o.error.startswith("unreachable") for o in outcomes), outcomes
        assert counter(instants.BUS_FAILURES, "bus-1") == failures + 1
        [rate] = await rig.store.success_rates(outcomes[0].day, "bus-1")
        assert rate["failed"] == 0 and rate["read"] == 2  # read earlier today …
        stats = rig.rows("SELECT attempts, successes, last_error FROM read_stats")
        assert all(a == 2 and s == 1 and e.startswith("unreachable") for a, s, e in stats)
        # the loop goes on trying, with backoff, not an instant interval apart …
        task = asyncio.create_task(rig.collector.run())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while counter(instants.BUS_FAILURES, "bus-1") < failures + 3:
                assert loop.time() < deadline and not task.done(), "no retries"
                await asyncio.sleep(0.02)
            # … and when the adapter is back, it reopens the port and reads again
            rig.sim = DLT645BusSimulator(rig.sim_meters, baud=BAUD, clock=rig.clock)
            await rig.sim.start()
            link.unlink()
            link.symlink_to(rig.sim.port)
            while rig.rows("SELECT min(successes) FROM read_stats") != [(2,)]:
                assert loop.time() < deadline and not task.done(), "never reopened"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
