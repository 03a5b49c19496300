"""The world's fast power-system formulas, vectorised; validated against pandapower's power
flow in tests/test_world_pandapower.py.

Units: kW, kvar, kVA, V (phase to neutral), Ω per conductor. The world neglects unbalance:
a single-phase customer on a service loop of r Ω per conductor (phase + neutral) has the same
loss and voltage drop as a balanced three-phase load of the same power on a line of 6·r Ω per
conductor (I = S/V, loss 2rI², drop 2rI  ≡  I' = S/3V, loss 3·6r·I'², drop 6r·I'), so both
kinds go through one formula with `r_eq`, `x_eq`.
"""

from __future__ import annotations

import numpy as np

LV_NOMINAL = 400.0 / np.sqrt(3.0)  # V, phase to neutral of a 10/0.4 kV transformer
MV_KV = 10.0

# standard distribution transformers (S13-like): kVA → (no-load loss P0, load loss Pk), kW
TRANSFORMERS = {
    100: (0.15, 1.50),
    160: (0.20, 2.20),
    200: (0.24, 2.60),
    250: (0.29, 3.05),
    315: (0.34, 3.65),
    400: (0.41, 4.30),
    500: (0.48, 5.15),
    630: (0.57, 6.20),
}
VK_PERCENT = 4.0  # short-circuit voltage of the small transformers
CT_PRIMARIES = (
    10,
    15,
    20,
    30,
    40,
    50,
    75,
    100,
    150,
    200,
    300,
    400,
    500,
    600,
    800,
    1000,
    1500,
)  # A, secondary 5 A


def equivalent_line(r: np.ndarray, x: np.ndarray, single: np.ndarray) -> tuple:
    """Per-conductor r, x of the balanced three-phase equivalent (6× for a single-phase loop)."""
    k = np.where(single, 6.0, 1.0)
    return r * k, x * k


def receiving_voltage(v_send, p, q, r, x):
    """Exact receiving-end voltage of a series impedance r + jx carrying the load p + jq
    (consistent units: per phase V, W, var, Ω; or pu). From
    V_s² = (V + (rp + xq)/V)² + ((xp − rq)/V)², a quadratic in V²."""
    a = r * p + x * q
    b = x * p - r * q
    c = v_send**2 - 2.0 * a
    return np.sqrt((c + np.sqrt(c**2 - 4.0 * (a**2 + b**2))) / 2.0)


def service_line(
    p: np.ndarray, q: np.ndarray, r_eq: np.ndarray, x_eq: np.ndarray, v_bus: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's own line from the transformer's LV bus: (voltage at the meter, loss kW).

    p, q (kW, kvar), v_bus (V): (n, T); r_eq, x_eq: (n,). Per phase p/3, q/3; the loss is
    3·r·I² with I = S/(3·V_meter)."""
    r = r_eq[:, None]
    x = x_eq[:, None]
    v = receiving_voltage(v_bus, p * 1000.0 / 3.0, q * 1000.0 / 3.0, r, x)
    current = np.hypot(p, q) * 1000.0 / (3.0 * v)
    return v, 3.0 * r * current**2 / 1000.0


def transformer(
    p: np.ndarray,
    q: np.ndarray,
    sn_kva: np.ndarray,
    p0_kw: np.ndarray,
    pk_kw: np.ndarray,
    v_hv_pu: np.ndarray,
    vk_percent: float = VK_PERCENT,
) -> tuple[np.ndarray, np.ndarray]:
    """(secondary voltage pu, loss kW) for the load p, q (A, T) drawn at the LV bus.

    The series impedance vkr + j·vkx (pu on Sn, vkr = Pk/Sn) carries the load; loss =
    P0·v_hv² (iron, ∝ V²) + Pk·(S / (Sn·v_lv))² (copper, ∝ I²)."""
    sn = sn_kva[:, None]
    vkr = pk_kw[:, None] / sn
    vkx = np.sqrt((vk_percent / 100.0) ** 2 - vkr**2)
    v_lv = receiving_voltage(v_hv_pu, p / sn, q / sn, vkr, vkx)
    loss = p0_kw[:, None] * v_hv_pu**2 + pk_kw[:, None] * (np.hypot(p, q) / (sn * v_lv)) ** 2
    return v_lv, loss


def mv_line_loss(p: np.ndarray, q: np.ndarray, r_ohm: np.ndarray, v_pu: np.ndarray) -> np.ndarray:
    """I²R of a feeder's 10 kV line (r per conductor) carrying p, q (F, T) at v_pu."""
    current = np.hypot(p, q) / (np.sqrt(3.0) * MV_KV * v_pu)  # A
    return 3.0 * r_ohm[:, None] * current**2 / 1000.0


def transformer_for(peak_kw: float) -> int:
    """The smallest standard transformer loaded ≤ 80 % at the peak (else the largest)."""
    for kva in TRANSFORMERS:
        if peak_kw / 0.9 <= 0.8 * kva:
            return kva
    return max(TRANSFORMERS)


def ct_for(rated_a: float) -> int:
    """CT ratio (primary / 5 A) of the smallest standard CT ≥ 1.2 × the rated current."""
    for primary in CT_PRIMARIES:
        if primary >= 1.2 * rated_a:
            return primary // 5
    return CT_PRIMARIES[-1] // 5
