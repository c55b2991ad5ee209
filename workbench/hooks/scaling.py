"""Scaling-law fits (Henighan et al. 2020, "Scaling Laws for Autoregressive Generative Modeling"):
L(x) = L∞ + (x₀ / x)^α over model size or data, fitted by least squares on log L."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

from workbench.config import ConfigError


@dataclass(frozen=True)
class PowerLaw:
    alpha: float
    L_inf: float
    x0: float
    r2: float  # of log L, the quantity fitted

    def __call__(self, x):
        return self.L_inf + (self.x0 / np.asarray(x, dtype=float)) ** self.alpha

    def asdict(self) -> dict[str, float]:
        return asdict(self)


def fit_power_law(x, loss, what: str = "sizes") -> PowerLaw:
    """Fit L∞ + (x₀/x)^α to points (x, loss). Three parameters need ≥ 3 distinct x (and ≥ 4 to leave a residual).

    The start comes from a scan over L∞ below min(loss), where log(L − L∞) is linear in log x; scipy's bounded
    trust-region least squares then refines all three, with 0 ≤ L∞ ≤ min(loss)."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    if len(np.unique(x)) < 3:
        raise ConfigError(f"a power-law fit needs ≥ 3 distinct {what}; got {len(np.unique(x))} "
                          f"({', '.join(f'{v:g}' for v in np.unique(x))})")
    if np.any(x <= 0) or np.any(loss <= 0):
        raise ConfigError(f"a power-law fit needs positive {what} and losses")
    log_x, log_loss = np.log(x), np.log(loss)

    def residuals(params):
        L_inf, log_x0, alpha = params
        return np.log(L_inf + np.exp(alpha * (log_x0 - log_x))) - log_loss

    best = None
    for L_inf in np.linspace(0, loss.min(), 64, endpoint=False):
        slope, intercept = np.polyfit(log_x, np.log(loss - L_inf), 1)
        if slope >= 0:
            continue
        start = np.array([L_inf, -intercept / slope, -slope])
        cost = float(np.sum(residuals(start) ** 2))
        if best is None or cost < best[0]:
            best = (cost, start)
    if best is None:
        raise ConfigError(f"the loss does not fall with the {what}: no power law to fit")
    fit = least_squares(residuals, best[1], bounds=([0, -np.inf, 1e-3], [loss.min(), np.inf, 10]))
    L_inf, log_x0, alpha = fit.x
    ss_res = float(np.sum(fit.fun ** 2))
    ss_tot = float(np.sum((log_loss - log_loss.mean()) ** 2))
    return PowerLaw(alpha=float(alpha), L_inf=float(L_inf), x0=float(np.exp(log_x0)),
                    r2=1 - ss_res / ss_tot if ss_tot > 0 else float("nan"))
