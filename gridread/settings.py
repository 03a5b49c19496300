"""One typed `Settings`: environment variables (``GRIDREAD_*``) over the config file over
defaults that run the demo.

The config file (TOML, ``--config`` or ``GRIDREAD_CONFIG``) holds the same keys at top level
and the device inventory as ``[[device]]`` tables (see `gridread.inventory`).
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from collectors.exceptions import ConfigError
from ingest.compression import COMPRESS_AFTER_DAYS
from ingest.localtime import DEFAULT_TIMEZONE

INVENTORY_TABLES = ("device", "bus", "voltage_monitor", "concentrator", "quantity")
# the grid's topology (gridread.topology): inventory too, not settings
INVENTORY_TABLES += ("substation", "feeder", "area", "metering_point", "meter_asset", "replacement")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDREAD_", extra="forbid")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB URL; empty: start the embedded server in data_dir",
    )
    data_dir: Path = Field(default=Path(".gridread"), description="embedded database and state")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    writer_batch_size: int = Field(default=20_000, gt=0)
    writer_max_delay: float = Field(default=1.0, gt=0, description="seconds a reading may wait")
    writer_max_queued: int = Field(default=200_000, gt=0)
    poll_timeout: float = Field(default=3.0, gt=0, description="seconds for one device poll")
    poll_retries: int = Field(default=2, ge=0)
    mqtt_host: str | None = Field(default=None, description="broker to ingest from; empty: none")
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_group: str = Field(default="gridread", description="shared-subscription group")
    mqtt_client_id: str = Field(default="gridread-ingest-1", description="names the session")
    mqtt_max_unacked: int = Field(default=1000, gt=0, le=65535)
    modbus_request_timeout: float = Field(
        default=1.0, gt=0, description="seconds for one Modbus request (poll_timeout: the poll)"
    )
    timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="IANA zone of meter clocks and local days; a [[bus]] or [[concentrator]]"
        " may set its own",
    )
    mqtt_connect_timeout: float = Field(
        default=15.0, gt=0, description="seconds for the broker to confirm a subscription"
    )
    shutdown_timeout: float = Field(
        default=8.0, gt=0, description="SIGTERM to all stopped; past it: exit anyway, code 1"
    )
    service_restart_max_delay: float = Field(
        default=60.0, gt=0, description="cap of the backoff before a failed service restarts"
    )
    service_stable_after: float = Field(
        default=60.0,
        gt=0,
        description="seconds a restarted service must run to count as healthy again",
    )
    mqtt_not_before: date = Field(
        default=date(2000, 1, 1), description="MQTT readings/statuses dated earlier are refused"
    )
    mqtt_max_future: float = Field(
        default=600.0, gt=0, description="seconds an MQTT device's time may run ahead"
    )
    dead_letter_raw_max: int = Field(
        default=65536, ge=0, description="bytes of a dead letter's raw payload kept"
    )
    storage: Literal["auto", "timescaledb", "native"] = Field(
        default="auto",
        description="readings on TimescaleDB or native partitions; auto: TimescaleDB when the"
        " server preloads it. Chosen once per database",
    )
    retention_instant_days: int = Field(
        default=90, ge=0, description="days instantaneous readings (voltages …) are kept; 0: all"
    )
    retention_register_days: int = Field(
        default=0, ge=0, description="days registers and curves are kept; 0: for ever"
    )
    nominal_voltage: float = Field(
        default=220.0,
        gt=0,
        allow_inf_nan=False,
        description="V phase-to-neutral, for the plausibility screen; a device may set its own",
    )
    compress_after_days: int = Field(
        default=COMPRESS_AFTER_DAYS,
        ge=1,
        description="TimescaleDB: readings' chunks are compressed once this many days old",
    )
    analytics_interval: float = Field(
        default=300.0, gt=0, description="seconds between runs of the analytics jobs"
    )
    lineloss_min_coverage: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of expected meter-intervals present below which line loss is"
        " not computable (不可算)",
    )
    lineloss_negative_below: float = Field(
        default=-1.0, allow_inf_nan=False, description="% line-loss rate below it: negative (负损)"
    )
    lineloss_high_above: float = Field(
        default=10.0, allow_inf_nan=False, description="% line-loss rate above it: high (高损)"
    )
    analytics_settle_delay: float = Field(
        default=1800.0, ge=0, description="seconds past an interval's end before it is computed"
    )
    analytics_reread_days: float = Field(
        default=3.0,
        ge=0,
        description="days back in which incomplete line-loss intervals are recomputed when"
        " late data (re-reads) arrive",
    )
    register_align_tolerance: int = Field(
        default=300,
        ge=0,
        description="seconds a register reading may lie from a 15-min boundary to be"
        " interpolated to it",
    )
    register_modulus: float = Field(
        default=1_000_000.0, gt=0, description="kWh at which energy registers roll over"
    )
    register_max_step: float = Field(
        default=10_000.0,
        gt=0,
        description="secondary kWh a register may advance in 15 min; more: implausible",
    )
    diagnostics_days: int = Field(
        default=14, ge=1, le=366, description="local days the meter-error and mapping checks use"
    )
    meter_default_accuracy_pct: float = Field(
        default=2.0, gt=0, description="% accuracy of a meter whose class the ledger lacks"
    )
    meter_error_max_ci_pct: float = Field(
        default=2.0, gt=0, description="% CI half-width above which an error is not identifiable"
    )
    mapping_margin: float = Field(
        default=0.1,
        gt=0,
        le=2,
        description="correlation by which another area must beat a meter's own to flag it",
    )
    mapping_min_overlap: int = Field(
        default=96, ge=2, description="15-min voltage steps a correlation needs at least"
    )
    multiplier_step_tolerance: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="a loss step at a multiplier change within (1 ± this) × the jump a wrong"
        " ledger multiplier predicts flags the meter",
    )
    multiplier_implausible_pct: float = Field(
        default=20.0,
        gt=0,
        description="% estimated meter error beyond which a wrong multiplier is suspected",
    )
    meter_error_service_loss: bool = Field(
        default=True,
        description="meter errors: model each customer's own service-line I²R (κ·E²/V²)",
    )
    meter_error_drop_prior_sd: float = Field(
        default=0.15,
        ge=0,
        description="meter errors: sd of the prior on each service line's loss from its own"
        " voltage drop against the area total's (relative); 0: no prior",
    )
    # power quality (analytics/power_quality*.py)
    pq_voltage_limits: list[tuple[float, float, float]] = Field(
        default=[
            (220.0, 7.0, -10.0),
            (380.0, 7.0, -7.0),
            (10000.0, 7.0, -7.0),
            (35000.0, 5.0, -5.0),
        ],
        description="voltage qualification limits: rows (system nominal V, upper %, lower %);"
        " a system uses the row of the largest nominal ≤ its own",
    )
    pq_sum_deviation_from_v: float = Field(
        default=35000.0,
        gt=0,
        description="rows at or above this nominal: |upper| + |lower| ≤"
        " pq_sum_deviation_max_pct (GB/T 12325, 35 kV and above)",
    )
    pq_sum_deviation_max_pct: float = Field(default=10.0, gt=0)
    pq_class_weights: tuple[float, float, float, float] = Field(
        default=(0.5, 1 / 6, 1 / 6, 1 / 6),
        description="composite voltage qualification rate: weights of classes A, B, C, D",
    )
    pq_voltage_unbalance_limits: tuple[float, float] = Field(
        default=(2.0, 4.0), description="% voltage unbalance: normal (95 %), short-term (all)"
    )
    pq_current_unbalance_limits: tuple[float, float] = Field(
        default=(2.0, 4.0), description="% current unbalance: normal (95 %), short-term (all)"
    )
    pq_weekly_band_pct: tuple[float, float] = Field(
        default=(10.0, -10.0), description="EN 50160: % band 95 % of a week's 10-min means keep"
    )
    pq_weekly_wide_pct: tuple[float, float] = Field(
        default=(10.0, -15.0), description="EN 50160: % band all 10-min means keep"
    )
    pq_weekly_share: float = Field(default=95.0, gt=0, le=100)
    pq_monitor_disagreement_pp: float = Field(
        default=0.5,
        ge=0,
        description="pp between a monitor's own daily rate and gridread's above which the day"
        " is flagged",
    )

    anomaly_rules: str = Field(
        default="",
        description="anomaly rules file (TOML, analytics/anomaly_rules.toml's format);"
        " empty: the built-in one",
    )
    anomaly_days: int = Field(
        default=14, ge=3, le=92, description="abnormal readings: days of history per run"
    )
    anomaly_nominal_v: float = Field(
        default=220.0, gt=0, description="abnormal readings: nominal phase voltage (V)"
    )
    reliability_momentary_threshold: int = Field(
        default=300,
        gt=0,
        description="s: an interruption shorter than this is momentary (IEEE 1366: 5 min)",
    )
    reliability_tolerance: int = Field(
        default=60,
        ge=0,
        description="s: records this near each other are one interruption (devices' clocks)",
    )
    reliability_lookback_days: float = Field(
        default=7.0,
        gt=0,
        description="days: how long an interruption may last (records this far back are read)",
    )
    reliability_rs3_excludes: list[Literal["planned", "limited"]] = Field(
        default=["planned", "limited"],
        description="interruption kinds RS-3 leaves out (DL/T 836)",
    )
    reliability_customer_events: list[str] = Field(
        default=["power_down"],
        description="event kinds of a meter's power-down record (ts start, detail.end)",
    )
    reliability_group_events: list[str] = Field(
        default=["voltage_loss", "outage"],
        description="event kinds of a monitor's loss of voltage / a concentrator's outage"
        " report: all customers of the device's area (or feeder)",
    )

    vee_max_linear_gap: int = Field(
        default=4, ge=0, description="VEE: missing 15-min registers filled linearly at most"
    )
    vee_sum_tolerance_kwh: float = Field(
        default=0.05,
        ge=0,
        description="VEE sum-check: kWh a day's interval energy may differ from its frozen delta",
    )
    vee_tou_tolerance_kwh: float = Field(
        default=0.05, ge=0, description="VEE: kWh the TOU registers may differ from the total"
    )
    vee_max_linear_days: int = Field(
        default=3, ge=0, description="VEE: missing daily frozen registers filled linearly at most"
    )
    vee_profile_days: int = Field(
        default=28, ge=1, le=366, description="VEE: validated days the same-day-type profile uses"
    )
    vee_weekend: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default=[6, 7], description="VEE: ISO weekdays (1 = Monday) of the weekend day type"
    )
    auth_token_lifetime: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="seconds a login token is valid"
    )
    audit_edit_flag_share: float = Field(
        default=0.2,
        ge=0,
        allow_inf_nan=False,
        description="a read edit changing the value by more than this share of it is flagged"
        " unusual in the audit log",
    )
    control_request_ttl: float = Field(
        default=900.0, gt=0, description="load control: seconds a request waits for approval"
    )
    control_poll_interval: float = Field(
        default=2.0, gt=0, description="load control: seconds between the executor's rounds"
    )
    control_command_timeout: float = Field(
        default=30.0, gt=0, description="load control: seconds one command may take end to end"
    )
    control_dlt645_password: SecretStr | None = Field(
        default=None,
        description="load control: DL/T 645 relay password, 8 hex digits, level first (02…)",
    )
    control_dlt645_operator: str = Field(
        default="00000000", pattern=r"^[0-9A-Fa-f]{8}$", description="DL/T 645 operator code"
    )
    control_relay_valid_minutes: float = Field(
        default=10.0, gt=0, le=1440, description="DL/T 645: a relay command's validity"
    )

    # broker security (README "Broker security"): gridread's own MQTT accounts
    mqtt_username: str | None = Field(
        default=None, description="MQTT ingest account (it may only subscribe); empty: anonymous"
    )
    mqtt_password: SecretStr | None = Field(default=None, description="its password")
    mqtt_tls: bool = Field(
        default=False, description="MQTT over TLS (mqtt_port: the broker's TLS listener)"
    )
    mqtt_ca_file: FilePath | None = Field(
        default=None,
        description="CA certificate the broker's is checked against (implies TLS); empty with"
        " mqtt_tls: the system's trust store",
    )
    mqtt_control_username: str | None = Field(
        default=None, description="MQTT account that sends re-read requests (gridread/ctl/…)"
    )
    mqtt_control_password: SecretStr | None = Field(default=None, description="its password")

    live_notify: bool = Field(
        default=True,
        description="announce stored readings, events and opened cases on the live feed",
    )
    live_buffer_size: int = Field(
        default=20_000, ge=1, description="live feed: items the API keeps for resuming"
    )
    live_buffer_seconds: float = Field(
        default=300.0, gt=0, description="live feed: seconds an item is kept for resuming"
    )
    live_alarm_kinds: list[str] = Field(
        default=["power_down", "cover_open", "outage", "voltage_loss", "relay_operated"],
        description="event kinds the live feed sends as alarms",
    )
    live_area_refresh: float = Field(
        default=60.0, gt=0, description="live feed: seconds between re-reading an area's meters"
    )
    login_concurrency: int = Field(
        default=2, ge=1, le=64, description="password checks (scrypt, 32 MiB) at once; more: 429"
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="failed logins of one user name before a lockout"
    )
    login_max_failures_ip: int = Field(
        default=20, ge=1, description="failed logins from one address before a lockout"
    )
    login_lockout: float = Field(
        default=60.0, gt=0, description="seconds of the first lockout; doubles per failure"
    )
    login_lockout_max: float = Field(default=3600.0, gt=0, description="longest lockout, s")
    audit_head_interval: float = Field(
        default=300.0, gt=0, description="seconds between exports of the audit chain's head"
    )
    live_streams_per_caller: int = Field(
        default=4, ge=1, description="live feed: open streams one user may hold (429 beyond)"
    )
    live_recheck_seconds: float = Field(
        default=30.0,
        gt=0,
        description="live feed: seconds between re-checking an open stream's credentials",
    )

    @model_validator(mode="after")
    def _pq_limits(self) -> Settings:
        if not self.pq_voltage_limits:
            raise ValueError("pq_voltage_limits needs at least one row")
        for nominal, upper, lower in self.pq_voltage_limits:
            if nominal <= 0 or upper < 0 or lower > 0:
                raise ValueError(
                    f"pq_voltage_limits row {nominal:g} V: nominal > 0, upper ≥ 0, lower ≤ 0"
                )
            if nominal >= self.pq_sum_deviation_from_v and (
                upper - lower > self.pq_sum_deviation_max_pct + 1e-9
            ):
                raise ValueError(
                    f"pq_voltage_limits row {nominal:g} V: |upper| + |lower| must be ≤"
                    f" {self.pq_sum_deviation_max_pct:g} %"
                )
        if any(w < 0 for w in self.pq_class_weights) or sum(self.pq_class_weights) <= 0:
            raise ValueError("pq_class_weights: non-negative, not all 0")
        return self

    @model_validator(mode="after")
    def _bands(self) -> Settings:
        if self.lineloss_high_above < self.lineloss_negative_below:
            raise ValueError("lineloss_high_above must be ≥ lineloss_negative_below")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, *_, **__):
        # GRIDREAD_* variables override the config file, which overrides the defaults.
        return (env_settings, init_settings)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return v.upper()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return known_timezone(v)

    @field_validator("control_dlt645_password")
    @classmethod
    def _password(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.fullmatch(r"[0-9A-Fa-f]{8}", v.get_secret_value()):
            raise ValueError("expected 8 hex digits, the privilege level first (e.g. 02…)")
        return v


def known_timezone(name: str) -> str:
    """`name` if it is a time zone this machine knows, else a ValueError for the validator."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not a known time zone (e.g. {DEFAULT_TIMEZONE})") from None
    return name


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_settings(config: dict[str, Any] | None = None, *, source: str = "config") -> Settings:
    """Settings from the file's top-level keys, overridden by ``GRIDREAD_*`` variables."""
    file_values = {k: v for k, v in (config or {}).items() if k not in INVENTORY_TABLES}
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {one_line(exc)}") from None


def one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(
            f"{where}: {err['msg']}"
            + (
                f" (got {err['input']!r})"
                if "input" in err and not isinstance(err["input"], dict)
                else ""
            )
        )
    return "; ".join(parts)
