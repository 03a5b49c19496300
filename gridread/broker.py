"""Starting a local Mosquitto with the configuration gridread ships (deploy/mosquitto.conf),
for the demo and the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def start_mosquitto(workdir: Path, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start Mosquitto on host:port with its persistence in `workdir`; wait until it listens.
    Raises RuntimeError (with the broker's output) when it cannot start."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        CONF.read_text() + f"\nlistener {port} {host}\npersistence_location {workdir}/\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return proc
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"mosquitto exited: {out.strip()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mosquitto did not listen on {host}:{port}")
