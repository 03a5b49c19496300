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


def test_a_failing_job_is_counted_and_the_jobs_after_it_still_run(migrated_url, caplog):
    """Before, the jobs ran one after the other in one function: a power-quality error (e.g.
    a monitor on a PT secondary with no limits row) stopped the reliability and anomaly jobs
    of every pass, and a non-database error failed the whole service."""
    from datetime import UTC, datetime

    from prometheus_client import REGISTRY

    from gridread.analytics_service import Job, analytics_jobs, run_jobs

    def broken(conn, store, now):
        raise ValueError("no voltage limits for a 57.7 V system")

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        world(conn)
        jobs = analytics_jobs(load_settings({}))
        names = [j.name for j in jobs]
        assert names == [
            "lineloss",
            "diagnostics",
            "vee",
            "power_quality",
            "reliability",
            "anomalies",
        ]
        jobs.insert(1, Job("broken", broken))
        before = (
            REGISTRY.get_sample_value("gridread_analytics_job_failures_total", {"job": "broken"})
            or 0.0
        )
        done = run_jobs(conn, jobs, datetime.now(UTC))
        assert done == {"broken": False, **{n: True for n in names}}
        after = REGISTRY.get_sample_value(
            "gridread_analytics_job_failures_total", {"job": "broken"}
        )
        assert after == before + 1
        assert "analytics job broken failed" in caplog.text
        # the jobs after it did their work: the line loss before it and the ones after stored
        (rows,) = conn.execute("SELECT count(*) FROM lineloss").fetchone()
        assert rows > 0
        (marks,) = conn.execute(
            "SELECT count(*) FROM analytics_watermarks WHERE job <> 'lineloss'"
        ).fetchone()
        assert marks >= 1
