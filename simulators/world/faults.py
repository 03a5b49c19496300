"""From the true energy through each metering point to what each meter's registers show.

A loop runs over the (few) faults, never over meters or intervals. Registers are in the
meter's secondary units (primary ÷ multiplier), floored to the register's last digit (0.01 kWh
by default, `WorldSpec.register_decimals`).

What is modelled:
- theft s: the meter sees (1 − s) of the load; meter_error x %: it registers (1 + x/100);
  stopped: it registers nothing;
- reverse_wiring: the current coil is reversed, so the import register 1.8.0 stays frozen and
  the energy counts on the export register 2.8.0 (a bidirectional meter);
- clock_drift d s/day: the meter's clock runs ahead by d·(t − start)/86400, so its curve point
  labelled t holds the true register of t − offset;
- rollover: the register starts so that it passes 999999.99 in the interval ending at
  `start` and wraps to 0 (modulus 10⁶);
- reset: the register is set to 0 at `start` (what it counted before is gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MODULUS = 1_000_000.0


@dataclass(frozen=True)
class Resolved:
    """A fault with its meter index and start boundary k (its intervals are k, k+1, …)."""

    kind: str
    meter: int
    k: int
    params: dict[str, Any]


def seen_energy(e_true: np.ndarray, faults: list[Resolved]) -> tuple[np.ndarray, np.ndarray]:
    """(import, export) energy each meter registers, primary kWh, (n, T)."""
    factor = np.ones_like(e_true)
    reverse = np.zeros(e_true.shape, dtype=bool)
    for f in faults:
        rows = factor[f.meter, f.k :]
        if f.kind == "theft":
            rows *= 1.0 - f.params["share"]
        elif f.kind == "meter_error":
            rows *= 1.0 + f.params["pct"] / 100.0
        elif f.kind == "stopped":
            rows[:] = 0.0
        elif f.kind == "reverse_wiring":
            reverse[f.meter, f.k :] = True
    seen = e_true * factor
    return np.where(reverse, 0.0, seen), np.where(reverse, seen, 0.0)


def registers(
    seen: np.ndarray,
    multiplier: np.ndarray,
    r0: np.ndarray,
    boundaries: np.ndarray,
    faults: list[Resolved],
    decimals: int | np.ndarray = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true register, shown register, modulus) in secondary kWh; registers (n, T+1).

    The true register is the ideal meter's (r0 + Σ seen / multiplier, no rollover, no
    clock error); the shown one applies the register faults and the floor to `decimals`
    (one for all, or (n,) per meter)."""
    n = seen.shape[0]
    cum = np.zeros((n, seen.shape[1] + 1))
    np.cumsum(seen / multiplier[:, None], axis=1, out=cum[:, 1:])
    r0 = r0.astype(float).copy()
    modulus = np.full(n, np.inf)
    for f in faults:
        if f.kind == "rollover":
            k = max(f.k, 1)
            half = 0.5 * (cum[f.meter, k] - cum[f.meter, k - 1]) + 0.005
            r0[f.meter] = MODULUS - cum[f.meter, k] + half  # passes 10⁶ mid-interval k − 1
            modulus[f.meter] = MODULUS
    true = r0[:, None] + cum
    shown = true.copy()
    for f in faults:
        if f.kind == "clock_drift":
            t = boundaries.astype(float)
            offset = f.params["seconds_per_day"] * np.maximum(t - t[f.k], 0.0) / 86400.0
            shown[f.meter] = np.interp(t - offset, t, true[f.meter])
    for f in faults:
        if f.kind == "reset":
            shown[f.meter, f.k :] -= shown[f.meter, f.k]
    finite = np.isfinite(modulus)
    shown[finite] = np.mod(shown[finite], modulus[finite, None])
    digits = np.asarray(decimals)
    return true, quantize(shown, digits[:, None] if digits.ndim else digits), modulus


def quantize(register: np.ndarray, decimals: int | np.ndarray = 2) -> np.ndarray:
    """Floor to the register's last digit (0.01 kWh by default), as clean decimal floats
    (an integer count of digits ÷ 10^decimals is the float nearest the decimal)."""
    scale = 10.0 ** np.asarray(decimals, dtype=float)
    return np.floor(register * scale + 1e-6) / scale


def measured_energy(
    shown: np.ndarray, multiplier: np.ndarray, modulus: np.ndarray, faults: list[Resolved]
) -> np.ndarray:
    """Energy per interval as the meters measured it, primary kWh (n, T): register advance ×
    the true multiplier, a wrap counted as one modulus, NaN for the interval a reset lost."""
    d = np.diff(shown, axis=1)
    wrapped = (d < 0) & np.isfinite(modulus)[:, None]
    d = np.where(wrapped, d + np.where(np.isfinite(modulus), modulus, 0.0)[:, None], d)
    for f in faults:
        if f.kind == "reset" and f.k > 0:
            d[f.meter, f.k - 1] = np.nan
    return d * multiplier[:, None]
