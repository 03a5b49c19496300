"""The plausibility screen: readings whose value cannot be a real measurement are flagged
SUSPECT at ingest (4e-08 V, 1.95e-20 Hz, −4.1e23 kWh from a wrong word order). They are stored
all the same, flag and all: a person or the validation (VEE) decides, nothing is dropped.

The ranges are data, ``plausibility.toml`` beside this module (see its header): by quantity,
absolute, as a multiple of the device's nominal voltage (a meter on 57.7/100 V PTs is not a
220 V meter), or by kind (every register ≥ 0 …). `Screen.flag()` is the hot path: one dict
look-up and two comparisons per reading, and one more look-up per run of one device's
readings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from ingest.model import Quality, Reading
from ingest.quantities import QuantityKind, registry

RULES_FILE = Path(__file__).with_name("plausibility.toml")
DEFAULT_NOMINAL_VOLTAGE = 220.0  # V phase-to-neutral (GB/T 12325); the setting's default
SUSPECT_READINGS = Counter(
    "gridread_ingest_readings_suspect", "Readings flagged SUSPECT by the plausibility screen"
)

Range = tuple[float, float, bool]  # low, high (inclusive), whether exactly 0 is plausible
# a rule as loaded: low, high, allow_zero, and the multiple of the device's phase nominal
# voltage the bounds scale by (None: absolute bounds)
Rule = tuple[float, float, bool, float | None]
NOMINALS = {"phase": 1.0, "line": math.sqrt(3.0)}  # `nominal = "…"` in a rule
_SUSPECT = int(Quality.SUSPECT)
_MISS = object()


class Screen:
    """Rules by quantity code, and by kind for quantities without their own; each device's
    phase-to-neutral nominal voltage (`nominals`, device id → V; others: `default_nominal`)."""

    def __init__(
        self,
        by_quantity: dict[str, Rule],
        by_kind: dict[str, Rule],
        *,
        nominals: Mapping[int, float] | None = None,
        default_nominal: float = DEFAULT_NOMINAL_VOLTAGE,
    ) -> None:
        self.by_quantity = by_quantity
        self.by_kind = by_kind
        self.default_nominal = float(default_nominal)
        self.nominals = {int(d): float(v) for d, v in (nominals or {}).items()}
        # resolved ranges per code seen: one table for devices at the default nominal, one
        # per device with its own
        self._ranges: dict[str, Range | None] = {}
        self._device_ranges: dict[int, dict[str, Range | None]] = {
            d: {} for d, v in self.nominals.items() if v != self.default_nominal
        }

    def for_devices(
        self, nominals: Mapping[int, float], default_nominal: float = DEFAULT_NOMINAL_VOLTAGE
    ) -> Screen:
        """The same rules with these nominal voltages."""
        return Screen(
            self.by_quantity, self.by_kind, nominals=nominals, default_nominal=default_nominal
        )

    def range_for(self, quantity: str, device_id: int | None = None) -> Range | None:
        """The range that applies to `quantity` of `device_id`; None: only NaN and infinity
        are suspect."""
        ranges = self._device_ranges.get(device_id, self._ranges)  # type: ignore[arg-type]
        found = ranges.get(quantity, _MISS)
        if found is not _MISS:
            return found  # type: ignore[return-value]
        base = quantity.partition("*")[0]  # a frozen "1.8.0*d" follows "1.8.0"
        rule = self.by_quantity.get(quantity) or self.by_quantity.get(base)
        known = registry().get(quantity)
        if rule is None and known is not None:
            rule = self.by_kind.get(known.kind.value)
        rng: Range | None = None
        if rule is not None:
            low, high, allow_zero, scale = rule
            if scale is not None:
                nominal = self.nominals.get(device_id, self.default_nominal)  # type: ignore[arg-type]
                low, high = low * nominal * scale, high * nominal * scale
            rng = (low, high, allow_zero)
        if known is not None or rng is not None:  # unknown codes are not remembered
            ranges[quantity] = rng
        return rng

    def flag(self, readings: Iterable[Reading]) -> int:
        """Add SUSPECT to the quality of every implausible reading; return how many."""
        ranges = default = self._ranges
        by_device = self._device_ranges
        device: object = _MISS
        flagged = 0
        for r in readings:
            try:
                if by_device and r.device_id is not device:  # a poll's readings: one device
                    ranges = by_device.get(r.device_id, default)
                    device = r.device_id
                rng = ranges.get(r.quantity, _MISS)
                if rng is _MISS:
                    rng = self.range_for(r.quantity, r.device_id)
                v = r.value
                if rng is None:
                    if v - v == 0:  # finite
                        continue
                elif rng[0] <= v <= rng[1] or (v == 0 and rng[2]):  # type: ignore[index]
                    continue
                r.quality |= _SUSPECT
            except (TypeError, AttributeError):  # not a reading: the writer dead-letters it
                continue
            flagged += 1
        if flagged:
            SUSPECT_READINGS.inc(flagged)
        return flagged


@cache
def shipped_rules() -> Screen:
    """The rules of ``plausibility.toml``, every device at the default nominal voltage."""
    return load_rules()


def load_rules(path: Path = RULES_FILE) -> Screen:
    """A `Screen` from a rules file; `ValueError` with a one-line message naming the rule."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    by_quantity: dict[str, Rule] = {}
    by_kind: dict[str, Rule] = {}
    for n, rule in enumerate(data.get("rule", []), 1):
        where = f"{path}: rule {n}"
        loaded = _rule(rule, where)
        if "kind" in rule:
            if rule["kind"] not in {k.value for k in QuantityKind}:
                raise ValueError(
                    f"{where}: kind = {rule['kind']!r}; expected register/instantaneous"
                )
            by_kind.setdefault(rule["kind"], loaded)
        for code in rule.get("quantities", []):
            by_quantity.setdefault(str(code), loaded)
    return Screen(by_quantity, by_kind)


def _rule(rule: dict[str, Any], where: str) -> Rule:
    unknown = set(rule) - {
        "quantities",
        "kind",
        "min",
        "max",
        "nominal",
        "low",
        "high",
        "allow_zero",
    }
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if ("quantities" in rule) == ("kind" in rule):
        raise ValueError(f"{where}: name either quantities or a kind")
    scale: float | None = None
    if "nominal" in rule:
        low, high = (rule.get(k) for k in ("low", "high"))
        nominal = rule["nominal"]
        if isinstance(nominal, str):  # the device's: "phase" or "line" (√3 × phase)
            if nominal not in NOMINALS:
                raise ValueError(
                    f'{where}: nominal = {nominal!r}; expected "phase", "line" or volts'
                )
            scale, numbers = NOMINALS[nominal], (low, high)
            bounds = (low, high) if _numbers(numbers) else None
        else:
            numbers = (nominal, low, high)
            bounds = (nominal * low, nominal * high) if _numbers(numbers) else None
    else:
        bounds = (rule.get("min"), rule.get("max"))
        numbers = bounds
    if bounds is None or not _numbers(numbers) or not bounds[0] < bounds[1]:
        raise ValueError(f"{where}: expected min < max, or nominal with low < high (numbers)")
    return (float(bounds[0]), float(bounds[1]), bool(rule.get("allow_zero", False)), scale)


def _numbers(values: Iterable[Any]) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )
