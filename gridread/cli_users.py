"""``gridread users …``: users, roles and API keys from the command line (the first
administrator comes from here). Every change is audited as ``cli:<OS user>``."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from collectors.exceptions import CollectorError
from ingest.audit import record
from ingest.exceptions import IngestError

ROLES = ("viewer", "metering_engineer", "load_operator", "billing", "inspector", "admin")
# (api.security.Role's names; checked there: the API stays unimported until needed)

users_app = typer.Typer(help="Users, their roles and API keys.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="GRIDREAD_CONFIG", help="TOML config file"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"gridread: error: {message}", err=True)
    return typer.Exit(2)


def _url(config: Path | None) -> str:
    from gridread import runtime
    from gridread.cli import _config
    from gridread.settings import load_settings

    try:
        data, source, _ = _config(config)
        return runtime.database_url(load_settings(data, source=source))
    except (CollectorError, IngestError) as exc:
        raise _fail(str(exc)) from None


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@users_app.command("add")
def add(
    name: str,
    role: Annotated[
        list[str],
        typer.Option("--role", "-r", help=f"one of {', '.join(ROLES)}; repeat"),
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read a password (first line) from stdin")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Add a user with its roles; with --password-stdin it can log in (POST /auth/token)."""
    from api.credentials import CredentialError, create_user

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    url = _url(config)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            create_user(conn, name, role, password=password, created_by=_actor())
    except CredentialError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} added ({', '.join(sorted(set(role)))})")


@users_app.command("key")
def key(
    name: str,
    label: Annotated[str, typer.Option(help="what the key is for, e.g. grafana")] = "",
    config: ConfigOption = None,
) -> None:
    """Make an API key of the user and print it: this once (only its hash is stored)."""
    from api.credentials import CredentialError, create_api_key

    url = _url(config)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            key_id, secret = create_api_key(conn, name, label=label, actor=_actor())
    except CredentialError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"key {key_id} of {name}; shown once, send it as X-API-Key:", err=True)
    typer.echo(secret)


@users_app.command("revoke")
def revoke(name: str, key_id: int, config: ConfigOption = None) -> None:
    """Revoke an API key of the user (at once)."""
    url = _url(config)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = %s AND owner = %s RETURNING id",
            (key_id, name),
        ).fetchone()
        if row is None:
            raise _fail(f"no key {key_id} of user {name!r}")
        record(conn, _actor(), "revoke", "api_key", key_id, None, {"owner": name})
        conn.commit()
    typer.echo(f"key {key_id} of {name} revoked")


@users_app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """The users: roles, active, whether they can log in, their usable API keys."""
    url = _url(config)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT u.name, array_to_string(u.roles, ','), u.active,"
            " u.password_hash IS NOT NULL,"
            " count(k.id) FILTER (WHERE k.revoked_at IS NULL"
            "   AND (k.expires_at IS NULL OR k.expires_at > now()))"
            " FROM users u LEFT JOIN api_keys k ON k.owner = u.name"
            " GROUP BY u.name ORDER BY u.name"
        ).fetchall()
    typer.echo(f"{'name':<24} {'roles':<40} {'active':<7} {'login':<6} keys")
    for name, roles, active, login, keys in rows:
        yes = {True: "yes", False: "no"}
        typer.echo(f"{name:<24} {roles:<40} {yes[active]:<7} {yes[login]:<6} {keys}")
