"""Gamma-Gamma spend model (Fader, Hardie and Lee 2005, "RFM and CLV"), fitted on the driver.

Each customer's mean spend per repeat purchase m over x > 0 repeat purchases; customers with m <= 0
stay out of the fit. Inputs may be grouped with weights (see shoplens.value.stats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

START = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class GammaGammaFit:
    p: float
    q: float
    v: float
    log_likelihood: float
    customers: int
    converged: bool

    @property
    def population_mean(self) -> float | None:
        """E(M) for a customer without repeat purchases: p v / (q - 1), undefined for q <= 1."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else None


def log_likelihood(params, x, m, weight=None) -> float:
    p, q, v = params
    x = np.asarray(x, dtype=float)
    m = np.asarray(m, dtype=float)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    px = p * x
    terms = (
        special.gammaln(px + q) - special.gammaln(q) + q * np.log(v) + (px - 1) * np.log(m)
        + px * np.log(x) - special.gammaln(px) - (px + q) * np.log(x * m + v)
    )
    return float(np.sum(w * terms))


def fit(x, m, weight=None, max_iter: int = 5000, start=START) -> GammaGammaFit:
    """Maximum likelihood (p, q, v) over log-parameters from generic starting values."""
    x = np.asarray(x, dtype=float)
    m = np.asarray(m, dtype=float)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    total = w.sum()

    def objective(log_params):
        value = -log_likelihood(np.exp(log_params), x, m, w) / total
        return value if np.isfinite(value) else 1e12

    first = optimize.minimize(objective, np.log(start), method="Nelder-Mead",
                              options={"maxiter": max_iter, "xatol": 1e-8, "fatol": 1e-12})
    best = optimize.minimize(objective, first.x, method="L-BFGS-B", options={"maxiter": max_iter})
    chosen = best if best.fun <= first.fun else first
    p, q, v = (float(val) for val in np.exp(chosen.x))
    return GammaGammaFit(p, q, v, -float(chosen.fun) * float(total), int(total), bool(first.success or best.success))
