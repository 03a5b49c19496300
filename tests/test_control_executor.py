"""Load control end to end without the API: commands in PostgreSQL, carried out by the
executor on DL/T 645 meters of a real pty bus (while their collector polls) and on Modbus TCP
meters, the relay state read back and compared with the simulators'."""

import asyncio
import time

import psycopg
import pytest

from collectors.dlt645.codec import STATUS_WORD_3, RelayAction
from collectors.modbus.collector import ModbusTcpCollector
from ingest import control
from tests.control_rig import ControlRig


class _Readings:
    def __init__(self) -> None:
        self.readings = []

    async def add_many(self, readings) -> None:
        self.readings.extend(readings)

    async def flush(self) -> None:
        pass


async def _poll(rig: ControlRig, unit: int) -> dict[str, float]:
    """One poll of a Modbus unit by its collector, as the runtime polls it."""
    sink = _Readings()
    collector = ModbusTcpCollector(
        device_id=rig.names[f"mb-{unit}"],
        device_name=f"mb-{unit}",
        host="127.0.0.1",
        port=rig.modbus_sim.port,
        unit_id=unit,
        register_map=rig.regmap,
    )
    try:
        await collector.gather(sink)
    finally:
        collector.client.close()
    return {r.quantity: r.value for r in sink.readings}


EXECUTOR_STEPS = [
    ("alice", "control.request"),
    ("bob", "control.approve"),
    ("gridread", "control.execute"),
]


async def test_a_dlt645_meter_is_disconnected_and_reconnected_between_polls(migrated_url):
    async with ControlRig(migrated_url) as rig:
        sim = rig.dlt[0]
        before = time.time()
        await rig.wait_polled("dlt-0", "31.7.0", before)  # the bus is polling
        polls = len(sim.reads)  # the DIs the meter was asked so far
        done = await rig.run("dlt-0", "disconnect")
        assert done["status"] == "succeeded", done["error"]
        # what the meter said and the relay read back (status word 3, bit 4) = the simulator's
        assert not sim.relay_closed and sim.relay_commands == [RelayAction.DISCONNECT]
        assert done["result"]["relay"] == "open"
        assert done["result"]["status_word_3"] == "0050"  # bit 4 open, bit 6 commanded open
        # the normal reply to 1C: C = 9C, L = 0
        assert done["result"]["reply"].split()[8:10] == ["9C", "00"]
        assert done["approved_by"] == "bob" and done["requested_by"] == "alice"
        assert rig.audit(done["id"]) == [*EXECUTOR_STEPS, ("gridread", "control.succeed")]
        # the polls went on around the command, and now see no current behind the open relay
        opened = time.time()
        assert await rig.wait_polled("dlt-0", "31.7.0", opened) == 0.0
        assert len([di for di in sim.reads[polls:] if di != STATUS_WORD_3]) > 0
        done = await rig.run("dlt-0", "reconnect")
        assert done["status"] == "succeeded", done["error"]
        assert sim.relay_closed and done["result"]["relay"] == "closed"
        assert done["result"]["status_word_3"] == "0000"
        assert rig.dlt[1].relay_closed  # the other meter on the bus was not touched


async def test_a_meter_that_refuses_the_password_fails_with_the_reason(migrated_url):
    async with ControlRig(migrated_url, password="02999999") as rig:
        done = await rig.run("dlt-1", "disconnect")
        assert done["status"] == "failed"
        assert "refused relay DISCONNECT" in done["error"] and "UNAUTHORISED" in done["error"]
        assert rig.dlt[1].relay_closed  # nothing moved
        assert rig.audit(done["id"]) == [*EXECUTOR_STEPS, ("gridread", "control.fail")]


async def test_a_modbus_meter_relay_coil_and_demand_limit(migrated_url):
    async with ControlRig(migrated_url) as rig:
        sim = rig.modbus_sim
        assert sim.truth(2)["31.7.0"] > 0
        done = await rig.run("mb-2", "disconnect")
        assert done["status"] == "succeeded", done["error"]
        assert sim.relay_closed[2] is False and done["result"]["relay"] == "open"
        assert sim.relay_closed[1] is True  # unit 1 behind the same port untouched
        truth = sim.truth(2)  # the open relay cuts current and power
        assert truth["31.7.0"] == truth["51.7.0"] == truth["1.7.0"] == 0.0
        # … as a poll over the wire reads them, and the energy register stands still
        polled = await _poll(rig, 2)
        assert polled["31.7.0"] == polled["71.7.0"] == polled["1.7.0"] == 0.0
        assert polled["32.7.0"] > 200  # the voltage is still there (the meter's side)
        rig.modbus_clock.advance(3600)  # an hour with the relay open: no energy
        assert (await _poll(rig, 2))["1.8.0"] == polled["1.8.0"]
        done = await rig.run("mb-2", "reconnect")
        assert done["status"] == "succeeded" and sim.relay_closed[2] is True
        assert done["result"]["relay"] == "closed" and sim.truth(2)["31.7.0"] > 0
        rig.modbus_clock.advance(3600)  # an hour closed again: at 5 kW ± 50 %, kWh count on
        assert (await _poll(rig, 2))["1.8.0"] > polled["1.8.0"] + 2
        # demand limit: 12.5 kW in hundredths of a kW (the map's scale 0.01) → 1250
        done = await rig.run("mb-1", "demand_limit", kw=12.5)
        assert done["status"] == "succeeded", done["error"]
        assert sim.demand_limit[1] == [1250] and done["result"]["demand_limit_kw"] == 12.5


async def test_a_silent_meter_fails_with_a_timeout_and_the_loop_goes_on(migrated_url):
    async with ControlRig(migrated_url) as rig:
        rig.modbus_sim.set_fault(1, "no_reply")
        first = await rig.request("mb-1", "disconnect")
        second = await rig.request("mb-2", "disconnect")
        await rig.approve(first["id"])
        await rig.approve(second["id"])
        done = {row["device"]: row for row in await rig.executor.step()}
        assert done["mb-1"]["status"] == "failed"
        assert done["mb-1"]["error"].startswith("timeout: unit 1 at 127.0.0.1")
        assert done["mb-2"]["status"] == "succeeded"
        assert rig.modbus_sim.relay_closed == {1: True, 2: False}


async def test_devices_gridread_cannot_control_fail_with_a_clear_reason(migrated_url):
    async with ControlRig(migrated_url) as rig:
        with psycopg.connect(rig.url) as conn:
            conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval)"
                " VALUES ('mqtt-1', 'meter', 'mqtt', 'jzq-1', 900)"
                " ON CONFLICT (name) DO NOTHING"
            )
            [(mqtt_id,)] = conn.execute("SELECT id FROM devices WHERE name = 'mqtt-1'")
        rig.names["mqtt-1"] = mqtt_id
        done = await rig.run("mqtt-1", "disconnect")
        assert done["status"] == "failed"
        assert done["error"] == (
            "mqtt-1 is read through concentrator jzq-1 (MQTT): gridread sends it no relay commands"
        )
        done = await rig.run("dlt-0", "demand_limit", kw=5)
        assert done["status"] == "failed"
        assert done["error"] == "dlt-0: DL/T 645 relay control (1C) has no demand_limit"


async def test_unapproved_requests_expire_and_cannot_be_approved_after(migrated_url):
    async with ControlRig(migrated_url, ttl=0.3) as rig:
        command = await rig.request("mb-1", "disconnect")
        deadline = time.monotonic() + 10
        while rig.rows("SELECT now() < %s AS waiting", command["expires_at"])[0]["waiting"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        with pytest.raises(control.WrongState, match="expired at"):
            await rig.approve(command["id"])
        assert await rig.executor.step() == []
        [row] = rig.rows("SELECT status, error FROM control_commands")
        assert row["status"] == "expired" and row["error"].startswith("not approved before")
        assert rig.audit(command["id"]) == [
            ("alice", "control.request"),
            ("gridread", "control.expire"),
        ]
        assert rig.modbus_sim.relay_closed[1] is True


async def test_nobody_approves_their_own_request(migrated_url):
    async with ControlRig(migrated_url) as rig:
        command = await rig.request("mb-1", "disconnect", by="alice")
        with pytest.raises(control.NotAllowed, match="another user must approve"):
            await rig.approve(command["id"], by="alice")
        # and the database says so too, whoever writes to it
        with psycopg.connect(rig.url) as conn, pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "UPDATE control_commands SET status = 'approved', approved_by = 'alice',"
                " approved_at = now() WHERE id = %s",
                (command["id"],),
            )
        assert await rig.executor.step() == []
        assert rig.rows("SELECT status FROM control_commands") == [{"status": "requested"}]


async def test_only_the_transitions_of_the_table(migrated_url):
    async with ControlRig(migrated_url) as rig:
        done = await rig.run("mb-1", "disconnect")
        with (
            psycopg.connect(rig.url) as conn,
            pytest.raises(
                psycopg.errors.CheckViolation, match="succeeded → approved is not a transition"
            ),
        ):
            conn.execute(
                "UPDATE control_commands SET status = 'approved' WHERE id = %s", (done["id"],)
            )
        async with rig.store.pool.connection() as conn:
            with pytest.raises(control.NotAllowed, match="only alice may cancel"):
                await control.cancel(conn, done["id"], by="bob", actor="bob")
            with pytest.raises(control.WrongState, match="is succeeded"):
                await control.cancel(conn, done["id"], by="alice", actor="alice")


async def test_a_command_cut_off_while_executing_fails_when_the_executor_starts(migrated_url):
    async with ControlRig(migrated_url) as rig:
        command = await rig.request("mb-1", "disconnect")
        await rig.approve(command["id"])
        async with rig.store.pool.connection() as conn:
            await control.claim_next(conn)  # then the process died
        with psycopg.connect(rig.url) as conn:  # … longer ago than the command timeout
            conn.execute("UPDATE control_commands SET executed_at = now() - interval '1 hour'")
        runner = asyncio.create_task(rig.executor.run())
        try:
            deadline = time.monotonic() + 10
            while rig.rows("SELECT status FROM control_commands")[0]["status"] == "executing":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        [row] = rig.rows("SELECT status, error FROM control_commands")
        assert row == {
            "status": "failed",
            "error": "the executor stopped while running it: the relay state is unknown",
        }
        assert rig.audit(command["id"])[-1] == ("gridread", "control.fail")
        assert rig.modbus_sim.relay_closed[1] is True


async def test_an_approved_command_not_started_before_it_expires_never_runs(migrated_url):
    async with ControlRig(migrated_url, ttl=2.0) as rig:
        command = await rig.request("mb-1", "disconnect")
        await rig.approve(command["id"])  # … and the runtime was down until after expires_at
        deadline = time.monotonic() + 10
        while rig.rows("SELECT now() < %s AS waiting", command["expires_at"])[0]["waiting"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await rig.executor.step() == []
        [row] = rig.rows("SELECT status, error FROM control_commands")
        assert row["status"] == "failed"
        assert row["error"].startswith("approved, but not started before it expired at")
        assert rig.audit(command["id"])[-1] == ("gridread", "control.fail")
        assert rig.modbus_sim.relay_closed[1] is True
