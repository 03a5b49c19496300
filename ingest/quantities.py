"""The quantity registry: every quantity gridread stores, keyed by OBIS code.

The table lives in ``quantities.toml`` beside this module so that protocol maps and the
API share one list. A protocol map naming a code that is not here is a configuration error.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from ingest.exceptions import UnknownQuantity


class QuantityKind(StrEnum):
    REGISTER = "register"  # cumulative, monotonic between rollovers (energy)
    INSTANTANEOUS = "instantaneous"  # a sample (voltage, current, power)


@dataclass(frozen=True, slots=True)
class Quantity:
    obis: str
    name: str
    unit: str
    kind: QuantityKind


@cache
def registry() -> dict[str, Quantity]:
    data = tomllib.loads((Path(__file__).with_name("quantities.toml")).read_text("utf-8"))
    return {
        code: Quantity(code, spec["name"], spec["unit"], QuantityKind(spec["kind"]))
        for code, spec in data.items()
    }


def quantity(obis: str) -> Quantity:
    """The quantity for an OBIS code, or `UnknownQuantity` naming the code."""
    try:
        return registry()[obis]
    except KeyError:
        raise UnknownQuantity(
            f"unknown quantity {obis!r} (not in ingest/quantities.toml)"
        ) from None
