"""Starting a local Mosquitto with the configuration gridread ships (deploy/mosquitto.conf),
its accounts, ACL and TLS certificates generated in a work directory — for the demo, the
tests and the benchmarks.

`Broker` knows the passwords it generated: it hands out a client's `MqttAuth` and adds
accounts at run time (files rewritten, SIGHUP: Mosquitto reloads them; the reload is
awaited by logging in with a probe account that only the new files hold).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from collectors.mqtt.auth import MqttAuth
from gridread import broker_accounts as accounts
from gridread.broker_accounts import Account
from gridread.broker_certs import CA_CRT, make_certs

CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"
SHIPPED_DIR = "/etc/mosquitto/gridread/"
INGEST, CONTROL = "gridread-ingest", "gridread-control"  # the service accounts it creates


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def render_conf(files: Path, host: str, port: int, tls_port: int | None, data: Path) -> str:
    """The shipped configuration with these ports, files and persistence directory; without
    `tls_port`, no TLS listener."""
    out = []
    for line in CONF.read_text().splitlines():
        if line.startswith("listener 8883"):
            if tls_port is None:
                break  # the TLS block is the file's last
            line = f"listener {tls_port} {host}"
        elif line.startswith("listener 1883"):
            line = f"listener {port} {host}"
        out.append(line.replace(SHIPPED_DIR, f"{files}/"))
    # started as root, Mosquitto drops to user "mosquitto", who could not read the 0600 files
    out += [f"persistence_location {data}/", f"user {getpass.getuser()}"]
    return "\n".join(out) + "\n"


@dataclass
class Broker:
    host: str
    port: int
    tls_port: int | None
    workdir: Path
    process: subprocess.Popen
    accounts: dict[str, Account] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    # an earlier run's passwords: an account added again gets its old one
    earlier: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def files(self) -> Path:
        return self.workdir / "etc"

    @property
    def ca_file(self) -> Path:
        return self.files / CA_CRT

    def alive(self) -> bool:
        return self.process.poll() is None

    def auth(self, name: str, *, tls: bool = False) -> MqttAuth:
        """A client's credentials (for the TLS port with `tls`: trusting the local CA)."""
        if name not in self.passwords:
            raise KeyError(f"no broker account {name!r}")
        return MqttAuth(name, self.passwords[name], tls=tls, ca_file=self.ca_file if tls else None)

    def add(self, *new: Account) -> None:
        """Add or change accounts; returns once the broker has reloaded them."""
        changed = [a for a in new if self.accounts.get(a.name) != a]
        if not changed:
            return
        for a in changed:
            self.accounts[a.name] = a
        self._reload()

    def remove(self, name: str) -> None:
        """Revoke an account; once reloaded, the broker has disconnected its clients."""
        if self.accounts.pop(name, None) is not None:
            self._reload()

    def _reload(self) -> None:
        probe = Account(f"reload-{uuid.uuid4().hex[:10]}", "probe")  # no rights at all
        self.passwords = accounts.write_files(
            self.files, [*self.accounts.values(), probe], self.earlier
        )
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not _can_log_in(self.host, self.port, probe.name, self.passwords[probe.name]):
            if time.monotonic() > deadline or not self.alive():
                raise RuntimeError("mosquitto did not reload its accounts")
            time.sleep(0.02)

    def device(self, name: str) -> MqttAuth:
        self.add(accounts.device(name))
        return self.auth(name)

    def concentrators(self, meters: dict[str, list[str]]) -> dict[str, MqttAuth]:
        """Accounts for concentrators (name → its meters); their credentials."""
        self.add(*(accounts.concentrator(c, m) for c, m in meters.items()))
        return {c: self.auth(c) for c in meters}

    def login(self, concentrator: str, meters: list[str]) -> dict[str, str]:
        """A concentrator simulator's keyword arguments: its account's username, password."""
        auth = self.concentrators({concentrator: meters})[concentrator]
        return {"username": auth.username or "", "password": auth.password or ""}

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_broker(
    workdir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    tls_port: int | None = None,
    extra: tuple[Account, ...] = (),
) -> Broker:
    """Generate the accounts (gridread's ingest and control ones and `extra`; passwords kept
    from an earlier run in `workdir`), the certificates when `tls_port` is given, and start
    Mosquitto with the shipped configuration; wait until it listens. Raises RuntimeError
    (with the broker's output) when it cannot start."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    files, data = workdir / "etc", workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    known = {a.name: a for a in (accounts.ingest(INGEST), accounts.control(CONTROL), *extra)}
    earlier = accounts.read_credentials(files / accounts.CREDENTIALS)
    passwords = accounts.write_files(files, list(known.values()))
    if tls_port is not None:
        make_certs(files, [host, "localhost"])
    conf = workdir / "mosquitto.conf"
    conf.write_text(render_conf(files, host, port, tls_port, data))
    log = workdir / "mosquitto.log"  # a file, not a pipe: nobody reads a long run's warnings
    with log.open("ab") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # a login answered: the main loop runs, so SIGHUP is handled (not fatal) from now on
        if all(_listens(host, p) for p in (port, tls_port) if p is not None) and _can_log_in(
            host, port, INGEST, passwords[INGEST]
        ):
            return Broker(host, port, tls_port, workdir, proc, known, passwords, earlier)
        if proc.poll() is not None:
            said = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"mosquitto exited: {' | '.join(said)}")
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"mosquitto did not listen on {host}:{port}")


def _listens(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def _can_log_in(host: str, port: int, username: str, password: str) -> bool:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(username, password)
    result: list[bool] = []
    client.on_connect = lambda c, u, f, reason, p: result.append(not reason.is_failure)
    try:
        client.connect(host, port, keepalive=5)
        deadline = time.monotonic() + 5
        while not result and time.monotonic() < deadline:
            client.loop(0.05)
    except OSError:
        return False
    finally:
        client.disconnect()
    return bool(result and result[0])
