"""The command line, run as a user runs it: bad input gives one line and a non-zero exit,
and nothing is half-written; the demo runs and stops cleanly with its data kept."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from api.security import Role
from ingest.schema import MIGRATIONS
from tests.conftest import free_port

GRIDREAD = [sys.executable, "-m", "gridread.cli"]


def run_cli(*args, env=None, timeout=60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")}
    full_env.update(env or {})
    return subprocess.run(
        [*GRIDREAD, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def device(name, **extra):
    fields = {
        "name": name,
        "protocol": "modbus_tcp",
        "host": "127.0.0.1",
        "port": 5020,
        "unit_id": 1,
        "register_map": "three_phase_meter",
        **extra,
    }
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in fields.items())
    return f"[[device]]\n{body}\n"


def one_error_line(result) -> str:
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gridread: error: ")
    return lines[0]


def table_count(url, table):
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]
        return (
            None if exists is None else conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        )


def test_register_map_with_a_wrong_type(tmp_path, db_url):
    (tmp_path / "meter.toml").write_text(
        '[[field]]\nquantity = "1.8.0"\naddress = 0\ntype = "uint17"\n'
    )
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(device("ok-meter") + device("bad-meter", register_map="meter.toml"))
    result = run_cli("run", "-c", str(cfg), env={"GRIDREAD_DATABASE_URL": db_url})
    line = one_error_line(result)
    assert (
        f"{cfg}: device 2 (bad-meter): {tmp_path / 'meter.toml'}: field 1 (1.8.0): type = 'uint17'"
        in line
    )
    assert table_count(db_url, "devices") is None  # nothing written, not even the schema


def test_a_map_naming_an_unknown_quantity(tmp_path, db_url):
    (tmp_path / "meter.toml").write_text(
        '[[field]]\nquantity = "1.8.9"\naddress = 0\ntype = "uint32"\n'
    )
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(device("m1", register_map="meter.toml"))
    line = one_error_line(run_cli("run", "-c", str(cfg), env={"GRIDREAD_DATABASE_URL": db_url}))
    assert "field 1 (1.8.9): unknown quantity '1.8.9'" in line


def test_a_bad_device_entry(tmp_path):
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(device("m1", port=70000))
    line = one_error_line(run_cli("run", "-c", str(cfg)))
    assert "device 1 (m1): port: Input should be less than or equal to 65535 (got 70000)" in line


def test_an_unreachable_database(tmp_path):
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(device("m1"))
    port = free_port()
    url = f"postgresql://gridread:secret@127.0.0.1:{port}/gridread"
    line = one_error_line(run_cli("run", "-c", str(cfg), env={"GRIDREAD_DATABASE_URL": url}))
    assert (
        f"cannot connect to the database at postgresql://gridread:***@127.0.0.1:{port}/gridread"
        in line
    )
    assert "secret" not in line


def test_bad_setting_in_environment(tmp_path):
    line = one_error_line(run_cli("migrate", env={"GRIDREAD_API_PORT": "eighty"}))
    assert "api_port" in line


def test_migrate_is_a_command(db_url):
    for _ in range(2):
        result = run_cli("migrate", env={"GRIDREAD_DATABASE_URL": db_url})
        assert result.returncode == 0, result.stderr
    # each once: readings (0), MIGRATIONS, the rollups and their local days (5, 6:
    # ingest.rollups.ensure_rollups)
    assert table_count(db_url, "schema_migrations") == len(MIGRATIONS) + 3


def test_demo_runs_end_to_end_and_keeps_its_data(tmp_path):
    """`gridread demo` on the embedded database: readings arrive over the API; the grid's line
    loss too (its theft ranks first, its wrong CT ratio last); Ctrl-C stops it cleanly; a
    second run finds the first run's readings."""
    api_port, sim_port = free_port(), free_port()
    env = {
        "GRIDREAD_DATA_DIR": str(tmp_path / "data"),
        "GRIDREAD_API_PORT": str(api_port),
        "GRIDREAD_POLL_TIMEOUT": "0.3",
        "GRIDREAD_POLL_RETRIES": "1",
    }
    base = f"http://127.0.0.1:{api_port}"

    def start():
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")} | env
        return subprocess.Popen(
            [
                *GRIDREAD,
                "demo",
                "--meters",
                "3",
                "--interval",
                "0.5",
                "--sim-port",
                str(sim_port),
                "--fault",
                "3=no_reply",
                "--rs485-meters",
                "2",
                "--concentrator-meters",
                "5",
                "--grid-meters",
                "8",
                "--analytics-interval",
                "1",
            ],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    keys_file = tmp_path / "data" / "demo-keys.json"

    def key(role: str = "viewer") -> dict[str, str]:
        """The headers of the demo's user of `role` (its key is new on each run)."""
        return {"X-API-Key": json.loads(keys_file.read_text())[role]}

    def energy_points(deadline_s=45.0, at_least=1):
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                r = httpx.get(
                    f"{base}/devices/demo-meter-01/readings",
                    params={"quantity": "1.8.0"},
                    headers=key() if keys_file.exists() else {},
                    timeout=2,
                )
                if r.status_code == 200 and r.json()["count"] >= at_least:
                    return r.json()["count"]
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail("the demo served no readings in time")

    proc = start()
    try:
        first = energy_points(at_least=3)
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "ok"
        metrics = httpx.get(f"{base}/metrics").text
        assert 'gridread_poll_errors_total{kind="timeout",protocol="modbus_tcp"}' in metrics
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:  # the DL/T 645 bus on its pty is read too
            stats = httpx.get(f"{base}/read-stats", headers=key()).json()
            if stats and stats[0]["read"] == 2:
                break
            time.sleep(0.5)
        assert stats[0]["bus"] == "demo-rs485-1" and stats[0]["rate"] == 1.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the voltage monitor and the concentrator too
            vm = httpx.get(f"{base}/devices/demo-vm/latest", headers=key()).json()["data"]
            conc = httpx.get(f"{base}/concentrators/read-stats", headers=key()).json()
            if vm and conc and conc[0]["read"] == 5:
                break
            time.sleep(0.5)
        assert vm[0]["quantity"] == "32.7.0" and 190 < vm[0]["value"] < 250
        assert conc[0]["due"] == 5 and conc[0]["read"] == 5
        # the grid's line loss: yesterday's ranking (its last interval ends at today's first
        # point, which the concentrators upload through the day; in the first minutes after
        # midnight: the day before)
        local = datetime.now(ZoneInfo("Asia/Shanghai"))
        day = local.date() - timedelta(days=1 if local.hour or local.minute > 10 else 2)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            ranking = httpx.get(
                f"{base}/lineloss/ranking", params={"day": str(day)}, headers=key()
            ).json()
            if len(ranking["ranked"]) == 3:
                break
            time.sleep(0.5)
        got = [(r["name"], r["status"], r["coverage"]) for r in ranking["ranked"]]
        assert got == [("f01-a02", "high", 1.0), ("f01-a01", "normal", 1.0),
                       ("f01-a03", "negative", 1.0)]  # fmt: skip
        assert ranking["start"].startswith(str(day - timedelta(days=1)))  # 16:00 UTC
        assert ranking["not_computable"] == []
        issue10 = _issue10_parts(base, day, key(), key("billing"))
        # without a key: refused; the demo's keys are in the banner, each role's own
        assert httpx.get(f"{base}/read-stats").status_code == 401
        keys = json.loads(keys_file.read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "gridread is running" in out and f"{base}/docs" in out
    assert f'curl -H "X-API-Key: $KEY" {base}/lineloss/ranking' in out
    assert f'curl -H "X-API-Key: $BILLING_KEY" \'{base}/billing/export' in out
    assert sorted(keys) == sorted(r.value for r in Role)
    assert all(f"demo-{role:<18} {k}" in out for role, k in keys.items())
    assert f"export KEY={keys['viewer']} BILLING_KEY={keys['billing']}" in out
    for part in ("power-quality/voltage", "reliability/indices", "worklist", "billing/export"):
        assert f"{base}/{part}" in out, part
    pq, indices, interruptions, worklist, billing = issue10
    public = [r for r in pq if r["name"] in ("f01-a01", "f01-a02", "f01-a03")]
    assert len(public) == 3 and all(r["monitored_s"] > 0 and r["rate"] is not None for r in public)
    # yesterday: f01-a01 out 10:00–10:40 (8 customers × 40 min), unplanned; f01-a03 out
    # 14:10–15:50 inside its notice (8 × 100 min), planned
    got = {(r["area"], r["kind"], r["customers"], r["customer_minutes"]) for r in interruptions}
    assert got == {("f01-a01", "unplanned", 8, 320.0), ("f01-a03", "planned", 8, 800.0)}
    assert {r["name"] for r in indices} >= {"f01-a01", "f01-a03"}
    cases = {(c["meter"], c["kind"]) for c in worklist}
    assert {("f01-a02-c004", "theft"), ("f01-a03-total", "wrong_multiplier")} <= cases
    billed = [r for r in billing if r["meter"].startswith("f01-a0") and "-c" in r["meter"]]
    assert billed and all(r["energy_kwh"] is not None for r in billed)
    assert "writer:" in err and "readings written" in err
    assert "demo-meter-03 failed (timeout)" in err

    proc = start()
    try:
        assert energy_points(at_least=first + 1) > first  # old readings are still there
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (Path(env["GRIDREAD_DATA_DIR"]) / "pgdata" / "PG_VERSION").exists()


def _issue10_parts(base: str, day, viewer: dict, billing: dict) -> tuple[list, ...]:
    """What the banner's issue-10 curls answer, once each has rows (the day jobs run after
    the grid's past days are stored): power quality per area, reliability indices and
    yesterday's interruptions, the worklist, the billing export of the past days."""
    start = day - timedelta(days=3)
    window = {"start": f"{day}T00:00:00+08:00", "end": f"{day + timedelta(days=1)}T00:00:00+08:00"}
    queries = [
        ("/power-quality/voltage", {"kind": "area", **window}),
        ("/reliability/indices", {"level": "area"}),
        ("/reliability/interruptions", window),
        ("/worklist", {}),
        ("/billing/export", {"start": str(start), "end": str(day + timedelta(days=1))}),
    ]
    deadline = time.monotonic() + 90
    while True:
        got = [
            httpx.get(
                f"{base}{path}",
                params=p,
                headers=billing if "billing" in path else viewer,
                timeout=5,
            ).json()["data"]
            for path, p in queries
        ]
        if (all(got) and len(got[2]) == 2 and len(got[3]) >= 2) or time.monotonic() > deadline:
            return tuple(got)
        time.sleep(1)


def test_the_example_config_is_valid():
    from gridread.inventory import parse_inventory
    from gridread.settings import load_settings, read_config_file

    path = Path(__file__).resolve().parent.parent / "examples" / "gridread.toml"
    data = read_config_file(path)
    settings = load_settings(data, source=str(path))
    inventory = parse_inventory(data, source=str(path), base_dir=path.parent)
    assert settings.poll_timeout == 3.0 and settings.database_url is None
    assert [d.unit_id for d in inventory.devices] == [1, 2, 3]
    assert inventory.devices[2].poll_interval == 60
    [monitor] = inventory.monitors
    assert (monitor.port, monitor.unit_id) == ("/dev/ttyUSB1", 1)
    [conc] = inventory.concentrators
    assert [r["attributes"] for r in conc.rows()][1] == {
        "concentrator": "area-0413-jzq",
        "area": "area-0413",
        "timezone": "Asia/Shanghai",  # the concentrator's zone: its meters' local days
    }
    [bus] = inventory.buses
    assert (bus.port, bus.baud, [m.address for m in bus.meter]) == (
        "/dev/ttyUSB0",
        2400,
        ["202107070001", "202107070002"],
    )
    # its grid: every meter placed, each area with its total meter
    points = inventory.topology.entries["metering_point"]
    assert {p.meter for _, p in points} == {
        "feeder-12-head",
        "area-0412-total",
        "area-0412-pump-station",
        "area-0412-m0001",
        "area-0412-m0002",
        *conc.meters,
    }


@pytest.mark.parametrize(
    ("bus", "message"),
    [
        ("baud = 2500\n", "bus 1 (b1): baud: Value error, expected one of 600, 1200, 2400"),
        ('timezone = "Mars/Olympus"\n', "timezone: Value error, not a known time zone"),
        ('[[bus.meter]]\nname = "m1"\naddress = "12345"\n', "meter.0.address: String should match"),
        (
            '[[bus.meter]]\nname = "m1"\naddress = "000000000001"\n[[bus.meter]]\nname = "m2"\n'
            'address = "000000000001"\n',
            "meter m2: address 000000000001 is used twice",
        ),
    ],
)
def test_bad_bus_entries(tmp_path, bus, message):
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(f'[[bus]]\nname = "b1"\nport = "/dev/ttyUSB9"\n{bus}')
    line = one_error_line(run_cli("run", "-c", str(cfg)))
    assert message in line


def test_an_empty_host_is_rejected(tmp_path):
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(device("m1", host=""))
    line = one_error_line(run_cli("run", "-c", str(cfg)))
    assert "device 1 (m1): host: String should have at least 1 character" in line


def test_migrate_checks_the_config_it_is_given(tmp_path, db_url):
    (tmp_path / "meter.toml").write_text(
        '[[field]]\nquantity = "1.8.0"\naddress = 65535\ntype = "uint32"\n'
    )
    cfg = tmp_path / "gridread.toml"
    cfg.write_text(device("m1", register_map="meter.toml"))
    result = run_cli("migrate", "-c", str(cfg), env={"GRIDREAD_DATABASE_URL": db_url})
    line = one_error_line(result)
    assert "device 1 (m1): " in line and "a uint32 spans 2 registers, 65535–65536" in line
    assert "schema is up to date" not in result.stdout
    assert table_count(db_url, "devices") is None  # checked before anything is written


def test_the_database_error_keeps_its_cause(tmp_path):
    url = f"postgresql://gridread@127.0.0.1:{free_port()}/gridread"
    line = one_error_line(run_cli("migrate", env={"GRIDREAD_DATABASE_URL": url}))
    assert "Connection refused" in line and "\t" not in line


@pytest.mark.parametrize(
    ("command", "literal"),
    [("run", "[[device]]"), ("migrate", "[[device]]"), ("simulate-rs485", "[[bus]]")],
)
def test_help_shows_config_tables_literally(command, literal):
    result = run_cli(command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0 and literal in result.stdout, result.stdout


def test_simulate_with_faults_stops_on_sigint_in_the_background():
    """Started as a non-interactive shell starts a background job (SIGINT ignored), the
    simulator still stops on SIGINT; --fault switches a unit; function 04 is refused."""
    import select

    from pymodbus.client import ModbusTcpClient

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDREAD_")}
    proc = subprocess.Popen(
        [*GRIDREAD, "simulate", "--meters", "2", "--port", str(port), "--fault", "2=exception"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 30
        banner = ""
        while "simulating" not in banner and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"simulate exited: {proc.stderr.read()}")
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                banner += proc.stdout.readline()
        assert f"on 127.0.0.1:{port}" in banner and "faults 2=exception" in banner
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.connect()
        try:
            good = client.read_holding_registers(0, count=10, device_id=1)
            assert not good.isError() and 2000 < good.registers[0] < 2600  # ~230 V × 10
            assert client.read_holding_registers(0, count=10, device_id=2).exception_code == 4
            assert client.read_input_registers(0, count=10, device_id=1).exception_code == 1
        finally:
            client.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_simulate_rejects_a_bad_fault():
    line = one_error_line(run_cli("simulate", "--fault", "1=melt"))
    assert "--fault '1=melt': expected UNIT=KIND, KIND one of none, no_reply, exception" in line
