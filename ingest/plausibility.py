"""The plausibility screen: readings whose value cannot be a real measurement are flagged
SUSPECT at ingest (4e-08 V, 1.95e-20 Hz, −4.1e23 kWh from a wrong word order). They are stored
all the same, flag and all: a person or the validation (VEE) decides, nothing is dropped.

The ranges are data, ``plausibility.toml`` beside this module (see its header): by quantity,
absolute or as a multiple of a nominal value, or by kind (every register ≥ 0 …). `flag()` is
the hot path: one dict look-up and two comparisons per reading.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from ingest.model import Quality, Reading
from ingest.quantities import QuantityKind, registry

RULES_FILE = Path(__file__).with_name("plausibility.toml")
SUSPECT_READINGS = Counter(
    "gridread_ingest_readings_suspect", "Readings flagged SUSPECT by the plausibility screen"
)

Range = tuple[float, float, bool]  # low, high (inclusive), whether exactly 0 is plausible
_SUSPECT = int(Quality.SUSPECT)
_MISS = object()


class Screen:
    """Ranges by quantity code, and by kind for quantities without their own."""

    def __init__(self, by_quantity: dict[str, Range], by_kind: dict[str, Range]) -> None:
        self.by_quantity = by_quantity
        self.by_kind = by_kind
        self._ranges: dict[str, Range | None] = {}  # resolved per code seen

    def range_for(self, quantity: str) -> Range | None:
        """The range that applies to `quantity`; None: only NaN and infinity are suspect."""
        found = self._ranges.get(quantity, _MISS)
        if found is not _MISS:
            return found  # type: ignore[return-value]
        base = quantity.partition("*")[0]  # a frozen "1.8.0*d" follows "1.8.0"
        rng = self.by_quantity.get(quantity) or self.by_quantity.get(base)
        known = registry().get(quantity)
        if rng is None and known is not None:
            rng = self.by_kind.get(known.kind.value)
        if known is not None or rng is not None:  # unknown codes are not remembered
            self._ranges[quantity] = rng
        return rng

    def flag(self, readings: Iterable[Reading]) -> int:
        """Add SUSPECT to the quality of every implausible reading; return how many."""
        ranges = self._ranges
        flagged = 0
        for r in readings:
            try:
                rng = ranges.get(r.quantity, _MISS)
                if rng is _MISS:
                    rng = self.range_for(r.quantity)
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


def load_rules(path: Path = RULES_FILE) -> Screen:
    """A `Screen` from a rules file; `ValueError` with a one-line message naming the rule."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    by_quantity: dict[str, Range] = {}
    by_kind: dict[str, Range] = {}
    for n, rule in enumerate(data.get("rule", []), 1):
        where = f"{path}: rule {n}"
        rng = _range(rule, where)
        if "kind" in rule:
            if rule["kind"] not in {k.value for k in QuantityKind}:
                raise ValueError(
                    f"{where}: kind = {rule['kind']!r}; expected register/instantaneous"
                )
            by_kind.setdefault(rule["kind"], rng)
        for code in rule.get("quantities", []):
            by_quantity.setdefault(str(code), rng)
    return Screen(by_quantity, by_kind)


def _range(rule: dict[str, Any], where: str) -> Range:
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
    if "nominal" in rule:
        low, high = (rule.get(k) for k in ("low", "high"))
        nominal = rule["nominal"]
        numbers = (nominal, low, high)
        bounds = (nominal * low, nominal * high) if _numbers(numbers) else None
    else:
        bounds = (rule.get("min"), rule.get("max"))
        numbers = bounds
    if bounds is None or not _numbers(numbers) or not bounds[0] < bounds[1]:
        raise ValueError(f"{where}: expected min < max, or nominal with low < high (numbers)")
    return (float(bounds[0]), float(bounds[1]), bool(rule.get("allow_zero", False)))


def _numbers(values: Iterable[Any]) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


_default: Screen | None = None


def flag_implausible(readings: Iterable[Reading]) -> int:
    """The writer's hook: flag `readings` with the shipped rules; return how many."""
    global _default
    if _default is None:
        _default = load_rules()
    return _default.flag(readings)
