"""Customer load curves: class shape × day type × per-meter scale, peak shift and noise.

Each meter gets its own scale, a shift of its daily shape (± 90 min), a per-day factor and
independent per-interval noise, so meters of one class are far from collinear (the
meter-error estimation needs that). On top, appliances switching (kettle, cooker, water
heater, air conditioner): a spiky independent part whose spread per 15 min is of the order of
the class mean for households, as real 15-min residential curves show. All vectorised over
(meters, intervals).
"""

from __future__ import annotations

import numpy as np

CLASSES = ("residential", "commercial", "industrial")

# hourly shape (fraction of the class's mean), 00:00 … 23:00 local, weekday / weekend
_SHAPES = {
    "residential": (
        [0.5, 0.4, 0.35, 0.35, 0.35, 0.4, 0.7, 1.0, 0.9, 0.7, 0.6, 0.7,
         0.9, 0.8, 0.6, 0.6, 0.8, 1.2, 1.8, 2.1, 2.0, 1.7, 1.2, 0.8],
        [0.6, 0.45, 0.4, 0.35, 0.35, 0.4, 0.55, 0.8, 1.1, 1.2, 1.1, 1.2,
         1.3, 1.1, 1.0, 1.0, 1.1, 1.4, 1.8, 2.0, 1.9, 1.6, 1.2, 0.9],
    ),
    "commercial": (
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.35, 0.5, 0.9, 1.4, 1.7, 1.8, 1.8,
         1.6, 1.7, 1.8, 1.8, 1.7, 1.5, 1.2, 1.0, 0.8, 0.6, 0.4, 0.35],
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.6, 0.9, 1.1, 1.2, 1.2,
         1.2, 1.2, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
    ),
    "industrial": (
        [0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.9, 1.2, 1.4, 1.4, 1.4, 1.3,
         1.0, 1.3, 1.4, 1.4, 1.3, 1.2, 1.0, 0.9, 0.8, 0.7, 0.7, 0.6],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.55, 0.6, 0.7, 0.7, 0.7, 0.7,
         0.7, 0.7, 0.7, 0.7, 0.7, 0.65, 0.6, 0.6, 0.55, 0.5, 0.5, 0.5],
    ),
}  # fmt: skip
MEAN_KW = {"residential": 0.6, "commercial": 4.0, "industrial": 25.0}
# Appliance switching per class: the share of the mean it carries, and its spikiness κ
# (a compound-Poisson count of short appliance runs, drawn as Gamma(κ·shape) — small κ: rare,
# large steps). Its sd per interval is share/√κ · √shape × the mean: ≈ 1× for households.
APPLIANCE = {"residential": (0.5, 0.25), "commercial": (0.3, 0.5), "industrial": (0.15, 1.0)}
APPLIANCE_CAP = 12.0  # × the meter's mean: the breaker's limit


def class_shapes() -> np.ndarray:
    """(3 classes, 2 day types, 96 quarter hours), linearly interpolated from the hourly shape."""
    quarter = np.arange(96) / 4.0
    out = np.empty((len(CLASSES), 2, 96))
    for c, name in enumerate(CLASSES):
        for d in range(2):
            hourly = np.asarray(_SHAPES[name][d])
            out[c, d] = np.interp(quarter, np.arange(25), np.append(hourly, hourly[0]))
    return out


def customer_loads(
    rng: np.random.Generator,
    cls: np.ndarray,
    t0: int,
    n_intervals: int,
    utc_offset_hours: float,
    step: int = 900,
) -> np.ndarray:
    """Interval-mean active power (kW), shape (n meters, n_intervals)."""
    n = len(cls)
    local = t0 + np.arange(n_intervals) * step + int(utc_offset_hours * 3600)
    quarter = (local // step) % 96
    day = (local - local[0] // 86400 * 86400) // 86400  # day number from the first local day
    weekend = ((local // 86400 + 3) % 7 >= 5).astype(int)  # 1970-01-01 was a Thursday
    means = np.array([MEAN_KW[c] for c in CLASSES])[cls]
    scale = means * rng.lognormal(0.0, 0.5, n)
    shift = rng.integers(-6, 7, n)  # quarters
    idx = (quarter[None, :] - shift[:, None]) % 96
    shape = class_shapes()[cls[:, None], weekend[None, :], idx]
    per_day = rng.lognormal(0.0, 0.15, (n, int(day.max()) + 1))[:, day]
    noise = rng.lognormal(-0.5 * 0.3**2, 0.3, (n, n_intervals))
    share, kappa = (np.array([APPLIANCE[c][j] for c in CLASSES])[cls] for j in (0, 1))
    base = (1.0 - share)[:, None] * shape * per_day * noise
    spikes = rng.gamma(kappa[:, None] * shape, (share / kappa)[:, None])
    return scale[:, None] * np.minimum(base + spikes, APPLIANCE_CAP)
