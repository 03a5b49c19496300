"""The `analytics` service of `gridread run`: the analytics jobs, in order, every
``analytics_interval`` seconds, on one connection per pass in a worker thread (the jobs are
numpy and blocking psycopg).

Order matters: line loss first (the diagnostics and the anomaly rules read its results), the
diagnostics before the anomaly rules (which read their flags); VEE, power quality and
reliability stand alone. Each job is isolated: one that
fails is logged with its traceback and counted in ``gridread_analytics_job_failures_total{job}``,
and the jobs after it still run; the next pass tries it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from prometheus_client import Counter

from analytics.anomaly_job import AnomalyPolicy, run_anomalies
from analytics.diagnostics import DiagnosticsPolicy, run_diagnostics
from analytics.jobs import LineLossPolicy, run_lineloss
from analytics.lineloss import Bands
from analytics.power_quality_job import policy_from_settings, run_power_quality
from analytics.reliability_job import reliability_policy, run_reliability
from analytics.store import AnalyticsStore
from analytics.vee import VeePolicy
from analytics.vee_job import VeeJobPolicy, run_vee
from gridread.services import Service
from gridread.settings import Settings

log = logging.getLogger("gridread.analytics")

JOB_FAILURES = Counter(
    "gridread_analytics_job_failures_total", "Analytics job passes that failed", ["job"]
)


@dataclass(frozen=True)
class Job:
    """One analytics job: `run(conn, store, now)` returns a line worth logging, or None."""

    name: str
    run: Callable[[psycopg.Connection, AnalyticsStore, datetime], str | None]


def lineloss_policy(settings: Settings) -> LineLossPolicy:
    return LineLossPolicy(
        timezone=settings.timezone,
        min_coverage=settings.lineloss_min_coverage,
        bands=Bands(settings.lineloss_negative_below, settings.lineloss_high_above),
        settle_s=round(settings.analytics_settle_delay),
        reread_window_s=round(settings.analytics_reread_days * 86400),
        align_tolerance_s=settings.register_align_tolerance,
        register_modulus=settings.register_modulus,
        register_max_step=settings.register_max_step,
    )


def vee_policy(settings: Settings) -> VeeJobPolicy:
    return VeeJobPolicy(
        vee=VeePolicy(
            max_linear_gap=settings.vee_max_linear_gap,
            sum_tolerance_kwh=settings.vee_sum_tolerance_kwh,
            tou_tolerance_kwh=settings.vee_tou_tolerance_kwh,
            max_linear_days=settings.vee_max_linear_days,
        ),
        timezone=settings.timezone,
        settle_s=round(settings.analytics_settle_delay),
        reread_days=round(settings.analytics_reread_days),
        profile_days=settings.vee_profile_days,
        weekend=tuple(d - 1 for d in settings.vee_weekend),
        align_tolerance_s=settings.register_align_tolerance,
        max_step=settings.register_max_step,
        modulus=settings.register_modulus,
    )


def analytics_jobs(settings: Settings) -> list[Job]:
    """The jobs `gridread run` runs, in their order, with the policies the settings give."""
    lineloss = lineloss_policy(settings)
    diagnostics = DiagnosticsPolicy(
        lineloss=lineloss,
        days=settings.diagnostics_days,
        default_accuracy_pct=settings.meter_default_accuracy_pct,
        max_ci_pct=settings.meter_error_max_ci_pct,
        mapping_margin=settings.mapping_margin,
        mapping_min_overlap=settings.mapping_min_overlap,
        multiplier_tolerance=settings.multiplier_step_tolerance,
        multiplier_implausible_pct=settings.multiplier_implausible_pct,
        service_loss=settings.meter_error_service_loss,
        drop_prior_sd=settings.meter_error_drop_prior_sd,
    )
    power_quality = policy_from_settings(settings)
    reliability = reliability_policy(settings)
    vee = vee_policy(settings)
    anomalies = AnomalyPolicy.from_file(
        lineloss,
        settings.anomaly_rules,
        days=settings.anomaly_days,
        nominal_v=settings.anomaly_nominal_v,
    )

    def line_loss(conn, store, now) -> str | None:
        s = run_lineloss(store, lineloss, now)
        if not s.rows:
            return None
        why = "; ".join(s.reasons) or "new intervals"
        return f"{s.rows} rows for {s.computed_from} … {s.computed_until} ({why})"

    def diagnostics_job(conn, store, now) -> str | None:
        rows = run_diagnostics(store, diagnostics, now)
        return f"{rows} rows (meter errors, meter-to-area, multipliers)" if rows else None

    def power_quality_job(conn, store, now) -> None:
        run_power_quality(store, power_quality, now)  # logs what it did

    def reliability_job(conn, store, now) -> None:
        run_reliability(conn, reliability, now)  # logs what it did

    def vee_job(conn, store, now) -> None:
        run_vee(conn, vee, now)  # validated reads for billing; logs what it did

    def anomalies_job(conn, store, now) -> None:
        run_anomalies(store, anomalies, now)  # logs what it did

    return [
        Job("lineloss", line_loss),
        Job("diagnostics", diagnostics_job),
        Job("vee", vee_job),
        Job("power_quality", power_quality_job),
        Job("reliability", reliability_job),
        Job("anomalies", anomalies_job),
    ]


def run_jobs(conn: psycopg.Connection, jobs: list[Job], now: datetime) -> dict[str, bool]:
    """One pass: every job in order, each isolated; returns each job's success."""
    store = AnalyticsStore(conn)
    done: dict[str, bool] = {}
    for job in jobs:
        try:
            line = job.run(conn, store, now)
        except Exception:  # one job's failure (a bug, bad data, the database) stops no other
            JOB_FAILURES.labels(job.name).inc()
            log.exception("analytics job %s failed (tried again next pass)", job.name)
            done[job.name] = False
            continue
        if line:
            log.info("%s: %s", job.name, line)
        done[job.name] = True
    return done


def analytics_service(url: str, settings: Settings) -> Service:
    jobs = analytics_jobs(settings)

    def once() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            run_jobs(conn, jobs, datetime.now(UTC))

    async def run() -> None:
        while True:
            try:
                await asyncio.to_thread(once)
            except psycopg.Error as exc:  # no connection: the next pass tries again
                log.warning("analytics pass failed (will retry): %s", exc)
            await asyncio.sleep(settings.analytics_interval)

    return Service("analytics", run)
