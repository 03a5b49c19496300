"""`gridread broker config` / `certs`: the files Mosquitto reads, made from the inventory.
(The real broker accepting them: tests/test_broker_security.py, whose broker runs on them.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import stat
import subprocess
import tomllib

import pytest
from cryptography import x509
from typer.testing import CliRunner

from gridread.broker_accounts import hash_password, verify_password
from gridread.cli import app

CONFIG = """
mqtt_username = "ingest-a"
[[concentrator]]
name = "a1-jzq"
area = "a1"
meters = ["a1-m1", "a1-m2"]
"""
SECOND = """
[[concentrator]]
name = "a2-jzq"
area = "a2"
meters = ["a2-m1"]
"""


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_our_hash_is_mosquitto_passwds(tmp_path):
    """An entry made by Mosquitto's own mosquitto_passwd verifies with our PBKDF2-SHA512, and
    ours has its layout: $7$<iterations>$<base64 12-byte salt>$<base64 64-byte key>."""
    assert shutil.which("mosquitto_passwd"), "Debian's mosquitto package provides it"
    file = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(file), "dev-1", "s3cret"], check=True)
    [entry] = file.read_text().splitlines()
    user, hashed = entry.split(":", 1)
    assert user == "dev-1" and hashed.startswith("$7$")
    assert verify_password(hashed, "s3cret") and not verify_password(hashed, "s3cret ")
    salt = bytes(range(12))
    ours = hash_password("s3cret", salt=salt, iterations=101)
    key = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101, 64)
    assert ours == f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    assert verify_password(ours, "s3cret")


def test_config_writes_accounts_acl_and_private_credentials(tmp_path):
    (tmp_path / "g.toml").write_text(CONFIG)
    out = tmp_path / "broker"
    result = run("broker", "config", "-c", str(tmp_path / "g.toml"), "--out", str(out),
                 "--device", "vm-7")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 broker accounts" in result.output
    for f in ("passwd", "acl", "credentials.toml"):
        assert mode(out / f) == 0o600, f
    creds = tomllib.loads((out / "credentials.toml").read_text())
    assert {n: c["role"] for n, c in creds.items()} == {
        "ingest-a": "ingest",  # the setting names gridread's ingest account
        "gridread-control": "control",
        "a1-jzq": "concentrator",
        "vm-7": "device",
    }
    hashes = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert all(verify_password(hashes[n], c["password"]) for n, c in creds.items())
    acl = (out / "acl").read_text()
    block = acl.split("user a1-jzq\n")[1].split("\n\n")[0].splitlines()
    assert block == [
        "topic write gridread/v1/a1-jzq/readings",
        "topic write gridread/v1/a1-jzq/senml",
        "topic write gridread/v1/a1-jzq/status",
        "topic write gridread/reply/v1/a1-jzq/#",
        "topic write gridread/v1/a1-m1/readings",
        "topic write gridread/v1/a1-m1/senml",
        "topic write gridread/v1/a1-m2/readings",
        "topic write gridread/v1/a1-m2/senml",
        "topic read gridread/ctl/v1/a1-jzq/#",
    ]
    assert "user ingest-a\ntopic read gridread/v1/+/+\n" in acl  # no write at all
    assert "user gridread-control\ntopic write gridread/ctl/#\ntopic read gridread/reply/#" in acl
    assert "pattern" not in acl and "allow" not in acl  # nothing for anyone else

    # a concentrator more: every existing password is kept, the new one added
    (tmp_path / "g.toml").write_text(CONFIG + SECOND)
    again = run("broker", "config", "-c", str(tmp_path / "g.toml"), "--out", str(out),
                "--device", "vm-7")  # fmt: skip
    assert again.exit_code == 0, again.output
    after = tomllib.loads((out / "credentials.toml").read_text())
    assert {n: c["password"] for n, c in after.items() if n in creds} == {
        n: c["password"] for n, c in creds.items()
    }
    assert set(after) == set(creds) | {"a2-jzq"}
    assert "topic write gridread/v1/a2-m1/readings" in (out / "acl").read_text()


def test_config_makes_one_ingest_account_per_worker_when_asked(tmp_path):
    out = tmp_path / "broker"
    result = run("broker", "config", "--out", str(out), "--ingest", "ingest-h1",
                 "--ingest", "ingest-h2")  # fmt: skip
    assert result.exit_code == 0, result.output
    creds = tomllib.loads((out / "credentials.toml").read_text())
    assert {n: c["role"] for n, c in creds.items()} == {
        "ingest-h1": "ingest",
        "ingest-h2": "ingest",
        "gridread-control": "control",
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "bad/name"], "device 'bad/name': not usable as a broker account"),
        (["--device", "a1-jzq"], "accounts named twice: a1-jzq"),
        (["--device", "$SYS"], "device '$SYS': not usable"),
    ],
)
def test_config_refuses_unusable_names_in_one_line(tmp_path, extra, message):
    (tmp_path / "g.toml").write_text(CONFIG)
    out = tmp_path / "broker"
    result = run("broker", "config", "-c", str(tmp_path / "g.toml"), "--out", str(out), *extra)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("gridread: error: ") and message in line
    assert not (out / "passwd").exists()  # nothing half-written


def test_certs_keep_the_ca_and_name_the_hosts(tmp_path):
    out = tmp_path / "tls"
    first = run("broker", "certs", "--out", str(out), "--host", "mqtt.example.net",
                "--host", "10.1.2.3")  # fmt: skip
    assert first.exit_code == 0, first.output
    assert mode(out / "ca.key") == 0o600 and mode(out / "server.key") == 0o600
    ca_pem = (out / "ca.crt").read_bytes()
    assert run("broker", "certs", "--out", str(out), "--host", "mqtt.example.net").exit_code == 0
    assert (out / "ca.crt").read_bytes() == ca_pem  # devices' trust stays valid
    ca = x509.load_pem_x509_certificate(ca_pem)
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example.net"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


async def test_the_demo_runs_its_broker_secured_in_its_work_dir(tmp_path):
    """The demo's Mosquitto: the shipped config with accounts, ACL and certificates in its
    data directory; anonymous clients refused; each concentrator logged in with its own
    account; a second start keeps the passwords."""
    from gridread.demo import DemoOptions, DemoWorld
    from gridread.demo_grid import GridOptions
    from tests.broker_client import NOT_AUTHORIZED, Probe
    from tests.conftest import free_port

    def options() -> DemoOptions:
        grid = GridOptions(areas=1, meters_per_area=2)
        return DemoOptions(
            meters=1, sim_port=free_port(), rs485_meters=0, concentrator_meters=3, grid=grid
        )

    world = DemoWorld(options(), tmp_path)
    await world.start()
    try:
        broker = world.broker
        assert broker is not None and broker.tls_port
        conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in conf and f"{tmp_path}/mosquitto/etc/acl" in conf
        anonymous = Probe()
        try:
            assert await asyncio.to_thread(anonymous.connect, "127.0.0.1", broker.port) == (
                NOT_AUTHORIZED
            )
        finally:
            anonymous.close()
        await asyncio.to_thread(world.concentrator.start)  # its ctl subscription is granted
        conc = [world.concentrator, *world.grid.concentrators]
        assert all(c.client.is_connected() and c.username == c.name for c in conc)
        acl = (tmp_path / "mosquitto" / "etc" / "acl").read_text()
        assert all(f"user {c.name}\n" in acl for c in conc)
        passwords = dict(broker.passwords)
    finally:
        await world.stop()
    again = DemoWorld(options(), tmp_path)
    await again.start()
    try:
        kept = {n: p for n, p in again.broker.passwords.items() if n in passwords}
        assert kept == {n: p for n, p in passwords.items() if not n.startswith("reload-")}
    finally:
        await again.stop()
