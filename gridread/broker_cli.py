"""``gridread broker config`` and ``gridread broker certs``: the files a Mosquitto with
deploy/mosquitto.conf reads (README, "Broker security")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from collectors.exceptions import CollectorError
from gridread import broker_accounts as accounts
from gridread.broker import CONTROL, INGEST
from gridread.broker_accounts import ACL, CREDENTIALS, PASSWD, Account
from gridread.inventory import Inventory, parse_inventory
from gridread.settings import Settings, load_settings, read_config_file

broker_app = typer.Typer(
    help="The MQTT broker's accounts, ACL and TLS certificates.", no_args_is_help=True
)

OutOption = Annotated[Path, typer.Option("--out", help="directory to write into")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"gridread: error: {message}", err=True)
    return typer.Exit(2)


def inventory_accounts(
    settings: Settings, inventory: Inventory, devices: list[str], ingest: list[str] | None = None
) -> list[Account]:
    """gridread's ingest and control accounts, one per concentrator (its meters' topics) and
    one per device that publishes by itself."""
    return [
        *(accounts.ingest(n) for n in ingest or [settings.mqtt_username or INGEST]),
        accounts.control(settings.mqtt_control_username or CONTROL),
        *(accounts.concentrator(c.name, c.meters) for c in inventory.concentrators),
        *(accounts.device(d) for d in devices),
    ]


@broker_app.command("config")
def config(
    out: OutOption,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="GRIDREAD_CONFIG", help="TOML config file"),
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option(help="a device publishing by itself over MQTT (its own account); repeatable"),
    ] = None,
    ingest: Annotated[
        list[str] | None,
        typer.Option(
            help="an ingest worker's account (default: mqtt_username, else gridread-ingest);"
            " repeatable: one per worker on another host (over TLS a client id is its account)"
        ),
    ] = None,
) -> None:
    """Password file, ACL and credentials for the inventory's concentrators, the given
    devices and gridread's own accounts (existing passwords are kept)."""
    try:
        data = read_config_file(config) if config else {}
        source = str(config) if config else "environment"
        settings = load_settings(data, source=source)
        base = config.resolve().parent if config else Path.cwd()
        inventory = parse_inventory(data, source=source, base_dir=base, timezone=settings.timezone)
        made = inventory_accounts(settings, inventory, device or [], ingest)
        accounts.write_files(out, made)
    except (CollectorError, OSError) as exc:
        raise _fail(str(exc)) from None
    roles = ", ".join(
        f"{sum(a.role == r for a in made)} {r}" for r in sorted({a.role for a in made})
    )
    typer.echo(f"{len(made)} broker accounts ({roles})")
    typer.echo(f"  {out / PASSWD}   password_file (PBKDF2-SHA512)")
    typer.echo(f"  {out / ACL}      acl_file")
    typer.echo(f"  {out / CREDENTIALS}   the passwords, 0600: provision each device with its own")
    typer.echo("reload a running broker: kill -HUP <mosquitto pid>")


@broker_app.command("certs")
def certs(
    out: OutOption,
    host: Annotated[
        list[str] | None,
        typer.Option(help="the broker's DNS name or IP address, as clients dial it; repeatable"),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="validity of the certificates")] = 825,
) -> None:
    """A local CA (kept when present) and the broker's server certificate signed by it."""
    from gridread.broker_certs import make_certs

    try:
        written = make_certs(out, host or ["localhost", "127.0.0.1"], days=days)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for path in written:
        typer.echo(f"  {path}")
    typer.echo("clients trust ca.crt (gridread: mqtt_ca_file); the broker: cafile/certfile/keyfile")
