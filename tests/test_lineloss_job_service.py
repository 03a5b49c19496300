"""The `analytics` service as `gridread run` wires it: from the settings, against a real
PostgreSQL, until its results are stored (waited for with a deadline, not a guessed sleep)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from collectors.exceptions import ConfigError
from gridread.runtime import analytics_service, collector_services
from gridread.settings import load_settings
from tests.lineloss_fixture import DAY
from tests.test_lineloss_job import world


async def test_the_analytics_service_computes_line_loss(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        world(conn)
    # bands from the settings: 16 % is normal under a 20 % high band
    settings = load_settings({"analytics_interval": 3600, "lineloss_high_above": 20})
    service = analytics_service(migrated_url, settings)
    assert service.name == "analytics"
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + 60
    try:
        while True:
            with psycopg.connect(migrated_url) as conn:
                done = conn.execute(
                    "SELECT done_until FROM analytics_watermarks WHERE job = 'lineloss'"
                ).fetchone()
            if done:
                break
            assert not task.done(), task
            assert time.monotonic() < deadline, "no line-loss run within 60 s"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    with psycopg.connect(migrated_url) as conn:
        got = conn.execute(
            "SELECT loss, status FROM lineloss WHERE level = 'area' AND name = 'a-01'"
            " AND period = '15min' AND start >= %s ORDER BY start LIMIT 4",
            (DAY,),
        ).fetchall()
    assert got == [(4, "normal"), (8, "normal"), (2, "normal"), (-1, "negative")]


def test_run_starts_the_analytics_service():
    settings = load_settings({})
    names = [s.name for s in collector_services(settings, "postgresql:///x", *_empty())]
    assert "analytics" in names


def _empty():
    from gridread.inventory import Inventory
    from gridread.runtime import Running

    return Inventory([], {}), {}, None, None, Running()


def test_bands_in_the_wrong_order_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="lineloss_high_above must be ≥ lineloss_negative_below"):
        load_settings({"lineloss_high_above": -5})
