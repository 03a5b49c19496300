"""Load control in the running process: `gridread run` with a DL/T 645 bus (the simulator in
its own process, on a pty), a command requested and approved through the API by two load
operators, carried out by the runtime's control-executor through the running bus: the relay
read back open, and the bus's next polls read no current behind it."""

import time
from datetime import datetime

import httpx

from tests.api_auth import credentials
from tests.test_lifecycle import Gridread, running, simulator, stop_simulator


def _wait(fetch, until, what: str, run: Gridread, deadline_s: float = 30.0):
    deadline = time.monotonic() + deadline_s
    body = None
    while time.monotonic() < deadline:
        body = fetch()
        if until(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"{what} never happened; last: {body}\n{run.stderr}")


def test_a_command_runs_through_the_running_bus(tmp_path, db_url):
    sim = simulator("simulate-rs485", "--meters", "1", "--baud", "9600")
    try:
        pty = sim.stdout.readline().split(" on ")[1].split(" at ")[0]
        address = sim.stdout.readline().split('address = "')[1][:12]
        config = (
            f'[[bus]]\nname = "b1"\nport = "{pty}"\nbaud = 9600\ninstant_interval = 1\n'
            f'[[bus.meter]]\nname = "m645"\naddress = "{address}"\n'
        )
        # the simulated meters' password (SimMeter); an operator code of the utility's
        run = Gridread(
            tmp_path,
            config,
            db_url,
            GRIDREAD_CONTROL_DLT645_PASSWORD="02123456",
            GRIDREAD_CONTROL_DLT645_OPERATOR="00000042",
            GRIDREAD_CONTROL_POLL_INTERVAL="0.2",
        )
        try:
            run.health(running("bus:b1", "control-executor"))
            alice = credentials(db_url, "load_operator", "alice")
            bob = credentials(db_url, "load_operator", "bob")
            api = httpx.Client(base_url=run.base, timeout=5)

            def current(after: datetime | None = None):
                rows = api.get("/devices/m645/latest", headers=bob).json()["data"]
                [row] = [r for r in rows if r["quantity"] == "31.7.0"] or [None]
                if row is None or (after and datetime.fromisoformat(row["ts"]) <= after):
                    return None
                return row["value"]

            assert _wait(current, lambda v: v is not None, "a current read", run) > 0
            made = api.post(
                "/control/commands",
                json={"device": "m645", "action": "disconnect", "reason": "arrears"},
                headers=alice,
            )
            assert made.status_code == 201, made.text
            url = f"/control/commands/{made.json()['id']}"
            assert api.post(f"{url}/approve", headers=bob).status_code == 200
            done = _wait(
                lambda: api.get(url, headers=bob).json(),
                lambda c: c["status"] in ("succeeded", "failed"),
                "the command's end",
                run,
            )
            assert done["status"] == "succeeded", done["error"]
            assert done["result"]["relay"] == "open"
            assert done["result"]["status_word_3"] == "0050"
            finished = datetime.fromisoformat(done["finished_at"])
            assert _wait(lambda: current(finished), lambda v: v is not None, "a poll", run) == 0
            assert (
                run.metric(
                    "gridread_control_commands_total", action="disconnect", status="succeeded"
                )
                == 1
            )
            run.sigterm()
        finally:
            run.kill()
    finally:
        stop_simulator(sim)
