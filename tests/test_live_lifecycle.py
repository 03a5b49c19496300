"""`gridread run` with a live stream open: SIGTERM stops everything in order, code 0 (the
feed ends its streams before uvicorn waits for open responses; without that, the API was
cancelled at the shutdown timeout, with a traceback)."""

from __future__ import annotations

import threading

import httpx

from tests.api_auth import credentials
from tests.test_lifecycle import STOP_WITHIN_S, Gridread


def test_sigterm_stops_gridread_with_a_live_stream_open(tmp_path, migrated_url):
    run = Gridread(tmp_path, "", migrated_url)
    try:
        run.health()
        headers = credentials(migrated_url, "viewer")
        events: list[str] = []
        opened = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{run.base}/live/stream", headers=headers, timeout=60) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    events.append(line)
                    if line == "event: ready":
                        opened.set()

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        assert opened.wait(15), f"no ready event: {events}"
        assert run.sigterm() < STOP_WITHIN_S
        reader.join(5)
        assert not reader.is_alive()  # the server ended the stream, cleanly (no exception)
        # not cancelled at the shutdown timeout's end (with its traceback): ended in order
        assert "Traceback" not in run.stderr, run.stderr
    finally:
        run.kill()
