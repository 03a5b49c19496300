"""Meter-error estimation per area from energy conservation, pure numpy.

Over many intervals t of one area, with S_t the supply (area total meter) and E_i,t what
customer meter i measured (primary kWh):

    S_t = Σ_i θ_i·E_i,t + c + k·S_t² + noise

c is the fixed (no-load) loss per interval, k·S² the load-dependent (I²R) loss. A meter that
reads (1 + ε) times the truth has θ = 1/(1 + ε), so its error is (1/θ − 1)·100 %, with a
confidence interval by the delta method (d err/dθ = −100/θ²). Coefficients that the data
cannot separate (rank-deficient design: null-space component, or a CI wider than
``max_ci_pct``) are reported not identifiable with NaN error — never an invented value.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MeterErrors", "estimate_meter_errors", "line_drop_slope"]


@dataclass(frozen=True)
class MeterErrors:
    """Per meter (n,): error in % (+ = the meter reads fast), its CI, standard error;
    identifiable / flagged masks. Per area: fixed loss c (kWh per interval), load
    coefficient k (1/kWh), the rows used and the residual standard deviation."""

    error_pct: NDArray[np.float64]
    ci_low: NDArray[np.float64]
    ci_high: NDArray[np.float64]
    stderr_pct: NDArray[np.float64]
    identifiable: NDArray[np.bool_]
    flagged: NDArray[np.bool_]
    fixed_loss: float
    load_coeff: float
    rows: int
    residual_sd: float


def estimate_meter_errors(
    supply: ArrayLike,
    energy: ArrayLike,
    accuracy_pct: ArrayLike,
    *,
    confidence: float = 0.95,
    max_ci_pct: float = 2.0,
    quantum: ArrayLike | None = None,
    service_loss: bool = False,
    service_voltage: ArrayLike | None = None,
    bus_voltage: ArrayLike | None = None,
    drop_prior_sd: float = 0.15,
    drop_slope: ArrayLike | None = None,
    rank_rtol: float = 1e-12,
) -> MeterErrors:
    """Least squares over the intervals of one area; rows with any NaN are dropped.

    ``supply`` (T,), ``energy`` (n, T), ``accuracy_pct`` (n,) each meter's class (2 for a
    class-2 meter). ``max_ci_pct``: a meter whose CI half-width exceeds it is not
    identifiable. ``quantum`` (n,) or scalar: each meter's register resolution × its
    multiplier (primary kWh), to correct the bias from register rounding (None: none).
    ``service_loss``: add a term κ_i·E_i² per meter for the I²R of its own service line
    (upstream of the meter, so in the supply) — unbiased where those lines are long, at the
    price of wider CIs. ``service_voltage`` (n, T) each meter's voltage: the term becomes
    κ_i·E_i²/(V_i/V̄_i)² (the line current goes with S/V), which fits what the voltage swings
    do to that loss. ``bus_voltage`` (T,) the area total's voltage, or (n, T) its phase each
    meter hangs on, with ``service_voltage``:
    each κ_i gets a prior from the meter's own measured drop, κ_i = (γ + δ_i)·ρ_i with ρ_i
    from `line_drop_slope`, one shared γ (≈ 1–1.3: the power factor's share of the drop) and
    δ_i ~ N(0, ``drop_prior_sd``²) as a ridge (penalty σ²/sd², σ² from the free fit); the
    covariance keeps the penalty (posterior). ``flagged``: identifiable and the whole CI
    beyond ±accuracy_pct. ``drop_slope`` (n,): the ρ_i already computed (e.g. by
    `line_drop_slope` on curves with gaps, before they were filled), used instead of
    computing them from ``bus_voltage`` over the rows kept.
    """
    s = np.asarray(supply, dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64)
    acc = np.asarray(accuracy_pct, dtype=np.float64)
    if s.ndim != 1 or e.ndim != 2 or e.shape[1] != s.size or acc.shape != (e.shape[0],):
        raise ValueError(
            f"estimate_meter_errors: supply (T,), energy (n, T), accuracy_pct (n,) expected,"
            f" got {s.shape}, {e.shape}, {acc.shape}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"estimate_meter_errors: confidence must be in (0, 1), got {confidence}")
    n = e.shape[0]
    v = None
    if service_loss and service_voltage is not None:
        v = np.asarray(service_voltage, dtype=np.float64)
        if v.shape != e.shape:
            raise ValueError(f"service_voltage: {e.shape} expected, got {v.shape}")
    vb = None
    if v is not None and bus_voltage is not None:
        vb = np.asarray(bus_voltage, dtype=np.float64)
        if vb.shape not in (s.shape, e.shape):
            raise ValueError(f"bus_voltage: {s.shape} or {e.shape} expected, got {vb.shape}")
        if not drop_prior_sd > 0:
            raise ValueError(f"drop_prior_sd must be > 0, got {drop_prior_sd}")
    keep = ~np.isnan(s) & ~np.isnan(e).any(axis=0)
    if v is not None:
        keep &= ~np.isnan(v).any(axis=0)
    y = s[keep]
    cols = [e[:, keep].T, np.ones(y.size), y**2]  # (m, n + 2)
    if service_loss:  # each meter's own service line: κ_i·E_i² (a loss it does not see)
        sq = e[:, keep] ** 2
        if v is not None:  # the line current goes with S/V
            sq = sq / (v[:, keep] / np.nanmean(v, axis=1, keepdims=True)) ** 2
        free = np.ones(n, dtype=bool)
        if vb is not None:  # κ_i = (γ + δ_i)·ρ_i from the meter's own drop; ridge on δ_i
            rho = line_drop_slope(vb[..., keep], v[:, keep], e[:, keep])
            if drop_slope is not None:
                rho = np.asarray(drop_slope, dtype=np.float64)
                if rho.shape != (n,):
                    raise ValueError(f"drop_slope: ({n},) expected, got {rho.shape}")
            free = np.isnan(rho)  # no voltage curve: its κ_i stays free, as without a prior
            drop = np.where(free, 0.0, rho)[:, None] * e[:, keep] ** 2 / v[:, keep] ** 2
            sq = np.where(free[:, None], sq, drop)
            cols.append(drop.sum(axis=0))
        cols.append(sq.T)
    x = np.column_stack(cols)
    m = x.shape[0]
    norms = np.linalg.norm(x, axis=0)
    norms[norms == 0] = 1.0  # a zero column lands in the null space: not identifiable
    xs = x / norms
    if m == 0:
        return _nothing(n, m)
    # normal equations on unit-norm columns; a meter's quantization noise (known variance
    # q²/6 per interval: rounding at both ends) is taken off its diagonal, which removes the
    # attenuation bias (errors in variables) that small loads would otherwise suffer
    xtx = xs.T @ xs
    a = xtx.copy()
    if quantum is not None:
        q = np.broadcast_to(np.asarray(quantum, dtype=np.float64), (n,))
        a[np.arange(n), np.arange(n)] -= m * q**2 / 6.0 / norms[:n] ** 2
    fit = _solve(a, xtx, xs, x, y, norms, rank_rtol)
    if fit is None:
        return _nothing(n, m)
    if vb is not None:  # prior δ_i ~ N(0, sd²): penalty σ²/sd² per δ_i, σ² from the free fit
        ridge = np.zeros(x.shape[1])
        ridge[n + 3 :] = np.where(free, 0.0, fit[1] / drop_prior_sd**2 / norms[n + 3 :] ** 2)
        fit = _solve(a + np.diag(ridge), xtx + np.diag(ridge), xs, x, y, norms, rank_rtol)
        if fit is None:
            return _nothing(n, m)
    beta, sigma2, cov, _, vec, good = fit
    cov_diag = np.diag(cov) / norms**2
    in_null = np.linalg.norm(vec[:, ~good], axis=1) > 1e-6
    theta, se_theta = beta[:n], np.sqrt(cov_diag[:n])
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = (1.0 / theta - 1.0) * 100.0
        se_err = 100.0 * se_theta / theta**2
    ok = ~in_null[:n] & (theta > 0) & (z * se_err <= max_ci_pct)
    err = np.where(ok, err, np.nan)
    se_err = np.where(ok, se_err, np.nan)
    lo, hi = err - z * se_err, err + z * se_err
    flagged = ok & ((lo > acc) | (hi < -acc))
    return MeterErrors(
        error_pct=err,
        ci_low=lo,
        ci_high=hi,
        stderr_pct=se_err,
        identifiable=ok,
        flagged=flagged,
        fixed_loss=float(beta[n]) if not in_null[n] else float("nan"),
        load_coeff=float(beta[n + 1]) if not in_null[n + 1] else float("nan"),
        rows=m,
        residual_sd=float(np.sqrt(sigma2)),
    )


def line_drop_slope(bus: ArrayLike, volts: ArrayLike, energy: ArrayLike) -> NDArray[np.float64]:
    """(n,) each service line's drop per unit of E/V: the slope ρ_i of the per-meter
    regression ΔV_i,t = δ_i + ρ_i·E_i,t/V_i,t with ΔV = bus − volts (V; bus (T,) or per meter
    (n, T), the bus voltage of its phase), over the intervals
    where all three are present; δ_i absorbs a constant offset between the two voltage
    readings (calibration, a fixed phase unbalance). The line's loss is then ρ_i·E²/V² kWh
    (pf 1, resistive line). Clipped at 0; NaN where the meter's voltage or E/V does not vary
    (no curve: a filled constant) or fewer than 3 intervals are present."""
    b = np.asarray(bus, dtype=np.float64)
    v = np.asarray(volts, dtype=np.float64)
    b = b[None, :] if b.ndim == 1 else b
    x = np.asarray(energy, dtype=np.float64) / v
    dv = b - v
    ok = ~np.isnan(x) & ~np.isnan(dv)
    cnt = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(ok, x, 0.0).sum(axis=1) / cnt
        dm = np.where(ok, dv, 0.0).sum(axis=1) / cnt
        vm = np.where(ok, v, 0.0).sum(axis=1) / cnt
        xc = np.where(ok, x - xm[:, None], 0.0)
        sxx = (xc**2).sum(axis=1)
        sxy = (xc * np.where(ok, dv - dm[:, None], 0.0)).sum(axis=1)
        svv = (np.where(ok, v - vm[:, None], 0.0) ** 2).sum(axis=1)
        rho = np.maximum(sxy / sxx, 0.0)
    return np.where((cnt >= 3) & (sxx > 0) & (svv > 0), rho, np.nan)


def _solve(a, xtx, xs, x, y, norms, rank_rtol):
    """Solve the (corrected, possibly penalised) normal equations on unit-norm columns:
    (β, σ², sandwich covariance on the scaled coefficients, eigen decomposition, kept)."""
    m = x.shape[0]
    lam, vec = np.linalg.eigh(a)
    top = lam.max(initial=0.0)
    good = lam > rank_rtol * top
    r = int(good.sum())
    if top <= 0 or m <= r:
        return None
    a_pinv = (vec[:, good] / lam[good]) @ vec[:, good].T
    beta = (a_pinv @ (xs.T @ y)) / norms
    resid = y - x @ beta
    sigma2 = float(resid @ resid) / (m - r)
    cov = a_pinv @ xtx @ a_pinv * sigma2  # sandwich; = σ²·A⁻¹ without the correction
    return beta, sigma2, cov, lam, vec, good


def _nothing(n: int, m: int) -> MeterErrors:
    nan = np.full(n, np.nan)
    no = np.zeros(n, dtype=bool)
    return MeterErrors(nan, nan, nan, nan, no, no, float("nan"), float("nan"), m, float("nan"))
