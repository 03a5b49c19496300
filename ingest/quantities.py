"""The quantity registry: every quantity gridread stores, keyed by OBIS code.

The built-in table lives in ``quantities.toml`` beside this module so that protocol maps and
the API share one list; a site's config file adds its own (``[[quantity]]`` tables, validated
in `gridread.inventory`, handed here with `use_extra`). A protocol map naming a code that is
in neither is a configuration error.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
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
def builtin() -> dict[str, Quantity]:
    """The quantities shipped with gridread."""
    data = tomllib.loads((Path(__file__).with_name("quantities.toml")).read_text("utf-8"))
    return {
        code: Quantity(code, spec["name"], spec["unit"], QuantityKind(spec["kind"]))
        for code, spec in data.items()
    }


_registry: dict[str, Quantity] | None = None
_extra: dict[str, Quantity] = {}


def registry() -> dict[str, Quantity]:
    """Built-in and configured quantities, by code."""
    global _registry
    if _registry is None:
        _registry = {**builtin(), **_extra}
    return _registry


def use_extra(quantities: Iterable[Quantity]) -> None:
    """Make `quantities` (a config's own) known beside the built-ins, replacing those of an
    earlier call. A code that is built in is a `ValueError`: a config may add, not redefine."""
    global _registry
    extra: dict[str, Quantity] = {}
    for q in quantities:
        if q.obis in builtin():
            raise ValueError(
                f"{q.obis} is built in ({builtin()[q.obis].name}); choose another code"
            )
        extra[q.obis] = q
    _extra.clear()
    _extra.update(extra)
    _registry = None


def quantity(obis: str) -> Quantity:
    """The quantity for an OBIS code, or `UnknownQuantity` naming the code."""
    try:
        return registry()[obis]
    except KeyError:
        raise UnknownQuantity(
            f"unknown quantity {obis!r} (not in ingest/quantities.toml or a [[quantity]] table)"
        ) from None
