"""BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way"), fitted on the driver.

Inputs are grouped sufficient statistics: one entry per distinct (x, t_x, T) with the number of
customers sharing it, so the likelihood costs the number of distinct triples, not of customers.
x is the number of repeat purchases, t_x the time of the last purchase and T the age, both measured
from the first purchase (weeks, in the paper's convention). Pure numpy/scipy: no Spark here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

# Generic starting values (all ones), not values known to suit any dataset.
START = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class BgNbdFit:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    customers: int
    groups: int
    converged: bool
    iterations: int

    def params(self) -> tuple[float, float, float, float]:
        return self.r, self.alpha, self.a, self.b


def _arrays(x, t_x, T, weight=None):
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    return x, t_x, T, w


def log_likelihood_terms(params, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood, in the numerically stable form (log-sum-exp of the two terms)."""
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    # For x = 0 the second term is absent; b + x - 1 is then replaced to keep the log finite.
    a4 = np.where(
        x > 0,
        np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return a1 + a2 + np.logaddexp(a3, a4)


def log_likelihood(params, x, t_x, T, weight=None) -> float:
    """Sum of the customers' log-likelihoods (each group weighted by its customer count)."""
    x, t_x, T, w = _arrays(x, t_x, T, weight)
    return float(np.sum(w * log_likelihood_terms(params, x, t_x, T)))


def fit(x, t_x, T, weight=None, max_iter: int = 5000, start=START) -> BgNbdFit:
    """Maximum likelihood (r, alpha, a, b) from generic starting values.

    Optimises over log-parameters (all four are positive): Nelder-Mead, then L-BFGS-B from its end
    point to polish. Returns: the fit with its log-likelihood and the number of customers and groups.
    """
    x, t_x, T, w = _arrays(x, t_x, T, weight)
    total = w.sum()

    def objective(log_params):
        value = -log_likelihood(np.exp(log_params), x, t_x, T, w) / total
        return value if np.isfinite(value) else 1e12

    first = optimize.minimize(objective, np.log(start), method="Nelder-Mead",
                              options={"maxiter": max_iter, "xatol": 1e-8, "fatol": 1e-12})
    best = optimize.minimize(objective, first.x, method="L-BFGS-B", options={"maxiter": max_iter})
    chosen = best if best.fun <= first.fun else first
    r, alpha, a, b = (float(v) for v in np.exp(chosen.x))
    return BgNbdFit(r, alpha, a, b, -float(chosen.fun) * float(total), int(total), int(len(x)),
                    bool(first.success or best.success), int(first.nit + best.nit))


def p_alive(params, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T): 1 for a customer without repeat purchases."""
    r, alpha, a, b = params
    x, t_x, T, _ = _arrays(x, t_x, T)
    log_ratio = np.log(a) - np.log(b + np.maximum(x, 1) - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, 1.0 / (1.0 + np.exp(log_ratio)), 1.0)


def expected_purchases(params, horizon, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T + horizon] | x, t_x, T] (the paper's equation 10)."""
    r, alpha, a, b = params
    x, t_x, T, _ = _arrays(x, t_x, T)
    z = horizon / (alpha + T + horizon)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - ((alpha + T) / (alpha + T + horizon)) ** (r + x) * hyp
    odds = np.where(
        x > 0, a / (b + np.maximum(x, 1) - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0
    )
    return first * second / (1 + odds)


def simulate(params, ages, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws (x, t_x, T) of customers observed for ``ages`` after their first purchase, from the
    BG/NBD story: a Poisson rate lambda ~ Gamma(r, alpha), a drop-out probability p ~ Beta(a, b)
    applied after each repeat purchase. Returns: arrays x, t_x, T (one entry per customer)."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    ages = np.asarray(ages, dtype=float)
    n = len(ages)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    x = np.zeros(n, dtype=int)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > ages[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    return x, t_x, ages
