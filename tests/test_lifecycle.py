"""One service lifecycle, run as a user runs it: `gridread run` with each kind of config alone
stays up, shows its services in /health and stops on SIGTERM within 10 s with exit code 0; a
service whose dependency is broken is restarted, counted and shown as degraded; the API port
taken is a non-zero exit; a cancellation is never lost."""

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from collectors.mqtt.rereads import ConcentratorRereader
from gridread.services import RESTARTS, Service, ServiceError, Stage, Supervisor, SupervisorPolicy
from ingest.retry import Backoff
from tests.api_auth import credentials
from tests.conftest import free_port

GRIDREAD = [sys.executable, "-m", "gridread.cli"]
STOP_WITHIN_S = 10.0


class Gridread:
    """`gridread run -c cfg.toml` in a subprocess, its output in files (no pipe to fill)."""

    def __init__(self, tmp_path: Path, config: str, db_url: str | None, **env: str) -> None:
        """`db_url` None: the embedded database in tmp_path/data."""
        self.api_port = free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        cfg = tmp_path / "gridread.toml"
        cfg.write_text(config)
        self.err_path = tmp_path / "stderr.txt"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")}
        self.data_dir = tmp_path / "data"
        full_env |= {
            "GRIDREAD_API_PORT": str(self.api_port),
            "GRIDREAD_DATA_DIR": str(self.data_dir),
            **({"GRIDREAD_DATABASE_URL": db_url} if db_url else {}),
            **env,
        }
        with open(tmp_path / "stdout.txt", "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [*GRIDREAD, "run", "-c", str(cfg)], env=full_env, stdout=out, stderr=err
            )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def health(self, until=lambda body: True, deadline_s: float = 30.0) -> dict:
        """/health's body once `until(body)` holds; fails if the process ends meanwhile."""
        deadline = time.monotonic() + deadline_s
        body: dict | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"gridread exited ({self.proc.returncode}):\n{self.stderr}")
            try:
                response = httpx.get(f"{self.base}/health", timeout=2)
                body = response.json() | {"http_status": response.status_code}
                if until(body):
                    return body
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"/health never showed what was expected; last: {body}\n{self.stderr}")

    def stays_up(self, seconds: float = 3.0) -> None:
        """The process keeps answering /health for `seconds` (it used to exit within 2 s)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.health()

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.base}/metrics", timeout=2).text
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series = f"{name}{{{want}}}" if labels else name
        match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def sigterm(self) -> float:
        """Send SIGTERM; return how long the process took to exit with code 0."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"SIGTERM did not stop gridread within {STOP_WITHIN_S} s:\n{self.stderr}")
        elapsed = time.monotonic() - started
        assert self.proc.returncode == 0, self.stderr
        return elapsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def services(body: dict) -> dict[str, dict]:
    return {s["name"]: s for s in body.get("services", [])}


def running(*names: str):
    """A /health condition: these services are running."""
    return lambda body: all(services(body).get(n, {}).get("state") == "running" for n in names)


def wait_listening(port: int, deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port}")


def simulator(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")}
    return subprocess.Popen(
        [*GRIDREAD, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def stop_simulator(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_an_empty_config_stays_up_and_stops_on_sigterm_with_its_embedded_database(tmp_path):
    run = Gridread(tmp_path, "", None)
    try:
        body = run.health(deadline_s=60)  # a first start runs initdb
        assert body["status"] == "ok" and body["http_status"] == 200
        assert {"writer", "api"} <= set(services(body))
        run.stays_up()
        postmaster = run.data_dir / "pgdata" / "postmaster.pid"
        assert postmaster.exists()
        assert run.sigterm() < STOP_WITHIN_S
        assert not postmaster.exists()  # the embedded server was stopped too
    finally:
        run.kill()


def test_modbus_only_stays_up_and_stops_on_sigterm(tmp_path, db_url):
    port = free_port()
    sim = simulator("simulate", "--meters", "1", "--port", str(port))
    try:
        wait_listening(port)
        config = (
            "[[device]]\n"
            'name = "m1"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\n'
            f'port = {port}\nunit_id = 1\nregister_map = "three_phase_meter"\n'
            "poll_interval = 0.5\n"
        )
        run = Gridread(tmp_path, config, db_url)
        try:
            body = run.health(running("modbus-poller"))
            key = credentials(db_url, "viewer")  # the database is migrated once it runs
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # readings arrive: the poller works
                latest = httpx.get(f"{run.base}/devices/m1/latest", headers=key, timeout=2)
                latest = latest.json()["data"]
                if latest:
                    break
                time.sleep(0.3)
            assert latest, run.stderr
            run.stays_up()
            assert body["status"] == "ok"
            run.sigterm()
        finally:
            run.kill()
    finally:
        stop_simulator(sim)


def test_a_dlt645_bus_only_stays_up_and_stops_on_sigterm(tmp_path, db_url):
    sim = simulator("simulate-rs485", "--meters", "1", "--baud", "9600")
    try:
        first = sim.stdout.readline()
        pty = first.split(" on ")[1].split(" at ")[0]
        address = re.search(r'address = "(\d{12})"', sim.stdout.readline()).group(1)
        config = (
            f'[[bus]]\nname = "b1"\nport = "{pty}"\nbaud = 9600\ninstant_interval = 1\n'
            f'[[bus.meter]]\nname = "m645"\naddress = "{address}"\n'
        )
        run = Gridread(tmp_path, config, db_url)
        try:
            run.health(running("bus:b1"))
            key = credentials(db_url, "viewer")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the meter is read: the bus task works
                stats = httpx.get(f"{run.base}/read-stats", headers=key, timeout=2).json()
                if stats and stats[0]["read"] == 1:
                    break
                time.sleep(0.3)
            assert stats and stats[0]["read"] == 1, run.stderr
            run.stays_up()
            run.sigterm()
        finally:
            run.kill()
    finally:
        stop_simulator(sim)


def test_mqtt_concentrator_only_stays_up_and_stops_on_sigterm(tmp_path, db_url, mqtt_broker):
    config = (
        f'mqtt_host = "{mqtt_broker.host}"\nmqtt_port = {mqtt_broker.port}\n'
        f'mqtt_client_id = "lifecycle-{free_port()}"\n'
        '[[concentrator]]\nname = "jzq-1"\narea = "area-1"\nmeters = ["c-0001", "c-0002"]\n'
    )
    run = Gridread(tmp_path, config, db_url)
    try:
        body = run.health(
            lambda b: (
                services(b).get("concentrator-rereads", {}).get("state") == "running"
                and services(b).get("mqtt-ingest", {}).get("state") == "running"
            )
        )
        assert body["status"] == "ok" and body["http_status"] == 200
        run.stays_up()
        run.sigterm()
    finally:
        run.kill()


def test_a_failing_service_is_restarted_counted_and_shown_degraded(tmp_path, db_url):
    """The re-reader's broker is not there: its start fails; it is logged, counted, restarted
    with backoff, /health says degraded (503); SIGTERM still stops all with code 0."""
    config = (
        f'mqtt_host = "127.0.0.1"\nmqtt_port = {free_port()}\n'
        "mqtt_connect_timeout = 0.3\nservice_restart_max_delay = 0.5\n"
    )
    run = Gridread(tmp_path, config, db_url)
    try:
        body = run.health(
            lambda b: services(b).get("concentrator-rereads", {}).get("restarts", 0) >= 2
        )
        assert body["status"] == "degraded" and body["http_status"] == 503
        assert body["database"] == "ok"
        rereads = services(body)["concentrator-rereads"]
        assert "no subscription confirmed" in rereads["last_error"]
        assert services(body)["api"]["state"] == "running"
        assert run.metric("gridread_service_restarts_total", service="concentrator-rereads") >= 2
        run.sigterm()
    finally:
        run.kill()
    assert "Traceback" in run.stderr and "concentrator-rereads failed" in run.stderr


def unanswered_bytes(db_url: str) -> int:
    """Bytes the server has not read: connections waiting in its listen queue and requests
    waiting on its accepted connections (a frozen backend reads nothing)."""
    params = conninfo_to_dict(db_url)
    path = f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"
    out = subprocess.run(["ss", "-xa"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if path in line.split())


def test_a_database_call_that_never_returns_cannot_hold_the_process(tmp_path, db_url):
    """The database server freezes (SIGSTOP, as in a network partition) while gridread
    talks to it (the bus collector's store, the writer): those calls never return. SIGTERM
    still ends the process within the bound, with code 1 and saying so. It used to wait for
    that thread for ever."""
    sim = simulator("simulate-rs485", "--meters", "1", "--baud", "9600")
    frozen: list[int] = []
    try:
        pty = sim.stdout.readline().split(" on ")[1].split(" at ")[0]
        address = re.search(r'address = "(\d{12})"', sim.stdout.readline()).group(1)
        config = (
            f'shutdown_timeout = 3\n[[bus]]\nname = "b1"\nport = "{pty}"\nbaud = 9600\n'
            f'instant_interval = 1\n[[bus.meter]]\nname = "m645"\naddress = "{address}"\n'
        )
        run = Gridread(tmp_path, config, db_url)
        try:
            run.health(running("bus:b1"))
            with psycopg.connect(db_url, autocommit=True) as conn:
                data_dir = conn.execute("SHOW data_directory").fetchone()[0]
                frozen = [
                    pid
                    for (pid,) in conn.execute(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ]
            frozen.insert(0, int(Path(data_dir, "postmaster.pid").read_text().split()[0]))
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            deadline = time.monotonic() + 15
            while unanswered_bytes(db_url) == 0:  # the next database call hangs
                assert time.monotonic() < deadline, run.stderr
                time.sleep(0.1)
            started = time.monotonic()
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a hung database call held gridread past SIGTERM:\n{run.stderr}")
            assert time.monotonic() - started < STOP_WITHIN_S
            assert run.proc.returncode == 1, run.stderr
            assert "exiting without waiting for them" in run.stderr
        finally:
            run.kill()
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stop_simulator(sim)


def test_the_api_port_taken_is_a_non_zero_exit(tmp_path, db_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Gridread(tmp_path, "", db_url, GRIDREAD_API_PORT=str(port))
        try:
            run.proc.wait(30)
        finally:
            run.kill()
    assert run.proc.returncode not in (0, None)
    assert f"the API could not start on 127.0.0.1:{port}" in run.stderr


def _paho_threads(client_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"paho-mqtt-client-{client_id}"]


async def test_a_cancel_arriving_with_the_rereaders_suback_is_not_lost(
    mqtt_broker, collector_store
):
    """SIGTERM (a cancel) arriving in the same loop turn as the subscription's SUBACK used to
    be swallowed by Python 3.11's `wait_for` in `start()`: the task went on as if never
    cancelled, and shutdown hung."""
    rereader = ConcentratorRereader(
        host=mqtt_broker.host, port=mqtt_broker.port, store=collector_store
    )
    client_id = rereader.client._client_id.decode()
    # The SUBACK must not come before the hook below is in place (on a busy machine it did):
    # the SUBSCRIBE waits for the hook, in paho's thread.
    hooked = threading.Event()
    subscribe = rereader.client.subscribe

    def subscribe_once_hooked(*args, **kwargs):
        assert hooked.wait(5), "the test did not hook on_subscribe"
        return subscribe(*args, **kwargs)

    rereader.client.subscribe = subscribe_once_hooked
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(rereader.run(first_delay=60))
    deadline = loop.time() + 5
    while rereader.client.on_subscribe is None and loop.time() < deadline:
        await asyncio.sleep(0)  # run() has reached the point where it waits for the SUBACK
    on_subscribe = rereader.client.on_subscribe

    def suback_then_sigterm(*args):  # paho's thread: the SUBACK, and a SIGTERM right after it
        on_subscribe(*args)
        loop.call_soon_threadsafe(task.cancel)

    rereader.client.on_subscribe = suback_then_sigterm
    hooked.set()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert task.cancelled()
    assert not _paho_threads(client_id)  # and its MQTT client is stopped


# -- the supervisor in-process, with service functions written for each case -----------------


def fast_policy(**kw) -> SupervisorPolicy:
    return SupervisorPolicy(
        backoff=Backoff(initial=0.05, maximum=0.1), stable_after=5.0, shutdown_timeout=2.0, **kw
    )


async def until(condition, deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def state_of(supervisor: Supervisor, name: str) -> dict:
    return {s["name"]: s for s in supervisor.snapshot()}[name]


async def test_a_service_with_nothing_to_do_finishes_without_stopping_the_others():
    supervisor = Supervisor(fast_policy())

    async def nothing() -> None:
        return

    supervisor.start(Service("idle", nothing))
    supervisor.start(Service("busy", asyncio.Event().wait))
    await until(lambda: state_of(supervisor, "idle")["state"] == "finished")
    assert not supervisor.stopping.is_set()
    assert state_of(supervisor, "busy")["state"] == "running"
    assert not state_of(supervisor, "idle")["degraded"]
    assert await supervisor.shutdown() == []
    assert state_of(supervisor, "busy")["state"] == "stopped"


async def test_a_failing_service_is_restarted_counted_and_recovers():
    supervisor = Supervisor(fast_policy())
    attempts = []
    before = RESTARTS.labels("flaky")._value.get()

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) <= 2:
            raise ConnectionError(f"attempt {len(attempts)}: broker gone")
        await asyncio.Event().wait()

    supervisor.start(Service("flaky", flaky))
    await until(lambda: len(attempts) == 3)
    status = state_of(supervisor, "flaky")
    assert status["state"] == "running" and status["restarts"] == 2
    assert status["last_error"] == "ConnectionError: attempt 2: broker gone"
    assert status["degraded"]  # failed less than stable_after ago
    assert RESTARTS.labels("flaky")._value.get() == before + 2
    assert not supervisor.stopping.is_set()
    assert await supervisor.shutdown() == []


async def test_a_critical_service_failing_stops_the_process_with_its_reason():
    supervisor = Supervisor(fast_policy())

    async def cannot() -> None:
        raise ServiceError("the API could not start on 127.0.0.1:1")

    supervisor.start(Service("busy", asyncio.Event().wait))
    supervisor.start(Service("api", cannot, critical=True, stage=Stage.API))
    async with asyncio.timeout(5):
        await supervisor.wait()
    assert supervisor.fatal == "the API could not start on 127.0.0.1:1"
    assert state_of(supervisor, "api")["state"] == "failed"
    assert await supervisor.shutdown() == []


async def test_shutdown_drains_in_stages_and_reports_a_service_ignoring_cancellation():
    supervisor = Supervisor(fast_policy())
    order: list[str] = []
    release = asyncio.Event()
    drained = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                order.append("stubborn ignored a cancel")

    written = asyncio.Event()

    async def writer() -> None:
        await drained.wait()
        order.append("writer drained")
        written.set()
        await asyncio.Event().wait()  # would go on: it is cancelled once stop() returned

    async def drain() -> None:  # returns when the writer may be cancelled without loss
        drained.set()
        await written.wait()

    supervisor.start(Service("stubborn", stubborn))
    supervisor.start(Service("writer", writer, stop=drain, critical=True, stage=Stage.WRITER))
    await asyncio.sleep(0)  # both have started
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await supervisor.shutdown() == ["stubborn"]
    assert loop.time() - started <= supervisor.policy.shutdown_timeout + 0.5
    assert order == ["stubborn ignored a cancel", "writer drained"]
    assert state_of(supervisor, "writer")["state"] == "stopped"
    release.set()


async def test_a_cancel_a_library_swallows_during_a_poll_still_stops_the_poller():
    """pymodbus waits for a reply with `asyncio.wait_for`, which on Python 3.11 returns the
    reply when a cancel arrives in the loop turn the reply completes it: the poll ended as if
    never cancelled and the poll loop went on polling (a demo stop once logged
    "modbus-poller ignored cancellation" and exited 1)."""
    from collectors.scheduler import PollPolicy, PollScheduler

    loop = asyncio.get_running_loop()
    waiting: asyncio.Queue[asyncio.Future] = asyncio.Queue()

    class Gateway:  # replies as pymodbus awaits them
        device_id, device_name, protocol = 1, "m", "modbus_tcp"

        async def gather(self, sink) -> int:
            reply = loop.create_future()
            await waiting.put(reply)
            return await asyncio.wait_for(reply, 5)

        async def close(self) -> None:
            pass

    scheduler = PollScheduler(sink=None, policy=PollPolicy(timeout=10, jitter=0))
    scheduler.add(Gateway(), interval=0.01)
    task = asyncio.create_task(scheduler.run())
    reply = await asyncio.wait_for(waiting.get(), 5)
    reply.set_result(0)  # the reply and the cancel (SIGTERM) in one loop turn
    task.cancel()
    # not `await task`: a poller that lost the cancel never ends, and neither would the test
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled(), "the poller went on polling after its cancel"
